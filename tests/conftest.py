from __future__ import annotations

import signal

import pytest
import torch

import bench.builtins  # noqa: F401  (registers the built-ins)
from bench.config import resolve
from bench.registry import METHODS

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


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Extractors and reference features go to a per-session folder, never ~/.cache."""
    import os

    old = os.environ.get("BENCH_CACHE")
    os.environ["BENCH_CACHE"] = str(tmp_path_factory.mktemp("bench-cache"))
    yield
    if old is None:
        os.environ.pop("BENCH_CACHE", None)
    else:
        os.environ["BENCH_CACHE"] = old


#: Image settings small enough for seconds on a CPU (UNet preset xs).
IMAGE_SETS = [
    "net.unet=xs", "train.steps=20", "train.batch_size=32", "train.warmup=2",
    "train.log_every=10", "eval.n_samples=64", "eval.batch_size=64", "eval.timing_batch=16",
    "eval.timing_repeats=1", "eval.save_samples=64", "coupling.diagnostics=0",
]


def tiny_args(extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """TINY_SETS (and ``extra``) as ``--set`` command-line arguments."""
    return [arg for s in (*TINY_SETS, *extra) for arg in ("--set", s)]


def one_per_recipe() -> list[str]:
    """The first registered method of every training recipe."""
    seen: dict[str, str] = {}
    for name in METHODS.names():
        seen.setdefault(METHODS.entry(name).meta.get("recipe", name), name)
    return list(seen.values())


def sigint_default() -> None:
    """A ``preexec_fn`` for tests that press Ctrl-C on a child: SIGINT back to its default.
    A shell without job control starts background commands (``cmd &``, e.g. a CI run under
    nohup) with SIGINT ignored, and a process that starts with SIGINT ignored keeps it so
    (Python then installs no KeyboardInterrupt handler, bash cannot trap it): the child of
    such a test would never see the Ctrl-C it is sent, as no child of a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
