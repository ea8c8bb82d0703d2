"""Local worker processes and submitit jobs (submitit's local executor: no Slurm needed)."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli import app
from bench.results import read_records
from tests.conftest import TINY

cli = CliRunner()


def _sweep_file(tmp_path):
    raw = {"name": "exec", "methods": ["otnfm-minibatch"], "datasets": ["moons"],
           **{k: dict(v) for k, v in TINY.items()},
           "sweep": {"coupling.batch_size": [32, 64], "seed": [0, 1]}}
    raw["eval"]["floor"] = False
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_sweep_as_submitit_jobs_then_status_shows_them_done(tmp_path):
    out = tmp_path / "res"
    res = cli.invoke(app, ["sweep", "--config", str(_sweep_file(tmp_path)), "--executor",
                           "slurm", "--cluster", "local", "--time-min", "10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    recs = read_records(out / "records.jsonl").records
    assert sorted((r.sweep["coupling.batch_size"], r.seed) for r in recs) == [
        (32, 0), (32, 1), (64, 0), (64, 1)]
    assert all(r.status == "ok" for r in recs)
    jobs = [json.loads(line) for line in (out / "jobs.jsonl").read_text().splitlines()]
    assert len(jobs) == 4 and all(j["cluster"] == "local" for j in jobs)
    res = cli.invoke(app, ["status", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.count("done") == 4
    # the same command again collects: every run is skipped, nothing new is written
    res = cli.invoke(app, ["sweep", "--config", str(_sweep_file(tmp_path)), "--executor",
                           "slurm", "--cluster", "local", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert len(read_records(out / "records.jsonl").records) == 4


def test_local_workers_write_one_records_file(tmp_path):
    out = tmp_path / "res"
    res = cli.invoke(app, ["sweep", "--config", str(_sweep_file(tmp_path)), "--workers", "2",
                           "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = read_records(out / "records.jsonl")
    assert not got.skipped and len(got.records) == 4
    assert {r.seed for r in got.records} == {0, 1}


def test_status_without_jobs_is_a_clear_error(tmp_path):
    res = cli.invoke(app, ["status", str(tmp_path)])
    assert res.exit_code == 2 and "nothing was submitted" in res.output


@pytest.mark.slow
def test_a_job_that_dies_leaves_failed_records_with_its_state(tmp_path):
    plugin = tmp_path / "dies.py"
    plugin.write_text(
        "import os\n"
        "from bench.registry import register_method\n\n"
        "@register_method('dies-hard')\n"
        "def dies(ctx):\n"
        "    '''Kills its process (a job that dies).'''\n"
        "    os._exit(3)\n")
    out = tmp_path / "res"
    sets = [a for s in ("train.steps=5", "eval.floor=false", "net.hidden=16")
            for a in ("--set", s)]
    res = cli.invoke(app, ["run", "-m", "dies-hard", "-d", "moons", "--plugin", str(plugin),
                           "--executor", "slurm", "--cluster", "local", "--out", str(out),
                           *sets])
    assert res.exit_code == 1, res.output
    (rec,) = read_records(out / "records.jsonl").records
    assert rec.method == "dies-hard" and rec.status == "failed"
    assert "ended in state" in rec.error


def test_sigterm_after_a_ctrl_c_does_not_abandon_the_save():
    """Ctrl-C sets the training loop's stop flag; a SIGTERM after it (torchrun's agent, a
    tool that sends INT then TERM) must not act as a second Ctrl-C, which raises at once."""
    import os
    import signal

    from bench.executors import stop_on_signals
    from bench.stopping import sigint_stop

    with stop_on_signals() as stop, sigint_stop() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested
        os.kill(os.getpid(), signal.SIGTERM)  # raised KeyboardInterrupt before the fix
        assert stop.signal is None
    with stop_on_signals() as stop, sigint_stop() as flag:  # SIGTERM alone: one Ctrl-C
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and stop.signal == "SIGTERM"


# the ctrl-c path takes the same route to the workers; it runs with the slow tests (in CI)
@pytest.mark.parametrize("how", ["kill parent", pytest.param("ctrl-c", marks=pytest.mark.slow)])
def test_stopping_a_workers_run_reaches_every_worker_and_nothing_is_left_running(tmp_path,
                                                                                  how):
    """`kill PID` of `bench run --workers 2` (a plain SIGTERM to the parent alone), or Ctrl-C
    (SIGINT to the whole process group): both workers save their training state and record
    their runs as interrupted, the third unit never starts, the command exits 130, and no
    process of the run is left behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import TINY_SETS, sigint_default

    out = tmp_path / "res"
    sets = [a for s in [*TINY_SETS, "train.steps=100000", "checkpoint_every=0"]
            for a in ("--set", s)]
    cmd = [sys.executable, "-m", "bench.cli", "run", "-m", "otnfm-online", "-d", "moons",
           "--seeds", "0,1,2", "--workers", "2", "--out", str(out), *sets]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=sigint_default)
    records, stats = out / "records.jsonl", out / "stats"
    deadline = time.time() + 300
    while time.time() < deadline and not (  # both workers have logged training steps
            stats.is_dir() and sum(1 for f in stats.glob("*.jsonl") if f.stat().st_size) == 2):
        time.sleep(0.05)
    if how == "kill parent":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    stdout, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, stdout + err
    assert "run the same command again to resume" in err
    recs = read_records(records).records
    runs = {(r.method, r.seed): r.status for r in recs if r.method == "otnfm-online"}
    assert sorted(runs) == [("otnfm-online", 0), ("otnfm-online", 1)], stdout + err
    assert set(runs.values()) == {"interrupted"}
    assert len(list((out / "checkpoints").glob("*.partial.pt"))) == 2
    assert not any(r.seed == 2 for r in recs)  # the queued unit did not start
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anything of the run's process group still alive?
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("a worker outlived the stopped run")


def test_a_job_sacct_does_not_know_yet_is_asked_of_squeue(monkeypatch):
    """A job submitted a moment ago may be missing from the accounting database: its state
    comes from squeue, so a queued job is not resubmitted as lost; a job neither knows stays
    UNKNOWN."""
    import subprocess
    from types import SimpleNamespace

    from bench import jobs

    class Watcher:
        def register_job(self, jid):
            pass

        def update(self):
            pass

        def get_state(self, jid, mode):
            return "UNKNOWN"

    monkeypatch.setattr(jobs.SlurmJob, "watcher", Watcher())
    asked = []

    def fake_run(cmd, **kw):
        asked.append(cmd)
        return SimpleNamespace(stdout="17 PENDING\n", returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    states = jobs.scheduler_states([{"job_id": 17, "cluster": "slurm"},
                                    {"job_id": 18, "cluster": "slurm"},
                                    {"job_id": 3, "cluster": "local"}])
    assert states == ["PENDING", "UNKNOWN", "–"]
    assert asked == [["squeue", "-h", "-j", "17,18", "-o", "%i %T"]]


def test_max_requeues_reaches_submitit_and_a_negative_one_is_refused(tmp_path, monkeypatch):
    """``--max-requeues`` is submitit's ``max_num_timeout`` (its own default, 3, fails a long
    unit under a short limit at the fourth); it is handed to the executor built for the jobs."""
    import submitit

    from bench import executors

    real = submitit.AutoExecutor
    seen = {}

    class Built(Exception):
        pass

    def recorder(folder, cluster=None, **kwargs):
        seen.update(kwargs, cluster=cluster)
        raise Built

    monkeypatch.setattr(executors.submitit, "AutoExecutor", recorder)
    res = cli.invoke(app, ["sweep", "--config", str(_sweep_file(tmp_path)), "--executor",
                           "slurm", "--cluster", "local", "--max-requeues", "7",
                           "--out", str(tmp_path / "res")])
    assert isinstance(res.exception, Built), res.output
    assert seen == {"cluster": "local", "slurm_max_num_timeout": 7, "local_max_num_timeout": 7}
    # and submitit takes the value under those names
    ex = real(folder=tmp_path / "sub", cluster="local", slurm_max_num_timeout=7,
              local_max_num_timeout=7)
    assert ex._executor.max_num_timeout == 7

    res = cli.invoke(app, ["sweep", "--config", str(_sweep_file(tmp_path)), "--executor",
                           "slurm", "--max-requeues", "-1", "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "--max-requeues -1: at least 0" in res.output
