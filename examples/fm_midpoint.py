"""Example plugin: flow matching sampled with the explicit midpoint rule (2 NFE per step).

    bench run --plugin examples/fm_midpoint.py -m fm-midpoint5,fm-euler10 -d moons

It registers under the recipe "fm", so it is evaluated from the same trained checkpoint as
the built-in fm-euler{N} methods: only the sampler differs.
"""

import torch

from bench.methods.base import BuildContext, SampleOut
from bench.methods.fm import FlowMatching
from bench.registry import register_method


class MidpointFM(FlowMatching):
    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        x, n = x0, self.steps
        for i in range(n):
            t = torch.full((x.shape[0],), i / n, device=x.device)
            x_mid = x + 0.5 / n * self.net(x, t)
            x = x + self.net(x_mid, t + 0.5 / n) / n
        return SampleOut(x, nfe=2 * n)


@register_method("fm-midpoint5", recipe="fm")
def fm_midpoint5(ctx: BuildContext) -> MidpointFM:
    """Flow matching, 5 midpoint steps (NFE 10), from the shared 'fm' checkpoint."""
    net = ctx.net(time_inputs=1)
    return MidpointFM(net, ctx.coupling("independent"), ctx.data.shape, steps=5)
