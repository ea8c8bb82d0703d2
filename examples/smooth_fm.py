"""Example plugin with a config section of its own: flow matching on a smoothed straight path.

    bench run --plugin examples/smooth_fm.py -m smoothfm-euler10,fm-euler10 -d moons \
        --set smoothfm.sigma=0.05

The path is I-CFM's (Tong et al., "Improving and generalizing flow-based generative models
with minibatch optimal transport", TMLR 2024, section 3.2): x_t = (1 - t) x0 + t x1 + sigma
eps with eps ~ N(0, I), regressed onto x1 - x0. sigma = 0 is plain flow matching (the
``fm`` recipe), which is why that is the default here: the value is the user's to set.

The section ``smoothfm`` is declared at registration (``config={"smoothfm": SmoothFMConfig}``)
and nothing in ``bench/`` names it: YAML suites and ``--set smoothfm.sigma=...`` reach it, a
run's record and checkpoint carry it, and ``ctx.cfg.section("smoothfm")`` reads it. Its
``sigma`` changes the trained weights, so it is hashed (another sigma is another run and
another checkpoint); ``log_noise`` only adds a column to the training log, so it is declared
``UNHASHED`` and changing it reuses the records and checkpoint already there.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bench.config import UNHASHED, ConfigError
from bench.methods.base import Batch, BuildContext, uniform_t
from bench.methods.fm import FlowMatching
from bench.registry import register_method
from bench.seeding import Streams


@dataclass(frozen=True)
class SmoothFMConfig:
    #: standard deviation of the Gaussian around the straight path (I-CFM's sigma)
    sigma: float = 0.0
    #: also log the realised path noise's standard deviation per training window
    log_noise: bool = field(default=False, metadata=UNHASHED)

    def check(self) -> None:
        if not self.sigma >= 0:
            raise ConfigError(f"smoothfm.sigma: {self.sigma!r} must be >= 0")


class SmoothFM(FlowMatching):
    """Velocity on the smoothed path; sampling is flow matching's Euler sampler."""

    def __init__(self, *args, sigma: float, log_noise: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sigma, self.log_noise = sigma, log_noise

    def loss(self, batch: Batch, gens: Streams) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = self.coupling.pair(batch.x1, batch.idx, gens["noise"])
        x0, x1 = pairs.x0, pairs.x1
        t = uniform_t(x1.shape[0], gens["time"], x1.device)
        tt = t.view(-1, *([1] * (x1.dim() - 1)))
        eps = torch.randn(x1.shape, generator=gens["time"], device=x1.device)
        xt = (1 - tt) * x0 + tt * x1 + self.sigma * eps
        logs = dict(pairs.stats)
        if self.log_noise:
            logs["path_noise_std"] = float((self.sigma * eps).std())
        return F.mse_loss(self.net(xt, t), x1 - x0), logs


def _factory(steps: int):
    def build(ctx: BuildContext) -> SmoothFM:
        sc = ctx.cfg.section("smoothfm")
        return SmoothFM(ctx.net(time_inputs=1), ctx.coupling("independent"), ctx.data.shape,
                        steps=steps, sigma=sc.sigma, log_noise=sc.log_noise)

    build.__doc__ = (f"Flow matching on I-CFM's smoothed straight path (smoothfm.sigma), "
                     f"{steps} Euler step(s)")
    return build


for _n in (1, 10, 100):
    register_method(f"smoothfm-euler{_n}", recipe="smoothfm",
                    config={"smoothfm": SmoothFMConfig})(_factory(_n))
