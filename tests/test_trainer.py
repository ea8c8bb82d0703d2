"""The one training loop: resumable state, the consistency probe."""

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from bench.cli import app
from bench.config import TrainConfig, ema_note
from bench.couplings import Independent, MinibatchOT
from bench.registry import DATASETS
from bench.trainer import EMA


def _resume_setup(tiny_cfg, cpu, name):
    from bench.models import build_method
    from bench.registry import DATASETS

    cfg = tiny_cfg(train={"steps": 40, "log_every": 10})
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    return cfg, data, build_method(name, data, cfg, cpu, 0)


@pytest.mark.parametrize("name", ["otnfm-online", "otnfm-minibatch", "fm-euler10"])
def test_resumed_training_equals_uninterrupted(tmp_path, tiny_cfg, cpu, name):
    """Stop after 17 steps (state saved at step 10 and on the stop), resume: the final weights,
    EMA, online-OT bank and logs equal those of one uninterrupted run, bit for bit."""
    import torch

    from bench.seeding import Streams
    from bench.trainer import Checkpointing, train

    cfg, data, ref = _resume_setup(tiny_cfg, cpu, name)
    res_ref, ema_ref = train(ref, data, cfg.train, Streams(0, cpu), coupling_cfg=cfg.coupling)

    class Stop(Exception):
        pass

    def stop_at(step, loss):
        if step == 17:
            raise Stop

    ck = Checkpointing(tmp_path / "run.partial.pt", every=10)
    _, _, m = _resume_setup(tiny_cfg, cpu, name)
    with pytest.raises(Stop):
        train(m, data, cfg.train, Streams(0, cpu), on_step=stop_at, coupling_cfg=cfg.coupling,
              checkpoint=ck)
    state = torch.load(ck.path, weights_only=True)
    assert state["step"] == 10
    _, _, m2 = _resume_setup(tiny_cfg, cpu, name)  # a fresh process would start like this
    res, ema = train(m2, data, cfg.train, Streams(0, cpu), coupling_cfg=cfg.coupling,
                     checkpoint=ck, resume=state)
    a, b = ref.state_dict(), m2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(ema_ref.shadow, ema.shadow, strict=True))
    assert ref.extra_state_dict().keys() == m2.extra_state_dict().keys()
    for k, v in ref.extra_state_dict().get("coupling", {}).items():
        assert torch.equal(v, m2.extra_state_dict()["coupling"][k])
    drop = ("solver_seconds", "coupling_wait_seconds")
    assert [{k: v for k, v in h.items() if k not in drop} for h in res_ref.history] == \
        [{k: v for k, v in h.items() if k not in drop} for h in res.history]
    assert res.diagnostics.get("target_var_ratio") == res_ref.diagnostics.get("target_var_ratio")


def test_consistency_diagnostic_orders_the_couplings(cpu):
    from bench.config import DataConfig

    data = DATASETS.get("moons")(DataConfig(n_train=4000, n_eval=10), 0, cpu)
    src = data.source
    indep = _consistency(Independent(src), data.train)
    small = MinibatchOT(src, "pot", ot_batch=32)
    small.data_batch_size(32)
    big = MinibatchOT(src, "pot", ot_batch=512)
    big.data_batch_size(256)
    v_small, v_big = _consistency(small, data.train), _consistency(big, data.train)
    assert 0.8 < indep < 1.2
    assert v_big < v_small < indep


def _consistency(coupling, data, n=32, draws=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    probes = torch.randn(n, 2, generator=gen)
    t = torch.stack([coupling.probe_targets(probes, data, gen) for _ in range(draws)])
    return float(t.var(0).sum(-1).mean() / data.var(0).sum())


def test_train_estimate_and_perf_all_run_the_one_training_step(monkeypatch, tiny_cfg, cpu):
    """``Trainer.step`` is the only training step: the training loop, ``bench estimate``'s
    timed steps and ``bench perf``'s step breakdown all call it (a spy counts the calls)."""
    from bench import estimate as estimate_mod
    from bench import perf
    from bench.config import resolve
    from bench.models import build_method
    from bench.planner import Plan
    from bench.seeding import Streams
    from bench.trainer import Trainer, train
    from tests.conftest import TINY_SETS

    calls: list[int] = []
    real = Trainer.step

    def spy(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", spy)
    cfg = tiny_cfg(train={"steps": 5})
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    train(build_method("otnfm-minibatch", data, cfg, cpu, 0), data, cfg.train, Streams(0, cpu),
          coupling_cfg=cfg.coupling)
    assert len(calls) == 5

    calls.clear()
    plan = Plan.of(resolve(raw={"methods": ["fm-euler1"], "datasets": ["moons"], "seeds": [0]},
                           sets=TINY_SETS))
    assert estimate_mod.estimate(plan, cpu).train_seconds > 0
    # untimed warm-up steps (one where the first is slow), then at least one timed step
    assert 2 <= len(calls) <= estimate_mod.WARMUP_STEPS + estimate_mod.MAX_TIMED_STEPS

    calls.clear()
    method = build_method("otnfm-online", data, cfg, cpu, 0)
    parts = perf.step_breakdown(method, data, cfg, cpu, warmup=1, repeats=2)
    assert len(calls) == 3 and parts["step"].n == 2


def test_an_ema_decay_above_the_warm_up_cap_is_never_reached_and_the_cli_says_so(tmp_path):
    torch.manual_seed(0)
    nets = [nn.Linear(3, 2) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    emas = [EMA(nets[0], 0.995), EMA(nets[1], 0.999)]
    for _ in range(50):  # the warm-up caps both decays at (1 + n) / (10 + n) < 0.99
        for net, ema in zip(nets, emas, strict=True):
            with torch.no_grad():
                net.weight.add_(0.1)
            ema.update(net)
    assert all(torch.equal(a, b) for a, b in zip(emas[0].shadow, emas[1].shadow, strict=True))
    assert TrainConfig(steps=50, ema=0.995).ema_reached == pytest.approx(51 / 60)
    assert ema_note(TrainConfig(steps=1200, ema=0.999)).startswith(
        "train.ema 0.999 is never reached in 1200 steps")
    assert ema_note(TrainConfig(steps=20000, ema=0.999)) is None  # reached at step 8,991
    assert ema_note(TrainConfig(steps=10, ema=0.0)) is None  # EMA off
    res = CliRunner().invoke(app, ["run", "-m", "fm-euler1", "-d", "moons", "--dry-run",
                                   "--no-estimate", "--out", str(tmp_path),
                                   "--set", "train.steps=40", "--set", "train.ema=0.999"])
    assert res.exit_code == 0, res.output
    assert "train.ema 0.999 is never reached in 40 steps" in res.output
