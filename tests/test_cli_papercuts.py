"""CLI papercuts (issue 29): status of a finished folder, sample's format by data kind, the
--plugin hint for unknown names, report data on stdout, list filters, help at 80 columns."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.registry import METHODS
from bench.results import read_records
from tests.conftest import tiny_args

cli = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fm_rk4.py"


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    """A finished moons run of a built-in method and a plugin's (then unregistered, as in a
    later command that leaves out --plugin)."""
    tmp = tmp_path_factory.mktemp("papercuts")
    plugin = tmp / "my_rk4.py"  # its own path: load_plugin runs each file once per process
    shutil.copy(EXAMPLE, plugin)
    out = tmp / "res"
    try:
        res = cli.invoke(app, ["run", "--plugin", str(plugin), "-m", "fm-rk4-3,fm-euler10",
                               "--out", str(out), *tiny_args()])
        assert res.exit_code == 0, res.output
    finally:
        METHODS.unregister("fm-rk4-3")
    return out, plugin


def test_status_of_a_finished_folder_counts_its_runs(moons_run, tmp_path):
    out, _ = moons_run
    res = cli.invoke(app, ["status", str(out)])
    assert res.exit_code == 0, res.output
    assert "runs recorded in" in res.output and "interrupted" in res.output
    row = next(line for line in res.output.splitlines() if "fm-euler10" in line)
    assert [c.strip() for c in row.strip("│┃ ").split("│")][1:] == ["fm-euler10", "1", "0", "0"]
    for missing in (tmp_path / "nothing", tmp_path):
        res = cli.invoke(app, ["status", str(missing)])
        assert res.exit_code == 2 and "nothing to show" in res.output


def test_sample_defaults_to_npz_for_points(moons_run, tmp_path):
    out, plugin = moons_run
    res = cli.invoke(app, ["sample", str(out), "-m", "fm-euler10", "-n", "9", "--out",
                           str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    arr = np.load(tmp_path / "s" / "samples.npz")["samples"]
    assert arr.shape == (9, 2) and arr.dtype == np.float32
    res = cli.invoke(app, ["sample", str(out), "-m", "fm-euler10", "--format", "png",
                           "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "use --format npz" in res.output


def test_record_names_the_plugin_and_sample_says_to_load_it(moons_run, tmp_path):
    out, plugin = moons_run
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert recs["fm-rk4-3"].plugin == str(plugin.resolve())
    assert recs["fm-euler10"].plugin is None and recs["data"].plugin is None
    res = cli.invoke(app, ["sample", str(out), "-m", "fm-rk4-3", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown method 'fm-rk4-3'" in res.output
    assert f"--plugin {plugin.resolve()}" in res.output.replace("\n", "")
    again = tmp_path / "again.py"  # the same plugin (a file runs once per process)
    shutil.copy(plugin, again)
    try:  # with the file loaded it samples
        res = cli.invoke(app, ["sample", str(out), "-m", "fm-rk4-3", "-n", "5", "--plugin",
                               str(again), "--out", str(tmp_path / "s")])
        assert res.exit_code == 0 and "counted NFE 12" in res.output, res.output
    finally:
        METHODS.unregister("fm-rk4-3")


def test_unknown_name_without_a_close_match_suggests_a_plugin(tmp_path):
    res = cli.invoke(app, ["run", "-m", "zzzqqq", "--dry-run", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown method 'zzzqqq'" in res.output
    assert "--plugin path/to/file.py" in res.output
    res = cli.invoke(app, ["run", "-m", "otnfm-onlin", "--dry-run", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "Did you mean: otnfm-online" in res.output
    assert "--plugin" not in res.output  # a close match says enough


def test_report_json_and_csv_go_to_stdout_without_out(moons_run, tmp_path):
    out, _ = moons_run
    res = cli.invoke(app, ["report", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["method"]: r for r in json.loads(res.stdout)}
    assert {"data", "fm-euler10", "fm-rk4-3"} <= set(rows)
    assert not (out / "report.json").exists()
    res = cli.invoke(app, ["report", str(out), "--format", "csv"])
    assert res.exit_code == 0 and len(list(csv.DictReader(io.StringIO(res.stdout)))) == 3
    res = cli.invoke(app, ["report", str(out), "--format", "csv", "--out",
                           str(tmp_path / "r.csv")])
    assert res.exit_code == 0 and "wrote" in res.output and (tmp_path / "r.csv").exists()


def test_list_one_registry_filtered_with_nfe():
    res = cli.invoke(app, ["list", "methods", "--grep", "EULER10", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert "datasets" not in data and "fm-euler100" in data["methods"]
    assert all("euler10" in m for m in data["methods"])
    assert data["methods"]["fm-euler10"]["nfe"] == 10 and "fm" in data["families"]
    full = json.loads(cli.invoke(app, ["list", "--json"]).output)
    assert full["methods"]["fm-dopri5"]["nfe"] == "adaptive"
    assert full["methods"]["fm-heun2"]["nfe"] == 4
    res = cli.invoke(app, ["list", "datasets", "--grep", "moon"])
    assert res.exit_code == 0 and "moons" in res.output and "Metrics" not in res.output
    res = cli.invoke(app, ["list", "method"])
    assert res.exit_code == 2 and "choose methods, datasets, metrics" in res.output
