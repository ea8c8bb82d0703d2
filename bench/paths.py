"""Interpolation paths x_t between noise x0 (t = 0) and data x1 (t = 1), shared by every
method that regresses onto a path (the neural flows and flow matching), so an ablation over
``path.kind`` changes one thing only.

* ``linear``: x_t = (1 - t) x0 + t x1 (rectified flow / OT-NFM; the default)
* ``cosine``: x_t = cos(pi t / 2) x0 + sin(pi t / 2) x1
* ``poly2``: x_t = (1 - t^2) x0 + t^2 x1 (polynomial, alpha = 2)
* ``stochastic``: x_t = (1 - t) x0 + t x1 + sigma sqrt(t (1 - t)) eps, a Brownian bridge
  (Tong et al., TMLR 2024, SB-CFM); its conditional velocity is
  x1 - x0 + sigma (1 - 2t) / (2 sqrt(t (1 - t))) eps.
"""

from __future__ import annotations

import math

import torch

KINDS = ("linear", "cosine", "poly2", "stochastic")


def expand_t(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] broadcastable against ``x``."""
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def interpolate(kind: str, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor,
                gen: torch.Generator | None = None,
                sigma: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, dx_t/dt) for x0, x1: [B, *shape], t: [B]."""
    tb = expand_t(t, x1)
    if kind == "linear":
        return (1 - tb) * x0 + tb * x1, x1 - x0
    if kind == "cosine":
        a, b = torch.cos(math.pi / 2 * tb), torch.sin(math.pi / 2 * tb)
        return a * x0 + b * x1, math.pi / 2 * (a * x1 - b * x0)
    if kind == "poly2":
        return (1 - tb**2) * x0 + tb**2 * x1, 2 * tb * (x1 - x0)
    if kind == "stochastic":
        if gen is None:
            raise ValueError("the stochastic path needs a generator for its noise")
        eps = torch.randn(x1.shape, generator=gen, device=x1.device, dtype=x1.dtype)
        s = torch.sqrt(tb * (1 - tb))
        # the clamp keeps the velocity finite where t(1 - t) -> 0 (t is drawn from (0, 1))
        return ((1 - tb) * x0 + tb * x1 + sigma * s * eps,
                x1 - x0 + sigma * (1 - 2 * tb) / (2 * s.clamp_min(1e-3)) * eps)
    raise ValueError(f"unknown path {kind!r}; choices: {', '.join(KINDS)}")
