"""`bench run/sweep --executor slurm` and `bench status` against a real Slurm cluster.

Kept out of the default run: `pytest -m slurm`, after `sudo scripts/local_slurm.sh start` (a
one-node cluster on this machine, partition `local`; another one with $BENCH_SLURM_PARTITION).
The jobs write to pytest's tmp folders, so the cluster's node must see this machine's /tmp:
that is the local cluster, not a site's.

Every `bench` command runs as a subprocess of the repository's code, as a user would call it;
the scheduler, sacct and submitit's requeueing are the real ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bench.config import resolve
from bench.jobs import QUEUED_OR_RUNNING
from bench.results import read_records
from bench.runner import Runner
from tests.conftest import TINY

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
PARTITION = os.environ.get("BENCH_SLURM_PARTITION", "local")


def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return ("sbatch is not on PATH: no Slurm here (`sudo scripts/local_slurm.sh start` "
                "sets up a one-node cluster)")
    try:
        nodes = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%t"],
                               capture_output=True, text=True, timeout=20)
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"the Slurm cluster does not answer: {type(err).__name__}: {err}"
    if nodes.returncode != 0 or not re.search(r"^(idle|mix|alloc)", nodes.stdout, re.M):
        return (f"partition {PARTITION!r} has no usable node: "
                f"{(nodes.stdout + nodes.stderr).strip()[:200]!r}")
    if acct.returncode != 0:
        return f"sacct does not answer (bench status needs accounting): {acct.stderr[:200]!r}"
    return None


@pytest.fixture(scope="module", autouse=True)
def _cluster():
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, on this checkout's code; wide tables are not cut."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p), "COLUMNS": "220"}
    res = subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True,
                         text=True, timeout=timeout, env=env, cwd=REPO)
    print(f"$ bench {' '.join(args)}  -> exit {res.returncode}\n{res.stdout}{res.stderr}")
    return res


def sweep_file(path: Path, steps: int, grid: dict, checkpoint_every: int = 0) -> Path:
    raw = {"name": path.stem, "methods": ["otnfm-minibatch"], "datasets": ["moons"],
           **{k: dict(v) for k, v in TINY.items()}, "sweep": grid,
           "checkpoint_every": checkpoint_every}
    raw["train"].update(steps=steps, log_every=max(10, steps // 20))
    raw["eval"]["floor"] = False
    path.write_text(yaml.safe_dump(raw))
    return path


def jobs_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "jobs.jsonl").read_text().splitlines()]


def sacct_states(ids: list[str]) -> dict[str, str]:
    res = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
                         capture_output=True, text=True, timeout=30, check=True)
    return dict(line.split("|", 1) for line in res.stdout.splitlines() if "|" in line)


def wait_until(what: str, check, timeout: float, every: float = 1.0):
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(every)
    pytest.fail(f"{what}: not after {timeout:.0f}s")


def wait_ended(ids: list[str], timeout: float) -> dict[str, str]:
    active = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING")

    def ended():
        states = sacct_states(ids)
        done = len(states) == len(ids) and not any(s.startswith(active) for s in states.values())
        return states if done else None

    return wait_until(f"jobs {ids} to end", ended, timeout, every=2)


def status_rows(stdout: str) -> dict[str, dict[str, str]]:
    """bench status's table: job id -> its cells by column name."""
    cols = ["job", "cluster", "dataset", "seed", "grid", "scheduler", "ok", "failed", "missing",
            "summary"]
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == len(cols) and cells[0].isdigit():
            rows[cells[0]] = dict(zip(cols, cells, strict=True))
    return rows


def latest_per_run(out: Path) -> dict:
    latest = {}
    for r in read_records(out / "records.jsonl").records:
        latest[(r.config_hash, r.method, r.seed)] = r
    return latest


def ok_counts(out: Path) -> dict:
    counts: dict = {}
    for r in read_records(out / "records.jsonl").records:
        if r.status == "ok":
            key = (r.config_hash, r.method, r.seed)
            counts[key] = counts.get(key, 0) + 1
    return counts


def steps_in(seconds: float) -> int:
    """Training steps of the tiny config that take about ``seconds`` on one core here (a job
    gets one core): measured, since this machine's speed is not known in advance."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        # a first, untimed run pays the one-off costs (imports, the solver timing, the FLOP
        # counter's set-up), which would otherwise make the short run look as slow as the long
        for n in (50, 200, 1000):
            over = {k: dict(v) for k, v in TINY.items()}
            over["train"].update(steps=n)
            over["eval"]["floor"] = False
            cfg = resolve(overrides={**over, "methods": ["otnfm-minibatch"],
                                     "datasets": ["moons"]})
            start = time.perf_counter()
            Runner(cfg, Path(os.environ["BENCH_CACHE"]) / f"rate{n}",
                   torch.device("cpu"), force=True).run()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    per_step = max(1e-4, (times[2] - times[1]) / 800)
    return int(seconds / per_step)


def test_sweep_submits_one_job_per_group_returns_at_once_and_a_later_wait_collects(tmp_path):
    """Scenarios 1 and 4: one job per grid point x dataset x seed; without --wait the command
    returns right after submitting; the same command with --wait later submits nothing new
    and collects; bench status shows sacct's COMPLETED."""
    cfg = sweep_file(tmp_path / "grid.yaml", steps=60,
                     grid={"coupling.batch_size": [32, 64], "seed": [0, 1]})
    out = tmp_path / "res"
    args = ["sweep", "--config", str(cfg), "--executor", "slurm", "--partition", PARTITION,
            "--time-min", "10", "--out", str(out)]
    res = bench(*args)
    assert res.returncode == 0
    assert "submitted 4 job(s)" in res.stdout
    jobs = jobs_of(out)
    ids = [j["job_id"] for j in jobs]
    assert sorted((j["sweep"]["coupling.batch_size"], j["seed"]) for j in jobs) == [
        (32, 0), (32, 1), (64, 0), (64, 1)]
    assert all(j["cluster"] == "slurm" for j in jobs)
    # the command did not wait: its jobs are all still queued or starting (a job needs
    # seconds just to import torch) and no run is recorded yet
    queued = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T"],
                            capture_output=True, text=True, timeout=30, check=True).stdout
    assert sorted(line.split()[0] for line in queued.splitlines()) == sorted(ids), queued
    assert not any(r.status == "ok" for r in read_records(out / "records.jsonl").records)

    res = bench(*[*args, "--wait"], timeout=400)
    assert res.returncode == 0
    assert len(jobs_of(out)) == 4, "the second command submitted jobs again"
    recs = read_records(out / "records.jsonl").records
    assert sorted((r.sweep["coupling.batch_size"], r.seed, r.status) for r in recs) == [
        (32, 0, "ok"), (32, 1, "ok"), (64, 0, "ok"), (64, 1, "ok")]

    states = wait_ended(ids, 60)  # sacct may lag the result files by a moment
    assert set(states.values()) == {"COMPLETED"}, states
    res = bench("status", str(out))
    assert res.returncode == 0
    rows = status_rows(res.stdout)
    assert sorted(rows) == sorted(ids)
    assert all(r["scheduler"] == "COMPLETED" and r["summary"] == "done" and r["ok"] == "1"
               for r in rows.values()), res.stdout


@pytest.fixture(scope="module")
def cancelled_then_resumed(tmp_path_factory):
    """Scenario 2, run once for the tests below: two jobs; one is cancelled mid-training, once
    its partial training state exists; bench status; the same sweep command again, --wait."""
    tmp = tmp_path_factory.mktemp("cancel")
    every = 200
    steps = max(20 * every, steps_in(12))
    cfg = sweep_file(tmp / "cancel.yaml", steps=steps, grid={"seed": [0, 1]},
                     checkpoint_every=every)
    out = tmp / "res"
    args = ["sweep", "--config", str(cfg), "--executor", "slurm", "--partition", PARTITION,
            "--time-min", "10", "--out", str(out)]
    assert bench(*args).returncode == 0
    jobs = {j["seed"]: j["job_id"] for j in jobs_of(out)}
    partial = wait_until("a partial training state of seed 0",
                         lambda: list((out / "checkpoints").glob("*.s0.*.partial.pt")), 180,
                         every=0.2)
    subprocess.run(["scancel", jobs[0]], check=True, timeout=30)
    states = wait_ended(list(jobs.values()), 180)
    status = bench("status", str(out))
    records_after_status = read_records(out / "records.jsonl").records
    bench("status", str(out))
    records_after_second = read_records(out / "records.jsonl").records
    rerun = bench(*[*args, "--wait"], timeout=400)
    final_status = bench("status", str(out))
    return {"out": out, "jobs": jobs, "partial": partial, "states": states, "status": status,
            "records_after_status": records_after_status,
            "records_after_second": records_after_second, "rerun": rerun,
            "final_status": final_status, "steps": steps}


def test_cancelled_job_is_recorded_failed_and_the_rerun_resumes_only_it(cancelled_then_resumed,
                                                                         capsys):
    r = cancelled_then_resumed
    out, jobs = r["out"], r["jobs"]
    assert r["states"][jobs[0]].startswith("CANCELLED"), r["states"]
    assert r["states"][jobs[1]] == "COMPLETED", r["states"]

    # bench status: sacct's state, and the cancelled job's run recorded failed with it
    with capsys.disabled():
        print("\nbench status after scancel:\n" + r["status"].stdout, end="")
    assert r["status"].returncode == 0
    rows = status_rows(r["status"].stdout)
    assert rows[jobs[0]]["scheduler"].startswith("CANCELLED"), rows
    assert (rows[jobs[0]]["failed"], rows[jobs[0]]["summary"]) == ("1", "failed"), rows
    assert (rows[jobs[1]]["scheduler"], rows[jobs[1]]["summary"]) == ("COMPLETED", "done")
    failed = [x for x in r["records_after_status"] if x.seed == 0 and x.status == "failed"]
    assert len(failed) == 1 and f"job {jobs[0]} ended in state CANCELLED" in failed[0].error
    assert len(r["records_after_second"]) == len(r["records_after_status"]), \
        "a second bench status recorded the same failure again"

    # the same command again: only the cancelled group is submitted, and it resumes
    new = [j for j in jobs_of(out) if j["job_id"] not in jobs.values()]
    assert [j["seed"] for j in new] == [0], new
    assert "every run already has an ok record, not submitted" in r["rerun"].stdout
    log = (out / "slurm" / f"{new[0]['job_id']}_0_log.out").read_text()
    m = re.search(r"resuming from step (\d+)", log)
    assert m, log
    resumed = int(m.group(1))
    assert 200 <= resumed < r["steps"]
    with capsys.disabled():
        print(f"the resubmitted job resumed from step {resumed} of {r['steps']}")
    # every run has exactly one ok record, and it is the latest one of its run
    counts = ok_counts(out)
    latest = latest_per_run(out)
    assert sorted(k[2] for k in counts) == [0, 1] and set(counts.values()) == {1}
    assert {k: v.status for k, v in latest.items()} == {k: "ok" for k in counts}
    assert all(x.train_steps == r["steps"] for x in latest.values())
    assert not list((out / "checkpoints").glob("*.partial.pt"))

    rows = status_rows(r["final_status"].stdout)
    assert (rows[new[0]["job_id"]]["scheduler"], rows[new[0]["job_id"]]["summary"]) == (
        "COMPLETED", "done"), rows
    assert rows[jobs[0]]["scheduler"].startswith("CANCELLED"), rows
    assert rows[jobs[0]]["scheduler"].endswith(f"(then job {new[0]['job_id']})"), rows


def test_rerun_that_completes_every_run_exits_0(cancelled_then_resumed):
    assert cancelled_then_resumed["rerun"].returncode == 0


def test_job_at_its_time_limit_is_requeued_and_resumes_where_it_stopped(tmp_path, capsys):
    """Scenario 3: a 1-minute job with more training than fits is signalled (USR2) before
    its limit, saves its training state after the step in progress, is requeued by submitit
    and resumes from that step."""
    every = 1000
    # an attempt trains for at most ~35 s (~10 s to start, USR2 at 45 s), often less: Slurm
    # sends the signal at its next periodic check, up to ~30 s early. 45 s of training thus
    # takes two attempts or more; at 55 s one CI run needed more than submitit's default of
    # three requeues (the job then ended FAILED), which `--max-requeues` (default 10) lifts
    steps = max(10 * every, steps_in(45))
    cfg = sweep_file(tmp_path / "limit.yaml", steps=steps, grid={"seed": [0]},
                     checkpoint_every=every)
    out = tmp_path / "res"
    t0 = time.monotonic()
    res = bench("sweep", "--config", str(cfg), "--executor", "slurm", "--partition", PARTITION,
                "--time-min", "1", "--out", str(out))
    assert res.returncode == 0
    (job,) = jobs_of(out)
    jid = job["job_id"]
    # submitit asks for USR2 a quarter of a 1-minute limit before it (see signal_delay_s)
    script = (out / "slurm" / f"{jid}_submission.sh").read_text()
    assert "#SBATCH --signal=USR2@15" in script and "#SBATCH --time=1" in script
    log_path = out / "slurm" / f"{jid}_0_log.out"
    wait_until("the first requeue", lambda: log_path.exists()
               and "Requeued job" in log_path.read_text(), 150)
    # between attempts the run is not failed: its `interrupted` record counts as missing
    row = status_rows(bench("status", str(out)).stdout)[jid]
    assert row["scheduler"] in QUEUED_OR_RUNNING, row
    assert (row["ok"], row["failed"], row["missing"], row["summary"]) == (
        "0", "0", "1", "running or queued"), row
    # each attempt lasts up to ~45 s (start-up, training, the signal), then waits ~20 s
    states = wait_ended([jid], 420)
    elapsed = time.monotonic() - t0
    log = log_path.read_text()
    assert states[jid] == "COMPLETED", (states, log[-4000:])

    attempts = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", jid],
                              capture_output=True, text=True, timeout=30).stdout.split()
    # one part of the log per attempt (submitit's first line in each)
    legs = re.split(r"submitit INFO [^\n]* - Starting with JobEnvironment", log)[1:]
    assert len(legs) >= 2 and attempts.count("REQUEUED") == len(legs) - 1, (attempts, log)
    assert all("Requeued job" in leg and "stopped by SIGUSR2" in leg for leg in legs[:-1])

    def resumed_from(leg: str) -> int | None:
        m = re.search(r"resuming from step (\d+)", leg)
        return int(m.group(1)) if m else None

    lost = []
    for leg, nxt in zip(legs, legs[1:], strict=False):
        stopped = re.search(r"stopped by SIGUSR2 after training step (\d+)", leg)
        # stopped before its training started: it got as far as it resumed from
        trained_to = int(stopped.group(1)) if stopped else (resumed_from(leg) or 0)
        # no resume line: training had finished, the attempt only evaluated
        resumed = resumed_from(nxt)
        resumed = resumed if resumed is not None else (steps if trained_to == steps else 0)
        periodic = trained_to // every * every
        lost.append(trained_to - resumed)
        with capsys.disabled():
            print(f"\nrequeue: trained to step {trained_to}, resumed from step {resumed}: "
                  f"{trained_to - resumed} step(s) of training lost (from the last periodic "
                  f"checkpoint, step {periodic}, it would have been {trained_to - periodic})")
    assert lost == [0] * len(lost)
    with capsys.disabled():
        print(f"{steps} steps in {len(legs)} attempts, {elapsed:.0f}s from submission to "
              f"COMPLETED")

    counts = ok_counts(out)
    assert list(counts.values()) == [1]
    (rec,) = latest_per_run(out).values()
    assert rec.status == "ok" and rec.train_steps == steps
    interrupted = [x for x in read_records(out / "records.jsonl").records
                   if x.status == "interrupted"]
    assert interrupted and all("state saved" in x.error for x in interrupted)
    row = status_rows(bench("status", str(out)).stdout)[jid]
    assert (row["scheduler"], row["ok"], row["summary"]) == ("COMPLETED", "1", "done"), row
