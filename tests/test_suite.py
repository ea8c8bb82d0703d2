"""The suite service (``bench.suite``): what ``bench run`` / ``bench sweep`` call, and what
Python users call instead of the command line."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.config import ConfigError
from bench.records import append_record
from bench.results import RECORDS_FILE, read_records
from bench.suite import collect, plan_suite, run_suite, suite_file
from tests.conftest import TINY_SETS, tiny_args

runner = CliRunner()
METHODS = "otnfm-online,fm-euler10"


def _key(r):
    return (r.dataset, r.method, r.seed, r.config_hash, r.recipe_hash, r.status, r.nfe)


def test_the_python_api_runs_a_tiny_suite_as_the_cli_does(tmp_path):
    suite = plan_suite(overrides={"methods": METHODS, "datasets": "moons", "seeds": "0",
                                  "device": "cpu"}, sets=TINY_SETS)
    records = run_suite(suite, tmp_path / "api")
    assert sorted(r.method for r in records) == ["data", "fm-euler10", "otnfm-online"]
    assert all(r.status == "ok" for r in records)
    assert [_key(r) for r in records] == [
        _key(r) for r in read_records(tmp_path / "api" / RECORDS_FILE).records]

    res = runner.invoke(app, ["run", "-m", METHODS, "-d", "moons", "--seeds", "0",
                              "--device", "cpu", "--out", str(tmp_path / "cli"), *tiny_args()])
    assert res.exit_code == 0, res.output
    written = read_records(tmp_path / "cli" / RECORDS_FILE).records
    assert sorted(map(_key, written)) == sorted(map(_key, records))
    cli = {r.method: r.metrics for r in written}
    assert {r.method: r.metrics for r in records} == cli  # trained the same, bit for bit

    # a second call finds every run recorded: nothing written, the same records collected
    assert run_suite(suite, tmp_path / "api") == records


def test_run_and_sweep_apply_dataset_presets_by_the_same_rule(tmp_path):
    """Presets apply only without a suite file, for run and sweep alike: a sweep file plans
    the configs that the same file without its grid plans under ``bench run --config``."""
    body = "name: p\ndatasets: [digits]\nmethods: [fm-euler10, otnfm-online]\nseeds: [0, 1]\n"
    run_file, sweep_file = tmp_path / "run.yaml", tmp_path / "sweep.yaml"
    run_file.write_text(body)
    sweep_file.write_text(body + "sweep:\n  seed: [0, 1]\n")
    flags, sets = {"device": "cpu"}, ["train.steps=7"]

    as_run = plan_suite(run_file, flags, sets)
    as_sweep = plan_suite(sweep_file, flags, sets, sweep=True)
    assert as_run.preset is None and as_sweep.preset is None
    assert as_run.cfg == as_sweep.cfg
    assert ({s.key for s in as_run.plans[0].runs()}
            == {s.key for p in as_sweep.plans for s in p.runs()})
    # what bench report --config selects: the runs that run / sweep plan for the file
    swept, ran = plan_suite(sweep_file, sweep=True), plan_suite(run_file)
    assert set(suite_file(sweep_file).run_points()) == set(swept.run_points())
    assert set(suite_file(run_file).run_points()) == set(ran.run_points())
    assert set(swept.run_points()) == set(ran.run_points())

    # the CLI plans the same: bench run --dry-run prints the config hashes
    res = runner.invoke(app, ["run", "--config", str(run_file), "--device", "cpu",
                              "--set", "train.steps=7", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert {s.config_hash for s in as_sweep.plans[0].runs()} <= {
        line.split("config ")[-1].rstrip(")") for line in res.output.splitlines()
        if line.startswith("# run ")}

    # without a file, the dataset's default recipe is underneath
    bare = plan_suite(overrides={"datasets": "digits"})
    assert bare.preset == "digits" and bare.cfg.net != plan_suite(run_file).cfg.net
    with pytest.raises(ConfigError, match="sweep"):
        plan_suite(overrides={"datasets": "digits"}, sweep=True)


def test_collect_keeps_the_latest_record_per_run(tmp_path):
    suite = plan_suite(overrides={"methods": "fm-euler10", "datasets": "moons", "seeds": "0,1",
                                  "device": "cpu"}, sets=TINY_SETS)
    first = run_suite(suite, tmp_path)
    assert len(first) == 4 and all(r.status == "ok" for r in first)
    # a later attempt of one run (here: a failure) replaces the earlier record
    redo = next(r for r in first if r.method == "fm-euler10" and r.seed == 1)
    later = dataclasses.replace(redo, status="failed", error="RuntimeError: boom")
    append_record(tmp_path / RECORDS_FILE, later)
    got = collect(tmp_path, suite.units())
    assert len(got) == 4
    assert [r for r in got if (r.method, r.seed) == ("fm-euler10", 1)] == [later]
    # records of runs outside the units are not collected
    other = plan_suite(overrides={"methods": "fm-euler10", "datasets": "moons", "seeds": "0",
                                  "device": "cpu"}, sets=TINY_SETS)
    assert {r.seed for r in collect(tmp_path, other.units())} == {0}
