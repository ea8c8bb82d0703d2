"""Writing run records (``RecordWriter``) and the per-run artifacts stored beside them (sample
files). ``RecordWriter`` is the one place that creates and writes records: the orchestrator,
worker processes and the executors' clean-up of dead jobs all go through it.

The records themselves (``RunRecord``, reading and appending lines) live in the torch-free
``bench.records``, re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.distributed import is_main
from bench.env import git_commit, library_versions, now
from bench.io import DiskFull, atomic_write
from bench.planner import RunSpec
from bench.plugins import origin
from bench.progress import Reporter, SilentReporter
from bench.records import (  # noqa: F401  (re-exported: bench.results is where callers look)
    RECORDS_FILE,
    SAMPLES_DIR,
    SCHEMA_VERSION,
    ReadResult,
    RecordError,
    RunRecord,
    append_json_line,
    append_line,
    append_record,
    describe_error,
    last_ok,
    ok_keys,
    read_records,
)
from bench.registry import METHODS, RegistryError
from bench.vocab import Status


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
            config_file=self.config_file, plugin=method_plugin(spec.method),
            recipe=spec.recipe, config=spec.config,
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
            if isinstance(werr, DiskFull):
                raise  # recorded as failed, and the suite stops: nothing else would fit
        self.reporter.done(rec)
        return rec

    def stopped(self, recs: list[RunRecord], err: BaseException, during: str) -> None:
        """Runs cut short by a stop (Ctrl-C, SIGTERM) or a full disk, written as
        ``interrupted`` or ``failed`` with the reason where a record still fits; the caller
        then re-raises, which ends the suite (a resumed one redoes these runs)."""
        for rec in recs:
            if rec.status != "running":  # already written (the stop came after it)
                continue
            reason = err
            if type(err) is KeyboardInterrupt:  # a bare Ctrl-C or SIGTERM: say where it hit
                how = str(err) or "Ctrl-C or SIGTERM"
                reason = KeyboardInterrupt(f"stopped while {during} ({how}); the same "
                                           "command runs it again")
            try:
                self.finish(rec, reason, "interrupted" if isinstance(err, KeyboardInterrupt)
                            else "failed")
            except DiskFull:
                return  # nothing more fits; the caller's DiskFull (or stop) says why

    def save_samples(self, run_id: str, x: torch.Tensor, n: int) -> str:
        """The first ``n`` samples as float32 ``samples/<run_id>.npy``; the path relative to
        the results folder (what the record stores)."""
        rel = Path(SAMPLES_DIR) / f"{run_id}.npy"
        arr = x[:n].cpu().numpy().astype(np.float32)
        atomic_write(self.out / rel, lambda tmp: np.save(tmp, arr))
        return str(rel)


def method_plugin(method: str) -> str | None:
    """The ``--plugin`` file that registered ``method`` (``bench.plugins.origin``), if any."""
    try:
        return origin(METHODS.get(method))
    except RegistryError:  # the data floor, or a name resolved elsewhere
        return None
