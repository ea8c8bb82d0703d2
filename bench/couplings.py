"""Couplings: how noise x0 is paired with a batch of data x1.

A coupling draws (or looks up) the noise for a data batch and returns the pairs with its own
statistics: mean squared distance of the pairs it returns (``cost``), the expected cost of
independent pairing in the same batch (``cost_independent``), and the seconds spent solving.
No coupling silently falls back to another plan: a solver that does not return a permutation
raises.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from bench.distances import sq_dists
from bench.vocab import SOLVERS, choices

SourceFn = Callable[[int, torch.Generator], torch.Tensor]

#: Exact solvers (``bench.vocab.SOLVERS``). ``auto`` times both once per process and (batch
#: size, dimension) and uses the faster: which one wins depends on the machine, the batch
#: size and the dimension (on the project's 2-core CPU machine POT's network simplex won at
#: n = 1,024 in 2-D and scipy's linear_sum_assignment from n = 1,024 on in 784-D and 3072-D,
#: but scipy won in 2-D at n = 256); which one ran is logged.
#: largest n timed when measuring (bigger batches reuse the choice measured at this size)
MEASURE_MAX_N = 1024
_MEASURED: dict[tuple[int, int], dict[str, float]] = {}


@dataclass
class Pairs:
    """``x0``, ``x1``: [B, *shape] coupled noise and data; ``stats``: floats for the logs."""

    x0: torch.Tensor
    x1: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


def pair_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Mean squared Euclidean distance of the given pairs (row i with row i)."""
    return float((x0 - x1).flatten(1).pow(2).sum(1).mean())


def independent_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Mean of the full [B, B] cost matrix = expected pair cost of a uniformly random pairing.

    Closed form: E|x0|^2 + E|x1|^2 - 2 <mean x0, mean x1>, so no B x B matrix is built.
    """
    a, b = x0.flatten(1), x1.flatten(1)
    return float(a.pow(2).sum(1).mean() + b.pow(2).sum(1).mean() - 2 * a.mean(0) @ b.mean(0))


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


class Coupling(ABC):
    """Draws or looks up noise for the data batch ``x1`` (rows ``idx`` of the training set)."""

    name: str = "coupling"
    #: probe_targets returns the same thing on every call until training changes the state
    #: (one draw per measurement is then enough; repeats would deflate the variance)
    deterministic_probes: bool = False

    def __init__(self, source: SourceFn) -> None:
        self.source = source

    @abstractmethod
    def pair(self, x1: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> Pairs: ...

    def data_batch_size(self, train_batch: int) -> int:
        """How many data points to draw per step for a training batch of ``train_batch``."""
        return train_batch

    def probe_targets(self, probes: torch.Tensor, data: torch.Tensor,
                      gen: torch.Generator) -> torch.Tensor:
        """The data points this coupling pairs with the noise points ``probes`` [K, *shape]
        right now (one draw). Repeated draws measure the coupling's consistency: the
        variance of a probe's targets is the regression-target variance a model faces at
        that noise point. Default: independent pairing, a random data point each."""
        rows = torch.randint(0, data.shape[0], (probes.shape[0],), generator=gen,
                             device=gen.device).to(data.device)
        return data[rows]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{self.name} coupling has no state, got keys {sorted(state)}")


def _subset(pairs: Pairs, n: int, gen: torch.Generator) -> Pairs:
    """A random ``n`` of the pairs (all of them when n >= their number)."""
    if n >= pairs.x1.shape[0]:
        return pairs
    keep = torch.randperm(pairs.x1.shape[0], generator=gen, device=gen.device)[:n]
    keep = keep.to(pairs.x1.device)
    return Pairs(pairs.x0[keep], pairs.x1[keep], pairs.stats)


class Independent(Coupling):
    """x0 ~ source, independent of x1."""

    name = "independent"

    def pair(self, x1: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> Pairs:
        x0 = self.source(x1.shape[0], gen)
        c = pair_cost(x0, x1)
        return Pairs(x0, x1, {"cost": c, "cost_independent": independent_cost(x0, x1),
                              "solver_seconds": 0.0})


class _ExactOT(Coupling):
    """Shared by the exact-assignment couplings: the solver choice and the OT batch size.

    ``ot_batch`` = points per assignment (0: the training batch). Larger: more data is drawn
    and the loss gets a random training-batch subset of the pairs; smaller: the batch is
    assigned in independent blocks. Either way the gradient batch stays the same.
    """

    def __init__(self, source: SourceFn, solver: str = "auto", ot_batch: int = 0) -> None:
        super().__init__(source)
        self.solver = solver
        self.ot_batch = ot_batch
        self._train_batch: int | None = None

    def data_batch_size(self, train_batch: int) -> int:
        self._train_batch = train_batch
        return max(train_batch, self.ot_batch)

    def _solver_for(self, x1: torch.Tensor, block: int | None = None) -> str:
        blk = self.ot_batch if block is None else block
        n = blk if 0 < blk < x1.shape[0] else x1.shape[0]
        return pick_solver(self.solver, x1[0].numel(), n)

    def _solve(self, x0: torch.Tensor, x1: torch.Tensor,
               block: int | None = None) -> tuple[torch.Tensor, float, str]:
        """(perm, seconds, solver name): (x0[perm], x1) is optimal within each block."""
        solver = self._solver_for(x1, block)
        perm, seconds = ot_permutation(x1, x0, solver, self.ot_batch if block is None else block)
        return perm, seconds, solver

    def _train_subset(self, pairs: Pairs, gen: torch.Generator) -> Pairs:
        return _subset(pairs, self._train_batch or pairs.x1.shape[0], gen)


class MinibatchOT(_ExactOT):
    """Exact OT within each batch: the noise batch is permuted to the optimal assignment.

    A permutation (each x0 and each x1 used once), not pairs sampled from the plan with
    replacement.
    """

    name = "minibatch-ot"

    def __init__(self, source: SourceFn, solver: str = "auto", ot_batch: int = 0) -> None:
        super().__init__(source, solver, ot_batch)
        self._pending: tuple | None = None
        self._pool = None

    def prefetch(self, x1: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> None:
        """Draw the next batch's noise now and solve its assignment in a worker thread while
        the network trains on this batch (both solvers release the GIL). The noise is drawn
        in the same order as without prefetching, so the pairs are identical (tested)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ot-solver")
        x0 = self.source(x1.shape[0], gen)
        solver = self._solver_for(x1)
        fut = self._pool.submit(ot_permutation, x1, x0, solver, self.ot_batch)
        self._pending = (idx, x0, fut, solver)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending = None

    def pair(self, x1: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> Pairs:
        start = time.perf_counter()
        if self._pending is not None and self._pending[0] is idx:
            _, x0, fut, solver = self._pending
            self._pending = None
            perm, seconds = fut.result()
        else:
            self._pending = None
            x0 = self.source(x1.shape[0], gen)
            perm, seconds, solver = self._solve(x0, x1)
        x0p = x0[perm]
        pairs = Pairs(x0p, x1, {
            "cost": pair_cost(x0p, x1), "cost_independent": independent_cost(x0, x1),
            "solver_seconds": seconds, f"solver_{solver}": 1.0,
            # what the training loop waited for (less than solver_seconds when prefetched)
            "coupling_wait_seconds": time.perf_counter() - start,
        })
        return self._train_subset(pairs, gen)

    def probe_targets(self, probes: torch.Tensor, data: torch.Tensor,
                      gen: torch.Generator) -> torch.Tensor:
        """Probes placed in fresh OT batches of this coupling's size, at most 1/16 of each
        batch (the rest fresh noise and random data), so the fixed probes barely change the
        batches they are measured in."""
        blk = self.ot_batch or self._train_batch or probes.shape[0]
        k, per = probes.shape[0], max(1, blk // 16)
        blocks = -(-k // per)
        n = blocks * blk
        if n <= data.shape[0]:
            rows = torch.randperm(data.shape[0], generator=gen, device=gen.device)[:n]
        else:
            rows = torch.randint(0, data.shape[0], (n,), generator=gen, device=gen.device)
        x1 = data[rows.to(data.device)]
        x0 = self.source(n, gen)
        where = torch.tensor([b * blk + j for b in range(blocks) for j in range(per)][:k],
                             device=x0.device)
        x0[where] = probes.to(x0.device)
        perm, _, _ = self._solve(x0, x1, blk)
        # perm[i] = noise row paired with data row i; invert to find each probe's data row
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(n, device=perm.device)
        return x1[inv[where]]


class OnlineOT(_ExactOT):
    """A persistent noise bank, one noise point per training point, refined batch by batch.

    Each step looks up the bank entries of the drawn data points, solves the exact assignment
    among them and writes the improved pairing back (LOOM-CFM, Davtyan et al., ICLR 2025). The
    identity is always feasible, so the bank's total cost never increases. Per-step work is
    O(B^3 + B d) and does not depend on the bank size.
    """

    name = "online-ot"
    deterministic_probes = True

    def __init__(self, source: SourceFn, n_train: int, solver: str = "auto",
                 ot_batch: int = 0) -> None:
        super().__init__(source, solver, ot_batch)
        self.n_train = n_train
        self.bank: torch.Tensor | None = None
        #: ids[i] = which initial noise vector sits at bank slot i (tracks noise as it moves)
        self.ids: torch.Tensor | None = None

    def init_bank(self, gen: torch.Generator) -> None:
        self.bank = self.source(self.n_train, gen)
        self.ids = torch.arange(self.n_train, device=self.bank.device)

    def pair(self, x1: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> Pairs:
        start = time.perf_counter()
        if self.bank is None:
            self.init_bank(gen)
        assert self.bank is not None
        assert self.ids is not None
        if self.bank.device != x1.device:  # after loading a checkpoint saved on the CPU
            self.bank, self.ids = self.bank.to(x1.device), self.ids.to(x1.device)
        x0 = self.bank[idx]
        perm, seconds, solver = self._solve(x0, x1)
        x0p = x0[perm]
        self.bank[idx] = x0p
        self.ids[idx] = self.ids[idx][perm]
        # with permutation epochs, the batch share reassigned averages to the share of the
        # bank reassigned per epoch
        moved = float((perm != torch.arange(len(perm), device=perm.device)).float().mean())
        pairs = Pairs(x0p, x1, {
            "cost": pair_cost(x0p, x1), "cost_before": pair_cost(x0, x1),
            "cost_independent": independent_cost(x0, x1), "solver_seconds": seconds,
            "reassigned": moved, f"solver_{solver}": 1.0,
            "coupling_wait_seconds": time.perf_counter() - start,
        })
        return self._train_subset(pairs, gen)

    def probe_targets(self, probes: torch.Tensor, data: torch.Tensor,
                      gen: torch.Generator) -> torch.Tensor:
        """The online coupling's probes are its own first K noise vectors, followed as they
        move through the bank; their targets are the data points they currently sit with."""
        if self.ids is None:
            raise RuntimeError("online-ot bank is not initialised")
        pos = torch.empty_like(self.ids)
        pos[self.ids] = torch.arange(self.n_train, device=self.ids.device)
        return data[pos[: probes.shape[0]].to(data.device)]

    def bank_cost(self, data: torch.Tensor) -> float:
        """Mean pair cost over the whole bank (bank[i] paired with training point i)."""
        assert self.bank is not None
        return pair_cost(self.bank, data)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.bank is None or self.ids is None:
            return {}
        return {"bank": self.bank.detach().cpu().clone(), "ids": self.ids.cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        bank = state.get("bank")
        if bank is not None and bank.shape[0] != self.n_train:
            raise ValueError(
                f"online-ot bank has {bank.shape[0]} entries, the training set {self.n_train}"
            )
        self.bank = None if bank is None else bank.clone()
        ids = state.get("ids")
        if bank is not None and ids is None:  # a bank saved without tracking: ids start here
            ids = torch.arange(self.n_train)
        self.ids = None if ids is None else ids.clone()
