"""Learning curves: scored during training, kept across a resume, changing no final number."""

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import curve_steps, resolve
from bench.models import build_method
from bench.registry import DATASETS
from bench.report.curves import Reached, final_point, first_reaching
from bench.results import RunRecord, read_records
from bench.seeding import Streams
from bench.trainer import Checkpointing, CurveHook, train
from tests.conftest import TINY, tiny_args

CURVE = ["eval.curve=[0.5, 1.0]", "eval.curve_samples=200"]


def _run(out, extra=()):
    res = CliRunner().invoke(app, ["run", "-m", "otnfm-online,fm-euler1,fm-euler10", "-d",
                                   "moons", "--out", str(out), *tiny_args([*extra])])
    assert res.exit_code == 0, res.output
    return {r.method: r for r in read_records(out / "records.jsonl").records}


def test_curve_points_are_recorded_and_change_no_final_number(tmp_path):
    with_curve = _run(tmp_path / "a", CURVE)
    without = _run(tmp_path / "b")
    for m in ("otnfm-online", "fm-euler1", "fm-euler10"):
        r = with_curve[m]
        assert [p["step"] for p in r.curve] == [15, 30] and r.curve_seconds > 0
        assert all(p["samples"] == 200 and "w2" in p["metrics"] for p in r.curve)
        assert r.curve[0]["train_seconds"] < r.curve[1]["train_seconds"] <= r.train_seconds
        fps = r.train_compute["flops_per_step"]
        assert [p["train_flops"] for p in r.curve] == [15 * fps, 30 * fps]
        assert r.metrics == without[m].metrics  # scoring during training changed nothing
        assert r.train_compute == without[m].train_compute  # and is no training compute
        assert r.config_hash == without[m].config_hash  # and is not part of the run's key
        assert not without[m].curve
    # the data row holds the floor a curve point can read: held-out data on its 200 samples
    floor = with_curve["data"].curve_floor
    assert floor["samples"] == 200 and without["data"].curve_floor is None
    assert 0 < floor["metrics"]["w2"] < min(with_curve[m].curve[-1]["metrics"]["w2"]
                                            for m in ("otnfm-online", "fm-euler1", "fm-euler10"))
    assert floor["metrics"]["w2"] != with_curve["data"].metrics["w2"]  # 200 points, not 300
    # the bank gap at every point: the online coupling's own noise, scored as the fresh side
    bank = with_curve["otnfm-online"].curve
    assert all(set(p["bank"]) == set(p["metrics"]) for p in bank)
    assert all(p["bank"]["w2"] != p["metrics"]["w2"] for p in bank)
    assert all("bank" not in p for p in with_curve["fm-euler1"].curve)  # no bank, no gap
    # the two samplers of one checkpoint each get their own curve
    assert with_curve["fm-euler1"].curve[-1]["metrics"] != \
        with_curve["fm-euler10"].curve[-1]["metrics"]


def test_a_resumed_run_keeps_its_points_once(tmp_path, cpu):
    cfg = resolve(overrides={**TINY, "train": {**TINY["train"], "steps": 40, "log_every": 10}})
    data = DATASETS.get("moons")(cfg.data, 0, cpu)

    def hook():
        return CurveHook({10, 20, 30, 40}, lambda step, s, f: {"step": step, "metrics": {}})

    ref, _ = train(build_method("otnfm-online", data, cfg, cpu, 0), data, cfg.train,
                   Streams(0, cpu), coupling_cfg=cfg.coupling, curve=hook())

    class Stop(Exception):
        pass

    def stop(step, loss):
        if step == 25:
            raise Stop

    path = tmp_path / "state.partial.pt"
    try:
        train(build_method("otnfm-online", data, cfg, cpu, 0), data, cfg.train,
              Streams(0, cpu), on_step=stop, coupling_cfg=cfg.coupling,
              checkpoint=Checkpointing(path, 10), curve=hook())
    except Stop:
        pass
    saved = torch.load(path, weights_only=True)
    assert [p["step"] for p in saved["curve"]] == [10, 20]
    res, _ = train(build_method("otnfm-online", data, cfg, cpu, 0), data, cfg.train,
                   Streams(0, cpu), coupling_cfg=cfg.coupling, resume=saved, curve=hook())
    assert [p["step"] for p in res.curve] == [10, 20, 30, 40] == [p["step"] for p in ref.curve]


def test_curve_steps_and_time_to_quality_on_synthetic_curves():
    from bench.config import EvalConfig

    assert curve_steps(EvalConfig(curve=(0.25, 0.5, 1.0, 300.0, 5000.0)), 1000) == \
        {250, 500, 1000, 300}
    curve = [{"step": s, "train_seconds": s / 10, "train_flops": s * 1e9,
              "metrics": {"w2": v, "prec": 1 - v}}
             for s, v in ((100, 0.9), (200, 0.5), (300, 0.31), (400, 0.2))]
    assert first_reaching(curve, "w2", 0.5, "min") == Reached(200, 20.0, 2e11)
    assert first_reaching(curve, "w2", 0.3, "min") == Reached(400, 40.0, 4e11)
    assert first_reaching(curve, "w2", 0.1, "min") == Reached(None)  # never reached
    assert first_reaching(curve, "prec", 0.6, "max").step == 300
    # a target is the target method's last curve point when it scores the final weights on the
    # curve's samples; otherwise (no point at the last step, other samples) there is none
    ends = [RunRecord(method="fm-euler100", dataset="moons", seed=s, status="ok", train_steps=400,
                      curve=[{**p, "samples": 500, "metrics": {"w2": p["metrics"]["w2"] + s}}
                             for p in curve]) for s in (0, 1)]
    assert final_point(ends, "w2", 500) == pytest.approx(0.7)
    assert final_point(ends, "w2", 2000) is None
    assert final_point([*ends, RunRecord(method="fm-euler100", dataset="moons", seed=2, status="ok",
                                         train_steps=500, curve=ends[0].curve)],
                       "w2", 500) is None


def test_the_gap_table_divides_by_the_reference_seed_by_seed(tmp_path):
    """Ratios pair seeds at a step (a seed the reference lacks is left out), steps the reference
    did not score are not columns, and a method with no common step gets no row."""
    from bench.evaluate import metric_vocabulary
    from bench.report.markdown import render_report
    from bench.report.model import Source

    def rec(method, seed, points):
        return RunRecord(method=method, dataset="moons", seed=seed, status="ok", nfe=1,
                         run_id=f"moons.{method}.s{seed}", config_hash=method[:6],
                         train_steps=max(points), train_seconds=1.0, metrics={"w2": 1.0},
                         curve=[{"step": s, "train_seconds": s / 10, "train_flops": s * 1e9,
                                 "samples": 100, "metrics": {"w2": v}}
                                for s, v in points.items()])

    recs = [rec("fm-euler100", 0, {100: 0.5, 200: 0.2}),
            rec("fm-euler100", 1, {100: 1.0, 200: 0.4}),
            rec("otnfm-online", 0, {100: 2.0, 200: 0.4}),
            rec("otnfm-online", 1, {100: 3.0, 200: 0.8}),
            rec("otnfm-online", 2, {100: 9.0, 200: 9.0}),  # no reference seed 2: left out
            rec("otmap-online", 0, {50: 1.0, 300: 1.0})]   # no common step: no row
    text = render_report([Source("r/records.jsonl", recs)], tmp_path / "r.md",
                         metric_vocabulary(), plots_on=False)
    table = text.split("### Gap to fm-euler100 during training")[1].split("\n\n")[2].splitlines()
    assert table[0] == "| method | seeds | step 100 | step 200 |"
    # seed 0: 4 and 2, seed 1: 3 and 2 -> means 3.5 and 2 (interval 3.5 +- 12.7 * 0.5)
    assert table[2] == "| otnfm-online | 2 | 3.5 [-2.85, 9.85] | 2 [2, 2] |"
    assert len(table) == 3  # otmap-online: no row
    # the curve points table lists every step any method scored; a step a method skipped is "–"
    points = text.split("### Curve points")[1].split("\n\n")[2].splitlines()
    assert points[0] == "| method | seeds | step 50 | step 100 | step 200 | step 300 |"
    assert "| otmap-online | 1 | 1 | – | – | 1 |" in points
    assert "| fm-euler100 | 2 | – | 0.75 [-2.43, 3.93] | 0.3 [-0.971, 1.57] | – |" in points


def test_the_curve_overhead_counts_each_training_once():
    """fm-euler4 and fm-euler100 read one checkpoint: their shared training and its curve
    count once in the overhead line, not once per reading."""
    from types import SimpleNamespace

    from bench.report.curves import curve_overhead

    def rec(method, checkpoint, train, curve):
        return RunRecord(method=method, dataset="moons", seed=0, status="ok", nfe=1,
                         run_id=f"moons.{method}.s0", train_seconds=train, curve_seconds=curve,
                         checkpoint=checkpoint, curve=[{"step": 1, "metrics": {"w2": 1.0}}])

    recs = [rec("fm-euler4", "ck/fm.pt", 90.0, 10.0), rec("fm-euler100", "ck/fm.pt", 90.0, 10.0),
            rec("otnfm-online", None, 99.0, 1.0)]
    line = curve_overhead(SimpleNamespace(records=recs))[0]
    assert "took 5.5% of the wall-clock of the trainings it watched (mean over 2; at most 10%)" \
        in line


def test_the_peers_record_curves_too(tmp_path):
    """MeanFlow (JVP loss), the shortcut model (bootstrap targets) and reflow (a distilled
    student: its curve follows the student's steps, after its teacher's pairs) score curve
    points through the same hook as the flows."""
    import math

    res = CliRunner().invoke(app, ["run", "-m", "meanflow,shortcut,reflow", "-d", "moons",
                                   "--out", str(tmp_path), *tiny_args(
                                       [*CURVE, "eval.curve_samples=100",
                                        "reflow.pairs_per_point=0.5"])])
    assert res.exit_code == 0, res.output
    recs = {r.method: r for r in read_records(tmp_path / "records.jsonl").records}
    for m in ("meanflow", "shortcut", "reflow"):
        assert recs[m].status == "ok", recs[m].error
        assert [p["step"] for p in recs[m].curve] == [15, 30], m
        assert all(math.isfinite(p["metrics"]["w2"]) and p["samples"] == 100
                   for p in recs[m].curve), m
        assert recs[m].curve_seconds > 0


def test_a_suite_that_gains_curves_rescores_only_its_floor(tmp_path):
    """Records of a version without the curve floor: a resumed suite with curves scores the
    floor again (the new record supersedes the old) and retrains nothing."""
    out = tmp_path / "r"
    before = _run(out)
    assert before["data"].curve_floor is None
    n = len(read_records(out / "records.jsonl").records)
    after = _run(out, CURVE)
    recs = read_records(out / "records.jsonl").records
    assert len(recs) == n + 1 and recs[-1].method == "data"
    assert after["data"].curve_floor["samples"] == 200
    assert after["data"].metrics == before["data"].metrics
    _run(out, CURVE)  # nothing left to do
    assert len(read_records(out / "records.jsonl").records) == n + 1


def test_the_curve_floor_is_scored_like_a_curve_point(tmp_path, monkeypatch):
    """The floor and every curve point share the evaluation settings, the metrics' random
    stream and the reference: only the scored points differ."""
    import bench.evaluate as ev

    seen, real = [], ev.compute_metrics

    def spy(x, ref, kind, cfg, gen, *a, **k):
        if x.shape[0] == 200:  # the curve's sample count (the final scores use 600)
            seen.append((repr(cfg), gen.initial_seed(), tuple(ref.shape), float(ref.sum())))
        return real(x, ref, kind, cfg, gen, *a, **k)

    monkeypatch.setattr(ev, "compute_metrics", spy)
    recs = _run(tmp_path, CURVE)
    points = sum(len(r.curve) for r in recs.values())
    banks = sum("bank" in p for r in recs.values() for p in r.curve)  # the bank gap's scores
    assert points == 6 and banks == 2 and len(seen) == points + banks + 1
    assert len(set(seen)) == 1


def test_a_failed_curve_floor_keeps_the_floor_and_is_not_retried(tmp_path):
    """Fewer held-out points than a curve point's count: the floor record stays ok with its
    full scores, the curve floor says why it is missing, and a resume leaves it be."""
    extra = [*CURVE, "data.n_eval=150"]
    out = tmp_path / "r"
    recs = _run(out, extra)
    floor = recs["data"]
    assert floor.status == "ok" and "w2" in floor.metrics
    assert floor.curve_floor["samples"] == 200 and "fewer than the 200" in floor.curve_floor[
        "error"]
    n = len(read_records(out / "records.jsonl").records)
    _run(out, extra)
    assert len(read_records(out / "records.jsonl").records) == n


def test_floor_due_follows_the_records(tmp_path):
    """The floor is (re)scored when missing, when a suite with curves finds it without its
    curve floor or with one on another sample count; otherwise, or without curves, not."""
    from bench.jobs import all_recorded, floor_due
    from bench.planner import Plan
    from bench.results import append_record, ok_keys

    path = tmp_path / "records.jsonl"
    plan = Plan.of(resolve(overrides={**TINY, "methods": ["fm-euler1"], "datasets": ["moons"],
                                      "seeds": [0], "eval": {**TINY["eval"], "curve": [1.0],
                                                             "curve_samples": 200}}))
    flat = Plan.of(dataclasses.replace(plan.cfg, eval=dataclasses.replace(plan.cfg.eval,
                                                                          curve=())))
    spec = plan.floor("moons", 0)
    assert spec.key == flat.floor("moons", 0).key  # curves are no part of the key

    def write(curve_floor):
        append_record(path, RunRecord(method="data", dataset="moons", seed=0, status="ok",
                                      config_hash=spec.config_hash, curve_floor=curve_floor))
        return ok_keys(path)

    assert floor_due(plan, spec, ok_keys(path), path)  # nothing recorded
    ok = write(None)
    assert floor_due(plan, spec, ok, path) and not floor_due(flat, spec, ok, path)
    ok = write({"samples": 100, "metrics": {"w2": 0.3}})
    assert floor_due(plan, spec, ok, path)  # curve_samples changed since
    ok = write({"samples": 200, "metrics": {"w2": 0.2}})
    assert not floor_due(plan, spec, ok, path)
    run = plan.runs("moons", 0)[0]
    append_record(path, RunRecord(method=run.method, dataset="moons", seed=0, status="ok",
                                  config_hash=run.config_hash))
    unit = plan.units()[0]
    assert all_recorded(unit, ok_keys(path), path)
    write(None)
    assert not all_recorded(unit, ok_keys(path), path)  # a Slurm resume submits the floor


def _table_rows(text: str, heading: str) -> dict[str, str]:
    """The rows of the report table under ``heading``, by their first cell."""
    section = text[text.index(heading):]
    section = section[: section.index("\n\n", section.index("| method"))]
    return {ln.split(" | ")[0][2:]: ln for ln in section.splitlines()
            if ln.startswith("| ") and "method" not in ln}


def test_the_report_shows_the_bank_gap_and_memorisation_beside_the_curves(tmp_path):
    recs = _run(tmp_path / "res", CURVE)
    for m in ("otnfm-online", "fm-euler1"):
        for p in recs[m].curve:  # by default: the headline's metric, then memorisation
            assert {"w2", "copy_ratio", "copy_share"} <= set(p["metrics"])
            assert p["metrics"]["copy_ratio"] > 0 and 0 <= p["metrics"]["copy_share"] <= 1
    assert "copy_share" in recs["otnfm-online"].curve[-1]["bank"]
    res = CliRunner().invoke(app, ["report", str(tmp_path / "res"), "--no-figures",
                                   "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "r.md").read_text()
    last = recs["otnfm-online"].curve[-1]
    rows = _table_rows(text, "### Bank gap during training")
    assert list(rows) == ["otnfm-online"]  # only the bank method
    fresh, bank = last["metrics"]["w2"], last["bank"]["w2"]
    assert f"{fresh:.3g} / {bank:.3g} (gap {fresh - bank:.3g} (1 seed))" in rows["otnfm-online"]
    rows = _table_rows(text, "### Memorisation during training")
    assert set(rows) == {"otnfm-online", "fm-euler1", "fm-euler10"}
    want = (f"{last['metrics']['copy_ratio']:.3g} / {last['metrics']['copy_share']:.3g}; bank "
            f"{last['bank']['copy_ratio']:.3g} / {last['bank']['copy_share']:.3g}")
    assert rows["otnfm-online"].rstrip(" |").endswith(want)
    assert "bank" not in rows["fm-euler1"]  # no bank, no bank side


def test_named_curve_metrics_are_the_only_ones_scored(tmp_path):
    only = _run(tmp_path / "only", [*CURVE, "eval.curve_metrics=[w2]"])
    assert all(set(p["metrics"]) == {"w2", "w2_sq"} for p in only["otnfm-online"].curve)
