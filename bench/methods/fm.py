"""Flow matching (Lipman et al., ICLR 2023; Liu et al., ICLR 2023) sampled with N Euler steps,
and OT-CFM (Tong et al., TMLR 2024): the same regression on exact minibatch-OT pairs (the same
``MinibatchOT`` coupling object as ``otnfm-minibatch``), sampled the same way.

The velocity v(x_t, t) is regressed onto dx_t/dt along the configured path (``path.kind``;
the straight line by default, target x1 - x0) with independent pairs. The path is
``bench.paths`` (shared with the neural flows, so a path ablation changes one thing); the
sampler is the ``rectified-flow`` package's ``EulerSampler``. ``fm-euler{N}`` for every N share one
training recipe ("fm"), so one checkpoint is trained and evaluated at every NFE; likewise
``otcfm-euler{N}`` share "otcfm". ``loomcfm-euler{N}`` (LOOM-CFM, Davtyan et al., ICLR 2025) is
the same regression on the online-OT bank that ``otnfm-online`` uses, and
``otcfm-global-euler{N}`` on the global exact assignment: the same-coupling controls of the
neural flows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import PathConfig
from bench.couplings import Coupling
from bench.methods.base import Batch, BuildContext, Method, SampleOut, uniform_t
from bench.paths import interpolate
from bench.registry import register_method
from bench.seeding import Streams

EULER_STEPS = (1, 2, 4, 10, 100)


class FlowMatching(Method):
    """Velocity v(x_t, t); loss |v(x_t, t) - dx_t/dt|^2 along ``path`` (straight: x1 - x0)."""

    def __init__(self, net: nn.Module, coupling: Coupling, shape: tuple[int, ...],
                 steps: int, path: PathConfig | None = None) -> None:
        super().__init__()
        self.net, self.coupling, self.steps = net, coupling, steps
        self.shape = shape
        self.path = path or PathConfig()
        self._rf_cache: dict[torch.device, object] = {}  # rectified_flow.RectifiedFlow

    def _rf(self, device: torch.device):
        # rectified-flow takes seconds to import (it pulls diffusers and sympy): only here.
        from rectified_flow.rectified_flow import RectifiedFlow

        # Built once per device: constructing RectifiedFlow (its AffineInterp) costs ~20 ms.
        if device not in self._rf_cache:
            self._rf_cache[device] = RectifiedFlow(
                self.shape, velocity_field=self.net, interp="straight", device=device)
        return self._rf_cache[device]

    def loss(self, batch: Batch, gens: Streams) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = self.coupling.pair(batch.x1, batch.idx, gens["noise"])
        t = uniform_t(pairs.x1.shape[0], gens["time"], pairs.x1.device)
        xt, dxt = interpolate(self.path.kind, pairs.x0, pairs.x1, t, gens["time"],
                              self.path.sigma)
        return F.mse_loss(self.net(xt, t), dxt), pairs.stats

    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        from rectified_flow.samplers import EulerSampler

        # record_traj_period > steps: keep no trajectory copies (images would not fit).
        sampler = EulerSampler(self._rf(x0.device), num_steps=self.steps,
                               record_traj_period=self.steps + 1)
        sampler.sample_loop(x_0=x0)
        return SampleOut(sampler.x_t, nfe=self.steps)


def _register_euler(family: str, coupling: str, n: int, paper: str) -> None:
    def factory(ctx: BuildContext) -> Method:
        return FlowMatching(ctx.net(time_inputs=1), ctx.coupling(coupling), ctx.data.shape,
                            steps=n, path=ctx.cfg.path)

    grid = {1: {"grid": ("fm1", coupling)}, 100: {"grid": ("fm100", coupling)}}.get(n, {})
    register_method(
        f"{family}-euler{n}", recipe=family,
        help=f"{paper}, {n} Euler step{'s' if n > 1 else ''} (shares the '{family}' checkpoint)",
        **grid,
    )(factory)


for _family, _coupling, _paper in (
    ("fm", "independent", "Flow matching (independent pairs)"),
    ("otcfm", "minibatch-ot", "OT-CFM (Tong et al., TMLR 2024; minibatch-OT pairs)"),
    ("loomcfm", "online-ot", "LOOM-CFM (Davtyan et al., ICLR 2025; online-OT bank with "
                             "coupling.caches noise caches)"),
    ("otcfm-global", "global-ot", "Flow matching on one exact OT assignment of the whole "
                                  "training set"),
):
    for _n in EULER_STEPS:
        _register_euler(_family, _coupling, _n, _paper)
