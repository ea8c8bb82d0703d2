"""Method-specific checks of the peers (MeanFlow, shortcut, reflow, OT-CFM)."""

import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.couplings import Independent, MinibatchOT
from bench.methods.meanflow import MeanFlow
from bench.methods.shortcut import Shortcut
from bench.registry import METHODS
from bench.results import read_records
from tests.conftest import tiny_args


class _Analytic(torch.nn.Module):
    """u(x, s, t) = x * s + t^2: d/ds along (v, 1, 0) is v * s + x."""

    def forward(self, x, s, t):
        return x * s[:, None] + (t ** 2)[:, None]


def test_meanflow_target_is_the_jvp_identity():
    mf = MeanFlow(_Analytic(), Independent(None), steps=1)
    x, v = torch.randn(5, 2), torch.randn(5, 2)
    s, t = torch.rand(5) * 0.5, 0.5 + torch.rand(5) * 0.5
    u, target = mf.prediction_and_target(x, s, t, v)
    torch.testing.assert_close(u, x * s[:, None] + (t ** 2)[:, None])
    expected = v + (t - s)[:, None] * (v * s[:, None] + x)
    torch.testing.assert_close(target, expected)
    # s == t: the target is the flow-matching velocity
    _, target = mf.prediction_and_target(x, t, t, v)
    torch.testing.assert_close(target, v)


def test_meanflow_time_sampler_orders_s_t():
    mf = MeanFlow(_Analytic(), Independent(None), steps=1)
    s, t = mf.times(4000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (s <= t).all() and (s >= 0).all() and (t <= 1).all()
    frac = float((s < t).float().mean())
    assert 0.2 < frac < 0.3  # the paper's 25 % of intervals with s != t
    # collapsed pairs keep the evaluation time s (the noisier end): s has the law of the min
    s2, t2 = mf.times(4000, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert float(s2.mean()) < float(t2[s2 < t2].mean()) - 0.1


def test_shortcut_consistency_grid_stays_inside_the_unit_interval():
    sc = Shortcut(torch.nn.Identity(), Independent(None), steps=1)
    t, d = sc.consistency_times(5000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (t >= 0).all() and (t + 2 * d <= 1 + 1e-6).all()
    assert torch.allclose(torch.remainder(t, 2 * d), torch.zeros_like(t))  # grid of 2d
    assert set((1 / d).round().int().tolist()) == {2, 4, 8, 16, 32, 64, 128}
    assert bool(((t == 0) & (d == 0.5)).any())  # the one-step shortcut (2d = 1) is trained


def test_otcfm_uses_the_same_minibatch_ot_coupling_as_otnfm(tiny_cfg, cpu):
    from bench.models import build_method
    from bench.registry import DATASETS

    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    for name in ("otcfm-euler1", "otcfm-euler100", "otnfm-minibatch"):
        assert type(build_method(name, data, cfg, cpu, 0).coupling) is MinibatchOT
    assert {METHODS.entry(f"otcfm-euler{n}").meta["recipe"] for n in (1, 100)} == {"otcfm"}


def test_reflow_reuses_the_fm_teacher_and_counts_its_time(tmp_path):
    out = tmp_path / "res"
    res = CliRunner().invoke(app, ["run", "-m", "reflow,reflow-2step,fm-euler100",
                                   "--out", str(out), *tiny_args()])
    assert res.exit_code == 0, res.output
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert recs["reflow"].nfe == 1 and recs["reflow-2step"].nfe == 2
    b = recs["reflow"].train_breakdown
    assert b["teacher_seconds"] == recs["fm-euler100"].train_seconds
    assert b["pairs_seconds"] > 0 and b["student_seconds"] > 0
    assert abs(recs["reflow"].train_seconds - sum(b.values())) < 1e-9
    assert recs["reflow"].checkpoint == recs["reflow-2step"].checkpoint
    assert len(list((out / "checkpoints").glob("*.pt"))) == 2  # fm (teacher) + reflow
