"""Submitted jobs: the ``jobs.jsonl`` list beside the records, their scheduler states, and
what ``bench status`` shows and records.

Each submitted job appends one line (its id, cluster, unit, the runs' config hashes and the
unit's config). ``status`` asks sacct once for every Slurm job. When a unit's latest job has
ended badly (cancelled, timed out without a requeue, failed, out of memory, ...), its runs
without an ok record get failed records naming that state, once. While a job is queued or
running (requeued after its time limit, say), its unfinished runs count as missing: it will
redo them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from submitit.slurm.slurm import SlurmJob

from bench.config import Config, curve_samples, from_dict, to_dict
from bench.env import now
from bench.planner import Plan, RunSpec, WorkUnit
from bench.plugins import load_entry_points
from bench.results import (
    RECORDS_FILE,
    RecordWriter,
    RunRecord,
    append_json_line,
    last_ok,
    read_records,
)
from bench.vocab import FLOOR_METHOD

JOBS_FILE = "jobs.jsonl"

#: sacct states of a job that is not over (a requeued job goes back to PENDING)
QUEUED_OR_RUNNING = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                     "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING", "STAGE_OUT",
                     "SIGNALING", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
#: sacct states of a job that ended without completing
ENDED_BADLY = {"BOOT_FAIL", "CANCELLED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
               "PREEMPTED", "TIMEOUT", "REVOKED"}


def unit_runs(unit: WorkUnit) -> dict[str, str]:
    """method -> config hash of the unit's runs."""
    return {s.method: s.config_hash for s in unit.plan.runs(unit.dataset, unit.seed)}


def all_recorded(unit: WorkUnit, ok: set[tuple[str, str, int]], records: Path) -> bool:
    """Whether every run of ``unit`` has an ok record, and its floor needs no scoring."""
    plan = unit.plan
    return all(s.key in ok for s in plan.runs(unit.dataset, unit.seed)) and not floor_due(
        plan, plan.floor(unit.dataset, unit.seed), ok, records)


def floor_due(plan: Plan, spec: RunSpec, ok: set[tuple[str, str, int]], records: Path) -> bool:
    """Whether to score the floor ``spec``: not recorded yet, or recorded without the curve
    floor a suite with curves needs, or with one on another sample count (``curve_samples`` is
    no part of the run's key); the new record supersedes the old."""
    if not plan.cfg.eval.floor or spec.key not in ok:
        return plan.cfg.eval.floor
    old = last_ok(records, spec.key) if plan.curves() else None
    return old is not None and (old.curve_floor or {}).get("samples") != curve_samples(
        plan.cfg.eval)


def job_state(state: str) -> str:
    """sacct's state word: ``CANCELLED by 0`` -> ``CANCELLED``."""
    return state.split()[0].upper() if state.strip() else "UNKNOWN"


def job_key(dataset: str, seed: int, runs: dict[str, str]) -> str:
    """Jobs of the same unit (same dataset, seed and runs' config hashes) share this key."""
    return json.dumps([dataset, seed, sorted(runs.items())])


def append_job(out: Path, job_id: str, cluster: str, folder: Path, unit: WorkUnit) -> None:
    append_json_line(out / JOBS_FILE, {
        "job_id": job_id, "cluster": cluster, "folder": str(folder),
        "dataset": unit.dataset, "seed": unit.seed, "sweep": unit.sweep, "suite": unit.cfg.name,
        "methods": list(unit.cfg.methods), "runs": unit_runs(unit),
        "config": to_dict(unit.cfg),
        "submitted_at": now()})


def read_jobs(out: Path) -> list[dict[str, Any]]:
    path = out / JOBS_FILE
    if not path.exists():
        return []
    jobs = []
    for line in path.read_text().splitlines():
        try:
            jobs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return jobs


def latest_jobs(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last job submitted for each unit (jobs listed before ``runs`` was, have none)."""
    return {job_key(j["dataset"], j["seed"], j["runs"]): j for j in jobs if "runs" in j}


def scheduler_states(jobs: list[dict[str, Any]]) -> list[str]:
    """Each job's state, with one sacct call for all the Slurm jobs ("–" for submitit's local
    jobs, which are children of the submitting process)."""
    ids = [str(j["job_id"]) for j in jobs if j.get("cluster") == "slurm"]
    watcher = None
    if ids:
        try:
            watcher = SlurmJob.watcher
            for jid in ids:
                watcher.register_job(jid)
            watcher.update()
        except Exception as err:  # sacct missing or unreachable
            return [f"unknown ({type(err).__name__})" if j.get("cluster") == "slurm" else "–"
                    for j in jobs]
    states = [str(watcher.get_state(str(j["job_id"]), mode="cache"))
              if watcher is not None and j.get("cluster") == "slurm" else "–" for j in jobs]
    # a job submitted a moment ago may not be in the accounting database yet (sacct knows
    # nothing of it): ask the controller, so that a queued job is not taken for a lost one
    unknown = [str(j["job_id"]) for j, s in zip(jobs, states, strict=True)
               if j.get("cluster") == "slurm" and job_state(s) == "UNKNOWN"]
    if unknown:
        live = squeue_states(unknown)
        states = [live.get(str(j["job_id"]), s) for j, s in zip(jobs, states, strict=True)]
    return states


def squeue_states(ids: list[str]) -> dict[str, str]:
    """The controller's state of each of ``ids`` that it still holds (none where squeue is
    missing or fails)."""
    try:
        res = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {p[0]: p[1] for p in (line.split() for line in res.stdout.splitlines()) if len(p) == 2}


def record_lost(unit: WorkUnit, out: Path, reason: str, since: str | None = None) -> None:
    """Runs of a unit that a dead worker or job left without an ok record get a failed one
    with ``reason``, unless they have a failed record already: a run with no record, or only
    an ``interrupted`` one (a job stopped after saving its training state). ``since`` (a
    job's submission time): records finished before it are an earlier attempt's."""
    writer = RecordWriter(out, suite=unit.cfg.name, device=torch.device("cpu"))
    ok: set[tuple[str, str]] = set()
    latest: dict[tuple[str, str], RunRecord] = {}
    for r in read_records(writer.path).records:
        if r.dataset != unit.dataset or r.seed != unit.seed:
            continue
        if r.status == "ok":
            ok.add((r.config_hash, r.method))
        if since is None or r.finished_at >= since:
            latest[(r.config_hash, r.method)] = r
    for spec in unit.plan.runs(unit.dataset, unit.seed):
        key = (spec.config_hash, spec.method)
        if key in ok or (key in latest and latest[key].status == "failed"):
            continue
        writer.finish(writer.new(spec), RuntimeError(reason))


def _record_job_end(job: dict[str, Any], out: Path, state: str) -> str:
    """Failed records for the runs that ``job`` (ended in ``state``) left without an ok one;
    returns a note for the status row if they could not be written."""
    if "config" not in job:
        return ""
    try:
        load_entry_points()
        unit = WorkUnit(from_dict(Config, job["config"]), job.get("sweep", {}), job["dataset"],
                        int(job["seed"]))
        Plan.of(unit.cfg, unit.sweep)  # a method it cannot resolve says so here
        record_lost(unit, out, f"job {job['job_id']} ended in state {state}",
                    since=job.get("submitted_at"))
        return ""
    except Exception as err:  # e.g. a plugin method, whose file status does not run
        return f" (runs not recorded: {type(err).__name__}: {str(err)[:80]})"


def status(out: Path) -> list[dict[str, Any]]:
    """One row per submitted job: its scheduler state and its runs ok / failed / missing
    according to the records (see the module docstring for what it records)."""
    jobs = read_jobs(out)
    latest = latest_jobs(jobs)
    states = scheduler_states(jobs)
    notes: dict[int, str] = {}
    for i, (job, state) in enumerate(zip(jobs, states, strict=True)):
        newer = latest.get(job_key(job["dataset"], job["seed"], job["runs"])) \
            if "runs" in job else None
        if newer is not None and newer is not job:
            notes[i] = f" (then job {newer['job_id']})"
        elif job_state(state) in ENDED_BADLY:
            notes[i] = _record_job_end(job, out, state)
    recs = read_records(out / RECORDS_FILE).records
    rows = []
    for i, (job, state) in enumerate(zip(jobs, states, strict=True)):
        hashes = set(job["runs"].values()) if "runs" in job else None
        mine = [r for r in recs if r.dataset == job["dataset"] and r.seed == job["seed"]
                and r.sweep == job.get("sweep", {}) and r.method != FLOOR_METHOD
                and (hashes is None or r.config_hash in hashes)]
        latest_rec: dict[str, RunRecord] = {}
        for r in mine:
            latest_rec[r.method] = r
        ok = sum(r.status == "ok" for r in latest_rec.values())
        # a job still queued or running redoes its runs without an ok record
        failed = 0 if job_state(state) in QUEUED_OR_RUNNING else sum(
            r.status != "ok" for r in latest_rec.values())
        planned = len(job["runs"]) if "runs" in job else len(job.get("methods", []))
        missing = max(0, planned - ok - failed)
        rows.append({**job, "state": state + notes.get(i, ""), "ok": ok, "failed": failed,
                     "missing": missing})
    return rows
