"""Sampling with counted NFE."""

import pytest
import torch

from bench.methods.base import Method, SampleOut
from bench.models import build_method
from bench.registry import DATASETS
from bench.sampling import NFEMismatch, generate
from bench.seeding import Streams


def test_samples_do_not_depend_on_batch_size(tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    method = build_method("fm-euler10", data, cfg, cpu, seed=0).eval()
    x0 = data.source(300, Streams(0, cpu)["eval"])
    a, nfe_a = generate(method, x0, 300)
    b, nfe_b = generate(method, x0, 64)
    assert torch.allclose(a, b, atol=1e-5) and nfe_a == nfe_b == 10


def test_nfe_claim_mismatch_is_an_error():
    with pytest.raises(NFEMismatch, match="claims NFE 1 but its network ran 2 times"):
        generate(_LyingMethod(), torch.randn(10, 2), 10)


class _LyingMethod(Method):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 2)

    def sample(self, x0):
        return SampleOut(self.net(self.net(x0)), nfe=1)
