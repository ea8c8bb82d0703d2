"""Easy consistency tuning, ECT (Geng, Pokle, Luo, Lin, Kolter; "Consistency Models Made Easy",
ICLR 2025), following the reference code (locuslab/ect: training/loss.py ``ECMLoss``,
ct_train.py's defaults, run_ecm.sh).

A consistency model f(x, sigma) maps any point of a noise trajectory to the trajectory's data
end, f(x, 0) = x. ECT does not train it from scratch: it starts from a trained diffusion model
(here the harness's flow-matching teacher, the ``fm`` checkpoint that reflow uses too) and tunes
it with consistency training, whose two points share one noise vector:

    sigma_t ~ logNormal(P_mean, P_std)
    sigma_r = max(0, sigma_t * (1 - q^-(stage+1) * n(sigma_t)))
    n(sigma) = 1 + k * sigmoid(-b * sigma)               (the "sigmoid" mapping)
    loss = d(f(y + sigma_t eps, sigma_t), stopgrad f(y + sigma_r eps, sigma_r))
           / (sigma_t - sigma_r)
    d(a, b) = sqrt(|a - b|^2 + c^2) - c   (pseudo-Huber; c = 0 is the reference's default)

with the target y itself where sigma_r = 0. ``stage`` grows during training, shrinking
sigma_t - sigma_r (r -> t): the first stage is pure denoising towards the data, the last ones
approach the continuous-time consistency condition. The reference grows it every 25,000 of its
200,000 iterations (--double 250 ticks of 12.8 kimg at batch 128: 8 stages); here the stages
split ``train.steps`` the same way (``ect.stages`` = 8).

In this harness's time convention (noise x0 at t = 0, data x1 at t = 1, x_t = (1 - t) x0 + t
x1) the noise level sigma of the variance-exploding form y + sigma eps is sigma = (1 - t) / t:
x_t / t = x1 + ((1 - t) / t) x0. The consistency function is the teacher's one Euler step to
the data end,

    f(x_t, t) = x_t + (1 - t) v(x_t, t),      f(x, 1) = x exactly,

so tuning starts from flow matching's one-step sampler (as ECT's starts from EDM's denoiser
D = c_skip x + c_out F). Sampling: one step from pure noise, x1 = f(x0, 0) (the reference
starts at sigma_max = 80, t = 0.012).

Kept from the reference: the loss, the weighting, the log-normal (-1.1, 2.0), q = 2, k = 8,
b = 1, c = 0, the 8 stages, the shared noise of the two points, the teacher's weights as the
start. Not kept (as for every method here, the suite's training settings apply): RAdam at
lr 1e-4, dropout 0.2, EMA 0.9993-0.9999 and 200k iterations; the network is the suite's.
Compute is counted as for every method: two network calls per step (one without gradient)
and, through ``built on``, the teacher's whole training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.config import ConfigError
from bench.couplings import Coupling
from bench.methods.base import Batch, BuildContext, Method, SampleOut, register_step_family
from bench.methods.reflow import TEACHER
from bench.seeding import Streams


@dataclass(frozen=True)
class ECTConfig:
    """The ``ect`` config section (locuslab/ect ct_train.py defaults; part of the recipe)."""

    #: log-normal of sigma_t (--mean, --std)
    p_mean: float = -1.1
    p_std: float = 2.0
    #: decay factor of sigma_t - sigma_r per stage (-q)
    q: float = 2.0
    #: the sigmoid mapping n(sigma) = 1 + k sigmoid(-b sigma) (-k, -b)
    k: float = 8.0
    b: float = 1.0
    #: pseudo-Huber constant (-c; 0: the square root of the squared error)
    c: float = 0.0
    #: stages over train.steps (the reference: 200k iterations, a new stage every 25k)
    stages: int = 8

    def check(self) -> None:
        if self.p_std <= 0 or self.q <= 1 or self.c < 0 or self.stages < 1 or self.b < 0:
            raise ConfigError("ect: p_std must be > 0, q > 1, c >= 0, b >= 0 and stages >= 1")


class ECT(Method):
    """A consistency model f(x_t, t) = x_t + (1 - t) v(x_t, t) tuned from the fm teacher."""

    def __init__(self, net: torch.nn.Module, coupling: Coupling, total_steps: int,
                 cfg: ECTConfig | None = None) -> None:
        super().__init__()
        self.net, self.coupling = net, coupling
        self.cfg = cfg or ECTConfig()
        self.total_steps = max(1, total_steps)
        self.steps = 1
        #: training steps taken (saved with the checkpoint: the stage survives a resume)
        self.calls = 0

    def stage(self) -> int:
        per_stage = self.total_steps / self.cfg.stages
        return min(self.cfg.stages - 1, int(self.calls // per_stage))

    def consistency(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 1)
        return x + (1 - t).view(shape) * self.net(x, t)

    def sigmas(self, n: int, gen: torch.Generator, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        sigma_t = (torch.randn(n, generator=gen, device=device) * c.p_std + c.p_mean).exp()
        adj = 1 + c.k * torch.sigmoid(-c.b * sigma_t)
        ratio = 1 - adj / c.q ** (self.stage() + 1)
        return sigma_t, (sigma_t * ratio).clamp(min=0)

    def loss(self, batch: Batch, gens: Streams) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = self.coupling.pair(batch.x1, batch.idx, gens["noise"])
        x0, x1 = pairs.x0, pairs.x1
        sigma_t, sigma_r = self.sigmas(x1.shape[0], gens["time"], x1.device)
        t, r = 1 / (1 + sigma_t), 1 / (1 + sigma_r)
        shape = (-1,) + (1,) * (x1.dim() - 1)
        pred = self.consistency((1 - t).view(shape) * x0 + t.view(shape) * x1, t)
        with torch.no_grad():
            target = x1.clone()
            noisy = sigma_r > 0
            if noisy.any():
                rr = r[noisy].view(shape)
                target[noisy] = self.consistency((1 - rr) * x0[noisy] + rr * x1[noisy],
                                                 r[noisy])
        sq = (pred - target).pow(2).flatten(1).sum(1)
        dist = (sq + self.cfg.c ** 2).sqrt() - self.cfg.c if self.cfg.c > 0 else sq.sqrt()
        loss = (dist / (sigma_t - sigma_r)).mean()
        self.calls += 1
        return loss, {**pairs.stats, "ect_stage": float(self.stage())}

    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        return SampleOut(self.consistency(x0, torch.zeros(x0.shape[0], device=x0.device)), nfe=1)

    def prepare(self, teacher: Method, n_train: int, gens: Streams,
                partial: Path | None = None) -> dict[str, float]:
        """Start from the teacher's (EMA) weights; no pairs are generated."""
        start = time.perf_counter()
        self.net.load_state_dict(teacher.net.state_dict())
        return {"pairs_seconds": time.perf_counter() - start, "pairs": 0.0, "pairs_nfe": 0.0,
                "pairs_flops": 0.0}

    def extra_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {**super().extra_state_dict(), "ect": {"calls": torch.tensor(self.calls)}}

    def load_extra_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        super().load_extra_state_dict(state)
        self.calls = int(state.get("ect", {}).get("calls", torch.tensor(0)))


def _build(ctx: BuildContext, steps: int) -> Method:
    # the fm teacher's network (same time embedding), so its weights load as they are
    return ECT(ctx.net(time_inputs=1), ctx.coupling("independent"), ctx.cfg.train.steps,
               ctx.cfg.section("ect"))


register_step_family("ect", (1,), _build,
                     f"easy consistency tuning (Geng et al., ICLR 2025): consistency training "
                     f"tuned from the {TEACHER} teacher's weights, one step",
                     check=lambda n: None if n == 1 else "ect samples with one step",
                     teacher=TEACHER, config={"ect": ECTConfig})
