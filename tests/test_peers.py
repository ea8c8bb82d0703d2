"""Method-specific checks of the peers (MeanFlow, shortcut, reflow, OT-CFM)."""

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import ConfigError
from bench.couplings import Independent, MinibatchOT
from bench.methods.base import Batch
from bench.methods.meanflow import MeanFlow
from bench.methods.shortcut import Shortcut
from bench.models import build_method
from bench.registry import DATASETS, METHODS
from bench.results import read_records
from bench.sampling import generate
from bench.seeding import Streams
from bench.trainer import train
from tests.conftest import tiny_args


class _Analytic(torch.nn.Module):
    """f(x, a, b) = x * a + b^2 for the two time inputs (a, b)."""

    def forward(self, x, a, b):
        return x * a[:, None] + (b ** 2)[:, None]


def test_meanflow_target_is_the_jvp_identity():
    x, v = torch.randn(5, 2), torch.randn(5, 2)
    s, t = torch.rand(5) * 0.5, 0.5 + torch.rand(5) * 0.5
    # (s, t) conditioning: u = x s + t^2, d/ds along (v, 1, 0) = v s + x
    mf = MeanFlow(_Analytic(), Independent(None), steps=1, conditioning="endpoints")
    u, target = mf.prediction_and_target(x, s, t, v)
    torch.testing.assert_close(u, x * s[:, None] + (t ** 2)[:, None])
    torch.testing.assert_close(target, v + (t - s)[:, None] * (v * s[:, None] + x))
    # (s, t - s) conditioning, the official one: u = x s + (t - s)^2, d/ds = v s + x - 2(t - s)
    mf = MeanFlow(_Analytic(), Independent(None), steps=1, conditioning="interval")
    u, target = mf.prediction_and_target(x, s, t, v)
    torch.testing.assert_close(u, x * s[:, None] + ((t - s) ** 2)[:, None])
    torch.testing.assert_close(
        target, v + (t - s)[:, None] * (v * s[:, None] + x - 2 * (t - s)[:, None]))
    # s == t: the target is the flow-matching velocity
    _, target = mf.prediction_and_target(x, t, t, v)
    torch.testing.assert_close(target, v)


# pixel-v1: 75% drawn apart, of which t < s (then clamped to s) for P(N(3.4, 2.26) < 0) = 6.6%
@pytest.mark.parametrize("recipe,share", [("pixel", 0.75), ("pixel-v1", 0.75 * 0.934),
                                          ("latent", 0.25)])
def test_meanflow_time_sampler_follows_its_recipe(recipe, share):
    mf = MeanFlow(_Analytic(), Independent(None), steps=1, recipe=recipe)
    s, t = mf.times(8000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (s <= t).all() and (s >= 0).all() and (t <= 1).all()
    assert float((s < t).float().mean()) == pytest.approx(share, abs=0.03)
    # collapsed pairs keep the evaluation time s (the noisier end): s has the law of the min
    assert float(s.mean()) < float(t[s < t].mean()) - 0.05
    if recipe == "pixel-v1":  # s from its own law: median sigmoid(0.6); t mostly near data
        assert float(s.median()) == pytest.approx(0.646, abs=0.02)
        assert float(t[s < t].median()) > 0.95


def test_meanflow_jvp_runs_in_float32_under_bf16_autocast(tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    mf = build_method("meanflow", data, cfg, cpu, 0)
    seen = []
    mf.net.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = mf.loss(Batch(data.train[:32], torch.arange(32)), Streams(0))
    assert loss.dtype == torch.float32 and set(seen) == {torch.float32}


def test_meanflow_embeds_raw_times_on_the_unet(cpu):
    """The UNet embeds 1000 t (DDPM) for every method but MeanFlow, which embeds the raw times
    as its reference does: its target differentiates the network in s, and at 1000 t the
    embedding's top frequency scales that derivative up by about a thousand."""
    from bench.config import NetConfig
    from bench.methods.meanflow import TIME_SCALE
    from bench.nets import build_net

    torch.manual_seed(0)
    nets = {scale: build_net((1, 8, 8), "images", NetConfig(unet="xs"), 2, scale)
            for scale in (None, TIME_SCALE)}
    assert nets[None].time_scale == 1000.0 and nets[TIME_SCALE].time_scale == 1.0
    torch.nn.init.normal_(nets[None].out.weight, std=0.05)  # not the zero start: a slope to see
    nets[TIME_SCALE].load_state_dict(nets[None].state_dict())  # the same weights
    x, s, h = torch.randn(4, 1, 8, 8), torch.full((4,), 0.3), torch.full((4,), 0.4)
    slopes = {}
    for scale, net in nets.items():
        _, du = torch.func.jvp(lambda s_, f=net: f(x, s_, h), (s,), (torch.ones_like(s),))
        slopes[scale] = float(du.detach().abs().mean())
    assert slopes[None] > 100 * slopes[TIME_SCALE]  # measured: about 1000x


def test_shortcut_levels_and_grid():
    sc = Shortcut(torch.nn.Identity(), Independent(None), steps=1)
    levels = sc.bootstrap_levels(32, torch.device("cpu"))  # 4 rows per level 6..0, 4 left
    assert levels.tolist() == [6] * 4 + [5] * 4 + [4] * 4 + [3] * 4 + [2] * 4 + [1] * 4 + [0] * 8
    t = sc.grid_times(levels, torch.Generator().manual_seed(0))
    d = torch.pow(2.0, -levels.float())
    assert (t >= 0).all() and (t + d <= 1 + 1e-6).all()
    assert torch.allclose(torch.remainder(t, d), torch.zeros_like(t))  # on the grid of d
    with pytest.raises(ValueError, match="power-of-two"):
        Shortcut(torch.nn.Identity(), Independent(None), steps=3)


def test_shortcut_bootstraps_from_the_ema_teacher_and_counts_its_forwards(tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    sc = build_method("shortcut", data, cfg, cpu, 0)
    res, ema = train(sc, data, cfg.train, Streams(0), coupling_cfg=cfg.coupling)
    teacher = sc._teacher[0]
    for p, s_ in zip(teacher.parameters(), ema.shadow, strict=True):
        assert p.data_ptr() == s_.data_ptr()  # the teacher is the EMA, not a stale copy
    assert any(not torch.equal(p, q) for p, q in zip(teacher.parameters(), sc.net.parameters(),
                                                      strict=True))
    c = res.compute
    assert c["teacher_forwards"] == 2 * c["steps"] and c["forwards"] == c["steps"]
    assert c["teacher_samples"] == 2 * c["steps"] * (cfg.train.batch_size // 8)


def test_otcfm_uses_the_same_minibatch_ot_coupling_as_otnfm(tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    for name in ("otcfm-euler1", "otcfm-euler100", "otnfm-minibatch"):
        assert type(build_method(name, data, cfg, cpu, 0).coupling) is MinibatchOT
    assert {METHODS.entry(f"otcfm-euler{n}").meta["recipe"] for n in (1, 100)} == {"otcfm"}


def test_reflow_reuses_the_fm_teacher_and_counts_its_cost(tmp_path):
    out = tmp_path / "res"
    res = CliRunner().invoke(app, ["run", "-m", "reflow,reflow-2step,fm-euler100",
                                   "--out", str(out), *tiny_args(["reflow.pairs_per_point=2"])])
    assert res.exit_code == 0, res.output
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert recs["reflow"].nfe == 1 and recs["reflow-2step"].nfe == 2
    b = recs["reflow"].train_breakdown
    assert b["teacher_seconds"] == recs["fm-euler100"].train_seconds
    assert b["pairs_seconds"] > 0 and b["student_seconds"] > 0
    assert abs(recs["reflow"].train_seconds - sum(b.values())) < 1e-9
    assert recs["reflow"].checkpoint == recs["reflow-2step"].checkpoint
    assert len(list((out / "checkpoints").glob("*.pt"))) == 2  # fm (teacher) + reflow
    c = recs["reflow"].train_compute
    teacher = recs["fm-euler100"].train_compute
    assert c["teacher"]["steps"] == teacher["steps"] == c["steps"]  # same budget each
    assert c["pairs"]["pairs"] == 2 * 512 and c["pairs"]["pairs_nfe"] > 10  # adaptive dopri5
    assert c["total_flops"] == pytest.approx(
        c["flops"] + teacher["total_flops"] + c["pairs"]["pairs_flops"])
    assert recs["reflow"].config["reflow"] == {"pairs_per_point": 2.0, "pair_batch": 500}
    assert "reflow" not in recs["fm-euler100"].config  # a section only its methods see


def test_reflow_student_starts_from_the_teachers_weights(tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    teacher = build_method("fm-dopri5", data, cfg, cpu, 0)
    train(teacher, data, cfg.train, Streams(0), coupling_cfg=cfg.coupling)
    student = build_method("reflow", data, cfg, cpu, 1)
    assert any(not torch.equal(p, q) for p, q in zip(student.parameters(), teacher.parameters(),
                                                      strict=True))
    prep = student.prepare(teacher.eval(), 100, Streams(0))
    assert all(torch.equal(p, q) for p, q in zip(student.parameters(), teacher.parameters(),
                                                  strict=True))
    assert prep["pairs"] == 400 and student.coupling.x1.shape == (400, 2)


def test_reflow_pair_tolerance_sets_the_teachers_solver_for_the_pairs_only(tiny_cfg, cpu):
    """reflow.pair_tol is the dopri5 tolerance of the pairs: a looser one costs fewer counted
    NFE and moves the pairs a little; the teacher gets its own tolerance back; the default
    leaves a run's config (and so its hash and its records) as before the setting existed."""
    from bench.methods.fm import DOPRI5_TOL
    from bench.planner import run_config

    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    teacher = build_method("fm-dopri5", data, cfg, cpu, 0)
    train(teacher, data, cfg.train, Streams(0), coupling_cfg=cfg.coupling)
    teacher.eval()
    tight = build_method("reflow", data, cfg, cpu, 1)
    ref = tight.prepare(teacher, 100, Streams(0))
    loose_cfg = tiny_cfg(reflow={"pair_tol": 1e-2})
    loose = build_method("reflow", data, loose_cfg, cpu, 1)
    got = loose.prepare(teacher, 100, Streams(0))
    assert got["pairs_nfe"] < ref["pairs_nfe"]
    assert torch.equal(loose.coupling.x0, tight.coupling.x0)  # the same noise
    gap = (loose.coupling.x1 - tight.coupling.x1).abs().max().item()
    assert 0 < gap < 0.5
    assert teacher.tol == DOPRI5_TOL
    assert "pair_tol" not in run_config(cfg, "reflow", "moons")["reflow"]
    assert run_config(loose_cfg, "reflow", "moons")["reflow"]["pair_tol"] == 1e-2
    with pytest.raises(ConfigError, match="pair_tol"):
        tiny_cfg(reflow={"pair_tol": 0.0})


def test_reflow_pair_generation_resumes_after_a_stop_and_equals_an_unbroken_one(tiny_cfg, cpu,
                                                                                tmp_path):
    """The pairs are saved after every batch; a stop in the middle keeps the batches done, the
    rerun makes only the rest, and the pairs and their counted NFE equal an unbroken run's."""
    from bench.methods import reflow

    cfg = tiny_cfg(reflow={"pair_batch": 64})
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    teacher = build_method("fm-dopri5", data, cfg, cpu, 0)
    train(teacher, data, cfg.train, Streams(0), coupling_cfg=cfg.coupling)
    teacher.eval()
    whole = build_method("reflow", data, cfg, cpu, 1)
    ref = whole.prepare(teacher, 100, Streams(0))  # 400 pairs: 6 batches of 64, then 16
    made, stop_after = [], [3]
    real = reflow.generate

    def generate(method, x0, batch_size):
        if len(made) == stop_after[0]:
            raise KeyboardInterrupt  # stopped while making the next batch
        made.append(x0.shape[0])
        return real(method, x0, batch_size)

    partial = tmp_path / "r.pairs.partial.pt"
    reflow.generate = generate
    try:
        with pytest.raises(KeyboardInterrupt):
            build_method("reflow", data, cfg, cpu, 1).prepare(teacher, 100, Streams(0),
                                                               partial=partial)
        assert made == [64, 64, 64] and torch.load(partial)["x1"].shape == (192, 2)
        made.clear()
        stop_after[0] = 99
        student = build_method("reflow", data, cfg, cpu, 1)
        again = student.prepare(teacher, 100, Streams(0), partial=partial)
    finally:
        reflow.generate = real
    assert made == [64, 64, 64, 16]  # only the 208 pairs still missing
    assert torch.equal(student.coupling.x1, whole.coupling.x1)
    assert torch.equal(student.coupling.x0, whole.coupling.x0)
    assert again["pairs_nfe"] == ref["pairs_nfe"] and not partial.exists()
    # saved pairs of other noise or another teacher are not used
    torch.save({"key": {"noise": "other"}, "x1": torch.zeros(192, 2), "calls": 1.0,
                "seconds": 1.0}, partial)
    made.clear()
    reflow.generate = generate
    try:
        build_method("reflow", data, cfg, cpu, 1).prepare(teacher, 100, Streams(0),
                                                           partial=partial)
    finally:
        reflow.generate = real
    assert sum(made) == 400


def test_dopri5_nfe_is_counted_and_follows_the_tolerance(tiny_cfg, cpu):
    from bench.methods.fm import DOPRI5_TOL

    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    method = build_method("fm-dopri5", data, cfg, cpu, 0)
    train(method, data, cfg.train, Streams(0), coupling_cfg=cfg.coupling)
    x0 = data.source(256, Streams(0)["eval"])
    assert method.tol == DOPRI5_TOL
    _, loose = generate(method.eval(), x0, 256)
    method.tol = 1e-8
    _, tight = generate(method, x0, 256)
    method.tol = DOPRI5_TOL
    assert loose > 2 and tight > loose  # counted, and more evaluations for a tighter tolerance
    _, two_batches = generate(method, x0, 128)  # the count may differ per batch: no error
    assert two_batches > 2


def test_equal_nfe_samplers(tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    x0 = data.source(64, Streams(0)["eval"])
    for name, nfe in (("fm-midpoint1", 2), ("fm-heun2", 4), ("fm-midpoint5", 10)):
        _, counted = generate(build_method(name, data, cfg, cpu, 0).eval(), x0, 64)
        assert counted == nfe
