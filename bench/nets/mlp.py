"""MLP for 2-D data, conditioned on zero, one or two times.

The network knows nothing about couplings or parametrizations: ``net(x, *times) -> [B, d]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TimeFeatures(nn.Module):
    """t -> [t, sin(pi k t), cos(pi k t)]_{k=1..n/2}: fixed Fourier features of t in [0, 1]."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, n // 2 + 1, dtype=torch.float32))
        self.dim = 1 + 2 * (n // 2)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1).to(self.freqs.dtype)
        ang = t * self.freqs
        return torch.cat([t, torch.sin(ang), torch.cos(ang)], dim=1)


class TimeMLP(nn.Module):
    """``[x, feats(t_1), ..., feats(t_k)] -> hidden x depth (SiLU) -> d``."""

    def __init__(
        self, dim: int, hidden: int = 256, depth: int = 3, time_inputs: int = 1,
        time_features: int = 16,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.time_inputs = time_inputs
        self.feats = TimeFeatures(time_features)
        width_in = dim + time_inputs * self.feats.dim
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(width_in if i == 0 else hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden if depth else width_in, dim))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, *times: torch.Tensor) -> torch.Tensor:
        if len(times) != self.time_inputs:
            raise TypeError(f"TimeMLP expects {self.time_inputs} time input(s), got {len(times)}")
        b = x.shape[0]
        parts = [x.reshape(b, -1)]
        for t in times:
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
            parts.append(self.feats(t.expand(b) if t.numel() == 1 else t.reshape(b)))
        return self.body(torch.cat(parts, dim=1)).reshape(x.shape)
