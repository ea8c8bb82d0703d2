"""2-rectified flow (Liu, Gong, Liu; "Flow Straight and Fast", ICLR 2023, Sec. 2.3 "reflow").

A trained flow-matching teacher (the harness's ``fm`` recipe) maps fresh noise z to
x1' = ODE(z); flow matching is then trained on these FIXED pairs (z, x1'), the rectified
coupling, and sampled with 1 or 2 Euler steps. As the reference code does
(gnobitab/RectifiedFlow, ImageGeneration/run_lib_reflow.py):

* the pairs come from an accurate solver: the teacher's EMA weights with adaptive dopri5 at
  atol = rtol = 1e-5 (the reference uses scipy's RK45 at 1e-5), NFE counted.
  ``reflow.pair_tol`` sets another tolerance; scripts/reflow_pair_tolerance.py measures what
  one changes in a trained teacher's pairs. On mnist5k (reports/reflow-pairs-mnist5k.md,
  against 1e-6 at 614 NFE per pair) 1e-5 costs 212 NFE, its median pair is 0.42 grey levels
  off and 1 pair in 500 moves by more than 0.1 RMS (13 levels); 1e-4 costs 92 NFE, 0.87
  levels and 4 in 500. The suites keep the reference's 1e-5;
* there are many more pairs than training points: ``reflow.pairs_per_point`` (default 4;
  the reference suggests at least 1M pairs for CIFAR-10's 50,000 images, the paper 4M), each
  batch drawn uniformly from them;
* the student is not trained from scratch: it starts from the teacher's (EMA) weights and
  fine-tunes for the same number of steps as every other method.

The teacher checkpoint is the one ``fm-*`` runs use (trained once). The record counts it
all: ``train_seconds`` adds the teacher's training and the pair generation to the student's
(``train_breakdown`` lists the three), and ``train_compute`` holds the teacher's steps and
FLOPs, the pairs' counted NFE and FLOPs and the student's.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.checkpoints import load_state
from bench.compute import forward_flops
from bench.config import HASHED_IF_SET, ConfigError
from bench.couplings import Coupling, Pairs, SourceFn, independent_cost, pair_cost
from bench.distributed import is_main
from bench.io import atomic_torch_save
from bench.methods.base import BuildContext, Method, register_step_family
from bench.methods.fm import DOPRI5_TOL, FlowMatching
from bench.sampling import generate
from bench.seeding import Streams

TEACHER = "fm-dopri5"


class FixedPairs(Coupling):
    """Pairs generated once, (z_i, teacher(z_i)); each training batch draws its rows
    uniformly from all pairs (there are more pairs than training points)."""

    name = "fixed-pairs"
    has_bank = True

    def __init__(self, source: SourceFn) -> None:
        super().__init__(source)
        self.x0: torch.Tensor | None = None
        self.x1: torch.Tensor | None = None

    def pair(self, x1: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> Pairs:
        if self.x0 is None or self.x1 is None:
            raise RuntimeError("reflow pairs were not generated (prepare() was not called)")
        if self.x0.device != x1.device:
            self.x0, self.x1 = self.x0.to(x1.device), self.x1.to(x1.device)
        rows = torch.randint(0, self.x0.shape[0], (len(idx),), generator=gen,
                             device=gen.device).to(self.x0.device)
        a, b = self.x0[rows], self.x1[rows]
        return Pairs(a, b, {"cost": pair_cost(a, b), "cost_independent": independent_cost(a, b),
                            "solver_seconds": 0.0})

    def probe_targets(self, probes: torch.Tensor, data: torch.Tensor,
                      gen: torch.Generator) -> torch.Tensor:
        """Fixed pairs: the first K pairs' targets never change (a perfectly consistent plan)."""
        assert self.x1 is not None
        return self.x1[: probes.shape[0]].to(data.device)

    def bank_noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` of the noise vectors the student was trained on (without replacement)."""
        assert self.x0 is not None
        rows = torch.randperm(self.x0.shape[0], generator=gen, device=gen.device)[:n]
        return self.x0[rows.to(self.x0.device)].to(gen.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.x0 is None or self.x1 is None:
            return {}
        return {"x0": self.x0.detach().cpu(), "x1": self.x1.detach().cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.x0, self.x1 = state.get("x0"), state.get("x1")


class Reflow(FlowMatching):
    """Flow matching on teacher pairs, fine-tuned from the teacher's weights."""

    coupling: FixedPairs

    def __init__(self, *args, pairs_per_point: float = 4.0, pair_batch: int = 500,
                 pair_tol: float = DOPRI5_TOL, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pairs_per_point, self.pair_batch = pairs_per_point, pair_batch
        self.pair_tol = pair_tol

    def prepare(self, teacher: Method, n_train: int, gens: Streams,
                partial: Path | None = None) -> dict[str, float]:
        """Generate the pairs with ``teacher`` (``reflow.pair_batch`` at a time: an adaptive
        solver's steps depend on its batch) and start from its weights; returns the seconds and
        the counted cost of the pairs (number, NFE per pair, FLOPs).

        With ``partial`` the pairs made so far are saved there after every batch (write, then
        rename), and a generation that was stopped resumes from them: on images with dopri5
        it takes longer than the student's training. The saved batches are used only for the
        same noise and the same teacher weights; the result equals an uninterrupted one."""
        start = time.perf_counter()
        device = next(teacher.parameters()).device
        n_pairs = max(1, round(self.pairs_per_point * n_train))
        z = self.coupling.source(n_pairs, gens["coupling"]).to(device)
        key = {"noise": _digest(z), "teacher": _digest(*teacher.net.state_dict().values()),
               "pair_batch": self.pair_batch, "pair_tol": self.pair_tol}
        done = load_state(partial) if partial is not None and partial.exists() else {}
        if done.get("key") != key:
            done = {}
        chunks = list(done.get("x1", torch.empty(0)).to(device).split(self.pair_batch))
        calls, before = float(done.get("calls", 0.0)), float(done.get("seconds", 0.0))
        # the teacher is an adaptive FM sampler (fm-dopri5): the pairs use its solver at
        # reflow.pair_tol, and it is handed back at its own tolerance
        own_tol, teacher.tol = teacher.tol, self.pair_tol
        try:
            for i in range(sum(len(c) for c in chunks), n_pairs, self.pair_batch):
                x, nfe = generate(teacher, z[i : i + self.pair_batch], self.pair_batch)
                chunks.append(x)
                calls += nfe * len(x)
                if partial is not None and is_main():
                    atomic_torch_save(partial, {
                        "key": key, "x1": torch.cat(chunks).cpu(), "calls": calls,
                        "seconds": before + time.perf_counter() - start})
        finally:
            teacher.tol = own_tol
        x1 = torch.cat(chunks)
        self.coupling.x0, self.coupling.x1 = z, x1
        probe = z[: min(n_pairs, self.pair_batch)]
        per_forward = forward_flops(teacher.net, probe, torch.zeros(len(probe), device=device))
        self.net.load_state_dict(teacher.net.state_dict())  # fine-tune, not from scratch
        if partial is not None and is_main():
            partial.unlink(missing_ok=True)
        nfe = calls / n_pairs
        return {"pairs_seconds": before + time.perf_counter() - start, "pairs": float(n_pairs),
                "pairs_nfe": nfe, "pairs_flops": per_forward * nfe * n_pairs}


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ReflowConfig:
    """The ``reflow`` config section: how the teacher's pairs are generated (part of the
    recipe: they change the trained weights)."""

    #: teacher pairs per training point. The reference generates far more pairs than images
    #: (gnobitab/RectifiedFlow's README: at least 1M pairs for CIFAR-10's 50,000 images, 20x;
    #: the paper 4M, 80x); 4x keeps the pair generation within CPU minutes here.
    pairs_per_point: float = 4.0
    #: pairs generated per batch (dopri5 adapts its steps to the whole batch, so the batch is
    #: part of the recipe)
    pair_batch: int = 500
    #: dopri5's atol = rtol for the pairs. The default is the reference's 1e-5 (scipy RK45 in
    #: gnobitab/RectifiedFlow). A looser one costs fewer NFE per pair and moves the pairs:
    #: scripts/reflow_pair_tolerance.py measures how much (reports/reflow-pairs-mnist5k.md).
    #: Added after runs were recorded: hashed only when set.
    pair_tol: float = field(default=DOPRI5_TOL, metadata=HASHED_IF_SET)

    def check(self) -> None:
        if self.pairs_per_point <= 0 or self.pair_batch < 1 or not 0 < self.pair_tol < 1:
            raise ConfigError("reflow.pairs_per_point must be > 0, reflow.pair_batch >= 1 "
                              "and reflow.pair_tol in (0, 1)")


def _build(ctx: BuildContext, steps: int) -> Method:
    rc = ctx.cfg.section("reflow")
    return Reflow(ctx.net(time_inputs=1), FixedPairs(ctx.data.source), ctx.data.shape,
                  steps=steps, path=ctx.cfg.path, pairs_per_point=rc.pairs_per_point,
                  pair_batch=rc.pair_batch, pair_tol=rc.pair_tol)


register_step_family("reflow", (1, 2), _build,
                     f"2-rectified flow (Liu et al., ICLR 2023): FM fine-tuned from the teacher "
                     f"on pairs from {TEACHER}, Euler sampling", teacher=TEACHER,
                     config={"reflow": ReflowConfig})
