"""Run records: one JSON line per run, appended whole, flushed and fsynced under a file lock,
and the per-run artifacts stored beside them (sample files).

A reader skips (and reports) a torn or malformed line instead of failing, so a process killed
while writing never makes earlier results unreadable. ``RecordWriter`` is the one place that
creates and writes records: the orchestrator, worker processes and the executors' clean-up of
dead jobs all go through it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.distributed import is_main
from bench.env import git_commit, library_versions, now
from bench.io import atomic_write
from bench.planner import RunSpec
from bench.progress import Reporter, SilentReporter
from bench.vocab import Status

SCHEMA_VERSION = 1
RECORDS_FILE = "records.jsonl"
SAMPLES_DIR = "samples"


@dataclass
class RunRecord:
    method: str
    dataset: str
    seed: int
    status: Status
    run_id: str = ""
    error: str | None = None
    schema: int = SCHEMA_VERSION
    suite: str = ""
    #: the sweep grid point this run belongs to (dotted config key -> value), if any
    sweep: dict[str, Any] = field(default_factory=dict)
    config_file: str | None = None
    recipe: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    recipe_hash: str = ""
    git_commit: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    device: str = ""
    #: torch intra-op threads (timings depend on it)
    threads: int | None = None
    started_at: str = ""
    finished_at: str = ""
    #: training of the checkpoint this run was evaluated from (shared across a recipe)
    train_steps: int = 0
    train_seconds: float = 0.0
    coupling_seconds: float = 0.0
    #: parts of train_seconds for methods with a teacher (teacher, pair generation, student)
    train_breakdown: dict[str, float] = field(default_factory=dict)
    #: training compute, counted (compute.ComputeCount: steps, network forwards and samples,
    #: JVPs, teacher forwards, backwards, FLOPs per step and in all; for a method built on a
    #: teacher also ``teacher`` and ``pairs``, and ``total_flops`` over everything)
    train_compute: dict[str, Any] = field(default_factory=dict)
    #: learning curve (``eval.curve``): [{step, train_seconds, train_flops, samples,
    #: metrics}] scored on the EMA weights during training, and the seconds it took (outside
    #: train_seconds)
    curve: list[dict[str, Any]] = field(default_factory=list)
    curve_seconds: float = 0.0
    #: the ``data`` row only: held-out data scored as a curve point is ({samples, metrics}),
    #: the floor a curve can reach at its sample count
    curve_floor: dict[str, Any] | None = None
    #: consistency of the coupling (trainer.ConsistencyProbe): target_var_ratio, draws, probes
    coupling_diagnostics: dict[str, float] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_reused: bool = False
    net_params: int = 0
    #: counted network evaluations per sample (forward pre-hook on the network); the mean over
    #: samples for an adaptive solver
    nfe: float | None = None
    sample_ms_per_1k: float | None = None
    sample_ms_spread: float | None = None
    timing_batch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    metric_info: dict[str, Any] = field(default_factory=dict)
    #: methods trained on a noise bank: the headline metric on fresh noise and on bank noise
    #: (``metric``, ``fresh``, ``bank``, ``n``); a large gap means the bank was memorised
    bank_gap: dict[str, Any] = field(default_factory=dict)
    train_history: list[dict[str, float]] = field(default_factory=list)
    samples_path: str | None = None
    data_info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, allow_nan=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def append_record(path: str | Path, record: RunRecord) -> None:
    """Append one whole line under an exclusive lock; flush and fsync before unlocking."""
    append_line(path, record.to_json())


def append_json_line(path: str | Path, obj: dict) -> None:
    """Any JSON object as one appended line, with the same guarantees as append_record."""
    append_line(path, json.dumps(obj, sort_keys=True, default=str))


def append_line(path: str | Path, text: str) -> None:
    """Append ``text`` as one line under an exclusive lock, flushed and fsynced. If the write
    fails (a full disk), the file is cut back to its size before the write and the error is
    raised: the records already there stay intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (text + "\n").encode("utf-8")
    with open(path, "ab") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            size = f.seek(0, os.SEEK_END)
            # A torn last line (a killed writer) must not swallow this record: start a new line.
            if size > 0:
                with open(path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        data = b"\n" + data
            try:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                f.truncate(size)
                raise
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@dataclass
class ReadResult:
    records: list[RunRecord]
    skipped: list[tuple[int, str]]  # (line number, reason)


def read_records(path: str | Path) -> ReadResult:
    path = Path(path)
    records: list[RunRecord] = []
    skipped: list[tuple[int, str]] = []
    if not path.exists():
        return ReadResult(records, skipped)
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                if not isinstance(d, dict) or "method" not in d:
                    raise ValueError("not a run record")
                records.append(RunRecord.from_dict(d))
            except (ValueError, TypeError) as err:
                skipped.append((i, f"{type(err).__name__}: {err}"[:200]))
    return ReadResult(records, skipped)


def ok_keys(path: str | Path) -> set[tuple[str, str, int]]:
    """(config hash, method, seed) of every run with an ``ok`` record in ``path``."""
    return {(r.config_hash, r.method, r.seed) for r in read_records(path).records
            if r.status == "ok"}


def last_ok(path: str | Path, key: tuple[str, str, int]) -> RunRecord | None:
    """The last ``ok`` record of run ``key`` (config hash, method, seed) in ``path``."""
    found = None
    for r in read_records(path).records:
        if r.status == "ok" and (r.config_hash, r.method, r.seed) == key:
            found = r
    return found


def describe_error(err: BaseException) -> str:
    """``Type: message (at file:line)`` of the innermost frame, for a record's ``error``."""
    tb = traceback.extract_tb(err.__traceback__)
    where = f" (at {tb[-1].filename.split('/')[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(err).__name__}: {err}{where}"


class RecordWriter:
    """Creates the records of one results folder and appends them when a run ends.

    Under torchrun only rank 0 writes. A record that cannot be written (a full disk) leaves
    the file as it was; an ``ok`` one is then written as ``failed`` with the reason, if a short
    record still fits."""

    def __init__(self, out: str | Path, *, suite: str, device: torch.device,
                 config_file: str | None = None, reporter: Reporter | None = None) -> None:
        self.out = Path(out)
        self.path = self.out / RECORDS_FILE
        self.suite, self.device, self.config_file = suite, device, config_file
        self.reporter: Reporter = reporter or SilentReporter()
        self.commit = git_commit()
        self.versions = library_versions()

    def new(self, spec: RunSpec, data_info: dict[str, Any] | None = None) -> RunRecord:
        return RunRecord(
            method=spec.method, dataset=spec.dataset, seed=spec.seed, status="running",
            run_id=spec.run_id, suite=self.suite, sweep=spec.sweep,
            config_file=self.config_file, recipe=spec.recipe, config=spec.config,
            config_hash=spec.config_hash, recipe_hash=spec.recipe_hash,
            git_commit=self.commit, versions=self.versions, device=str(self.device),
            threads=torch.get_num_threads(), started_at=now(), data_info=data_info or {},
        )

    def finish(self, rec: RunRecord, err: BaseException | None = None,
               status: Status = "failed") -> RunRecord:
        """End ``rec`` as ``ok`` (no error) or ``status`` with ``err`` as its reason; write it."""
        if not is_main():
            return rec
        if err is not None:
            rec.status, rec.error = status, describe_error(err)
        else:
            rec.status = "ok"
        rec.finished_at = now()
        try:
            append_record(self.path, rec)
        except OSError as werr:  # e.g. a full disk: the file is left as it was
            if rec.status != "ok":
                raise
            rec.status, rec.metrics, rec.train_history, rec.curve = "failed", {}, [], []
            rec.error = f"could not write the record: {type(werr).__name__}: {werr}"
            append_record(self.path, rec)  # a short failed record may still fit
        self.reporter.done(rec)
        return rec

    def save_samples(self, run_id: str, x: torch.Tensor, n: int) -> str:
        """The first ``n`` samples as float32 ``samples/<run_id>.npy``; the path relative to
        the results folder (what the record stores)."""
        rel = Path(SAMPLES_DIR) / f"{run_id}.npy"
        arr = x[:n].cpu().numpy().astype(np.float32)
        atomic_write(self.out / rel, lambda tmp: np.save(tmp, arr))
        return str(rel)
