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
        right now (one draw; trainer.ConsistencyProbe takes one at each of several moments).
        The variance of a probe's targets over those moments is the regression-target
        variance a model faces at that noise point. Default: independent pairing, a random
        data point each."""
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
        """Probes placed in one fresh OT batch of this coupling's size (several batches when
        the probes exceed 1/16 of one; the rest fresh noise and random data), so the fixed
        probes barely change the batches they are measured in."""
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


class NoiseBank:
    """``caches`` noise vectors per training point: ``bank[k, i]`` is the noise that slot ``k``
    of training point ``i`` is paired with; ``ids[k, i]`` says which of the ``caches * n``
    noise vectors drawn at the start sits there, so each one can be followed as it moves.

    Re-pairing only permutes vectors between slots: none is ever lost or duplicated.
    """

    def __init__(self, bank: torch.Tensor) -> None:
        self.bank = bank  # [K, n, *shape]
        self.ids = torch.arange(bank.shape[0] * bank.shape[1],
                                device=bank.device).reshape(bank.shape[:2])

    @classmethod
    def draw(cls, source: SourceFn, caches: int, n: int, gen: torch.Generator) -> NoiseBank:
        x0 = source(caches * n, gen)
        return cls(x0.reshape(caches, n, *x0.shape[1:]))

    @property
    def caches(self) -> int:
        return self.bank.shape[0]

    @property
    def size(self) -> int:
        return self.bank.shape[1]

    def to(self, device: torch.device) -> None:
        self.bank, self.ids = self.bank.to(device), self.ids.to(device)

    def slots(self, n: int, gen: torch.Generator) -> torch.Tensor | None:
        """A cache drawn uniformly for each of ``n`` visits (LOOM-CFM draws one per sample);
        None with a single cache, which draws nothing from ``gen``."""
        if self.caches == 1:
            return None
        return torch.randint(0, self.caches, (n,), generator=gen,
                             device=gen.device).to(self.bank.device)

    def get(self, slots: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        return self.bank[0 if slots is None else slots, idx]

    def put(self, slots: torch.Tensor | None, idx: torch.Tensor, perm: torch.Tensor) -> None:
        """Permute the visited entries: entry j of the visit moves to position i = perm^-1."""
        k = 0 if slots is None else slots
        self.bank[k, idx] = self.bank[k, idx][perm]
        self.ids[k, idx] = self.ids[k, idx][perm]

    def targets_of(self, first: int, data: torch.Tensor) -> torch.Tensor:
        """The training points that noise vectors 0..first-1 sit with right now."""
        pos = torch.empty(self.ids.numel(), dtype=torch.long, device=self.ids.device)
        pos[self.ids.flatten()] = torch.arange(self.ids.numel(), device=self.ids.device)
        return data[(pos[:first] % self.size).to(data.device)]

    def cost(self, data: torch.Tensor) -> float:
        """Mean pair cost over every slot (slot (k, i) paired with training point i)."""
        return pair_cost(self.bank.flatten(0, 1), data.repeat(self.caches, *[1] * (data.dim() - 1)))

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` bank entries drawn without replacement (for the bank-vs-fresh-noise gap)."""
        flat = self.bank.flatten(0, 1)
        rows = torch.randperm(flat.shape[0], generator=gen, device=gen.device)[:n]
        return flat[rows.to(flat.device)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank.detach().cpu().clone(), "ids": self.ids.cpu().clone()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], n: int, name: str) -> NoiseBank:
        bank, ids = state["bank"], state.get("ids")
        if bank.shape[0] == n and (ids is None or ids.dim() == 1):  # saved with one cache
            bank = bank[None]
            ids = None if ids is None else ids[None]
        if bank.shape[1] != n:
            raise ValueError(f"{name} bank has {bank.shape[1]} entries, the training set {n}")
        out = cls(bank.clone())
        if ids is not None:  # else a bank saved without tracking: ids start here
            out.ids = ids.clone()
        return out


class _BankOT(_ExactOT):
    """An exact-OT coupling whose pairs live in a ``NoiseBank`` of ``caches`` noise vectors
    per training point; each visit of a training point uses one cache drawn at random."""

    def __init__(self, source: SourceFn, n_train: int, solver: str = "auto", ot_batch: int = 0,
                 caches: int = 1) -> None:
        super().__init__(source, solver, ot_batch)
        if caches < 1:
            raise ValueError(f"coupling.caches must be >= 1, got {caches}")
        self.n_train, self.caches = n_train, caches
        self.bank: NoiseBank | None = None

    def _ready(self, device: torch.device) -> NoiseBank:
        if self.bank is None:
            raise RuntimeError(f"{self.name} bank is not initialised")
        if self.bank.bank.device != device:  # after loading a checkpoint saved on the CPU
            self.bank.to(device)
        return self.bank

    def probe_targets(self, probes: torch.Tensor, data: torch.Tensor,
                      gen: torch.Generator) -> torch.Tensor:
        """A bank's probes are its own first K noise vectors, followed as they move through
        the bank; their targets are the training points they currently sit with."""
        return self._ready(data.device).targets_of(probes.shape[0], data)

    def bank_cost(self, data: torch.Tensor) -> float:
        return self._ready(data.device).cost(data)

    def bank_noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` noise vectors the model was trained on (entries of the bank)."""
        return self._ready(gen.device).sample(n, gen)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.bank is None else self.bank.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.bank = (NoiseBank.from_state(state, self.n_train, self.name) if state.get("bank")
                     is not None else None)
        if self.bank is not None and self.bank.caches != self.caches:
            raise ValueError(f"{self.name} bank has {self.bank.caches} caches, the config "
                             f"{self.caches}")


class OnlineOT(_BankOT):
    """A persistent noise bank refined batch by batch (LOOM-CFM, Davtyan et al., ICLR 2025).

    Each step looks up, for every drawn training point, the noise in one of its ``caches``
    slots (drawn uniformly per sample), solves the exact assignment among them and writes the
    improved pairing back into the visited slots. The identity is always feasible, so the
    bank's total cost never increases. Per-step work is O(B^3 + B d), whatever the bank size.
    With several caches a training point keeps several noise partners (LOOM-CFM's
    ``num_caches``), so the model does not see one fixed noise per data point.
    """

    name = "online-ot"

    def init_bank(self, gen: torch.Generator) -> None:
        self.bank = NoiseBank.draw(self.source, self.caches, self.n_train, gen)

    def pair(self, x1: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> Pairs:
        start = time.perf_counter()
        if self.bank is None:
            self.init_bank(gen)
        bank = self._ready(x1.device)
        slots = bank.slots(len(idx), gen)
        x0 = bank.get(slots, idx)
        perm, seconds, solver = self._solve(x0, x1)
        bank.put(slots, idx, perm)
        x0p = x0[perm]
        # with permutation epochs, the batch share reassigned averages to the share of the
        # bank reassigned per epoch (per cache visit with several caches)
        moved = float((perm != torch.arange(len(perm), device=perm.device)).float().mean())
        pairs = Pairs(x0p, x1, {
            "cost": pair_cost(x0p, x1), "cost_before": pair_cost(x0, x1),
            "cost_independent": independent_cost(x0, x1), "solver_seconds": seconds,
            "reassigned": moved, f"solver_{solver}": 1.0,
            "coupling_wait_seconds": time.perf_counter() - start,
        })
        return self._train_subset(pairs, gen)


class GlobalOT(_BankOT):
    """One exact assignment between the whole training set and ``caches`` x n noise vectors
    (an independent n x n assignment per cache), solved once before the first step; batches
    then look their pairs up. The upper bound every batch coupling aims at, for as long as it
    fits: the cost matrix is n x n doubles and the solve grows faster than n^2, so above
    ``max_points`` training points the coupling refuses rather than falls back.
    """

    name = "global-ot"

    def __init__(self, source: SourceFn, data: torch.Tensor, solver: str = "auto",
                 caches: int = 1, max_points: int = 10_000) -> None:
        n = data.shape[0]
        if n > max_points:
            raise ValueError(
                f"global-ot: {n} training points exceed coupling.global_max={max_points} (one "
                f"exact {n} x {n} assignment per cache: {n * n * 8 / 2**30:.1f} GiB of costs and "
                "a solve that grows faster than n^2). Lower data.n_train, or raise "
                "coupling.global_max if the machine can take it.")
        super().__init__(source, n, solver, 0, caches)
        self.data = data
        self.solve_seconds, self.solved_with = 0.0, ""

    def solve(self, gen: torch.Generator) -> None:
        """Draw the noise and assign every cache to the training set exactly."""
        bank = NoiseBank.draw(self.source, self.caches, self.n_train, gen)
        bank.to(self.data.device)
        x1 = self.data
        solver = self._solver_for(x1, self.n_train)
        start = time.perf_counter()
        for k in range(self.caches):
            slots = torch.full((self.n_train,), k, device=x1.device)
            idx = torch.arange(self.n_train, device=x1.device)
            perm, _ = ot_permutation(x1, bank.get(slots, idx), solver)
            bank.put(slots, idx, perm)
        self.solve_seconds, self.solved_with = time.perf_counter() - start, solver
        self.bank = bank

    def pair(self, x1: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> Pairs:
        start = time.perf_counter()
        solved_now = self.bank is None
        if solved_now:
            self.solve(gen)
        bank = self._ready(x1.device)
        x0 = bank.get(bank.slots(len(idx), gen), idx)
        pairs = Pairs(x0, x1, {
            "cost": pair_cost(x0, x1), "cost_independent": independent_cost(x0, x1),
            # the one global solve is charged to the step that ran it
            "solver_seconds": self.solve_seconds if solved_now else 0.0,
            **({f"solver_{self.solved_with}": 1.0} if solved_now else {}),
            "coupling_wait_seconds": time.perf_counter() - start,
        })
        return self._train_subset(pairs, gen)
