from __future__ import annotations

import pytest
import torch

from bench.config import resolve
from bench.registry import load_builtins

load_builtins()

#: A config small enough that every method trains and evaluates in about a second on CPU.
TINY = {
    "data": {"n_train": 512, "n_eval": 600},
    "net": {"hidden": 32, "depth": 2, "time_features": 8},
    "train": {"steps": 30, "batch_size": 64, "warmup": 5, "log_every": 10},
    "eval": {"n_samples": 600, "w2_samples": 300, "batch_size": 256, "timing_batch": 256,
             "timing_repeats": 1, "save_samples": 200},
}

TINY_SETS = [
    "data.n_train=512", "data.n_eval=600", "net.hidden=32", "net.depth=2",
    "net.time_features=8", "train.steps=30", "train.batch_size=64", "train.warmup=5",
    "train.log_every=10", "eval.n_samples=600", "eval.w2_samples=300", "eval.batch_size=256",
    "eval.timing_batch=256", "eval.timing_repeats=1", "eval.save_samples=200",
]


@pytest.fixture
def tiny_cfg():
    def make(**over):
        merged = {k: dict(v) for k, v in TINY.items()}
        for k, v in over.items():
            if isinstance(v, dict):
                merged.setdefault(k, {}).update(v)
            else:
                merged[k] = v
        return resolve(overrides=merged)

    return make


@pytest.fixture
def cpu():
    return torch.device("cpu")
