"""Data-parallel training under torchrun (2 processes, gloo on the CPU) equals a single
process on the same global batch, learning-curve points included (scored by rank 0 alone)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.results import read_records
from tests.conftest import TINY_SETS


def _cmd(out: Path) -> list[str]:
    sets = [a for s in (*TINY_SETS, "eval.curve=[0.5, 1.0]", "eval.curve_samples=200")
            for a in ("--set", s)]
    return ["-m", "bench.cli", "run", "-m", "otnfm-minibatch,otnfm-online,fm-euler10", "-d",
            "moons", "--out", str(out), *sets]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed beside this python")
@pytest.mark.slow
def test_two_process_gloo_training_matches_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    logs = tmp_path / "torchrun-logs"  # each rank's stdout+stderr, for a failure's message
    res = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "--log-dir",
                          str(logs), "--redirects", "3", *_cmd(ddp)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:] + "".join(
        f"\n--- {f.relative_to(logs)} ---\n" + f.read_text(errors="replace")[-3000:]
        for f in sorted(logs.rglob("*.log")))
    subprocess.run([sys.executable, *_cmd(single)], env=env, check=True, capture_output=True,
                   timeout=600)
    a = {r.method: r for r in read_records(ddp / "records.jsonl").records}
    b = {r.method: r for r in read_records(single / "records.jsonl").records}
    assert set(a) == set(b) == {"data", "otnfm-minibatch", "otnfm-online", "fm-euler10"}
    assert len(read_records(ddp / "records.jsonl").records) == 4  # rank 0 alone writes
    for m in ("otnfm-minibatch", "otnfm-online", "fm-euler10"):
        ca = torch.load(a[m].checkpoint, weights_only=True)["model"]
        cb = torch.load(b[m].checkpoint, weights_only=True)["model"]
        for k in ca:
            torch.testing.assert_close(ca[k], cb[k], rtol=1e-4, atol=1e-5)
        for k, v in b[m].metrics.items():
            assert a[m].metrics[k] == pytest.approx(v, rel=1e-3, abs=1e-4), (m, k)
        assert [p["step"] for p in a[m].curve] == [p["step"] for p in b[m].curve] == [15, 30]
        for pa, pb in zip(a[m].curve, b[m].curve, strict=True):
            for k, v in pb["metrics"].items():
                assert pa["metrics"][k] == pytest.approx(v, rel=1e-3, abs=1e-4), (m, k)
