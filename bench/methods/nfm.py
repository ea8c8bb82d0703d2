"""One-step flow maps: the naive map, the neural flow with random pairs, and OT-NFM.

OT-NFM ("ODE-free Neural Flow Matching", 2026) regresses a neural flow F(x0, t) with
F(x0, 0) = x0 onto the straight path x_t = (1 - t) x0 + t x1 of coupled pairs, and samples with
one evaluation F(z, 1). With independent pairs the regression optimum is
F(x0, t) = (1 - t) x0 + t E[x1], so F(z, 1) = E[x1] for every z: mean collapse. A consistent
coupling (minibatch, online or global OT) makes x1 (nearly) a function of x0 and removes the
collapse.

On the straight path |F(x0, t) - x_t|^2 = t^2 |g(x0, t) - (x1 - x0)|^2, so for every t the
optimum is g* = E[x1 - x0 | x0] and F*(z, 1) = E[x1 | x0 = z]: the same point as one Euler
step of flow matching trained on the same pairs (v*(x0, 0) = E[x1 - x0 | x0]) and as a
time-free map G(z) regressed on them. The controls registered here and in ``fm`` (``otmap-*``,
``loomcfm-euler*``, ``otcfm-*``) hold the coupling fixed and change only the
parametrisation, so a report can tell what the coupling does from what the neural flow adds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import T_SAMPLINGS, PathConfig
from bench.couplings import Coupling
from bench.methods.base import Batch, BuildContext, Method, SampleOut, expand_t, uniform_t
from bench.paths import interpolate
from bench.registry import register_method
from bench.seeding import Streams


class TimeFreeMap(Method):
    """G(z) regressed with MSE onto the coupling's pairs; no time input, one evaluation."""

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


def draw_t(n: int, path: PathConfig, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Times of the neural-flow loss: ``uniform`` on [0, 1], ``beta`` = Beta(a, 1) with
    a = ``path.t_beta`` (density a t^(a-1), mass near 1), or ``one`` (t = 1: the loss of a
    time-free map with F's residual form x0 + g(x0, 1))."""
    if path.t_sampling == "uniform":
        return uniform_t(n, gen, device)
    if path.t_sampling == "beta":  # inverse CDF of Beta(a, 1): u^(1/a)
        return uniform_t(n, gen, device).pow(1.0 / path.t_beta)
    if path.t_sampling == "one":
        return torch.ones(n, device=device)
    raise ValueError(f"unknown path.t_sampling {path.t_sampling!r}; choices: "
                     f"{', '.join(T_SAMPLINGS)}")


class NeuralFlow(Method):
    """F(x0, t) = x0 + t * g(x0, t), so F(x0, 0) = x0 exactly.

    Loss: E_t,(x0,x1)~coupling |F(x0, t) - x_t|^2 with x_t on ``path`` (default the straight
    line (1 - t) x0 + t x1) and t drawn as ``path.t_sampling`` says (default U[0, 1]).
    Sample: x = F(z, 1), one network evaluation.
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
        t = draw_t(x1.shape[0], self.path, gens["time"], x1.device)
        xt, _ = interpolate(self.path.kind, x0, x1, t, gens["time"], self.path.sigma)
        return F.mse_loss(self.flow(x0, t), xt), pairs.stats

    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        t1 = torch.ones(x0.shape[0], device=x0.device)
        return SampleOut(self.flow(x0, t1), nfe=1)


def _register(name: str, build: type, coupling: str, help: str) -> None:
    row = "map" if build is TimeFreeMap else "flow"

    def factory(ctx: BuildContext) -> Method:
        if build is TimeFreeMap:
            return TimeFreeMap(ctx.net(time_inputs=0), ctx.coupling(coupling))
        return NeuralFlow(ctx.net(time_inputs=1), ctx.coupling(coupling), ctx.cfg.path)

    register_method(name, help=help, grid=(row, coupling))(factory)


_register("naive-map", TimeFreeMap, "independent",
          "One-step generator G(z) (no time input), MSE onto random pairs (collapses to the mean)")
_register("nfm-random", NeuralFlow, "independent",
          "Neural flow F(x0,t)=x0+t*g regressed onto x_t with independent pairs (collapses)")
_register("otnfm-minibatch", NeuralFlow, "minibatch-ot",
          "OT-NFM: neural flow with exact minibatch OT pairs; one step F(z, 1)")
_register("otnfm-online", NeuralFlow, "online-ot",
          "OT-NFM: neural flow with an online OT bank refined across batches (LOOM-CFM style)")
_register("otnfm-global", NeuralFlow, "global-ot",
          "Neural flow on one exact OT assignment of the whole training set (upper bound)")
_register("otmap-minibatch", TimeFreeMap, "minibatch-ot",
          "Control: time-free map G(z), MSE onto minibatch-OT pairs (OT-NFM's t=1 optimum)")
_register("otmap-online", TimeFreeMap, "online-ot",
          "Control: time-free map G(z), MSE onto the online-OT bank's pairs")
_register("otmap-global", TimeFreeMap, "global-ot",
          "Control: time-free map G(z), MSE onto global exact-OT pairs")
