"""The coupling strategies: independent pairs, minibatch OT, online OT (a noise bank refined
batch by batch) and global OT (one assignment of the whole training set)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import torch

from bench.couplings.bank import NoiseBank
from bench.couplings.base import Coupling, Pairs, SourceFn, independent_cost, pair_cost
from bench.couplings.solvers import ot_permutation, pick_solver


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
    can_prefetch = True

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


class _BankOT(_ExactOT):
    """An exact-OT coupling whose pairs live in a ``NoiseBank`` of ``caches`` noise vectors
    per training point; each visit of a training point uses one cache drawn at random."""

    has_bank = True

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

    def stats(self, data: torch.Tensor) -> dict[str, float]:
        """The mean cost of the whole bank (online OT: how it falls over training)."""
        return {"bank_cost": self.bank_cost(data)}

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
