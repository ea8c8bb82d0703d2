"""Two processes on one results folder: every run trained and recorded exactly once."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.results import read_records
from tests.conftest import tiny_args

ROOT = Path(__file__).resolve().parents[1]


def _bench(out: Path, methods: str, extra=()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "-m", methods, "-d",
                             "moons", "--seeds", "0", "--out", str(out), *tiny_args(extra)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_processes_started_together_train_and_record_every_run_once(tmp_path):
    out = tmp_path / "res"
    a = _bench(out, "otnfm-online,fm-euler10,fm-euler1", ["train.steps=200"])
    time.sleep(0.5)
    b = _bench(out, "fm-euler10,otnfm-online,naive-map", ["train.steps=200"])
    logs = [p.communicate(timeout=300)[0] for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, logs
    # each recorded the runs it did; the second did not wait in line behind the first but took
    # the recipes nobody held
    done_by = [set(re.findall(r"^ok +moons +(\S+)", log, re.M)) for log in logs]
    assert done_by[0] and done_by[1] and not done_by[0] & done_by[1], logs
    recs = read_records(out / "records.jsonl").records
    counts = Counter((r.method, r.seed) for r in recs)
    assert counts == {(m, 0): 1 for m in ("data", "otnfm-online", "fm-euler10", "fm-euler1",
                                          "naive-map")}
    assert all(r.status == "ok" for r in recs)
    # one training per recipe: every record of a recipe comes from the same checkpoint and
    # the same training (a second training would have its own, different wall-clock)
    for recipe in ("fm", "naive-map", "otnfm-online"):
        runs = [r for r in recs if r.recipe == recipe]
        assert len({r.checkpoint for r in runs}) == 1
        assert len({r.train_seconds for r in runs}) == 1
    assert len(list((out / "stats").glob("*.fm.*.jsonl"))) == 1
    (fm_log,) = (out / "stats").glob("*.fm.*.jsonl")
    steps = [json.loads(line)["step"] for line in fm_log.read_text().splitlines()]
    assert steps == sorted(set(steps))  # one training wrote its log, not two


@pytest.mark.slow
def test_a_claim_left_by_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "res"
    same = ["train.steps=3000", "eval.floor=false", "checkpoint_every=200"]
    a = _bench(out, "otnfm-online", same)
    claims = out / "claims"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            f.read_text().startswith(f"pid {a.pid} ") for f in claims.glob("*.lock")):
        time.sleep(0.1)
    time.sleep(1.5)  # training under the claim
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    (lock,) = claims.glob("*.lock")
    assert lock.read_text().startswith(f"pid {a.pid} ")  # the dead holder's note is left
    b = _bench(out, "otnfm-online", same)  # the same run: the same claim
    b_log = b.communicate(timeout=300)[0]
    assert b.returncode == 0, b_log
    assert lock.read_text().startswith(f"pid {b.pid} ") and "waiting" not in b_log
    (rec,) = read_records(out / "records.jsonl").records
    assert rec.status == "ok" and rec.train_steps == 3000


@contextmanager
def held_until_recorded(out: Path, name: str, n: int) -> Iterator[None]:
    """Another process holds the claim ``name`` until ``out`` has ``n`` records (or 60 s
    have passed, so that a process waiting in line fails its order check instead of
    hanging), recording nothing."""
    records = out / "records.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom pathlib import Path\nfrom bench.claims import Claims\n"
        f"with Claims({str(out)!r}).hold({name!r}) as got:\n"
        "    print('held', flush=True)\n"
        f"    p = Path({str(records)!r})\n"
        "    end = time.monotonic() + 60\n"
        "    while time.monotonic() < end and not (\n"
        f"            p.exists() and len(p.read_text().splitlines()) >= {n}):\n"
        "        time.sleep(0.1)\n")],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_recipe_held_elsewhere_waits_until_every_other_unit_is_done(tmp_path, tiny_cfg, cpu):
    """Another process holds seed 0's naive-map: this one does seed 0's other recipe and all
    of seed 1 first, then waits for the claim and skips what the holder recorded."""
    from bench.runner import Runner

    cfg = tiny_cfg(methods=["naive-map", "fm-euler1"], seeds=[0, 1],
                   eval={"floor": False})
    runner = Runner(cfg, tmp_path, cpu)
    held = next(s for s in runner.plan.runs() if s.method == "naive-map" and s.seed == 0)
    name = runner.models.store.path(held).stem
    with held_until_recorded(tmp_path, name, 3):
        recs = runner.run()
    assert [(r.method, r.seed) for r in recs] == [
        ("fm-euler1", 0), ("naive-map", 1), ("fm-euler1", 1), ("naive-map", 0)]
    assert all(r.status == "ok" for r in recs)


def test_a_sweep_leaves_a_recipe_held_elsewhere_until_its_other_grid_points_are_done(
        tmp_path, cpu):
    """A second `bench sweep` on the same folder: a recipe another process holds is not
    waited for before the next grid point; the sweep does the rest of that point and every
    other point first, then waits for the claim and skips what the holder recorded. A run
    that failed in the first pass is not tried again when the sweep comes back."""
    import yaml

    from bench.plugins import load_plugin
    from bench.registry import METHODS
    from bench.suite import execute, plan_suite
    from tests.conftest import TINY
    from tests.test_cli import PLUGIN

    plugin = tmp_path / "exploding.py"
    plugin.write_text(PLUGIN)
    load_plugin(plugin)
    raw = {"name": "split", "datasets": ["moons"], "seeds": [0],
           "methods": ["naive-map", "fm-euler1", "test-exploding"],
           **{k: dict(v) for k, v in TINY.items()}, "sweep": {"train.lr": [1e-3, 3e-3]}}
    raw["eval"]["floor"] = False
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        suite = plan_suite(path, sweep=True)
        runners = suite.runners(tmp_path, cpu)
        spec = next(s for s in runners[0].plan.runs() if s.method == "naive-map")
        with held_until_recorded(tmp_path, runners[0].models.store.path(spec).stem, 5):
            recs = execute(suite, tmp_path, device=cpu, runners=runners)
    finally:
        METHODS.unregister("test-exploding")
    assert [(r.method, r.sweep["train.lr"], r.status) for r in recs] == [
        ("fm-euler1", 1e-3, "ok"), ("test-exploding", 1e-3, "failed"),
        ("naive-map", 3e-3, "ok"), ("fm-euler1", 3e-3, "ok"),
        ("test-exploding", 3e-3, "failed"), ("naive-map", 1e-3, "ok")]
    assert len(read_records(tmp_path / "records.jsonl").records) == 6
