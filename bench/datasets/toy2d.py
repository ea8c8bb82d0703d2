"""2-D synthetic targets and sources.

Targets: moons, checkerboard, spiral (two arms), crescent, 8gaussians. Sources (``data.source``):
``gaussian`` (standard normal) or ``8gmm`` (the 8-Gaussian mixture). Scales are chosen so every
target has a spread of order one, like the standard normal source.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bench.config import ConfigError, DataConfig
from bench.datasets.base import DataBundle, eval_rng, gaussian_source
from bench.registry import register_dataset
from bench.seeding import Streams
from bench.vocab import SOURCES, choices

Sampler = Callable[[int, np.random.Generator], np.ndarray]


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two interleaved half circles (as sklearn's make_moons, noise 0.05), centred, scaled 1.5."""
    upper = rng.random(n) < 0.5
    theta = rng.uniform(0.0, np.pi, n)
    x = np.where(upper, np.cos(theta), 1.0 - np.cos(theta))
    y = np.where(upper, np.sin(theta), 0.5 - np.sin(theta))
    pts = np.stack([x, y], 1) + rng.normal(0.0, 0.05, (n, 2))
    return (pts - [0.5, 0.25]) * 1.5


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the 8 dark squares of a 4x4 checkerboard over [-2, 2]^2."""
    x1 = rng.uniform(-2.0, 2.0, n)
    x2 = rng.uniform(0.0, 1.0, n) - 2.0 * rng.integers(0, 2, n)
    x2 = x2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1)


def spiral(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two interleaved spiral arms (FFJORD's 2spirals), scaled by 1/4."""
    r = np.sqrt(rng.random(n)) * 540.0 * (2 * np.pi) / 360.0
    arm = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    x = -np.cos(r) * r + rng.random(n) * 0.5
    y = np.sin(r) * r + rng.random(n) * 0.5
    return np.stack([x, y], 1) * arm[:, None] / 4.0


def crescent(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on a crescent: inside the disc |x| < 2, outside the disc |x - (-0.9, 0)| < 1.8."""
    out = np.empty((0, 2))
    while len(out) < n:
        cand = rng.uniform(-2.0, 2.0, (2 * n + 64, 2))
        keep = (np.hypot(*cand.T) < 2.0) & (np.hypot(cand[:, 0] + 0.9, cand[:, 1]) > 1.8)
        out = np.concatenate([out, cand[keep]])
    return out[:n] - [1.1, 0.0]


def eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    """Eight Gaussians (std 0.15) on the circle of radius 2."""
    k = rng.integers(0, 8, n)
    angle = k * (np.pi / 4)
    centres = 2.0 * np.stack([np.cos(angle), np.sin(angle)], 1)
    return centres + rng.normal(0.0, 0.15, (n, 2))


TARGETS: dict[str, Sampler] = {
    "moons": moons,
    "checkerboard": checkerboard,
    "spiral": spiral,
    "crescent": crescent,
    "8gaussians": eight_gaussians,
}


def make_source(name: str, device: torch.device):
    """x0 sampler ``(n, gen) -> [n, 2]`` drawing only from the torch generator it is given."""
    if name == "gaussian":
        return gaussian_source((2,), device)
    if name == "8gmm":

        def sample(n: int, gen: torch.Generator) -> torch.Tensor:
            k = torch.randint(0, 8, (n,), generator=gen, device=device)
            angle = k.float() * (np.pi / 4)
            centres = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
            return centres + 0.15 * torch.randn((n, 2), generator=gen, device=device)

        return sample
    raise ConfigError(f"data.source: unknown source {name!r}; choices: {choices(SOURCES)}")


def build_toy(
    name: str, cfg: DataConfig, seed: int, device: torch.device
) -> DataBundle:
    sampler = TARGETS[name]
    rng = Streams(seed).numpy("data")
    train = sampler(cfg.n_train, rng)
    floor = sampler(cfg.n_eval, rng)  # as many points as the eval set, from this seed
    held_out = sampler(cfg.n_eval, eval_rng(name))

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=device)

    return DataBundle(
        name=name,
        kind="points",
        shape=(2,),
        train=t(train),
        eval=t(held_out),
        floor=t(floor),
        source=make_source(cfg.source, device),
        info={
            "source": cfg.source,
            "n_train": cfg.n_train,
            "n_eval": cfg.n_eval,
            "description": (sampler.__doc__ or "").strip().splitlines()[0],
        },
    )


def _register(name: str) -> None:
    def factory(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
        return build_toy(name, cfg, seed, device)

    register_dataset(name, help=f"2-D {name}: {TARGETS[name].__doc__.strip()}", kind="points")(
        factory
    )


for _name in TARGETS:
    _register(_name)
