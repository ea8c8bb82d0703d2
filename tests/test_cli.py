"""The CLI end to end through typer's runner: real training, real records, a real report."""

import json

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.registry import METHODS
from bench.results import read_records
from tests.conftest import tiny_args

runner = CliRunner()


def test_list_shows_every_registry():
    res = runner.invoke(app, ["list", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data["methods"]) == set(METHODS.names())
    assert "moons" in data["datasets"] and "w2" in data["metrics"]
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0 and "otnfm-online" in res.output and "checkerboard" in res.output


def test_run_then_report_end_to_end(tmp_path):
    out = tmp_path / "res"
    res = runner.invoke(app, ["run", "-m", "otnfm-online,fm-euler1,fm-euler10", "-d", "moons",
                              "--seeds", "0,1", "--out", str(out), *tiny_args()])
    assert res.exit_code == 0, res.output
    recs = read_records(out / "records.jsonl").records
    assert sorted((r.method, r.seed) for r in recs) == sorted(
        (m, s) for m in ("data", "otnfm-online", "fm-euler1", "fm-euler10") for s in (0, 1))
    by = {(r.method, r.seed): r for r in recs}
    r = by[("otnfm-online", 0)]
    assert r.status == "ok" and r.nfe == 1 and r.train_steps == 30
    for key in ("w2", "mmd", "precision", "recall", "var_ratio", "mean_dist"):
        assert key in r.metrics
    assert r.sample_ms_per_1k > 0 and r.coupling_seconds > 0 and r.train_seconds > 0
    assert r.config["method"] == "otnfm-online" and r.config["train"]["steps"] == 30
    # the default ema 0.999 is capped by the warm-up at (1 + 30) / (10 + 30) in 30 steps
    assert r.ema_reached == pytest.approx(31 / 40)
    assert by[("fm-euler10", 0)].nfe == 10
    # the fm family trained once per seed and shares the checkpoint
    assert by[("fm-euler1", 0)].checkpoint == by[("fm-euler10", 0)].checkpoint
    assert by[("fm-euler1", 0)].train_seconds == by[("fm-euler10", 0)].train_seconds
    assert len(list((out / "checkpoints").glob("*.pt"))) == 4

    # a second identical run trains nothing and says so
    res = runner.invoke(app, ["run", "-m", "otnfm-online,fm-euler1,fm-euler10", "-d", "moons",
                              "--seeds", "0,1", "--out", str(out), *tiny_args()])
    assert res.exit_code == 0 and "Nothing to do" in res.output
    assert len(read_records(out / "records.jsonl").records) == len(recs)

    md = tmp_path / "rep" / "report.md"
    res = runner.invoke(app, ["report", str(out), "--out", str(md)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "| otnfm-online | 2 | 1 |" in text and "data (floor)" in text
    assert "w2 ↓" in text and "var_ratio →1" in text
    assert ("EMA: `train.ema` 0.999 is set, but the warm-up (1 + n) / (10 + n) holds the decay "
            "at 0.7750 at the last of 30 steps, so the 6 run(s) here averaged") in text
    assert (tmp_path / "rep" / "report" / "moons_samples.png").stat().st_size > 1000
    assert str(out / "records.jsonl") in text


def test_unknown_method_and_dataset_name_the_choices(tmp_path):
    res = runner.invoke(app, ["run", "-m", "otnfm-onlin", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown method 'otnfm-onlin'" in res.output and "otnfm-online" in res.output
    res = runner.invoke(app, ["run", "-d", "moon", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "Did you mean: moons" in res.output
    res = runner.invoke(app, ["run", "--set", "eval.metrics=[w2,mdd]", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown metric 'mdd'" in res.output and "mmd" in res.output
    assert not (tmp_path / "records.jsonl").exists()


def test_bad_config_key_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  step: 3\n")
    res = runner.invoke(app, ["run", "--config", str(cfg), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown key 'step'" in res.output and "c.yaml" in res.output


def test_dry_run_prints_config_and_plan(tmp_path):
    res = runner.invoke(app, ["run", "-m", "otnfm-m*,otnfm-o*", "--seeds", "0,1", "--dry-run",
                              "--show-config", "--out", str(tmp_path), "--set", "train.steps=5"])
    assert res.exit_code == 0, res.output
    assert "steps: 5" in res.output and res.output.count("# run moons") == 4
    assert not (tmp_path / "records.jsonl").exists()


PLUGIN = '''
import torch
from bench.methods.nfm import NeuralFlow
from bench.registry import register_method


class Exploding(NeuralFlow):
    def loss(self, batch, gens):
        loss, logs = super().loss(batch, gens)
        return loss * float("nan"), logs


@register_method("test-exploding")
def exploding(ctx):
    """A method whose loss is NaN: must be recorded as failed."""
    return Exploding(ctx.net(time_inputs=1), ctx.coupling("independent"))
'''


def test_plugin_method_failure_is_recorded_and_others_go_on(tmp_path):
    plugin = tmp_path / "my_method.py"
    plugin.write_text(PLUGIN)
    out = tmp_path / "res"
    try:
        res = runner.invoke(app, ["run", "--plugin", str(plugin), "-m",
                                  "test-exploding,naive-map", "--out", str(out), *tiny_args()])
        assert res.exit_code == 1
        recs = {r.method: r for r in read_records(out / "records.jsonl").records}
        assert recs["test-exploding"].status == "failed"
        assert "TrainingDiverged: loss became nan at step 0" in recs["test-exploding"].error
        assert recs["naive-map"].status == "ok"
        res = runner.invoke(app, ["report", str(out)])
        assert res.exit_code == 0
        assert "## Failed runs" in (out / "report.md").read_text()
    finally:
        METHODS.unregister("test-exploding")


def test_bad_plugin_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("raise ImportError('nope')\n")
    res = runner.invoke(app, ["list", "--plugin", str(bad)])
    assert res.exit_code == 2 and "failed to load" in res.output


@pytest.mark.parametrize("args", [["report", "does/not/exist"]])
def test_report_on_missing_results(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "no results" in res.output


def test_readme_plugin_example_shares_the_fm_checkpoint(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "fm_rk4.py"
    assert len(example.read_text().splitlines()) < 40
    out = tmp_path / "res"
    try:
        res = runner.invoke(app, ["run", "--plugin", str(example), "-m",
                                  "fm-rk4-3,fm-euler10", "--out", str(out), *tiny_args()])
        assert res.exit_code == 0, res.output
        recs = {r.method: r for r in read_records(out / "records.jsonl").records}
        assert recs["fm-rk4-3"].nfe == 12 and recs["fm-rk4-3"].status == "ok"
        assert recs["fm-rk4-3"].checkpoint == recs["fm-euler10"].checkpoint
    finally:
        METHODS.unregister("fm-rk4-3")


def test_sweep_cli_then_rerun_trains_nothing(tmp_path):
    f = tmp_path / "ab.yaml"
    f.write_text("name: ab\nsweep:\n  method: [otnfm-minibatch]\n  seed: [0, 1]\n"
                 "  coupling.batch_size: [32, 128]\n")
    out = tmp_path / "res"
    res = runner.invoke(app, ["sweep", "--config", str(f), "--out", str(out), *tiny_args()])
    assert res.exit_code == 0, res.output
    recs = [r for r in read_records(out / "records.jsonl").records if r.method != "data"]
    assert sorted((r.sweep["coupling.batch_size"], r.seed) for r in recs) == [
        (32, 0), (32, 1), (128, 0), (128, 1)]
    assert all(r.coupling_diagnostics["target_var_ratio"] >= 0 for r in recs)
    res = runner.invoke(app, ["sweep", "--config", str(f), "--out", str(out), *tiny_args()])
    assert res.exit_code == 0 and "nothing was trained" in res.output
    assert len(read_records(out / "records.jsonl").records) == len(recs) + 2
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    text = (out / "report.md").read_text()
    assert "otnfm-minibatch · coupling.batch_size=32" in text
    assert "moons_sweep_coupling_batch_size.png" in text and "Coupling diagnostics" in text


def test_dataset_with_its_own_source(tmp_path):
    out = tmp_path / "res"
    res = runner.invoke(app, ["run", "-m", "naive-map", "-d", "moons@8gmm", "--out", str(out),
                              *tiny_args()])
    assert res.exit_code == 0, res.output
    rec = [r for r in read_records(out / "records.jsonl").records if r.method == "naive-map"][0]
    assert rec.dataset == "moons@8gmm" and rec.data_info["source"] == "8gmm"
    assert rec.config["data"]["source"] == "8gmm"
    res = runner.invoke(app, ["run", "-d", "moons@uniform", "--out", str(out)])
    assert res.exit_code == 2 and "unknown source 'uniform'" in res.output
