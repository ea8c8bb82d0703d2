"""The orchestrator: resume, interruption, crashes."""

import pytest

from bench.results import read_records


def test_runner_resumes_from_a_partial_checkpoint_and_refuses_another_configs(tmp_path, cpu):
    import torch

    from bench.config import resolve
    from bench.runner import Runner
    from tests.conftest import TINY

    cfg = resolve(overrides={**TINY, "methods": ["otnfm-online"], "checkpoint_every": 10})
    out = tmp_path / "res"
    runner = Runner(cfg, out, cpu)
    rec_ref = Runner(cfg, tmp_path / "ref", cpu).run()
    # a partial checkpoint of this config, as a killed run leaves it
    spec = runner.plan.runs()[0]
    from bench.checkpoints import CheckpointStore
    from bench.seeding import Streams
    from bench.trainer import Checkpointing, train

    rh = spec.recipe_hash
    path = CheckpointStore(out / "checkpoints").partial_path(spec)

    class Stop(Exception):
        pass

    def stop(step, loss):
        if step == 15:
            raise Stop

    from bench.models import build_method
    from bench.registry import DATASETS

    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    m = build_method("otnfm-online", data, cfg, cpu, 0)
    with pytest.raises(Stop):
        train(m, data, cfg.train, Streams(0, cpu), on_step=stop, coupling_cfg=cfg.coupling,
              checkpoint=Checkpointing(path, 10, {"recipe_hash": rh}))
    recs = runner.run()
    ok = {r.method: r for r in recs}
    ref = {r.method: r for r in rec_ref}
    assert ok["otnfm-online"].metrics == ref["otnfm-online"].metrics
    assert not path.exists()  # the finished checkpoint replaces the partial one
    # a partial state written by another config, or by this config under another network
    # construction (bench.models.net_signature), is ignored, not loaded: trained from scratch
    for i, meta in enumerate(({"recipe_hash": "other"},
                              {"recipe_hash": rh, "net": {"time_scale": 5.0}})):
        fresh = tmp_path / f"fresh{i}"
        bogus = CheckpointStore(fresh / "checkpoints").partial_path(spec)
        bogus.parent.mkdir(parents=True)
        torch.save({"meta": meta, "step": 5}, bogus)
        recs = {r.method: r for r in Runner(cfg, fresh, cpu).run()}
        assert recs["otnfm-online"].status == "ok"
        assert recs["otnfm-online"].metrics == ref["otnfm-online"].metrics


@pytest.mark.slow
def test_sigkill_mid_training_and_mid_record_then_rerun_loses_nothing(tmp_path):
    """Kill a suite with SIGKILL while it trains (a partial checkpoint on disk) and leave a torn
    record line; rerunning the same command finishes it: every run exactly once, no corrupt
    record, metrics equal to an uninterrupted suite."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import TINY_SETS

    def cmd(out):
        sets = [a for s in [*TINY_SETS, "train.steps=200", "checkpoint_every=20"]
                for a in ("--set", s)]
        return [sys.executable, "-m", "bench.cli", "run", "-m", "otnfm-online,fm-euler10",
                "-d", "moons", "--seeds", "0,1", "--out", str(out), *sets]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, out = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(cmd(ref), check=True, env=env, capture_output=True, timeout=600)
    proc = subprocess.Popen(cmd(out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "checkpoints").glob("*.partial.pt")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((out / "checkpoints").glob("*.partial.pt")), "killed before any checkpoint"
    with open(out / "records.jsonl", "a") as f:  # a writer killed mid-line
        f.write('{"schema": 1, "run_id": "torn", "metr')
    subprocess.run(cmd(out), check=True, env=env, capture_output=True, timeout=600)
    got = read_records(out / "records.jsonl")
    assert len(got.skipped) == 1  # the torn line, reported, nothing else
    want = {(r.method, r.seed): r for r in read_records(ref / "records.jsonl").records}
    runs = [(r.method, r.seed) for r in got.records]
    assert sorted(runs) == sorted(want) and len(set(runs)) == len(runs)
    for r in got.records:
        assert r.status == "ok" and r.metrics == want[(r.method, r.seed)].metrics


# SIGINT takes the same handler as SIGTERM; it runs with the slow tests (in CI)
@pytest.mark.parametrize("sig", [pytest.param("SIGINT", marks=pytest.mark.slow), "SIGTERM"])
def test_ctrl_c_or_kill_saves_the_state_and_records_interrupted(tmp_path, sig):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import TINY_SETS

    out = tmp_path / "res"
    sets = [a for s in [*TINY_SETS, "train.steps=100000", "checkpoint_every=0"]
            for a in ("--set", s)]
    cmd = [sys.executable, "-m", "bench.cli", "run", "-m", "otnfm-online", "-d", "moons",
           "--out", str(out), *sets]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "records.jsonl").exists():
        time.sleep(0.05)  # the floor record is written just before training starts
    time.sleep(1.0)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert recs["otnfm-online"].status == "interrupted"
    assert "state saved" in recs["otnfm-online"].error
    assert len(list((out / "checkpoints").glob("*.partial.pt"))) == 1
