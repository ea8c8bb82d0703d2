import numpy as np
import pytest
import torch

from bench.config import EvalConfig
from bench.distances import sq_dists
from bench.metrics.base import MetricContext
from bench.metrics.points import collapse, mmd, precision_recall, w2


def ctx(**kw):
    return MetricContext(EvalConfig(**kw), torch.Generator().manual_seed(0), "test")


def cloud(n, seed, shift=(0.0, 0.0)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) + torch.tensor(shift)


def test_sq_dists_matches_cdist():
    a, b = cloud(50, 1), cloud(70, 2)
    torch.testing.assert_close(sq_dists(a, b), torch.cdist(a, b) ** 2, atol=1e-4, rtol=1e-4)


def test_w2_closed_forms():
    a = cloud(500, 1)
    assert w2(a, a, ctx(w2_samples=500))["w2"] == pytest.approx(0.0, abs=1e-6)
    # a translation by v costs exactly |v| in W2
    out = w2(a + torch.tensor([3.0, 4.0]), a, ctx(w2_samples=500))
    assert out["w2"] == pytest.approx(5.0, rel=1e-6)
    assert out["w2_sq"] == pytest.approx(25.0, rel=1e-6)


def test_mmd_separates_blur_that_w2_barely_sees():
    a, b = cloud(3000, 1) * 0.3, cloud(3000, 2) * 0.3
    same = mmd(a, b, ctx())["mmd"]
    blurred = mmd(a + 0.1 * cloud(3000, 3), b, ctx())["mmd"]
    assert abs(same) < 1e-3
    assert blurred > 5 * max(abs(same), 1e-4)


def test_precision_recall_tell_blur_from_dropped_modes():
    real = torch.cat([cloud(1000, 1) * 0.1 + torch.tensor([2.0, 0]),
                      cloud(1000, 2) * 0.1 - torch.tensor([2.0, 0])])
    one_mode = cloud(2000, 3) * 0.1 + torch.tensor([2.0, 0])
    pr = precision_recall(one_mode, real, ctx(pr_k=3))
    assert pr["precision"] > 0.9 and pr["recall"] < 0.6  # dropped a mode
    blur = real + 0.5 * cloud(2000, 4)
    pr = precision_recall(blur, real, ctx(pr_k=3))
    assert pr["precision"] < 0.5  # blur lands off the manifold


def test_collapse_metric():
    real = cloud(1000, 1)
    c = collapse(real.mean(0, keepdim=True).expand(1000, 2), real, None)
    assert c["var_ratio"] == 0.0 and c["mean_dist"] == pytest.approx(0.0, abs=1e-6)
    c = collapse(cloud(1000, 2) * 2, real, None)
    assert c["var_ratio"] == pytest.approx(4.0, rel=0.15)
    assert np.isfinite(c["mean_dist"])
