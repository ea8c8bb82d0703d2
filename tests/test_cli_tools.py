"""The everyday tools around runs: presets, sampling from a run, reports as data, live logs."""

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.config import resolve
from tests.conftest import IMAGE_SETS, tiny_args

cli = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
#: the page that holds the Python API example (docs/usage-and-configuration.md)
API_DOC = ROOT / "docs" / "usage-and-configuration.md"


def test_dataset_presets_apply_without_a_config_and_yield_to_set_and_files(tmp_path):
    res = cli.invoke(app, ["run", "-m", "otnfm-online", "-d", "mnist5k", "--dry-run",
                           "--show-config", "--out", str(tmp_path), "--set",
                           "train.batch_size=64"])
    assert res.exit_code == 0, res.output
    assert "# preset: mnist5k" in res.output and "unet: s" in res.output
    assert "steps: 1200" in res.output and "batch_size: 64" in res.output  # --set wins
    assert "caches: 1" in res.output  # few passes over the data: one noise cache per point
    assert "# estimate: about" in res.output
    # a config file replaces the preset: the file's values, the defaults under it
    res = cli.invoke(app, ["run", "--config", "configs/quick.yaml", "-d", "mnist5k",
                           "--dry-run", "--show-config", "--no-estimate", "--out",
                           str(tmp_path)])
    assert res.exit_code == 0 and "# preset: none" in res.output and "steps: 2500" in res.output
    assert "estimat" not in res.output  # --no-estimate: no step was timed
    cfg = resolve(raw={"train": {"steps": 3}}, preset={"train": {"steps": 9, "lr": 0.5}},
                  sets=["train.lr=0.25"])
    assert (cfg.train.steps, cfg.train.lr) == (3, 0.25)  # preset < config < --set
    res = cli.invoke(app, ["run", "-d", "moons,mnist5k", "--dry-run", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "different default recipes" in res.output


@pytest.mark.slow
def test_the_headline_command_on_cifar10_shows_its_preset_and_estimate(tmp_path):
    from tests.imagedata import write_cifar

    root = write_cifar(tmp_path / "data")
    res = cli.invoke(app, ["run", "-m", "otnfm-online,fm-euler100", "-d", "cifar10",
                           "--data-root", str(root), "--set", "data.checksum=false",
                           "--dry-run", "--show-config", "--out", str(tmp_path / "res")])
    assert res.exit_code == 0, res.output
    assert "# preset: cifar10" in res.output and "unet: cifar" in res.output
    assert "steps: 400000" in res.output and "n_samples: 50000" in res.output
    assert re.search(r"# estimate: about [\d.]+ h on cpu", res.output)
    assert "this is long for a CPU" in res.output


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "res"
    res = cli.invoke(app, ["run", "-m", "otnfm-online,fm-euler4", "-d", "digits", "--out",
                           str(out), *[a for s in IMAGE_SETS for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return out


def test_bench_sample_writes_pngs_and_npz(digits_run, tmp_path):
    res = cli.invoke(app, ["sample", str(digits_run), "-m", "fm-euler4", "-n", "12", "--out",
                           str(tmp_path / "png")])
    assert res.exit_code == 0, res.output and "counted NFE 4" in res.output
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert [p.name for p in pngs[:2]] == ["00.png", "01.png"] and len(pngs) == 12
    res = cli.invoke(app, ["sample", str(digits_run), "-m", "otnfm-online", "-n", "7",
                           "--format", "npz", "--out", str(tmp_path / "npz")])
    assert res.exit_code == 0, res.output
    arr = np.load(tmp_path / "npz" / "samples.npz")["samples"]
    assert arr.shape == (7, 8, 8, 3) and arr.dtype == np.uint8
    res = cli.invoke(app, ["sample", str(digits_run), "-m", "meanflow", "--out",
                           str(tmp_path / "x")])
    assert res.exit_code == 2 and "0 checkpoints" in res.output


def test_report_as_json_and_csv(digits_run, tmp_path):
    res = cli.invoke(app, ["report", str(digits_run), "--format", "json", "--out",
                           str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    rows = {r["method"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert set(rows) == {"data", "otnfm-online", "fm-euler4"} and rows["fm-euler4"]["nfe"] == 4
    fd = rows["otnfm-online"]["metrics"]["fd_domain"]
    assert fd["n"] == 1 and fd["mean"] > 0 and fd["ci95_lo"] is None  # one seed: no interval
    assert rows["otnfm-online"]["costs"]["train_flops"]["mean"] > 0
    res = cli.invoke(app, ["report", str(digits_run), "--format", "csv", "--out",
                           str(tmp_path / "r.csv")])
    table = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert res.exit_code == 0 and len(table) == 3 and "fd_domain.mean" in table[0]


def test_live_stats_and_status(digits_run, tmp_path):
    (log,) = [p for p in (digits_run / "stats").glob("*.jsonl") if ".fm." in p.name]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20] and rows[-1]["steps"] == 20
    assert all({"loss", "grad_norm", "lr", "train_seconds", "time"} <= set(r) for r in rows)
    res = cli.invoke(app, ["status", str(digits_run)])
    assert res.exit_code == 0 and "runs recorded in" in res.output  # all finished: counts
    ckpt = digits_run / "checkpoints" / f"{log.stem}.pt"
    moved = ckpt.rename(tmp_path / ckpt.name)  # as if it were still training
    try:
        res = cli.invoke(app, ["status", str(digits_run)])
        assert res.exit_code == 0 and "20/20" in res.output and "stopped" in res.output
        holder = subprocess.Popen(  # another process training it holds its claim
            [sys.executable, "-c", "import sys, time; from bench.claims import Claims\n"
             f"with Claims({str(digits_run)!r}).hold({log.stem!r}):\n"
             "    print('held', flush=True); time.sleep(60)"],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert holder.stdout.readline().strip() == "held"
            res = cli.invoke(app, ["status", str(digits_run)])
        finally:
            holder.kill()
        assert "training" in res.output.split("(live logs")[1] and "stopped" not in res.output
    finally:
        moved.rename(ckpt)


def test_the_documented_api_example_runs(tmp_path, monkeypatch):
    text = API_DOC.read_text()
    block = text.split("<!-- api-example:start -->")[1].split("<!-- api-example:end -->")[0]
    code = block.split("```python")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    res = cli.invoke(app, ["run", "-m", "otnfm-online", "-d", "moons", "--out",
                           "results/quick", *tiny_args()])
    assert res.exit_code == 0, res.output
    assert len(code.strip().splitlines()) <= 6
    scope: dict = {}
    exec(compile(code, API_DOC.name, "exec"), scope)  # noqa: S102 (our own docs' example)
    assert tuple(scope["x"].shape) == (1000, 2) and scope["model"].nfe == 1


def test_report_selects_the_runs_of_named_methods_datasets_and_suite_files(tmp_path):
    """One folder shared by suites (and a sweep): --methods/--dataset globs and --config files
    pick their records (a suite file's runs by config hash, a sweep's `seed:` axis as its
    seeds); the data floor follows its dataset; a selection that keeps nothing fails with what
    the records hold."""
    from bench.config import expand_sweep
    from bench.planner import Plan
    from bench.results import RunRecord, append_record

    ladder, k1 = tmp_path / "ladder.yaml", tmp_path / "k1.yaml"
    ladder.write_text("methods: ['otnfm-*']\ndatasets: [moons]\nseeds: [0, 1]\n")
    k1.write_text("methods: [otnfm-online]\ndatasets: [moons]\n"
                  "sweep:\n  seed: [0]\n  coupling.caches: [1]\n")
    plan = Plan.of(resolve(ladder))
    (assign, k1_cfg), = expand_sweep(k1)
    k1_plan = Plan.of(k1_cfg, assign)
    rows = [(plan.floor("moons", s), {}) for s in (0, 1)]
    rows += [(plan.spec(m, "moons", s), {}) for s in (0, 1) for m in ("otnfm-online", "meanflow")]
    rows += [(k1_plan.spec("otnfm-online", "moons", 0), assign),
             (plan.spec("otnfm-online", "spiral", 0), {}), (plan.floor("spiral", 0), {}),
             (plan.spec("otnfm-online", "moons", 5), {})]
    rec = tmp_path / "res" / "records.jsonl"
    for spec, sweep in rows:
        append_record(rec, RunRecord(method=spec.method, dataset=spec.dataset, seed=spec.seed,
                                     status="ok", sweep=sweep, config_hash=spec.config_hash,
                                     run_id=f"{spec.dataset}.{spec.method}.s{spec.seed}"
                                            f".{len(sweep)}", metrics={"w2": 0.2}))
    # the same method and seed at other settings (another suite's): never this suite's run
    append_record(rec, RunRecord(method="otnfm-online", dataset="moons", seed=1, status="ok",
                                 config_hash="0123456789ab", run_id="moons.otnfm-online.s1.other",
                                 metrics={"w2": 0.3}))

    def runs(*args):
        out = tmp_path / "r.md"
        res = cli.invoke(app, ["report", str(rec.parent), "--out", str(out), *args])
        assert res.exit_code == 0, res.output
        return sorted(line.split("`")[1] for line in out.read_text().splitlines()
                      if line.startswith("| `"))

    assert runs("-m", "otnfm-*", "-d", "spiral") == ["spiral.data.s0.0", "spiral.otnfm-online.s0.0"]
    assert runs("-c", str(ladder)) == [
        "moons.data.s0.0", "moons.data.s1.0", "moons.otnfm-online.s0.0", "moons.otnfm-online.s1.0"]
    both = runs("-c", str(ladder), "-c", str(k1))
    assert "moons.otnfm-online.s0.1" in both and len(both) == 5
    assert runs("-c", str(k1)) == ["moons.data.s0.0", "moons.otnfm-online.s0.1"]
    assert runs("-m", "meanflow") == ["moons.data.s0.0", "moons.data.s1.0",
                                      "moons.meanflow.s0.0", "moons.meanflow.s1.0"]
    res = cli.invoke(app, ["report", str(rec.parent), "--out", str(tmp_path / "x.md"),
                           "-m", "shortcut"])
    assert res.exit_code != 0 and "keeps no record" in res.output and "moons/meanflow" in res.output
    res = cli.invoke(app, ["report", str(rec.parent), "--out", str(tmp_path / "y.md"),
                           "--across-only"])
    assert res.exit_code == 2 and "needs two or more" in res.output
    assert not (tmp_path / "y.md").exists()
    res = cli.invoke(app, ["report", str(rec.parent), "--across-only", "--format", "csv"])
    assert res.exit_code == 2 and "writes Markdown" in res.output


@pytest.mark.parametrize("datasets,unet,hints", [
    (["mnist5k"], "s", ["--set net.unet=xs"]),
    (["cifar10"], "cifar", ["--set net.unet=m", "-d mnist5k"]),
    (["digits"], "xs", []),
    (["moons"], "s", []),
])
def test_scale_down_hints_name_only_what_would_change_the_plan(datasets, unet, hints):
    from bench.cli.run import scale_down_hints
    from bench.planner import Plan

    plan = Plan.of(resolve(overrides={"datasets": datasets, "net": {"unet": unet}}))
    text = ", ".join(scale_down_hints(plan))
    for h in hints:
        assert h in text
    assert ("net.unet" in text) == any("net.unet" in h for h in hints)
    assert ("-d mnist5k" in text) == ("-d mnist5k" in hints)
    assert text.startswith("--set train.steps=N") and text.endswith("a GPU (--device cuda)")


def test_a_run_two_suites_share_is_labelled_by_the_suite_file_that_selects_it(tmp_path):
    """The sweep point path.t_sampling=uniform is the plain suite's otnfm-online run (one
    config hash): whichever suite recorded it, `-c plain.yaml` labels it `otnfm-online` and
    `-c sweep.yaml` with its point; with both files, it keeps the label it was recorded with."""
    from bench.config import expand_sweep
    from bench.planner import Plan
    from bench.results import RunRecord, append_record

    plain, sweep = tmp_path / "plain.yaml", tmp_path / "sweep.yaml"
    plain.write_text("methods: [otnfm-online]\ndatasets: [moons]\n")
    sweep.write_text("datasets: [moons]\nsweep:\n  method: [otnfm-online]\n"
                     "  path.t_sampling: [uniform, beta]\n")
    (uni, uni_cfg), (beta, beta_cfg) = expand_sweep(sweep)
    shared = Plan.of(uni_cfg, uni).spec("otnfm-online", "moons", 0)
    assert shared.config_hash == Plan.of(resolve(plain)).spec("otnfm-online", "moons", 0) \
        .config_hash
    rec = tmp_path / "res" / "records.jsonl"
    for spec, point in ((shared, {}), (Plan.of(beta_cfg, beta).spec("otnfm-online", "moons", 0),
                                       beta)):
        append_record(rec, RunRecord(method=spec.method, dataset="moons", seed=0, status="ok",
                                     sweep=point, config_hash=spec.config_hash,
                                     run_id=f"r{len(point)}", metrics={"w2": 0.2}))

    def rows(*args):
        out = tmp_path / "r.md"
        res = cli.invoke(app, ["report", str(rec.parent), "--out", str(out), "--no-figures",
                               *args])
        assert res.exit_code == 0, res.output
        return sorted(line.split(" | ")[0][2:] for line in out.read_text().splitlines()
                      if line.startswith("| otnfm-online"))

    assert rows("-c", str(plain)) == ["otnfm-online"]
    assert rows("-c", str(sweep)) == ["otnfm-online · path.t_sampling=beta",
                                      "otnfm-online · path.t_sampling=uniform"]
    assert rows("-c", str(plain), "-c", str(sweep)) == [
        "otnfm-online", "otnfm-online · path.t_sampling=beta"]
