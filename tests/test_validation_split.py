"""``data.validation``: hyperparameters are chosen on items held back from training, never on
the eval split (the lr x EMA sensitivity study)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import ConfigError, hashed, resolve, to_dict
from bench.datasets.base import hold_out_validation, load_dataset
from bench.records import read_records
from tests.conftest import tiny_args

runner = CliRunner()


def test_bad_values_are_clear_errors():
    with pytest.raises(ConfigError, match="data.validation must be >= 0"):
        resolve(overrides={"data": {"validation": -1}})
    with pytest.raises(ConfigError, match="cannot be combined with eval.reference='train'"):
        resolve(overrides={"data": {"validation": 100}, "eval": {"reference": "train"}})


def test_the_key_enters_the_hash_only_when_set():
    """Records made before the key existed keep their config hash."""
    assert "validation" not in hashed(to_dict(resolve()))["data"]
    assert hashed(to_dict(resolve(overrides={"data": {"validation": 10}})))["data"][
        "validation"] == 10


def test_images_hold_back_the_last_training_items_and_drop_the_eval_split(cpu):
    cfg = resolve(overrides={"data": {"n_train": 1000, "n_eval": 300}})
    full = load_dataset(cfg, "digits", 0, cpu)
    val = load_dataset(resolve(overrides={"data": {"n_train": 1000, "n_eval": 300,
                                                   "validation": 250}}), "digits", 0, cpu)
    assert val.train.shape[0] == 750 and val.eval.shape[0] == 250
    assert torch.equal(val.train, full.train[:750]) and torch.equal(val.eval, full.train[750:])
    assert torch.equal(val.eval_labels, full.train_labels[750:])
    assert torch.equal(val.train_labels, full.train_labels[:750])
    assert torch.equal(val.floor, full.train[:250])
    # nothing of the eval split is left in the bundle
    ev = {tuple(r.tolist()) for r in full.eval.flatten(1)}
    left = torch.cat([val.train, val.eval, val.floor]).flatten(1)
    tr = {tuple(r.tolist()) for r in full.train.flatten(1)}
    assert all(tuple(r.tolist()) in tr for r in left)
    assert val.info["validation"] == 250 and val.info["n_eval"] == 250
    assert "validation: the last 250 of 1000 training items" in val.info["description"]
    assert ev  # (digits' eval split exists; it just is not used)


def test_too_many_held_back_is_a_clear_error(cpu):
    data = load_dataset(resolve(overrides={"data": {"n_train": 100, "n_eval": 50}}), "moons", 0,
                        cpu)
    with pytest.raises(ConfigError, match="data.validation=100 leaves no training data"):
        hold_out_validation(data, 100)


def test_run_and_report_say_validation_end_to_end(tmp_path):
    out, md = tmp_path / "res", tmp_path / "report.md"
    res = runner.invoke(app, ["run", "-m", "otnfm-online", "-d", "moons", "--out", str(out),
                              "--no-estimate", *tiny_args(["data.validation=200"])])
    assert res.exit_code == 0, res.output
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    r = recs["otnfm-online"]
    assert r.status == "ok" and r.metric_info["reference"] == "validation"
    assert r.metric_info["n_reference"] == 200 and r.config["data"]["validation"] == 200
    assert recs["data"].metric_info["reference"] == "validation"
    res = runner.invoke(app, ["report", str(out), "--out", str(md), "--no-figures"])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "312 training points from each run's seed, 200 validation points held back" in text
    assert "against 200 validation (held back from training; the eval split unused) points" in text


def test_points_keep_their_own_floor(cpu):
    """A 2-D floor is drawn from the run seed apart from the training points; it stays (the
    training points would read as copies of themselves on the copy metric)."""
    cfg = {"data": {"n_train": 600, "n_eval": 300}}
    full = load_dataset(resolve(overrides=cfg), "moons", 0, cpu)
    val = load_dataset(resolve(overrides={"data": {**cfg["data"], "validation": 200}}), "moons",
                       0, cpu)
    assert torch.equal(val.floor, full.floor) and torch.equal(val.eval, full.train[400:])
    assert "floor" not in val.info or val.info["floor"] == full.info.get("floor")
