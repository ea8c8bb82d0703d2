"""Metric protocol: ``fn(samples, ref, ctx) -> {name: value}``.

Each metric registers which data kinds it applies to and, per output, its direction:
``min`` (lower is better), ``max`` (higher is better) or ``one`` (best at 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from bench.config import EvalConfig
from bench.datasets.base import DataBundle

#: the largest ``eval.n_samples`` the O(n^2) metrics accept (MMD and k-NN precision/recall on
#: points; KID and precision/recall of the image metrics): registered as their
#: ``max_samples`` and checked before any work. 200,000 samples already cost ~10^11 pairwise
#: terms (hours on a CPU); the field's 50,000 for CIFAR-10 FID is well inside.
MAX_QUADRATIC_SAMPLES = 200_000


@dataclass
class MetricContext:
    """What a metric gets besides the samples: eval settings, its random stream, the dataset
    (labels, training split for learned extractors), the device, and ``info`` to fill with what
    the record should say about how the numbers were made (extractor ids, sample counts)."""

    cfg: EvalConfig
    gen: torch.Generator
    dataset: str
    data: DataBundle | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    info: dict[str, Any] = field(default_factory=dict)


def chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def subsample(x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """First ``n`` rows of a random permutation (all rows when n >= len(x))."""
    if n >= x.shape[0]:
        return x
    return x[torch.randperm(x.shape[0], generator=gen, device=gen.device)[:n].to(x.device)]
