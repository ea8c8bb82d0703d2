"""Registry-wide method tests: every registered method on tiny data."""

import pytest
import torch

from bench.methods.base import Batch
from bench.methods.nfm import NeuralFlow
from bench.models import build_method
from bench.registry import DATASETS, METHODS
from bench.sampling import counting, generate
from bench.seeding import Streams
from bench.trainer import EMA, train
from tests.conftest import one_per_recipe


def _data(cfg, cpu, seed=0):
    return DATASETS.get("moons")(cfg.data, seed, cpu)


def expected_nfe(name: str) -> int | None:
    """What each registered name must count when sampling (None: adaptive, counted only)."""
    if name.endswith("-dopri5"):
        return None
    for sampler, per_step in (("-euler", 1), ("-midpoint", 2), ("-heun", 2)):
        if sampler in name:
            return per_step * int(name.rsplit(sampler, 1)[1])
    if name.endswith("step"):
        return int(name.rsplit("-", 1)[1].removesuffix("step"))
    return 1


def ready(name, data, cfg, cpu, seed=0):
    """Build a method; a method with a teacher gets (an untrained) one and its pairs, one that
    bootstraps from an EMA teacher gets an EMA copy of its network."""
    method = build_method(name, data, cfg, cpu, seed=seed)
    teacher = METHODS.entry(name).meta.get("teacher")
    if teacher:
        t = build_method(teacher, data, cfg, cpu, seed=seed).eval()
        method.prepare(t, data.train.shape[0], Streams(seed, cpu))
    if method.wants_ema_teacher:
        method.attach_teacher(EMA(method, 0.9).view(method.net))
    return method


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = _data(cfg, cpu)
    method = ready(name, data, cfg, cpu)
    gens = Streams(0, cpu)
    idx = torch.arange(64)
    loss, logs = method.loss(Batch(data.train[idx], idx), gens)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"cost", "cost_independent", "solver_seconds"} <= set(logs)
    loss.backward()
    for pname, p in method.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"no gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {pname}"
    method.eval()
    x0 = data.source(100, Streams(0, cpu)["eval"])
    with counting(method.net) as c:
        out = method.sample(x0)
    assert out.x.shape == (100, 2)
    if expected_nfe(name) is None:  # adaptive: claims nothing, the count is what it used
        assert out.nfe is None and c.calls > 2
    else:
        assert c.calls == out.nfe == expected_nfe(name)  # counted, not declared


@pytest.mark.parametrize("name", one_per_recipe())
def test_training_compute_is_counted_and_consistent(name, tiny_cfg, cpu):
    cfg = tiny_cfg(train={"steps": 4, "batch_size": 64, "warmup": 1, "log_every": 2})
    data = _data(cfg, cpu)
    method = ready(name, data, cfg, cpu)
    res, _ = train(method, data, cfg.train, Streams(0, cpu), coupling_cfg=cfg.coupling)
    c = res.compute
    assert c["steps"] == c["backwards"] == 4
    calls = {"forwards": c["forwards"], "jvps": c["jvps"],
             "teacher_forwards": c["teacher_forwards"]}
    assert all(v % 4 == 0 for v in calls.values())  # the same calls every step
    assert sum(calls.values()) >= 4 and c["forward_samples"] + c["jvp_samples"] >= 4 * 64
    assert c["flops_per_step"] > 0 and c["flops"] == pytest.approx(4 * c["flops_per_step"])
    if name.startswith("meanflow"):
        assert c["jvps"] == 4 and c["forwards"] == 0  # one JVP a step, no plain forward
    if name.startswith("shortcut"):
        assert c["forwards"] == 4 and c["teacher_forwards"] == 8


@pytest.mark.parametrize("name", ["naive-map", "otnfm-online", "fm-euler4", "meanflow",
                                  "shortcut-2step", "reflow"])
def test_same_seed_same_samples(name, tiny_cfg, cpu):
    cfg = tiny_cfg()
    outs = []
    for _ in range(2):
        data = _data(cfg, cpu)
        method = ready(name, data, cfg, cpu)
        train(method, data, cfg.train, Streams(0, cpu))
        outs.append(generate(method, data.source(50, Streams(0, cpu)["eval"]), 50)[0])
    assert torch.equal(outs[0], outs[1])
    data = _data(cfg, cpu, seed=1)
    method = ready(name, data, cfg, cpu, seed=1)
    train(method, data, cfg.train, Streams(1, cpu))
    assert not torch.equal(outs[0], generate(method, data.source(50, Streams(1, cpu)["eval"]),
                                             50)[0])


def test_neural_flow_is_identity_at_t0(tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = _data(cfg, cpu)
    for name in ("nfm-random", "otnfm-minibatch", "otnfm-online"):
        method = build_method(name, data, cfg, cpu, seed=0)
        assert isinstance(method, NeuralFlow)
        x0 = torch.randn(20, 2)
        torch.testing.assert_close(method.flow(x0, torch.zeros(20)), x0, rtol=0, atol=0)


class _ConstantFlow(torch.nn.Module):
    """g(x0, t) = c - x0, so F(x0, t) = (1 - t) x0 + t c."""

    def __init__(self, c):
        super().__init__()
        self.c = torch.nn.Parameter(c.clone())

    def forward(self, x, t):
        return self.c - x


def test_independent_pair_optimum_is_the_data_mean(tiny_cfg, cpu):
    """With independent pairs, E|F(x0,t) - x_t|^2 over c is minimised at c = E[x1]."""
    cfg = tiny_cfg(data={"n_train": 200_000})
    data = _data(cfg, cpu)
    mean = data.train.mean(0)
    from bench.couplings import Independent

    def loss_at(c):
        method = NeuralFlow(_ConstantFlow(c), Independent(data.source))
        idx = torch.arange(data.train.shape[0])
        return method.loss(Batch(data.train, idx), Streams(0, cpu))[0]

    at_mean = loss_at(mean)
    for delta in ([0.1, 0.0], [0.0, -0.1], [0.07, 0.07]):
        assert loss_at(mean + torch.tensor(delta)) > at_mean
    c = mean.clone().requires_grad_(True)
    method = NeuralFlow(_ConstantFlow(c), Independent(data.source))
    g = torch.autograd.grad(method.loss(Batch(data.train, torch.arange(200_000)),
                                        Streams(0, cpu))[0], method.net.c)[0]
    assert g.norm() < 2e-3


def test_independent_pairs_collapse_and_ot_does_not(tiny_cfg, cpu):
    from bench.metrics.points import collapse

    cfg = tiny_cfg(train={"steps": 400, "batch_size": 128}, net={"hidden": 64})
    data = _data(cfg, cpu)
    ratios = {}
    for name in ("nfm-random", "otnfm-minibatch"):
        method = build_method(name, data, cfg, cpu, seed=0)
        train(method, data, cfg.train, Streams(0, cpu))
        x, _ = generate(method, data.source(600, Streams(0, cpu)["eval"]), 600)
        ratios[name] = collapse(x, data.eval, None)["var_ratio"]
    assert ratios["nfm-random"] < 0.1
    assert ratios["otnfm-minibatch"] > 0.6
