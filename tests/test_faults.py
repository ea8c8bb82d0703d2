"""Faults that must neither lose nor tear data: a full disk, damaged records, checkpoints and
live logs, a stop during evaluation. Each test reproduces the fault for real where it can (a
small tmpfs for the full disk, bytes on disk for the damage)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.io import DiskFull, atomic_torch_save
from bench.results import append_line, read_records
from tests.conftest import tiny_args

runner = CliRunner()


class SmallDisk(type(Path())):
    """A folder on a small tmpfs; ``fill()`` writes a filler file until the disk is full."""

    def fill(self) -> None:
        with open(self / f"filler-{uuid.uuid4().hex[:6]}", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass

    def free(self) -> None:
        for f in self.glob("filler-*"):
            f.unlink()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted in ``tmp_path`` (needs root, as the CI runs; skipped elsewhere)."""
    mnt = SmallDisk(tmp_path / "disk")
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {res.stderr.strip()}")
    yield mnt
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_append_on_a_full_disk_leaves_the_file_as_it_was(small_disk):
    path = small_disk / "records.jsonl"
    append_line(path, json.dumps({"method": "a", "n": 1}))
    before = path.read_bytes()
    small_disk.fill()
    with pytest.raises(DiskFull, match="disk full: could not append a line to .*records.jsonl"):
        append_line(path, json.dumps({"method": "b", "pad": "x" * 20_000}))
    assert path.read_bytes() == before  # no torn line: the partial write was cut back
    small_disk.free()
    append_line(path, json.dumps({"method": "c"}))
    assert [json.loads(ln)["method"] for ln in path.read_text().splitlines()] == ["a", "c"]


def test_checkpoint_save_on_a_full_disk_says_so(small_disk):
    small_disk.fill()
    target = small_disk / "checkpoints" / "x.pt"
    with pytest.raises(DiskFull, match=r"disk full: could not write .*x\.pt") as err:
        atomic_torch_save(target, {"w": torch.zeros(200_000)})
    assert "unexpected pos" not in str(err.value)
    assert not target.exists() and list(target.parent.iterdir()) == []  # no temporary left


def test_a_run_on_a_full_disk_ends_with_one_line(small_disk, tmp_path):
    """The whole CLI on a disk that fills up: one `error: disk full` line, exit 1, and every
    line already in the records file still whole."""
    out = small_disk / "res"
    res = runner.invoke(app, ["run", "-m", "otnfm-online", "-d", "moons", "--out", str(out),
                              *tiny_args()])
    assert res.exit_code == 0, res.output
    small_disk.fill()
    res = runner.invoke(app, ["run", "-m", "fm-euler1,fm-euler10,naive-map", "-d", "moons",
                              "--seeds", "0,1", "--out", str(out), *tiny_args()])
    assert res.exit_code == 1, res.output
    assert "disk full" in res.output and "Traceback" not in res.output
    assert isinstance(res.exception, SystemExit)  # typer.Exit, not an escaped OSError
    assert read_records(out / "records.jsonl").skipped == []


# -- 4: a damaged or mistyped record is skipped with a warning, the rest is reported ----------

def _good_folder(tmp_path: Path) -> Path:
    out = tmp_path / "res"
    res = runner.invoke(app, ["run", "-m", "otnfm-online,fm-euler1", "-d", "moons",
                              "--out", str(out), *tiny_args()])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    return _good_folder(tmp_path_factory.mktemp("good"))


@pytest.mark.parametrize("field,value", [
    ("metrics", "w2=0.1"), ("metrics", None), ("seed", "0"), ("nfe", "1"), ("method", 7),
    ("status", "done"), ("metrics", {"w2": "0.1"}), ("config", []), ("curve", {}),
])
def test_a_mistyped_record_is_skipped_with_a_warning(good_folder, tmp_path, field, value):
    import shutil

    out = tmp_path / "res"
    shutil.copytree(good_folder, out)
    lines = (out / "records.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    bad[field] = value
    lines.append(json.dumps(bad))
    (out / "records.jsonl").write_text("\n".join(lines) + "\n")
    got = read_records(out / "records.jsonl")
    assert len(got.records) == len(lines) - 1 and len(got.skipped) == 1
    assert got.skipped[0][0] == len(lines) and field in got.skipped[0][1]
    res = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    assert f"records.jsonl:{len(lines)}" in res.output and field in res.output
    assert "| otnfm-online |" in (tmp_path / "r.md").read_text()


def test_a_newer_schema_is_refused_with_a_clear_message(good_folder, tmp_path):
    import shutil

    out = tmp_path / "res"
    shutil.copytree(good_folder, out)
    with open(out / "records.jsonl", "a") as f:
        rec = json.loads((out / "records.jsonl").read_text().splitlines()[0])
        f.write(json.dumps({**rec, "schema": 99}) + "\n")
    got = read_records(out / "records.jsonl")
    assert any("schema 99" in why and "newer" in why for _, why in got.skipped)
    res = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0 and "schema 99" in res.output


def test_an_object_array_in_samples_does_not_break_the_report(good_folder, tmp_path):
    import shutil

    out = tmp_path / "res"
    shutil.copytree(good_folder, out)
    marker = tmp_path / "marker"
    victim = next(r for r in read_records(out / "records.jsonl").records if r.samples_path)
    np.save(out / victim.samples_path, np.array([{"a": 1}, None], dtype=object),
            allow_pickle=True)
    res = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    assert victim.samples_path in res.output and not marker.exists()
    assert "| otnfm-online |" in (tmp_path / "r.md").read_text()


# -- 5: an unreadable checkpoint names itself and says how to recover --------------------------

def test_an_unreadable_checkpoint_names_the_file_and_the_way_out(good_folder, tmp_path):
    import shutil

    out = tmp_path / "res"
    shutil.copytree(good_folder, out)
    ckpt = next((out / "checkpoints").glob("moons.fm.*.pt"))
    ckpt.write_bytes(b"\0" * 64)  # torn or zeroed: torch cannot open it
    res = runner.invoke(app, ["sample", str(out), "-m", "fm-euler1", "-n", "4",
                              "--format", "npz", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2, res.output
    assert str(ckpt) in res.output and "unreadable" in res.output
    assert "weights_only=False" not in res.output and "Traceback" not in res.output
    # a run that needs it: the run is recorded failed with the same advice, the rest goes on
    res = runner.invoke(app, ["run", "-m", "fm-euler10,otnfm-online", "-d", "moons", "--out",
                              str(out), *tiny_args()])
    recs = [r for r in read_records(out / "records.jsonl").records if r.method == "fm-euler10"]
    assert recs[-1].status == "failed" and str(ckpt) in recs[-1].error
    assert "--force" in recs[-1].error and "weights_only=False" not in recs[-1].error


def test_an_unreadable_partial_state_names_the_file(tmp_path, cpu, tiny_cfg):
    from bench.checkpoints import CheckpointStore
    from bench.planner import Plan
    from bench.runner import Runner

    cfg = tiny_cfg(methods=["naive-map"], datasets=["moons"])
    out = tmp_path / "res"
    partial = CheckpointStore(out / "checkpoints").partial_path(Plan.of(cfg).runs()[0])
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"PK\x03\x04" + os.urandom(100))  # a torn zip: torch cannot open it
    Runner(cfg, out, cpu).run()
    rec = {r.method: r for r in read_records(out / "records.jsonl").records}["naive-map"]
    assert rec.status == "failed" and str(partial) in rec.error and "unreadable" in rec.error
    assert "delete it" in rec.error and "--force" in rec.error


# -- 6: bench status on a damaged live log ------------------------------------------------------

def test_status_skips_torn_and_non_object_lines_of_a_live_log(tmp_path):
    stats = tmp_path / "res" / "stats"
    stats.mkdir(parents=True)
    log = stats / "moons.fm.s0.abc.jsonl"
    log.write_text(json.dumps({"step": 10, "steps": 30, "loss": 0.5, "time": "t1"}) + "\n"
                   + "[1, 2]\n" + '"text"\n' + '{"step": 20, "steps": 30, "lo\n' + "{not json\n")
    res = runner.invoke(app, ["status", str(tmp_path / "res")])
    assert res.exit_code == 0, res.output
    assert "10/30" in res.output and "skipped" in res.output and "Traceback" not in res.output


# -- 7: a SIGTERM during evaluation is recorded -------------------------------------------------

def test_a_stop_during_evaluation_is_recorded_as_interrupted(tmp_path, monkeypatch, cpu,
                                                             tiny_cfg):
    from bench import runner as runner_mod
    from bench.runner import Runner

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod, "draw_samples", stopped)
    r = Runner(tiny_cfg(methods=["naive-map"], datasets=["moons"]), tmp_path / "res", cpu)
    with pytest.raises(KeyboardInterrupt):
        r.run()
    recs = read_records(tmp_path / "res" / "records.jsonl").records
    got = {rec.method: rec for rec in recs}
    assert got["naive-map"].status == "interrupted"
    assert "stopped while evaluating" in got["naive-map"].error
    assert got["data"].status == "ok"
