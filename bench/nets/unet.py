"""A compact UNet for images, conditioned on zero, one or two times: ``net(x, *times)``.

The layout follows the DDPM CIFAR-10 model (Ho et al., 2020): residual blocks with GroupNorm and
SiLU, the time embedding added inside every block, self-attention at chosen resolutions, strided
convolutions down and nearest-neighbour upsampling. ``UNET_PRESETS["cifar"]`` has DDPM's shape
(128 channels, mults 1-2-2-2, 2 blocks, attention at 16x16) and ~36M parameters; the small
presets train in minutes on a CPU.

Written here rather than taken from ``rectified_flow.models`` because every method needs the same
backbone with 0, 1 or 2 time inputs (naive map, neural flow / FM, MeanFlow and shortcut) and the
small CPU presets must be sized exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetShape:
    channels: int
    mults: tuple[int, ...]
    res_blocks: int
    #: resolutions (in pixels) with self-attention
    attn: tuple[int, ...]
    dropout: float = 0.0
    #: space-to-depth factor: the UNet works on ``patch x patch`` pixel blocks (pixel_unshuffle),
    #: 4x less compute per level for patch 2 -- what makes 28x28 training take CPU minutes
    patch: int = 1


UNET_PRESETS: dict[str, UNetShape] = {
    # tests and 8x8 digits: seconds on a CPU (~0.16M parameters)
    "xs": UNetShape(16, (1, 2), 1, ()),
    # the CPU image suites (MNIST 28x28 as 14x14 blocks of 2x2 pixels): ~0.7M parameters,
    # ~0.15 s per training step at batch 128 on 2 cores
    "s": UNetShape(32, (1, 2), 1, (7,), patch=2),
    # a wider CPU/GPU middle ground (~4M parameters)
    "m": UNetShape(64, (1, 2), 2, (7, 8), patch=2),
    # DDPM's CIFAR-10 network shape (~36M parameters), for GPUs
    "cifar": UNetShape(128, (1, 2, 2, 2), 2, (16,), 0.1),
}


def _groups(ch: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if ch % g == 0 and ch // g >= 2:
            return g
    return 1


#: the UNet's default multiplier on t in [0, 1] before its sinusoidal embedding: DDPM's integer
#: steps. A method that differentiates the network in t (MeanFlow's JVP) may ask for another.
DDPM_TIME_SCALE = 1000.0


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = DDPM_TIME_SCALE) -> torch.Tensor:
    """Sinusoidal embedding of ``scale * t`` (frequencies 1 down to 1e-4)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    ang = scale * t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout) if emb else None
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None and emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2)[:, None], k.transpose(1, 2)[:, None],
                                           v.transpose(1, 2)[:, None])[:, 0]
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """``[B, C, H, W], t_1..t_k ([B] or scalars) -> [B, C, H, W]``; H and W must be divisible by
    2 ** (len(mults) - 1). The output convolution starts at zero."""

    def __init__(self, in_channels: int, shape: UNetShape, time_inputs: int = 1,
                 resolution: int = 32, time_scale: float = DDPM_TIME_SCALE) -> None:
        super().__init__()
        self.time_scale = time_scale
        ch, mults = shape.channels, shape.mults
        self.patch = shape.patch
        in_channels *= shape.patch ** 2
        resolution //= shape.patch
        self.time_inputs = time_inputs
        self.shape = shape
        emb = 4 * ch if time_inputs else 0
        self.temb = nn.Sequential(nn.Linear(ch * time_inputs, emb), nn.SiLU(),
                                  nn.Linear(emb, emb)) if time_inputs else None
        self.inp = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [ch]
        cur, res = ch, resolution
        for level, m in enumerate(mults):
            for _ in range(shape.res_blocks):
                blocks = [ResBlock(cur, ch * m, emb, shape.dropout)]
                cur = ch * m
                if res in shape.attn:
                    blocks.append(Attention(cur))
                self.down.append(nn.ModuleList(blocks))
                skips.append(cur)
            if level < len(mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(cur, cur, emb, shape.dropout), Attention(cur),
                                  ResBlock(cur, cur, emb, shape.dropout)])
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mults))):
            for _ in range(shape.res_blocks + 1):
                blocks = [ResBlock(cur + skips.pop(), ch * m, emb, shape.dropout)]
                cur = ch * m
                if res in shape.attn:
                    blocks.append(Attention(cur))
                self.up.append(nn.ModuleList(blocks))
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(cur, cur, 3, padding=1)]))
                res *= 2
        self.out_norm = nn.GroupNorm(_groups(cur), cur)
        self.out = nn.Conv2d(cur, in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.factor = shape.patch * 2 ** (len(mults) - 1)

    def _embed(self, x: torch.Tensor, times: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
        if len(times) != self.time_inputs:
            raise TypeError(f"UNet expects {self.time_inputs} time input(s), got {len(times)}")
        if self.temb is None:
            return None
        b = x.shape[0]
        parts = []
        for t in times:
            t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
            t = t.expand(b) if t.numel() == 1 else t.reshape(b)
            parts.append(timestep_embedding(t, self.shape.channels, self.time_scale))
        return self.temb(torch.cat(parts, dim=1).to(x.dtype))

    def forward(self, x: torch.Tensor, *times: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"UNet with {len(self.shape.mults)} levels and patch {self.patch} "
                             f"needs H and W divisible by {self.factor}, "
                             f"got {tuple(x.shape[-2:])}")
        emb = self._embed(x, times)
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        h = self.inp(x)
        hs = [h]
        for mods in self.down:
            for mod in mods:
                h = mod(h, emb) if isinstance(mod, ResBlock) else mod(h)
            hs.append(h)
        for mod in self.mid:
            h = mod(h, emb) if isinstance(mod, ResBlock) else mod(h)
        for mods in self.up:
            if isinstance(mods[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            for mod in mods:
                h = mod(h, emb) if isinstance(mod, ResBlock) else mod(h)
        out = self.out(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out
