"""Exact assignment solvers (POT's network simplex, scipy's linear_sum_assignment), the
measured ``auto`` choice between them, and blockwise OT permutations of a batch."""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.distances import sq_dists
from bench.vocab import SOLVERS, choices

#: Exact solvers (``bench.vocab.SOLVERS``). ``auto`` times both once per process and (batch
#: size, dimension) and uses the faster: which one wins depends on the machine, the batch
#: size and the dimension (on the project's 2-core CPU machine POT's network simplex won at
#: n = 1,024 in 2-D and scipy's linear_sum_assignment from n = 1,024 on in 784-D and 3072-D,
#: but scipy won in 2-D at n = 256); which one ran is logged.
#: largest n timed when measuring (bigger batches reuse the choice measured at this size)
MEASURE_MAX_N = 1024
_MEASURED: dict[tuple[int, int], dict[str, float]] = {}


def time_solvers(n: int, dim: int, repeats: int = 3) -> dict[str, float]:
    """Median seconds of each exact solver (cost matrix included) on n Gaussian points of
    dimension ``dim`` per side; a private numpy generator, so no training stream moves."""
    rng = np.random.default_rng(n * 7919 + dim)
    out: dict[str, float] = {}
    for solver in SOLVERS:
        times = []
        for _ in range(repeats):
            a = torch.as_tensor(rng.standard_normal((n, dim)))
            b = torch.as_tensor(rng.standard_normal((n, dim)))
            t0 = time.perf_counter()
            solve_assignment(sq_dists(a, b).numpy(), solver)
            times.append(time.perf_counter() - t0)
        out[solver] = float(np.median(times))
    return out


def measured_choice(n: int, dim: int) -> tuple[str, dict[str, float]]:
    """The faster exact solver for (n, dim), timed once per process (n capped at
    MEASURE_MAX_N and rounded up to a power of two), with the timings it was chosen from."""
    key = (min(MEASURE_MAX_N, 1 << max(0, n - 1).bit_length()), dim)
    if key not in _MEASURED:
        _MEASURED[key] = time_solvers(*key)
    timings = _MEASURED[key]
    return min(timings, key=timings.__getitem__), timings


def pick_solver(solver: str, dim: int, n: int = 256) -> str:
    """``auto``: the solver measured fastest at this batch size and dimension."""
    if solver == "auto":
        return measured_choice(n, dim)[0]
    if solver not in SOLVERS:
        raise ValueError(f"unknown OT solver {solver!r}; choices: auto, {choices(SOLVERS)}")
    return solver


def solve_assignment(cost: np.ndarray, solver: str) -> np.ndarray:
    """Exact optimal assignment of a square cost matrix: ``perm`` with row i -> column perm[i]."""
    n = cost.shape[0]
    if solver == "scipy":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        perm = np.empty(n, dtype=np.int64)
        perm[rows] = cols
        return perm
    if solver == "pot":
        import ot

        w = np.full(n, 1.0 / n)
        plan = ot.emd(w, w, np.ascontiguousarray(cost, dtype=np.float64), numItermax=10_000_000)
        perm = plan.argmax(1)
        # The network simplex returns a vertex of the Birkhoff polytope (a permutation); check it.
        if np.unique(perm).size != n or not np.allclose(plan[np.arange(n), perm], 1.0 / n):
            raise RuntimeError("POT emd returned no permutation plan (solver did not converge)")
        return perm
    raise ValueError(f"unknown OT solver {solver!r}; choices: {choices(SOLVERS)}")


def ot_permutation(x1: torch.Tensor, x0: torch.Tensor, solver: str,
                   block: int = 0) -> tuple[torch.Tensor, float]:
    """Permutation ``perm`` so that (x0[perm], x1) is an exact OT pairing; also solver seconds.

    With ``0 < block < len(x1)`` the rows are cut into consecutive blocks of ``block`` points
    and each block is assigned exactly within itself (OT at a smaller batch size).
    """
    start = time.perf_counter()
    n = x1.shape[0]
    step = block if 0 < block < n else n
    perm = np.empty(n, dtype=np.int64)
    with torch.autocast(x1.device.type, enabled=False):  # exact costs, also under bf16 AMP
        for i in range(0, n, step):
            j = min(n, i + step)
            c = sq_dists(x1[i:j].double(), x0[i:j].double()).cpu().numpy()
            perm[i:j] = solve_assignment(c, solver) + i
    return torch.as_tensor(perm, device=x0.device), time.perf_counter() - start

