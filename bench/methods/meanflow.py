"""MeanFlow (Geng, Deng, Bai, Kolter, He; "Mean Flows for One-step Generative Modeling",
NeurIPS 2025).

The network learns the average velocity over an interval. In this harness's time convention
(noise x0 at t = 0, data x1 at t = 1, x_t = (1 - t) x0 + t x1, v = x1 - x0) the average
velocity from s to t (s <= t) along the ODE trajectory through x_s is

    u(x_s, s, t) = 1 / (t - s) * integral_s^t v(x_tau, tau) dtau,   so x_t = x_s + (t - s) u.

Differentiating (t - s) u(x_s, s, t) = integral_s^t v in s gives the MeanFlow identity (paper
Eq. 6, time-reversed to this convention):

    u(x_s, s, t) = v(x_s, s) + (t - s) * (v . d/dx u + d/ds u),

whose total derivative is ONE Jacobian-vector product of u_theta along the tangent
(v, 1, 0) in (x, s, t) (``torch.func.jvp``). The target is stop-gradient; the loss uses the
paper's adaptive weight w = 1 / (|err|^2 + c)^p with p = 1, c = 1e-3. (s, t) come from a
logit-normal(0.4, 1) pair (the paper's lognorm(-0.4, 1), mirrored to this convention), and
t = s for 75 % of the batch (the paper's 25 % r != t, Table 1a), where the target reduces to
flow matching at the evaluation point. One step: x1 = x0 + u(x0, 0, 1); two steps through t = 0.5.
"""

from __future__ import annotations

import torch
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


class MeanFlow(Method):
    #: share of the batch with s != t (paper: 25 %)
    frac_interval = 0.25
    #: adaptive loss weight w = 1 / (|err|^2 + c)^p (paper: p = 1; p = 0 is plain MSE)
    p, c = 1.0, 1e-3
    #: logit-normal time sampler (mean, std)
    t_mean, t_std = 0.4, 1.0

    def __init__(self, net: nn.Module, coupling: Coupling, steps: int) -> None:
        super().__init__()
        self.net, self.coupling, self.steps = net, coupling, steps

    def times(self, n: int, gen: torch.Generator, device: torch.device):
        z = torch.randn(2, n, generator=gen, device=device) * self.t_std + self.t_mean
        a, b = torch.sigmoid(z)
        s, t = torch.minimum(a, b), torch.maximum(a, b)
        same = torch.rand(n, generator=gen, device=device) >= self.frac_interval
        # collapse onto the evaluation point's time s (the noisier end, as the paper's r = t
        # keeps its noisier t), so the flow-matching share covers the noise side too
        return s, torch.where(same, s, t)

    def prediction_and_target(self, xs: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                              v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u_theta(x_s, s, t) and sg[v + (t - s) (v . d/dx u + d/ds u)] from one JVP."""
        u, du_ds = torch.func.jvp(
            lambda x, s_, t_: self.net(x, s_, t_), (xs, s, t),
            (v, torch.ones_like(s), torch.zeros_like(t)),
        )
        return u, (v + expand_t(t - s, v) * du_ds).detach()

    def loss(self, batch: Batch, gens: Streams) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = self.coupling.pair(batch.x1, batch.idx, gens["noise"])
        x0, x1 = pairs.x0, pairs.x1
        s, t = self.times(x1.shape[0], gens["time"], x1.device)
        sb = expand_t(s, x1)
        xs = (1 - sb) * x0 + sb * x1
        u, target = self.prediction_and_target(xs, s, t, x1 - x0)
        err = (u - target).flatten(1).pow(2).sum(1)
        w = (err.detach() + self.c).pow(-self.p)
        loss = (w * err).mean()
        return loss, {**pairs.stats, "mse": float(err.detach().mean()) / x1[0].numel()}

    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        x = x0
        grid = torch.linspace(0, 1, self.steps + 1, device=x0.device)
        for i in range(self.steps):
            s = grid[i].expand(x.shape[0])
            t = grid[i + 1].expand(x.shape[0])
            x = x + expand_t(t - s, x) * self.net(x, s, t)
        return SampleOut(x, nfe=self.steps)


def _build(ctx: BuildContext, steps: int) -> Method:
    ctx.require_linear_path("meanflow")
    return MeanFlow(ctx.net(time_inputs=2), ctx.coupling("independent"), steps)


register_step_family("meanflow", (1, 2), _build,
                     "MeanFlow (Geng et al., NeurIPS 2025): average velocity u(x,s,t) via the "
                     "JVP identity")
