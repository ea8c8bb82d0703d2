"""Where a suite's runs execute: in this process (default), in N local worker processes
(``--workers N``), or as Slurm jobs through submitit (``--executor slurm``).

The unit of work is one (grid point, dataset, seed), a ``planner.WorkUnit``: its runs share
the data, the checkpoints of shared recipes and the floor record. Every worker appends to the same
``records.jsonl`` under its file lock, and skips runs whose ``ok`` record exists, so a
re-submitted suite only does what is missing. Submitted jobs are listed in ``jobs.jsonl``
next to the records; ``bench status`` reads both.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import submitit
import torch

import bench.builtins  # noqa: F401  (a worker process registers the built-ins)
from bench.config import Config, from_dict, to_dict
from bench.env import pick_device
from bench.planner import Plan, WorkUnit
from bench.plugins import load_entry_points, load_plugin
from bench.results import RECORDS_FILE, RecordWriter, RunRecord, append_json_line, read_records
from bench.runner import Runner
from bench.vocab import FLOOR_METHOD

JOBS_FILE = "jobs.jsonl"


def run_unit(cfg_raw: dict, sweep: dict, dataset: str, seed: int, out: str, device: str,
             config_file: str | None, force: bool, plugins: list[str], threads: int) -> dict:
    """Entry point of a worker process or Slurm job (only plain, picklable arguments)."""
    if threads > 0:
        torch.set_num_threads(threads)
    load_entry_points()
    for p in plugins:
        load_plugin(Path(p))
    cfg = from_dict(Config, cfg_raw)
    runner = Runner(cfg, out, pick_device(device), config_file=config_file, force=force,
                    sweep=sweep)
    recs = runner.run_unit(WorkUnit(cfg, sweep, dataset, seed))
    return {"dataset": dataset, "seed": seed, "records": [(r.method, r.status) for r in recs]}


def _args(g: WorkUnit, out: Path, device: str, config_file: str | None, force: bool,
          plugins: list[str], threads: int) -> tuple:
    return (to_dict(g.cfg), g.sweep, g.dataset, g.seed, str(out), device, config_file, force,
            plugins, threads)


def run_local(units: list[WorkUnit], out: Path, device: str, config_file: str | None,
              force: bool, plugins: list[str], workers: int, log) -> list[dict]:
    """``workers`` processes on this machine (spawned, torch threads split between them)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    results = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        futs = {ex.submit(run_unit, *_args(g, out, device, config_file, force, plugins,
                                            threads)): g for g in units}
        for fut in as_completed(futs):
            g = futs[fut]
            try:
                res = fut.result()
                log(f"done: {g.label}: " + ", ".join(f"{m} {s}" for m, s in res["records"]))
                results.append(res)
            except Exception as err:  # a worker that died: its missing runs become failed
                record_lost(g, out, f"worker process failed: {type(err).__name__}: {err}")
                log(f"failed: {g.label}: {err}")
    return results


def submit_slurm(units: list[WorkUnit], out: Path, device: str, config_file: str | None,
                 force: bool, plugins: list[str], cluster: str | None, params: dict,
                 wait: bool, log) -> list[Any]:
    """One submitit job per unit; ``cluster="local"`` is submitit's local executor (used by
    the tests), ``None`` picks Slurm when ``sbatch`` is there."""
    folder = out / "slurm"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    jobs = []
    for g in units:
        job = ex.submit(run_unit, *_args(g, out, device, config_file, force, plugins, 0))
        append_json_line(out / JOBS_FILE, {
            "job_id": str(job.job_id), "cluster": ex.cluster, "folder": str(folder),
            "dataset": g.dataset, "seed": g.seed, "sweep": g.sweep, "suite": g.cfg.name,
            "methods": list(g.cfg.methods),
            "submitted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        log(f"submitted {g.label} as job {job.job_id} ({ex.cluster})")
        jobs.append((g, job))
    if wait:
        for g, job in jobs:
            try:
                job.result()
                log(f"done: {g.label} (job {job.job_id})")
            except Exception as err:
                state = getattr(job, "state", "UNKNOWN")
                record_lost(g, out, f"job {job.job_id} ended in state {state}: "
                                    f"{type(err).__name__}: {str(err)[:300]}")
                log(f"failed: {g.label} (job {job.job_id}, {state})")
    return jobs


def record_lost(g: WorkUnit, out: Path, reason: str) -> None:
    """Runs of a unit that a dead worker or job left without a record get a failed one."""
    writer = RecordWriter(out, suite=g.cfg.name, device=torch.device("cpu"))
    have = {(r.config_hash, r.method, r.seed) for r in read_records(writer.path).records
            if r.dataset == g.dataset}
    for spec in Plan.of(g.cfg, g.sweep).runs(g.dataset, g.seed):
        if spec.key not in have:
            writer.finish(writer.new(spec), RuntimeError(reason))


def status(out: Path) -> list[dict[str, Any]]:
    """One row per submitted job: its scheduler state (where submitit can still tell) and its
    runs done / failed / missing according to the records."""
    rows = []
    jobs_path = out / JOBS_FILE
    if not jobs_path.exists():
        return rows
    recs = read_records(out / RECORDS_FILE).records
    for line in jobs_path.read_text().splitlines():
        try:
            job = json.loads(line)
        except json.JSONDecodeError:
            continue
        mine = [r for r in recs if r.dataset == job["dataset"] and r.seed == job["seed"]
                and r.sweep == job.get("sweep", {}) and r.method != FLOOR_METHOD]
        latest: dict[str, RunRecord] = {}
        for r in mine:
            latest[r.method] = r
        ok = sum(r.status == "ok" for r in latest.values())
        failed = sum(r.status != "ok" for r in latest.values())
        missing = max(0, len(job.get("methods", [])) - ok - failed)
        rows.append({**job, "state": _scheduler_state(job), "ok": ok, "failed": failed,
                     "missing": missing})
    return rows


def _scheduler_state(job: dict) -> str:
    if job.get("cluster") != "slurm":
        return "–"  # submitit's local jobs are children of the submitting process
    try:
        return str(submitit.SlurmJob(folder=job["folder"], job_id=job["job_id"]).state)
    except Exception as err:  # sacct missing or unreachable
        return f"unknown ({type(err).__name__})"
