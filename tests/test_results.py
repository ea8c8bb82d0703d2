import json

import pytest

from bench.results import RunRecord, append_record, read_records


def rec(i, status="ok"):
    return RunRecord(method="m", dataset="d", seed=i, status=status, run_id=f"r{i}",
                     metrics={"w2": 0.1 * i})


def test_append_and_read_roundtrip(tmp_path):
    path = tmp_path / "records.jsonl"
    for i in range(3):
        append_record(path, rec(i))
    res = read_records(path)
    assert [r.seed for r in res.records] == [0, 1, 2] and not res.skipped
    assert res.records[2].metrics == {"w2": 0.2}


def test_torn_line_is_skipped_and_next_append_starts_a_new_line(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, rec(0))
    with open(path, "a") as f:
        f.write(rec(1).to_json()[:40])  # a writer killed mid-line
    append_record(path, rec(2))
    res = read_records(path)
    assert [r.seed for r in res.records] == [0, 2]
    assert len(res.skipped) == 1 and res.skipped[0][0] == 2
    # the earlier whole lines are untouched
    first = json.loads(path.read_text().splitlines()[0])
    assert first["run_id"] == "r0"


def test_garbage_lines_are_reported_not_fatal(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('not json\n[1, 2]\n{"no_method": 1}\n')
    append_record(path, rec(5))
    res = read_records(path)
    assert [r.seed for r in res.records] == [5] and len(res.skipped) == 3


# -- resume and crash safety -------------------------------------------------------------

def _resume_setup(tiny_cfg, cpu, name):
    from bench.registry import DATASETS
    from bench.runner import build_method

    cfg = tiny_cfg(train={"steps": 40, "log_every": 10})
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    return cfg, data, build_method(name, data, cfg, cpu, 0)


@pytest.mark.parametrize("name", ["otnfm-online", "otnfm-minibatch", "fm-euler10"])
def test_resumed_training_equals_uninterrupted(tmp_path, tiny_cfg, cpu, name):
    """Stop after 17 steps (state saved at step 10 and on the stop), resume: the final weights,
    EMA, online-OT bank and logs equal those of one uninterrupted run, bit for bit."""
    import torch

    from bench.seeding import Streams
    from bench.trainer import Checkpointing, train

    cfg, data, ref = _resume_setup(tiny_cfg, cpu, name)
    res_ref, ema_ref = train(ref, data, cfg.train, Streams(0, cpu), coupling_cfg=cfg.coupling)

    class Stop(Exception):
        pass

    def stop_at(step, loss):
        if step == 17:
            raise Stop

    ck = Checkpointing(tmp_path / "run.partial.pt", every=10)
    _, _, m = _resume_setup(tiny_cfg, cpu, name)
    with pytest.raises(Stop):
        train(m, data, cfg.train, Streams(0, cpu), on_step=stop_at, coupling_cfg=cfg.coupling,
              checkpoint=ck)
    state = torch.load(ck.path, weights_only=True)
    assert state["step"] == 10
    _, _, m2 = _resume_setup(tiny_cfg, cpu, name)  # a fresh process would start like this
    res, ema = train(m2, data, cfg.train, Streams(0, cpu), coupling_cfg=cfg.coupling,
                     checkpoint=ck, resume=state)
    a, b = ref.state_dict(), m2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(ema_ref.shadow, ema.shadow, strict=True))
    assert ref.extra_state_dict().keys() == m2.extra_state_dict().keys()
    for k, v in ref.extra_state_dict().get("coupling", {}).items():
        assert torch.equal(v, m2.extra_state_dict()["coupling"][k])
    drop = ("solver_seconds", "coupling_wait_seconds")
    assert [{k: v for k, v in h.items() if k not in drop} for h in res_ref.history] == \
        [{k: v for k, v in h.items() if k not in drop} for h in res.history]
    assert res.diagnostics.get("target_var_ratio") == res_ref.diagnostics.get("target_var_ratio")


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
    plan = runner.plan()[0]
    from bench.runner import recipe_hash, run_config
    from bench.seeding import Streams
    from bench.trainer import Checkpointing, train

    rh = recipe_hash(run_config(cfg, "otnfm-online", "moons"))
    path = runner._checkpoint_path("moons", plan["recipe"], 0, rh).with_suffix(".partial.pt")

    class Stop(Exception):
        pass

    def stop(step, loss):
        if step == 15:
            raise Stop

    from bench.registry import DATASETS
    from bench.runner import build_method

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
    # a partial checkpoint written by another config is ignored, not loaded
    torch.save({"meta": {"recipe_hash": "other"}, "step": 5}, path)
    recs = Runner(cfg, out, cpu, force=True).run()
    assert all(r.status == "ok" for r in recs)


def test_pickled_code_is_refused_as_checkpoint_and_cache(tmp_path, cpu):
    """A file that would run code when unpickled is refused (weights_only loading)."""
    import pickle

    import torch

    from bench.metrics.extractors import load_domain

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"state": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(bad, map_location="cpu", weights_only=True)
    with pytest.raises(pickle.UnpicklingError):
        load_domain(bad)
    assert not (tmp_path / "pwned").exists()


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


def test_ctrl_c_saves_the_state_and_records_interrupted(tmp_path):
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
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert recs["otnfm-online"].status == "interrupted"
    assert "state saved" in recs["otnfm-online"].error
    assert len(list((out / "checkpoints").glob("*.partial.pt"))) == 1


def test_full_disk_while_writing_a_record_keeps_the_file_intact(tmp_path, monkeypatch, cpu):
    """The first (ok) record cannot be written: the file is cut back, the run is recorded as
    failed with the reason, the records already there stay readable."""
    import errno

    from bench import results
    from bench.config import resolve
    from bench.runner import Runner
    from tests.conftest import TINY

    cfg = resolve(overrides={**TINY, "methods": ["otnfm-online"],
                             "eval": {**TINY["eval"], "floor": False}})
    out = tmp_path / "res"
    path = out / "records.jsonl"
    append_record(path, RunRecord(method="old", dataset="moons", seed=9, status="ok"))
    before = path.read_bytes()
    real_fsync, calls = results.os.fsync, {"n": 0}

    def full_once(fd):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(results.os, "fsync", full_once)
    Runner(cfg, out, cpu).run()
    text = path.read_bytes()
    assert text.startswith(before)
    got = read_records(path)
    assert not got.skipped
    (old, new) = got.records
    assert old.method == "old" and new.status == "failed" and "No space left" in new.error
