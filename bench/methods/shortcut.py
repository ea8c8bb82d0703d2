"""Shortcut models (Frans, Hafner, Levine, Abbeel; "One Step Diffusion via Shortcut Models",
ICLR 2025), following the authors' code (kvfrans/shortcut-models: targets_shortcut.py, train.py).

A network s(x_t, t, L) conditioned on the step size d = 2^-L through its discrete level
L = log2(1/d). Same time convention as the reference and this harness (noise at t = 0, data
at t = 1). Each batch has two parts (the reference's defaults):

* flow matching on 7/8 of the batch: level L = 7 (d = 1/128, the finest), t on the grid of
  multiples of 1/128, target x1 - x0;
* bootstrap (self-consistency) targets on 1/8 (``bootstrap_every = 8``): levels L = 6 ... 0
  (big steps d = 1/64 ... 1) share those rows equally, the remainder at L = 0; t on the grid
  of multiples of d with t + d <= 1; the target is two half steps of the EMA teacher at level
  L + 1: v1 = s_ema(x_t, t, L + 1), x' = clip(x_t + d/2 v1, -4, 4),
  v2 = s_ema(x', t + d/2, L + 1), target = clip((v1 + v2) / 2, -4, 4). At L = 6 the half
  steps are flow-matching queries (L = 7), so every level is grounded.

The teacher is the trainer's EMA of the network (the reference's default ``bootstrap_ema =
1``), handed over with ``attach_teacher``; its forwards are counted in the training compute.
The level enters the network as L / 7, a discrete value in [0, 1] fed to the same sinusoidal
embedding as t (the reference embeds the integer level sinusoidally). Sampling with N steps
(N a power of two) uses level log2(N): x <- x + s(x, i/N, log2 N) / N.
"""

from __future__ import annotations

import math

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

#: the finest level: d = 1/128 (the reference's denoise_timesteps = 128)
MAX_LEVEL = 7
#: one row in this many is a bootstrap target (the reference's bootstrap_every)
BOOTSTRAP_EVERY = 8
#: the reference clips the intermediate state and the bootstrap target to this range
CLIP = 4.0


class Shortcut(Method):
    wants_ema_teacher = True

    def __init__(self, net: nn.Module, coupling: Coupling, steps: int) -> None:
        super().__init__()
        if 2 ** round(math.log2(steps)) != steps or steps > 2 ** MAX_LEVEL:
            raise ValueError(f"shortcut samples with a power-of-two number of steps <= "
                             f"{2 ** MAX_LEVEL}, got {steps}")
        self.net, self.coupling, self.steps = net, coupling, steps
        self._teacher: list[nn.Module] = []  # a list: the EMA copy is no submodule

    def attach_teacher(self, teacher: nn.Module) -> None:
        self._teacher = [teacher]

    def level_input(self, level: torch.Tensor) -> torch.Tensor:
        """The discrete level L = log2(1/d) as the network's second time input."""
        return level.float() / MAX_LEVEL

    def bootstrap_levels(self, n: int, device: torch.device) -> torch.Tensor:
        """Levels MAX_LEVEL - 1 ... 0 sharing ``n`` rows equally, the remainder at level 0."""
        each = n // MAX_LEVEL
        levels = torch.arange(MAX_LEVEL - 1, -1, -1, device=device).repeat_interleave(each)
        return torch.cat([levels, torch.zeros(n - len(levels), dtype=torch.long,
                                              device=device)])

    def grid_times(self, level: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """t uniform on the multiples of d = 2^-level in [0, 1 - d]."""
        slots = torch.pow(2.0, level.float())
        return torch.floor(torch.rand(len(level), generator=gen, device=gen.device)
                           .to(slots.device) * slots) / slots

    def loss(self, batch: Batch, gens: Streams) -> tuple[torch.Tensor, dict[str, float]]:
        if not self._teacher:
            raise RuntimeError("shortcut models need the trainer's EMA teacher")
        teacher = self._teacher[0]
        pairs = self.coupling.pair(batch.x1, batch.idx, gens["noise"])
        x0, x1 = pairs.x0, pairs.x1
        n, dev, g = x1.shape[0], x1.device, gens["time"]
        n_b = n // BOOTSTRAP_EVERY
        # bootstrap rows
        level = self.bootstrap_levels(n_b, dev)
        t = self.grid_times(level, g)
        d = torch.pow(2.0, -level.float())
        tb = expand_t(t, x1[:n_b])
        xt = (1 - tb) * x0[:n_b] + tb * x1[:n_b]
        with torch.no_grad():
            half = self.level_input(level + 1)
            v1 = teacher(xt, t, half)
            x_mid = (xt + expand_t(d / 2, xt) * v1).clamp(-CLIP, CLIP)
            v2 = teacher(x_mid, t + d / 2, half)
            target_b = ((v1 + v2) / 2).clamp(-CLIP, CLIP)
        # flow-matching rows at the finest level
        fine = torch.full((n - n_b,), MAX_LEVEL, dtype=torch.long, device=dev)
        t_fm = self.grid_times(fine, g)
        tb = expand_t(t_fm, x1[n_b:])
        xt_fm = (1 - tb) * x0[n_b:] + tb * x1[n_b:]
        pred = self.net(torch.cat([xt, xt_fm]), torch.cat([t, t_fm]),
                        self.level_input(torch.cat([level, fine])))
        target = torch.cat([target_b, x1[n_b:] - x0[n_b:]])
        loss = F.mse_loss(pred, target)
        with torch.no_grad():
            sq = (pred - target).pow(2).flatten(1).mean(1)
        return loss, {**pairs.stats, "loss_bootstrap": float(sq[:n_b].mean()),
                      "loss_fm": float(sq[n_b:].mean())}

    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        x = x0
        level = torch.full((x.shape[0],), round(math.log2(self.steps)), device=x.device)
        for i in range(self.steps):
            t = torch.full((x.shape[0],), i / self.steps, device=x.device)
            x = x + self.net(x, t, self.level_input(level)) / self.steps
        return SampleOut(x, nfe=self.steps)


def _build(ctx: BuildContext, steps: int) -> Method:
    ctx.require_linear_path("shortcut")
    return Shortcut(ctx.net(time_inputs=2), ctx.coupling("independent"), steps)


def _check(steps: int) -> str | None:
    """``shortcut@step{N}``: the step sizes it was trained on (powers of two up to 2^7)."""
    if 2 ** round(math.log2(steps)) != steps or steps > 2 ** MAX_LEVEL:
        return f"shortcut samples with a power-of-two number of steps <= {2 ** MAX_LEVEL}"
    return None


register_step_family("shortcut", (1, 2, 4), _build,
                     "Shortcut model (Frans et al., ICLR 2025): step-size-conditioned, "
                     "EMA-teacher bootstrap targets", check=_check)
