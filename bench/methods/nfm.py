"""One-step flow maps: the naive map, the neural flow with random pairs, and OT-NFM.

OT-NFM ("ODE-free Neural Flow Matching", 2026) regresses a neural flow F(x0, t) with
F(x0, 0) = x0 onto the straight path x_t = (1 - t) x0 + t x1 of coupled pairs, and samples with
one evaluation F(z, 1). With independent pairs the regression optimum is
F(x0, t) = (1 - t) x0 + t E[x1], so F(z, 1) = E[x1] for every z: mean collapse. A consistent
coupling (minibatch or online OT) makes x1 (nearly) a function of x0 and removes the collapse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import PathConfig
from bench.couplings import Coupling
from bench.methods.base import Batch, BuildContext, Method, SampleOut, expand_t, uniform_t
from bench.paths import interpolate
from bench.registry import register_method
from bench.seeding import Streams


class NaiveMap(Method):
    """G(z) regressed with MSE onto independently paired data; no time input."""

    def __init__(self, net: nn.Module, coupling: Coupling) -> None:
        super().__init__()
        self.net, self.coupling = net, coupling

    def loss(self, batch: Batch, gens: Streams) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = self.coupling.pair(batch.x1, batch.idx, gens["noise"])
        loss = F.mse_loss(self.net(pairs.x0), pairs.x1)
        return loss, pairs.stats

    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        return SampleOut(self.net(x0), nfe=1)


class NeuralFlow(Method):
    """F(x0, t) = x0 + t * g(x0, t), so F(x0, 0) = x0 exactly.

    Loss: E_t,(x0,x1)~coupling |F(x0, t) - x_t|^2 with x_t on ``path`` (default the straight
    line (1 - t) x0 + t x1), t ~ U[0, 1]. Sample: x = F(z, 1), one network evaluation.
    """

    def __init__(self, net: nn.Module, coupling: Coupling,
                 path: PathConfig | None = None) -> None:
        super().__init__()
        self.net, self.coupling = net, coupling
        self.path = path or PathConfig()

    def flow(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """F(x0, t) for x0: [B, *shape], t: [B]."""
        return x0 + expand_t(t, x0) * self.net(x0, t)

    def loss(self, batch: Batch, gens: Streams) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = self.coupling.pair(batch.x1, batch.idx, gens["noise"])
        x0, x1 = pairs.x0, pairs.x1
        t = uniform_t(x1.shape[0], gens["time"], x1.device)
        xt, _ = interpolate(self.path.kind, x0, x1, t, gens["time"], self.path.sigma)
        return F.mse_loss(self.flow(x0, t), xt), pairs.stats

    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        t1 = torch.ones(x0.shape[0], device=x0.device)
        return SampleOut(self.flow(x0, t1), nfe=1)


@register_method("naive-map")
def naive_map(ctx: BuildContext) -> Method:
    """One-step generator G(z), MSE onto random pairs, no time input (collapses to the mean)."""
    return NaiveMap(ctx.net(time_inputs=0), ctx.coupling("independent"))


@register_method("nfm-random")
def nfm_random(ctx: BuildContext) -> Method:
    """Neural flow F(x0,t)=x0+t*g regressed onto x_t with independent pairs (collapses)."""
    return NeuralFlow(ctx.net(time_inputs=1), ctx.coupling("independent"), ctx.cfg.path)


@register_method("otnfm-minibatch")
def otnfm_minibatch(ctx: BuildContext) -> Method:
    """OT-NFM: neural flow with exact minibatch OT pairs; one step F(z, 1)."""
    return NeuralFlow(ctx.net(time_inputs=1), ctx.coupling("minibatch-ot"), ctx.cfg.path)


@register_method("otnfm-online")
def otnfm_online(ctx: BuildContext) -> Method:
    """OT-NFM: neural flow with an online OT bank refined across batches (LOOM-CFM style)."""
    return NeuralFlow(ctx.net(time_inputs=1), ctx.coupling("online-ot"), ctx.cfg.path)
