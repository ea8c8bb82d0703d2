"""Same-coupling controls: the neural flow, a time-free map and one Euler step of flow matching
share the optimum E[x1 | x0 = z]; the consistency diagnostic means the same for every
coupling."""

import pytest
import torch
from torch import nn

from bench.config import CouplingConfig, PathConfig, TrainConfig
from bench.couplings import Coupling, GlobalOT, Independent, OnlineOT, Pairs
from bench.datasets.base import DataBundle
from bench.methods.fm import FlowMatching
from bench.methods.nfm import NeuralFlow, TimeFreeMap, draw_t
from bench.methods.reflow import FixedPairs
from bench.nets.mlp import TimeMLP
from bench.seeding import Streams
from bench.trainer import ConsistencyProbe, train


def test_straight_path_loss_identity():
    """|x0 + t g - x_t|^2 = t^2 |g - (x1 - x0)|^2 on x_t = (1 - t) x0 + t x1."""
    gen = torch.Generator().manual_seed(0)
    x0, x1, g = (torch.randn(64, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    t = torch.rand(64, 1, generator=gen, dtype=torch.float64)
    xt = (1 - t) * x0 + t * x1
    lhs = (x0 + t * g - xt).pow(2).sum(1)
    rhs = t[:, 0] ** 2 * (g - (x1 - x0)).pow(2).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


class FixedMap(Coupling):
    """8 fixed noise points z_j, each always paired with x1_j = z_j / 2 + c: a deterministic
    pairing (an OT map: the lines do not cross), so E[x1 | x0 = z_j] = x1_j exactly."""

    name = "fixed-map"

    def __init__(self) -> None:
        super().__init__(lambda n, g: torch.randn(n, 2, generator=g))
        self.z = torch.randn(8, 2, generator=torch.Generator().manual_seed(5))
        self.x1 = 0.5 * self.z + torch.tensor([2.0, 1.0])

    def pair(self, x1, idx, gen):
        return Pairs(self.z[idx % 8], self.x1[idx % 8], {})


def _fit(method, steps=1000):
    data = torch.zeros(64, 2)
    bundle = DataBundle("toy", "points", (2,), data, data, None,
                        lambda n, g: torch.randn(n, 2, generator=g))
    cfg = TrainConfig(steps=steps, batch_size=64, lr=3e-3, warmup=20, ema=0.0,
                      lr_final=0.01, log_every=steps)
    train(method, bundle, cfg, Streams(0), coupling_cfg=CouplingConfig(diagnostics=0))
    return method


def test_map_neural_flow_and_one_euler_step_reach_the_same_optimum():
    coupling = FixedMap()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nets = [TimeMLP(2, 32, 2, k, 8) for k in (0, 1, 1)]
    methods = [TimeFreeMap(nets[0], coupling), NeuralFlow(nets[1], coupling),
               FlowMatching(nets[2], coupling, (2,), steps=1)]
    outs = [_fit(m).sample(coupling.z).x for m in methods]
    scale = (coupling.x1 - coupling.z).norm(dim=1).mean()  # how far the samples travel
    for out in outs:  # each reaches E[x1 | x0] ...
        assert (out - coupling.x1).norm(dim=1).max() < 0.1 * scale
    for a, b in zip(outs, outs[1:], strict=False):  # ... so they agree with each other
        assert (a - b).norm(dim=1).max() < 0.15 * scale


def test_time_sampling_options():
    gen = torch.Generator().manual_seed(0)
    beta = draw_t(20000, PathConfig(t_sampling="beta", t_beta=3.0), gen, torch.device("cpu"))
    assert beta.mean().item() == pytest.approx(0.75, abs=0.01)  # Beta(3, 1): mean 3/4
    one = draw_t(5, PathConfig(t_sampling="one"), gen, torch.device("cpu"))
    assert torch.equal(one, torch.ones(5))
    uni = draw_t(20000, PathConfig(), gen, torch.device("cpu"))
    assert uni.mean().item() == pytest.approx(0.5, abs=0.01)


class _Holder(nn.Module):
    def __init__(self, coupling):
        super().__init__()
        self.coupling = coupling


def _diagnostic(coupling, data, moments=6):
    """The trainer's procedure: the probes' partners at several moments (the coupling keeps
    being used in between), variance over moments / data variance."""
    bundle = DataBundle("toy", "points", (2,), data, data, None,
                        lambda n, g: torch.randn(n, 2, generator=g))
    probe = ConsistencyProbe(_Holder(coupling), bundle, CouplingConfig(probes=16,
                             diagnostics=moments), steps=2 * moments, gens=Streams(0))
    gen = torch.Generator().manual_seed(3)
    for step in range(1, 2 * moments + 1):
        idx = torch.randperm(len(data), generator=gen)[:32]
        coupling.pair(data[idx], idx, gen)
        probe.maybe_measure(step)
    return probe.result(), probe.targets


def test_the_diagnostic_is_the_same_for_a_deterministic_pairing_in_any_coupling():
    data = torch.randn(96, 2, generator=torch.Generator().manual_seed(2)) + 1
    src = lambda n, g: torch.randn(n, 2, generator=g)  # noqa: E731
    glob = GlobalOT(src, data, solver="scipy", caches=1)
    glob.solve(torch.Generator().manual_seed(0))
    x0 = glob.bank.bank[0].clone()
    online = OnlineOT(src, n_train=96, caches=1)  # holds the same, globally optimal pairing:
    online.load_state_dict({"bank": x0.clone()})  # no batch can improve on it
    fixed = FixedPairs(src)
    fixed.x0, fixed.x1 = x0.clone(), data.clone()
    results = [_diagnostic(c, data) for c in (glob, online, fixed)]
    for res, _ in results:
        assert res["target_var_ratio"] == 0.0 and res["draws"] == 6
    # the bank loaded without ids and the fixed pairs follow the same probes (slots 0..15)
    assert torch.equal(results[1][1][0], results[2][1][0])
    independent, _ = _diagnostic(Independent(src), data)
    assert 0.6 < independent["target_var_ratio"] < 1.4
