"""MeanFlow (Geng, Deng, Bai, Kolter, He; "Mean Flows for One-step Generative Modeling",
NeurIPS 2025), following the official PyTorch code (Gsunshine/py-meanflow, meanflow/).

The network learns the average velocity over an interval. In this harness's time convention
(noise x0 at t = 0, data x1 at t = 1, x_t = (1 - t) x0 + t x1, v = x1 - x0; the reference puts
data at 0 and noise at 1) the average velocity from s to t (s <= t) along the ODE trajectory
through x_s is

    u(x_s, s, t) = 1 / (t - s) * integral_s^t v(x_tau, tau) dtau,   so x_t = x_s + (t - s) u.

Differentiating (t - s) u(x_s, s, t) = integral_s^t v in s gives the MeanFlow identity (paper
Eq. 6, time-reversed to this convention):

    u(x_s, s, t) = v(x_s, s) + (t - s) * (v . d/dx u + d/ds u),

whose total derivative is ONE Jacobian-vector product of u_theta along the tangent (v, 1, 0)
in (x, s, t) (``torch.func.jvp``). The target is stop-gradient; the loss per sample is the
squared error summed over dimensions, weighted by w = 1 / (err + c)^p (adaptive weight).

Recipes (``meanflow.recipe``), from the reference configurations:

* ``pixel`` (default; py-meanflow's cifar10_v0.sh, "the original configuration used in the
  paper"): s != t for 75% of the batch (--ratio 0.75), both times logit-normal(2, 2) (the
  reference's (-2, 2), mirrored to this time direction), s = min and t = max of the two
  draws, then t = s for the other 25% (v0); p = 0.75, c = 1e-3.
* ``pixel-v1`` (py-meanflow's later default ``--tr_sampler v1``, cifar10_v1.sh, which its
  README calls "an improved configuration" for CIFAR-10 at 800k iterations): s and t from
  their own logit-normals, s ~ (0.6, 1.6) and t ~ (4, 1.6) (mirrored from t ~ (-0.6, 1.6),
  r ~ (-4, 1.6)); t = s for 25% of the batch, then t = max(s, t) (v1); p = 0.75, c = 1e-3.
  It was tried as the default and measured worse at this harness's budgets: on 2-D
  (configs/peers2d.yaml, 3 seeds, W2, v1 - v0 paired) +0.045 [0.034, 0.056] on moons and
  -0.039 [-0.136, 0.057] on checkerboard at one step, +0.13 and +0.18 at two steps (likely
  because its t sits near the data end: t < 0.6 in about 1% of draws against 4.5% for v0, so
  the two-step sampler's first interval, 0 to 0.5, is rarely trained). The paper's recipe,
  the default before that test, stays the default.
* ``latent`` (the ImageNet latent recipe of the JAX code, configs/default.py): as ``pixel``
  with 25% s != t, logit-normal(0.4, 1) (mirrored from -0.4), p = 1, c = 0.01.

The pixel recipes are used on 2-D data too: like pixels, 2-D points are raw data, not a
learned latent space. A collapsed pair keeps the noisier time s, as the reference's r = t
keeps its noisier t.

The network is conditioned on (s, t - s) as the official code's (t, t - r)
(``meanflow.conditioning: interval``; ``endpoints`` gives (s, t)); the JVP then runs along (v,
1, -1) in (x, s, t - s). The JVP and the loss run in float32 with autocast off, as the
reference does (it has no half-precision path). The UNet embeds the raw times (``TIME_SCALE`` =
1), as the reference's network does (its positional embedding takes t and t - r in [0, 1],
frequencies at most 1), not DDPM's 1000 t that the UNet uses for the other methods: the
target's d/ds u goes through the embedding, and at 1000 t its highest frequency multiplies that
derivative by up to 1000. Measured on mnist5k (UNet-s, batch 32, 200 steps): the per-pixel MSE
to the target stays near 0.8 with raw times and swings between 10^2 and 10^4 with 1000 t. The
MLP's time features are fixed multiples of pi on the raw t either way.

One step: x1 = x0 + u(x0, 0, 1); two steps through t = 0.5 (the JAX code's sampling grid
[1, 0.5, 0]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.config import ConfigError
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
from bench.vocab import choices


@dataclass(frozen=True)
class Recipe:
    #: share of the batch with s != t
    frac_interval: float
    #: logit-normal (mean, std) of t, in this harness's time direction; for the v0 samplers
    #: (``s_mean`` None) of both draws, which are then sorted into s <= t
    t_mean: float
    t_std: float
    #: adaptive loss weight w = 1 / (err + c)^p
    p: float
    c: float
    #: the v1 sampler: s's own logit-normal (mean, std); t = max(s, t) after the collapse
    s_mean: float | None = None
    s_std: float | None = None


#: the UNet's multiplier on s and t - s before its sinusoidal embedding (the reference's raw t)
TIME_SCALE = 1.0

RECIPES = {"pixel": Recipe(0.75, 2.0, 2.0, 0.75, 1e-3),
           "pixel-v1": Recipe(0.75, 4.0, 1.6, 0.75, 1e-3, s_mean=0.6, s_std=1.6),
           "latent": Recipe(0.25, 0.4, 1.0, 1.0, 1e-2)}


class MeanFlow(Method):
    def __init__(self, net: nn.Module, coupling: Coupling, steps: int,
                 recipe: str = "pixel", conditioning: str = "interval") -> None:
        super().__init__()
        self.net, self.coupling, self.steps = net, coupling, steps
        self.recipe, self.interval = RECIPES[recipe], conditioning == "interval"

    def times(self, n: int, gen: torch.Generator, device: torch.device):
        r = self.recipe
        if r.s_mean is None:  # v0: two exchangeable draws, sorted, then the collapse
            z = torch.randn(2, n, generator=gen, device=device) * r.t_std + r.t_mean
            a, b = torch.sigmoid(z)
            s, t = torch.minimum(a, b), torch.maximum(a, b)
            same = torch.rand(n, generator=gen, device=device) >= r.frac_interval
            # collapse onto the evaluation point's time s (the noisier end, as the reference's
            # r = t keeps its noisier t)
            return s, torch.where(same, s, t)
        # v1: s and t from their own laws, the collapse, then t >= s
        s = torch.sigmoid(torch.randn(n, generator=gen, device=device) * r.s_std + r.s_mean)
        t = torch.sigmoid(torch.randn(n, generator=gen, device=device) * r.t_std + r.t_mean)
        same = torch.rand(n, generator=gen, device=device) >= r.frac_interval
        return s, torch.maximum(s, torch.where(same, s, t))

    def u(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """u_theta(x, s, t) through the configured conditioning."""
        return self.net(x, s, t - s) if self.interval else self.net(x, s, t)

    def prediction_and_target(self, xs: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                              v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u_theta(x_s, s, t) and sg[v + (t - s) (v . d/dx u + d/ds u)] from one JVP."""
        if self.interval:  # inputs (x, s, h = t - s): d/ds moves h by -1
            fn = lambda x, s_, h: self.net(x, s_, h)  # noqa: E731
            primals, tangents = (xs, s, t - s), (v, torch.ones_like(s), -torch.ones_like(t))
        else:
            fn = lambda x, s_, t_: self.net(x, s_, t_)  # noqa: E731
            primals, tangents = (xs, s, t), (v, torch.ones_like(s), torch.zeros_like(t))
        u, du_ds = torch.func.jvp(fn, primals, tangents)
        return u, (v + expand_t(t - s, v) * du_ds).detach()

    def loss(self, batch: Batch, gens: Streams) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = self.coupling.pair(batch.x1, batch.idx, gens["noise"])
        x0, x1 = pairs.x0.float(), pairs.x1.float()
        s, t = self.times(x1.shape[0], gens["time"], x1.device)
        sb = expand_t(s, x1)
        xs = (1 - sb) * x0 + sb * x1
        # the JVP and the loss in float32 even under bf16 autocast (the reference has no
        # half-precision path; a JVP in bf16 loses the target's precision)
        with torch.autocast(device_type=x1.device.type, enabled=False):
            u, target = self.prediction_and_target(xs, s, t, x1 - x0)
            err = (u.float() - target.float()).flatten(1).pow(2).sum(1)
            w = (err.detach() + self.recipe.c).pow(-self.recipe.p)
            loss = (w * err).mean()
        return loss, {**pairs.stats, "mse": float(err.detach().mean()) / x1[0].numel()}

    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        x = x0
        grid = torch.linspace(0, 1, self.steps + 1, device=x0.device)
        for i in range(self.steps):
            s = grid[i].expand(x.shape[0])
            t = grid[i + 1].expand(x.shape[0])
            x = x + expand_t(t - s, x) * self.u(x, s, t)
        return SampleOut(x, nfe=self.steps)


#: MeanFlow's (r, t) recipes and how its network sees the interval
MEANFLOW_RECIPES = ("pixel", "pixel-v1", "latent")
MEANFLOW_CONDITIONING = ("interval", "endpoints")


@dataclass(frozen=True)
class MeanFlowConfig:
    """The ``meanflow`` config section."""

    #: ``pixel``: the paper's CIFAR-10 recipe (75% s != t, both times logit-normal(2, 2) in
    #: this harness's time direction, sorted; power 0.75); ``pixel-v1``: py-meanflow's later
    #: default (s and t from logit-normal(0.6, 1.6) and (4, 1.6)); ``latent``: the ImageNet
    #: latent recipe (25% s != t, logit-normal(0.4, 1), power 1)
    recipe: str = "pixel"
    #: ``interval``: the network gets (s, t - s), as the official code; ``endpoints``: (s, t)
    conditioning: str = "interval"

    def check(self) -> None:
        for key, value, allowed in (("recipe", self.recipe, MEANFLOW_RECIPES),
                                    ("conditioning", self.conditioning,
                                     MEANFLOW_CONDITIONING)):
            if value not in allowed:
                raise ConfigError(f"meanflow.{key}: unknown value {value!r}; choices: "
                                  f"{choices(allowed)}")


def _build(ctx: BuildContext, steps: int) -> Method:
    ctx.require_linear_path("meanflow")
    mf = ctx.cfg.section("meanflow")
    return MeanFlow(ctx.net(time_inputs=2, time_scale=TIME_SCALE), ctx.coupling("independent"),
                    steps, recipe=mf.recipe, conditioning=mf.conditioning)


register_step_family("meanflow", (1, 2), _build,
                     "MeanFlow (Geng et al., NeurIPS 2025): average velocity u(x,s,t) via the "
                     "JVP identity", config={"meanflow": MeanFlowConfig})
