"""Couplings: how noise x0 is paired with a batch of data x1.

A coupling draws (or looks up) the noise for a data batch and returns the pairs with its own
statistics: mean squared distance of the pairs it returns (``cost``), the expected cost of
independent pairing in the same batch (``cost_independent``), and the seconds spent solving.
No coupling silently falls back to another plan: a solver that does not return a permutation
raises.

The package is split by concern: ``base`` (the ``Coupling`` protocol, ``Pairs``, pair costs),
``solvers`` (exact assignment: POT / scipy, the measured ``auto`` choice), ``bank`` (the noise
bank of the bank couplings) and ``strategies`` (independent, minibatch OT, online OT, global OT).
Every name is re-exported here.
"""

from bench.couplings.bank import NoiseBank
from bench.couplings.base import Coupling, Pairs, SourceFn, independent_cost, pair_cost
from bench.couplings.solvers import (
    MEASURE_MAX_N,
    measured_choice,
    ot_permutation,
    pick_solver,
    solve_assignment,
    time_solvers,
)
from bench.couplings.strategies import GlobalOT, Independent, MinibatchOT, OnlineOT

__all__ = ["MEASURE_MAX_N", "Coupling", "GlobalOT", "Independent", "MinibatchOT", "NoiseBank",
           "OnlineOT", "Pairs", "SourceFn", "independent_cost", "measured_choice",
           "ot_permutation", "pair_cost", "pick_solver", "solve_assignment", "time_solvers"]
