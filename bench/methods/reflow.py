"""2-rectified flow (Liu, Gong, Liu; "Flow Straight and Fast", ICLR 2023, Sec. 2.3 "reflow").

A trained flow-matching teacher (the harness's ``fm`` recipe, sampled with 100 Euler steps)
maps fresh noise z to x1' = ODE(z); flow matching is then trained on these FIXED pairs
(z, x1') — the rectified coupling — with the same network and budget, and sampled with 1 or 2
Euler steps. The teacher checkpoint is the one ``fm-euler*`` runs use (trained once); the
record's ``train_seconds`` adds the teacher's training time and the pair generation to the
student's, and ``train_breakdown`` lists the three.
"""

from __future__ import annotations

import time

import torch

from bench.couplings import Coupling, Pairs, SourceFn, independent_cost, pair_cost
from bench.methods.base import BuildContext, Method, register_step_family
from bench.methods.fm import FlowMatching
from bench.sampling import generate
from bench.seeding import Streams

TEACHER = "fm-euler100"


class FixedPairs(Coupling):
    """Pairs generated once (z_i, teacher(z_i)); batch row i uses pair ``idx[i]``."""

    name = "fixed-pairs"

    def __init__(self, source: SourceFn) -> None:
        super().__init__(source)
        self.x0: torch.Tensor | None = None
        self.x1: torch.Tensor | None = None

    def pair(self, x1: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> Pairs:
        if self.x0 is None or self.x1 is None:
            raise RuntimeError("reflow pairs were not generated (prepare() was not called)")
        if self.x0.device != x1.device:
            self.x0, self.x1 = self.x0.to(x1.device), self.x1.to(x1.device)
        a, b = self.x0[idx], self.x1[idx]
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
        return self.x0[rows.to(self.x0.device)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.x0 is None or self.x1 is None:
            return {}
        return {"x0": self.x0.detach().cpu(), "x1": self.x1.detach().cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.x0, self.x1 = state.get("x0"), state.get("x1")


class Reflow(FlowMatching):
    """Flow matching on teacher pairs; ``prepare`` generates one pair per training point."""

    coupling: FixedPairs

    def prepare(self, teacher: Method, n_pairs: int, gens: Streams,
                batch_size: int) -> dict[str, float]:
        start = time.perf_counter()
        device = next(teacher.parameters()).device
        z = self.coupling.source(n_pairs, gens["coupling"]).to(device)
        x1, _ = generate(teacher, z, batch_size)
        self.coupling.x0, self.coupling.x1 = z, x1
        return {"pairs_seconds": time.perf_counter() - start}


def _build(ctx: BuildContext, steps: int) -> Method:
    return Reflow(ctx.net(time_inputs=1), FixedPairs(ctx.data.source), ctx.data.shape,
                  steps=steps, path=ctx.cfg.path)


register_step_family("reflow", (1, 2), _build,
                     f"2-rectified flow (Liu et al., ICLR 2023): FM on pairs from the {TEACHER} "
                     "teacher, Euler sampling", teacher=TEACHER)
