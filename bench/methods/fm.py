"""Flow matching (Lipman et al., ICLR 2023; Liu et al., ICLR 2023) and OT-CFM (Tong et al.,
TMLR 2024): the same regression on exact minibatch-OT pairs (the same ``MinibatchOT``
coupling object as ``otnfm-minibatch``), each sampled by several ODE solvers.

The velocity v(x_t, t) is regressed onto dx_t/dt along the configured path (``path.kind``;
the straight line by default, target x1 - x0). The path is ``bench.paths`` (shared with the
neural flows, so a path ablation changes one thing). Samplers, an axis of each family
(``fm@euler7``, ``otcfm@heun3``, ``loomcfm@dopri5``: any step count; the registered
combinations below keep their names, ``fm@euler100`` is ``fm-euler100``):
``-euler{N}`` (the ``rectified-flow`` package's ``EulerSampler``, N NFE), ``-midpoint{N}`` and
``-heun{N}`` (torchdiffeq's fixed-grid ``midpoint`` and ``heun2``, N steps of 2 NFE each, so
NFE 2, 4 and 10 for N = 1, 2, 5: equal NFE with Euler 2, 4, 10), and ``-dopri5`` (torchdiffeq's
adaptive Dormand-Prince at atol = rtol = 1e-5, the tolerances of torchcfm's CIFAR-10
evaluation, examples/images/cifar10/compute_fid.py; its NFE varies per batch and is counted).
Every sampler of a family shares one training recipe ("fm", "otcfm", ...), so one checkpoint
is trained and evaluated at every NFE. ``loomcfm-euler{N}`` (LOOM-CFM, Davtyan et al., ICLR 2025) is
the same regression on the online-OT bank that ``otnfm-online`` uses, and
``otcfm-global-euler{N}`` on the global exact assignment: the same-coupling controls of the
neural flows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import PathConfig
from bench.couplings import Coupling
from bench.methods.base import (
    Batch,
    BuildContext,
    Method,
    SampleOut,
    register_sampled_family,
    uniform_t,
)
from bench.paths import interpolate
from bench.seeding import Streams

EULER_STEPS = (1, 2, 4, 10, 100)
#: midpoint and Heun steps (2 NFE each): NFE 2, 4 and 10
TWO_STAGE_STEPS = (1, 2, 5)
#: torchcfm's CIFAR-10 evaluation tolerance for dopri5 (atol = rtol)
DOPRI5_TOL = 1e-5
#: sampler name -> torchdiffeq method
TORCHDIFFEQ = {"midpoint": "midpoint", "heun": "heun2", "dopri5": "dopri5"}
SAMPLERS = ("euler", *TORCHDIFFEQ)


class FlowMatching(Method):
    """Velocity v(x_t, t); loss |v(x_t, t) - dx_t/dt|^2 along ``path`` (straight: x1 - x0)."""

    def __init__(self, net: nn.Module, coupling: Coupling, shape: tuple[int, ...],
                 steps: int, path: PathConfig | None = None, sampler: str = "euler",
                 tol: float = DOPRI5_TOL) -> None:
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choices: {', '.join(SAMPLERS)}")
        self.net, self.coupling, self.steps, self.sampler = net, coupling, steps, sampler
        self.shape = shape
        #: dopri5's atol = rtol (reflow's pairs may set their own: ``reflow.pair_tol``)
        self.tol = tol
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
        if self.sampler != "euler":
            return self._odeint(x0)
        from rectified_flow.samplers import EulerSampler

        # record_traj_period > steps: keep no trajectory copies (images would not fit).
        sampler = EulerSampler(self._rf(x0.device), num_steps=self.steps,
                               record_traj_period=self.steps + 1)
        sampler.sample_loop(x_0=x0)
        return SampleOut(sampler.x_t, nfe=self.steps)

    def nfe_hint(self) -> int | None:
        if self.sampler == "dopri5":
            return None
        return self.steps if self.sampler == "euler" else 2 * self.steps

    def _odeint(self, x0: torch.Tensor) -> SampleOut:
        """torchdiffeq from t = 0 (noise) to t = 1; an adaptive solver claims no NFE (None):
        the evaluator counts it."""
        from torchdiffeq import odeint  # imported where used: keeps start-up light

        def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return self.net(x, t.to(x.dtype).expand(x.shape[0]))

        if self.sampler == "dopri5":
            grid = torch.tensor([0.0, 1.0], device=x0.device)
            x = odeint(velocity, x0, grid, method="dopri5", atol=self.tol, rtol=self.tol)
            return SampleOut(x[-1], nfe=None)
        grid = torch.linspace(0.0, 1.0, self.steps + 1, device=x0.device)
        x = odeint(velocity, x0, grid, method=TORCHDIFFEQ[self.sampler])
        return SampleOut(x[-1], nfe=2 * self.steps)


def _build(coupling: str) -> Callable[[BuildContext, str, int], Method]:
    def build(ctx: BuildContext, sampler: str, n: int) -> Method:
        return FlowMatching(ctx.net(time_inputs=1), ctx.coupling(coupling), ctx.data.shape,
                            steps=n, path=ctx.cfg.path, sampler=sampler)

    return build


def _describe(family: str, paper: str) -> Callable[[str, int], str]:
    def describe(sampler: str, n: int) -> str:
        if sampler == "dopri5":
            how = "adaptive dopri5 at atol = rtol = 1e-5 (NFE counted)"
        else:
            nfe = n if sampler == "euler" else 2 * n
            how = f"{n} {sampler} step{'s' if n > 1 else ''} (NFE {nfe})"
        return f"{paper}, {how}; shares the '{family}' checkpoint"

    return describe


def _name(family: str) -> Callable[[str, int], str]:
    return lambda sampler, n: f"{family}-{sampler}{n if sampler != 'dopri5' else ''}"


def _grid(coupling: str) -> Callable[[str, int], dict]:
    cells = {("euler", 1): "fm1", ("euler", 100): "fm100"}
    return lambda sampler, n: ({"grid": (cells[sampler, n], coupling)}
                               if (sampler, n) in cells else {})


#: the registered combinations of every family (names ``{family}-{sampler}{N}``,
#: ``{family}-dopri5``); ``{family}@{sampler}{N}`` asks for any other N
REGISTERED = ([("euler", n) for n in EULER_STEPS]
              + [(s, n) for s in ("midpoint", "heun") for n in TWO_STAGE_STEPS]
              + [("dopri5", 0)])

for _family, _coupling, _paper in (
    ("fm", "independent", "Flow matching (independent pairs)"),
    ("otcfm", "minibatch-ot", "OT-CFM (Tong et al., TMLR 2024; minibatch-OT pairs)"),
    ("loomcfm", "online-ot", "LOOM-CFM (Davtyan et al., ICLR 2025; online-OT bank with "
                             "coupling.caches noise caches)"),
    ("otcfm-global", "global-ot", "Flow matching on one exact OT assignment of the whole "
                                  "training set"),
):
    register_sampled_family(
        _family, _build(_coupling), {"euler": 1, "midpoint": 2, "heun": 2, "dopri5": None},
        _paper, registered=REGISTERED, name=_name(_family),
        describe=_describe(_family, _paper), extra=_grid(_coupling))
