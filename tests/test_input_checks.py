"""Input that is refused up front: exit 2, one clear line, before any training, estimate or
file is written."""

from __future__ import annotations

import subprocess

import pytest
from typer.testing import CliRunner

from bench.cli import app
from tests.conftest import tiny_args

runner = CliRunner()


def refused(args: list[str], out) -> str:
    res = runner.invoke(app, ["run", "-m", "naive-map", "-d", "moons", "--out", str(out),
                              *tiny_args(), *args])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "Traceback" not in res.output
    assert "estimating" not in res.output  # refused before the estimate trains a step
    assert not (out / "records.jsonl").exists() and not (out / "checkpoints").exists()
    return res.output


@pytest.mark.parametrize("args,words", [
    (["--seeds", "0,0"], "repeats a seed"),
    (["--seeds", "1,2,1"], "repeats a seed"),
    (["--seeds", "-1"], "must be >= 0"),
    (["--set", "train.lr=nan"], "train.lr"),
    (["--set", "train.lr=inf"], "train.lr"),
    (["--set", "train.lr=0"], "train.lr"),
    (["--set", "train.lr=-0.001"], "train.lr"),
    (["--set", "eval.n_samples=20000000"], "eval.n_samples=20,000,000"),
])
def test_bad_values_are_refused_before_any_work(tmp_path, args, words):
    assert words in refused(args, tmp_path / "res")


def test_the_sample_bound_names_the_way_out(tmp_path):
    text = refused(["--set", "eval.n_samples=300000"], tmp_path / "res")
    assert "'mmd'" in text and "--metrics" in text
    # without the O(n^2) metrics the same count is accepted (dry run: nothing trains)
    res = runner.invoke(app, ["run", "-m", "naive-map", "-d", "moons", "--out",
                              str(tmp_path / "res"), "--dry-run", *tiny_args(),
                              "--set", "eval.n_samples=300000", "--metrics", "w2,collapse"])
    assert res.exit_code == 0, res.output


def test_an_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "res"
    f.write_text("not a folder")
    assert "is a file" in refused([], f)
    assert "is a file" in refused([], f / "sub")  # a file on the way
    res = runner.invoke(app, ["run", "-m", "naive-map", "-d", "moons", "--out", str(f),
                              "--dry-run", *tiny_args()])
    assert res.exit_code == 2 and "is a file" in res.output


def test_an_out_that_cannot_be_written_is_refused(tmp_path):
    """A read-only filesystem (root writes anywhere else, so permission bits would not do)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (root needed): {res.stderr.strip()}")
    try:
        out = ro / "res"
        res = runner.invoke(app, ["run", "-m", "naive-map", "-d", "moons", "--out", str(out),
                                  *tiny_args()])
        assert res.exit_code == 2, res.output
        assert "cannot write there" in res.output and "estimating" not in res.output
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_sweep_refuses_an_out_that_is_a_file(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("methods: [naive-map]\ndatasets: [moons]\nsweep:\n  train.lr: [0.001]\n")
    f = tmp_path / "res"
    f.write_text("x")
    res = runner.invoke(app, ["sweep", "--config", str(cfg), "--out", str(f)])
    assert res.exit_code == 2 and "is a file" in res.output
