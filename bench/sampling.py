"""Sampling with counted NFE, and the sampling-time measurement.

``generate`` is the one way the harness draws samples: it hooks the method's network, counts
its forward calls per batch (one call over a batch = 1 NFE) and raises if the count differs
from the method's claim. Reflow's pair generation, the evaluator, ``bench perf`` and
``bench.load`` all go through it.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from bench.methods.base import Method


class NFEMismatch(RuntimeError):
    """The counted number of network evaluations differs from what the method claims."""


class NFECounter:
    """Counts forward calls of a module through a forward pre-hook (one call over a batch = 1)."""

    def __init__(self) -> None:
        self.calls = 0

    def hook(self, module: torch.nn.Module, args: tuple) -> None:
        self.calls += 1


@contextlib.contextmanager
def counting(module: torch.nn.Module) -> Iterator[NFECounter]:
    counter = NFECounter()
    handle = module.register_forward_pre_hook(counter.hook)
    try:
        yield counter
    finally:
        handle.remove()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generate(method: Method, x0: torch.Tensor, batch_size: int,
             on_batch: Callable[[int], None] | None = None) -> tuple[torch.Tensor, float]:
    """Samples for the noise ``x0`` [n, *shape], in batches; returns (samples, counted NFE per
    sample).

    The noise is given per sample, so the samples of a fixed-step method do not depend on
    ``batch_size``. A fixed-step method must use the same counted NFE in every batch, equal
    to its claim. An adaptive solver (claim None) may use a different count in each batch
    (its error control sees the whole batch): the result is the mean over samples, and it
    depends on ``batch_size``.
    """
    outs: list[torch.Tensor] = []
    counted: int | None = None
    total = 0
    for i in range(0, x0.shape[0], batch_size):
        with counting(method.net) as c:
            out = method.sample(x0[i : i + batch_size])
        if out.nfe is not None:
            if c.calls != out.nfe:
                raise NFEMismatch(f"{type(method).__name__} claims NFE {out.nfe} but its "
                                  f"network ran {c.calls} times")
            if counted is not None and c.calls != counted:
                raise NFEMismatch(f"NFE varies across batches: {counted} then {c.calls}")
            counted = c.calls
        total += c.calls * out.x.shape[0]
        outs.append(out.x.float())
        if on_batch is not None:
            on_batch(min(x0.shape[0], i + batch_size))
    x = torch.cat(outs)
    return x, (counted if counted is not None else total / max(1, x.shape[0]))


@dataclass
class Timing:
    """Sampling time per 1,000 samples: median and (max - min) / 2 over ``repeats``."""

    ms_per_1k: float
    spread: float
    batch: int
    repeats: int
    all_ms: list[float] = field(default_factory=list)


@torch.no_grad()
def time_sampling(method: Method, x0: torch.Tensor, repeats: int) -> Timing:
    """Warm-up once, then time ``repeats`` full-batch samplings (device synchronized)."""
    device = x0.device
    method.sample(x0)
    sync(device)
    per_1k: list[float] = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        method.sample(x0)
        sync(device)
        per_1k.append((time.perf_counter() - t0) * 1000.0 * 1000.0 / x0.shape[0])
    return Timing(statistics.median(per_1k), (max(per_1k) - min(per_1k)) / 2, x0.shape[0],
                  repeats, per_1k)
