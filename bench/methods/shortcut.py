"""Shortcut models (Frans, Hafner, Levine, Abbeel; "One Step Diffusion via Shortcut Models",
ICLR 2025).

A network s(x_t, t, d) conditioned on the step size d. Same time convention as the paper and
this harness (noise at t = 0, data at t = 1). The loss has two parts (the paper's combined
objective, Sec. 3):

* flow matching at d = 0 on 3/4 of the batch: s(x_t, t, 0) -> x1 - x0;
* self-consistency on 1/4: one step of size 2d equals two steps of size d,
  s(x_t, t, 2d) -> sg[(s(x_t, t, d) + s(x'_{t+d}, t + d, d)) / 2] with
  x'_{t+d} = x_t + d s(x_t, t, d), for d = 2^-k (k = 1..7, so 2d runs from 1/64 to 1) and t on
  the grid of multiples of 2d with t + 2d <= 1. At the finest level (d = 1/128) the two half
  steps query d = 0, the flow-matching velocity, so every level is grounded.

Sampling with N steps uses d = 1/N: x <- x + d s(x, t, d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.couplings import Coupling
from bench.methods.base import (
    Batch,
    BuildContext,
    Method,
    SampleOut,
    expand_t,
    register_step_family,
)
from bench.seeding import Streams


class Shortcut(Method):
    #: share of the batch trained with the self-consistency target (paper: 1/4)
    frac_consistency = 0.25
    #: smallest step 1/2^max_log2 (paper: 1/128)
    max_log2 = 7

    def __init__(self, net: nn.Module, coupling: Coupling, steps: int) -> None:
        super().__init__()
        self.net, self.coupling, self.steps = net, coupling, steps

    def consistency_times(self, n: int, g: torch.Generator,
                          dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """d = 2^-k (k = 1..max_log2) and t on the grid of the big step, t in {0, 2d, 4d, ...}
        with t + 2d <= 1 (as the authors' code places t on multiples of the trained step)."""
        k = torch.randint(1, self.max_log2 + 1, (n,), generator=g, device=dev)
        d = torch.pow(2.0, -k.float())
        slots = (0.5 / d).round()  # admissible positions: t = j 2d, j < 1 / (2d)
        j = torch.floor(torch.rand(n, generator=g, device=dev) * slots)
        return j * 2 * d, d

    def loss(self, batch: Batch, gens: Streams) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = self.coupling.pair(batch.x1, batch.idx, gens["noise"])
        x0, x1 = pairs.x0, pairs.x1
        n, dev, g = x1.shape[0], x1.device, gens["time"]
        n_sc = int(round(n * self.frac_consistency))
        # flow-matching part, d = 0
        t_fm = torch.rand(n - n_sc, generator=g, device=dev)
        tb = expand_t(t_fm, x1[n_sc:])
        xt = (1 - tb) * x0[n_sc:] + tb * x1[n_sc:]
        pred_fm = self.net(xt, t_fm, torch.zeros_like(t_fm))
        loss_fm = F.mse_loss(pred_fm, x1[n_sc:] - x0[n_sc:], reduction="sum")
        t, d = self.consistency_times(n_sc, g, dev)
        tb = expand_t(t, x1[:n_sc])
        xt = (1 - tb) * x0[:n_sc] + tb * x1[:n_sc]
        # the finest level is grounded in flow matching: its half steps query d = 0
        d_in = torch.where(d <= 2.0 ** -self.max_log2, torch.zeros_like(d), d)
        with torch.no_grad():
            s1 = self.net(xt, t, d_in)
            x_mid = xt + expand_t(d, xt) * s1
            s2 = self.net(x_mid, t + d, d_in)
            target = (s1 + s2) / 2
        pred_sc = self.net(xt, t, 2 * d)
        loss_sc = F.mse_loss(pred_sc, target, reduction="sum")
        loss = (loss_fm + loss_sc) / x1.numel()
        return loss, {**pairs.stats,
                      "loss_fm": float(loss_fm.detach()) / max(1, pred_fm.numel()),
                      "loss_sc": float(loss_sc.detach()) / max(1, target.numel())}

    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        x = x0
        d = torch.full((x.shape[0],), 1.0 / self.steps, device=x.device)
        for i in range(self.steps):
            t = torch.full_like(d, i / self.steps)
            x = x + expand_t(d, x) * self.net(x, t, d)
        return SampleOut(x, nfe=self.steps)


def _build(ctx: BuildContext, steps: int) -> Method:
    ctx.require_linear_path("shortcut")
    return Shortcut(ctx.net(time_inputs=2), ctx.coupling("independent"), steps)


register_step_family("shortcut", (1, 2, 4), _build,
                     "Shortcut model (Frans et al., ICLR 2025): step-size-conditioned, "
                     "self-consistency target")
