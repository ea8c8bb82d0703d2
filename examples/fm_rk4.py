"""Example plugin: flow matching sampled with the classic Runge-Kutta rule (4 NFE per step).

    bench run --plugin examples/fm_rk4.py -m fm-rk4-3,fm-euler10 -d moons

It registers under the recipe "fm", so it is evaluated from the same trained checkpoint as
the built-in fm-* samplers: only the sampler differs.
"""

import torch

from bench.methods.base import BuildContext, SampleOut
from bench.methods.fm import FlowMatching
from bench.registry import register_method


class RK4FM(FlowMatching):
    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        x, n, h = x0, self.steps, 1.0 / self.steps
        for i in range(n):
            t = torch.full((x.shape[0],), i * h, device=x.device)
            k1 = self.net(x, t)
            k2 = self.net(x + h / 2 * k1, t + h / 2)
            k3 = self.net(x + h / 2 * k2, t + h / 2)
            k4 = self.net(x + h * k3, t + h)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return SampleOut(x, nfe=4 * n)


@register_method("fm-rk4-3", recipe="fm")
def fm_rk4_3(ctx: BuildContext) -> RK4FM:
    """Flow matching, 3 Runge-Kutta 4 steps (NFE 12), from the shared 'fm' checkpoint."""
    return RK4FM(ctx.net(time_inputs=1), ctx.coupling("independent"), ctx.data.shape, steps=3)
