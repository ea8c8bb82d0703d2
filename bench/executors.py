"""Where a suite's runs execute: in this process (default), in N local worker processes
(``--workers N``), or as Slurm jobs through submitit (``--executor slurm``).

The unit of work is one (grid point, dataset, seed), a ``planner.WorkUnit``: its runs share
the data, the checkpoints of shared recipes and the floor record. Every worker appends to the
same ``records.jsonl`` under its file lock, and skips runs whose ``ok`` record exists, so a
re-submitted suite only does what is missing. Submitted jobs are listed in ``jobs.jsonl``
(``bench.jobs``). A Slurm job saves its training state when signalled and is requeued at its
time limit (``UnitJob``).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import submitit
import torch
from submitit.helpers import DelayedSubmission

import bench.builtins  # noqa: F401  (a worker process registers the built-ins)
from bench.config import Config, from_dict, to_dict
from bench.env import pick_device
from bench.io import DiskFull
from bench.jobs import (
    QUEUED_OR_RUNNING,
    all_recorded,
    append_job,
    job_key,
    job_state,
    latest_jobs,
    read_jobs,
    record_lost,
    scheduler_states,
    unit_runs,
)
from bench.planner import WorkUnit
from bench.plugins import load_entry_points, load_plugin
from bench.progress import Reporter
from bench.results import RunRecord, ok_keys
from bench.runner import Runner
from bench.stopping import stop_requested

Log = Callable[[str], None]


def run_unit(cfg_raw: dict, sweep: dict, dataset: str, seed: int, out: str, device: str,
             config_file: str | None, force: bool, plugins: list[str], threads: int,
             reporter: Reporter | None = None) -> dict:
    """Entry point of a worker process or Slurm job (only plain, picklable arguments)."""
    if threads > 0:
        torch.set_num_threads(threads)
    load_entry_points()
    for p in plugins:
        load_plugin(Path(p))
    cfg = from_dict(Config, cfg_raw)
    runner = Runner(cfg, out, pick_device(device), config_file=config_file, force=force,
                    sweep=sweep, reporter=reporter)
    recs = runner.run_unit(WorkUnit(cfg, sweep, dataset, seed))
    return {"dataset": dataset, "seed": seed, "records": [(r.method, r.status) for r in recs]}


def _args(u: WorkUnit, out: Path, device: str, config_file: str | None, force: bool,
          plugins: list[str], threads: int) -> tuple:
    return (to_dict(u.cfg), u.sweep, u.dataset, u.seed, str(out), device, config_file, force,
            plugins, threads)


def run_local(units: list[WorkUnit], out: Path, device: str, config_file: str | None,
              force: bool, plugins: list[str], workers: int, log: Log) -> list[dict]:
    """``workers`` processes on this machine (spawned, torch threads split between them).

    Ctrl-C reaches every worker (one process group); ``kill PID`` of this process is passed
    on to them (``forward_term``). Either way each worker saves its training state and records
    its runs as interrupted, no unit starts after it, and KeyboardInterrupt is raised here once
    every worker has stopped."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    results: list[dict] = []
    full: DiskFull | None = None
    ctx = mp.get_context("spawn")
    stopping = ctx.Event()  # set (here or by forward_term): a worker starts no further unit
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(stopping,)) as ex, forward_term(stopping) as term:

        def stop() -> None:
            stopping.set()
            ex.shutdown(wait=False, cancel_futures=True)  # start nothing new

        futs = {ex.submit(_local_unit, *_args(u, out, device, config_file, force, plugins,
                                              threads)): u for u in units}
        try:
            for fut in as_completed(futs):
                u = futs[fut]
                if stopping.is_set():  # a SIGTERM arrived: drop the units not started
                    stop()
                if fut.cancelled():
                    continue
                try:
                    res = fut.result()
                    log(f"done: {u.label}: " + ", ".join(f"{m} {s}" for m, s in res["records"]))
                    results.append(res)
                except KeyboardInterrupt as err:  # stopped: state saved, runs recorded
                    stop()
                    log(f"interrupted: {u.label}: {err}")
                except DiskFull as err:  # no other unit could record anything either
                    stop()
                    full = full or err
                except Exception as err:  # a worker that died: its missing runs become failed
                    record_lost(u, out, f"worker process failed: {type(err).__name__}: {err}")
                    log(f"failed: {u.label}: {err}")
        except KeyboardInterrupt:  # Ctrl-C here: the workers have it too; wait for them
            stop()
    if full is not None:
        raise full
    if stopping.is_set():
        raise KeyboardInterrupt(f"stopped by {term.signal or 'Ctrl-C'}; every worker saved "
                                "its state")
    return results


_STOPPING: Any = None


def _init_worker(stopping: Any) -> None:
    """A worker ignores SIGTERM between units (``_local_unit`` handles it during one) and
    keeps the pool's stop event."""
    global _STOPPING
    _STOPPING = stopping
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _local_unit(*args: Any) -> dict:
    """A local worker's unit: SIGTERM saves and stops it as Ctrl-C does; once the pool is
    stopping, a unit already queued to this worker does not start."""
    if _STOPPING is not None and _STOPPING.is_set():
        raise KeyboardInterrupt("not started: the pool is stopping")
    with stop_on_signals():
        return run_unit(*args)


@contextlib.contextmanager
def forward_term(stopping: Any) -> Iterator[SimpleNamespace]:
    """While the pool runs, SIGTERM to this process sets ``stopping``, is sent on to every
    worker process and is noted in ``term.signal``; the caller then waits for the workers to
    save and stop."""
    term = SimpleNamespace(signal=None)
    if threading.current_thread() is not threading.main_thread():
        yield term
        return

    def handler(signum, frame):  # noqa: ARG001
        term.signal = signal.Signals(signum).name
        stopping.set()
        for p in mp.active_children():
            p.terminate()  # SIGTERM: the worker's stop_on_signals turns it into a Ctrl-C

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield term
    finally:
        signal.signal(signal.SIGTERM, old)


def submit_slurm(units: list[WorkUnit], out: Path, device: str, config_file: str | None,
                 force: bool, plugins: list[str], cluster: str | None, params: dict,
                 wait: bool, log: Log, max_requeues: int = 10) -> list[Any]:
    """One submitit job per unit that still has runs to do; ``cluster="local"`` is
    submitit's local executor (used by the tests), ``None`` picks Slurm when ``sbatch`` is
    there. A job is requeued at its time limit up to ``max_requeues`` times; at the next
    limit submitit ends it (``timed-out too many times``) and its runs are recorded failed:
    with that reason when ``wait``, else with the scheduler's state by ``bench status``. A
    unit whose runs all have ok records is not submitted, nor one whose latest Slurm job is
    still queued or running (that job is waited for instead), so the same command run again
    only submits what is missing."""
    folder = out / "slurm"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster,
                               slurm_max_num_timeout=max_requeues,
                               local_max_num_timeout=max_requeues)
    params = {k: v for k, v in params.items() if v is not None}
    if ex.cluster == "slurm" and params.get("timeout_min"):
        params.setdefault("slurm_signal_delay_s", signal_delay_s(params["timeout_min"]))
    ex.update_parameters(**params)
    previous = latest_jobs(read_jobs(out)) if ex.cluster == "slurm" and not force else {}
    prev_states = dict(zip(previous, map(job_state, scheduler_states(list(previous.values()))),
                           strict=True))
    ok = ok_keys(out / "records.jsonl")
    jobs = []
    for u in units:
        if not force and all_recorded(u, ok, out / "records.jsonl"):
            log(f"{u.label}: every run already has an ok record, not submitted")
            continue
        key = job_key(u.dataset, u.seed, unit_runs(u))
        prev, state = previous.get(key), prev_states.get(key, "")
        if prev and state in QUEUED_OR_RUNNING:
            job = submitit.SlurmJob(folder=prev["folder"], job_id=prev["job_id"])
            log(f"{u.label}: job {prev['job_id']} is {state}, not submitted again")
        else:
            job = ex.submit(UnitJob(), *_args(u, out, device, config_file, force, plugins, 0))
            append_job(out, str(job.job_id), ex.cluster, folder, u)
            log(f"submitted {u.label} as job {job.job_id} ({ex.cluster})")
        jobs.append((u, job))
    if wait:
        for u, job in jobs:
            try:
                job.result()
                log(f"done: {u.label} (job {job.job_id})")
            except Exception as err:
                state = getattr(job, "state", "UNKNOWN")
                record_lost(u, out, f"job {job.job_id} ended in state {state}: "
                                    f"{type(err).__name__}: {str(err)[:300]}")
                log(f"failed: {u.label} (job {job.job_id}, {state})")
    return jobs


def signal_delay_s(timeout_min: float) -> int:
    """Seconds before the time limit at which Slurm signals a job (submitit's 90, cut to a
    quarter of short limits: a 1-minute job would be signalled as soon as it starts). Slurm
    sends it at its next periodic check of the limits, so it may come up to about 30 s
    earlier (seen with 22.05)."""
    return int(min(90, max(5, timeout_min * 60 // 4)))


class JobReporter:
    """A job's progress in its log (submitit's ``*_log.out``): resumed training, a line every
    tenth of training, finished runs."""

    def __init__(self) -> None:
        self.label, self.total, self.step = "", 0, 0

    def start(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        print(f"start: {label} ({total})", flush=True)

    def advance(self, step: int, loss: float) -> None:
        if math.isnan(loss):  # sampling reports batches without a loss
            return
        self.step = step
        if step % max(1, self.total // 10) == 0:
            print(f"{self.label}: step {step}/{self.total}, loss {loss:.4f}", flush=True)

    def done(self, record: RunRecord) -> None:
        print(f"record: {record.dataset} {record.method} seed {record.seed}: {record.status}"
              + (f" ({record.error})" if record.error else ""), flush=True)

    def log(self, message: str) -> None:
        print(message, flush=True)


class UnitJob:
    """What a Slurm job runs: ``run_unit`` on one work unit, checkpointable for submitit.

    submitit asks Slurm for a signal (USR2) shortly before the time limit; a job whose callable
    has a ``checkpoint`` method is then requeued with what that method returns, here the same
    call: the rerun skips the runs already recorded and resumes training from the partial
    state. Left to submitit, the signal would end the job in the middle of a step and lose
    what was trained since the last periodic save; so it first reaches the training loop as a
    Ctrl-C, the loop saves its whole state after the step in progress and stops, and only then
    does submitit requeue. SIGTERM (scancel, or the kill at the time limit) saves the same
    way, without a requeue.
    """

    def __call__(self, *args: Any) -> dict:
        reporter = JobReporter()
        with stop_on_signals() as stop:
            try:
                return run_unit(*args, reporter=reporter)
            except KeyboardInterrupt:
                if stop.signal is None:
                    raise
                where = (f"after training step {reporter.step} ({reporter.label})"
                         if reporter.step else "before training")
                print(f"stopped by {stop.signal} {where}", flush=True)
                if stop.requeue is not None:
                    stop.requeue()  # submitit: checkpoint(), scontrol requeue, exit
                raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        return DelayedSubmission(self, *args, **kwargs)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SimpleNamespace]:
    """While running, submitit's requeue signal and SIGTERM act as one Ctrl-C (the training
    loop's handler saves and stops; elsewhere KeyboardInterrupt is raised), in a Slurm job and
    in a local ``bench run`` alike (``kill PID`` stops it as Ctrl-C would). ``stop.requeue``
    is then submitit's own handler, to call once the state is saved."""
    stop = SimpleNamespace(signal=None, requeue=None)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    # the variable submitit itself reads to choose its signal
    usr = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
    submitit_handler = signal.getsignal(usr)

    def handler(signum, frame):
        if signum == usr and callable(submitit_handler):
            stop.requeue = lambda: submitit_handler(usr, None)
        on_int = signal.getsignal(signal.SIGINT)
        if stop.signal is not None or stop_requested():
            return  # already stopping (this signal, or a Ctrl-C before it): passing it on as
            # a second Ctrl-C would abandon the save
        stop.signal = signal.Signals(signum).name
        if not callable(on_int):
            raise KeyboardInterrupt
        on_int(signal.SIGINT, frame)

    old = {sig: signal.signal(sig, handler) for sig in (usr, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
