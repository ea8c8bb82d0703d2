import pytest
import torch

from bench.config import DataConfig
from bench.registry import DATASETS

TOY = ["moons", "checkerboard", "spiral", "crescent", "8gaussians"]


@pytest.mark.parametrize("name", TOY)
def test_toy_shapes_seeding_and_fixed_eval(name, cpu):
    cfg = DataConfig(n_train=300, n_eval=200)
    a = DATASETS.get(name)(cfg, 0, cpu)
    b = DATASETS.get(name)(cfg, 0, cpu)
    c = DATASETS.get(name)(cfg, 1, cpu)
    assert a.train.shape == (300, 2) and a.eval.shape == (200, 2) and a.floor.shape == (200, 2)
    assert torch.equal(a.train, b.train)  # same seed, same data
    assert not torch.equal(a.train, c.train)  # the seed changes the training set ...
    assert torch.equal(a.eval, c.eval)  # ... never the held-out set
    assert not torch.equal(a.floor, a.eval)
    assert torch.isfinite(a.train).all() and a.train.std(0).min() > 0.3


def test_sources(cpu):
    g = torch.Generator().manual_seed(0)
    gauss = DATASETS.get("moons")(DataConfig(n_train=10, n_eval=10), 0, cpu).source(4000, g)
    assert abs(float(gauss.std()) - 1) < 0.05
    gmm = DATASETS.get("moons")(DataConfig(n_train=10, n_eval=10, source="8gmm"), 0, cpu)
    x = gmm.source(4000, g)
    radius = x.norm(dim=1)
    assert abs(float(radius.mean()) - 2.0) < 0.05 and float(radius.std()) < 0.3


def test_unknown_source_is_a_clear_error(cpu):
    from bench.config import ConfigError

    with pytest.raises(ConfigError, match="unknown source 'uniform'; choices: gaussian, 8gmm"):
        DATASETS.get("moons")(DataConfig(n_train=10, n_eval=10, source="uniform"), 0, cpu)
