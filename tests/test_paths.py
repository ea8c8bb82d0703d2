import pytest
import torch

from bench.paths import KINDS, interpolate


@pytest.mark.parametrize("kind", KINDS)
def test_endpoints(kind):
    x0, x1 = torch.randn(50, 2), torch.randn(50, 2) + 3
    g = torch.Generator().manual_seed(0)
    a, _ = interpolate(kind, x0, x1, torch.zeros(50), g)
    b, _ = interpolate(kind, x0, x1, torch.ones(50), g)
    torch.testing.assert_close(a, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(b, x1, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["linear", "cosine", "poly2"])
def test_velocity_is_the_time_derivative(kind):
    x0, x1 = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    t = torch.rand(20, dtype=torch.float64) * 0.8 + 0.1
    h = 1e-6
    xp, _ = interpolate(kind, x0, x1, t + h)
    xm, _ = interpolate(kind, x0, x1, t - h)
    _, v = interpolate(kind, x0, x1, t)
    torch.testing.assert_close(v, (xp - xm) / (2 * h), atol=1e-6, rtol=1e-6)


def test_stochastic_path_is_a_brownian_bridge():
    x0, x1 = torch.zeros(20000, 1), torch.ones(20000, 1)
    t = torch.full((20000,), 0.5)
    xt, v = interpolate("stochastic", x0, x1, t, torch.Generator().manual_seed(0), sigma=0.5)
    assert float(xt.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(xt.std()) == pytest.approx(0.5 * 0.5, rel=0.03)  # sigma sqrt(t(1-t))
    torch.testing.assert_close(v, torch.ones_like(v))  # (1 - 2t) = 0 at t = 1/2
    with pytest.raises(ValueError, match="needs a generator"):
        interpolate("stochastic", x0, x1, t)
    with pytest.raises(ValueError, match="unknown path"):
        interpolate("curly", x0, x1, t)
