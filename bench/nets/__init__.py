"""Networks shared by every method on a dataset (same family, width and depth)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from bench.config import NetConfig
from bench.nets.mlp import TimeMLP
from bench.nets.unet import DDPM_TIME_SCALE, UNET_PRESETS, UNet


def unet_preset(cfg: NetConfig) -> str:
    """The UNet preset a config names (``auto`` is ``s``, the CPU image suites' preset)."""
    return "s" if cfg.unet == "auto" else cfg.unet


def build_net(shape: tuple[int, ...], kind: str, cfg: NetConfig, time_inputs: int,
              time_scale: float | None = None) -> nn.Module:
    """The dataset's backbone with ``time_inputs`` time arguments (0 for a plain generator).
    ``time_scale``: the UNet's multiplier on t before its sinusoidal embedding (None: DDPM's
    1000); the MLP's time features are fixed multiples of pi on the raw t and ignore it."""
    if kind == "points":
        return TimeMLP(
            int(torch.Size(shape).numel()), cfg.hidden, cfg.depth, time_inputs, cfg.time_features
        )
    if kind == "images":
        name = unet_preset(cfg)
        if name not in UNET_PRESETS:
            raise ValueError(f"unknown UNet preset {name!r}; choices: auto, "
                             f"{', '.join(UNET_PRESETS)}")
        ushape = UNET_PRESETS[name]
        if cfg.channels:
            ushape = dataclasses.replace(ushape, channels=cfg.channels)
        c, h, _ = shape
        return UNet(c, ushape, time_inputs, resolution=h,
                    time_scale=DDPM_TIME_SCALE if time_scale is None else time_scale)
    raise ValueError(f"no network for data kind {kind!r} (known: points, images)")


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
