"""Run records, torch-free: one JSON line per run, appended whole, flushed and fsynced under a
file lock, and read back with every field checked against its type.

A reader skips (and reports) a torn or malformed line instead of failing, so a process killed
while writing never makes earlier results unreadable. The report renders records with this
module alone; ``bench.results.RecordWriter`` (which needs torch) creates and writes them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import json
import os
import traceback
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.io import DiskFull, is_disk_full
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
    #: the ``--plugin`` file that registered the method (None: built in or installed)
    plugin: str | None = None
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
    #: the EMA decay at the checkpoint's last update: ``train.ema`` or, where the warm-up
    #: (1 + n) / (10 + n) never let it get there, that cap (None: no EMA, or a record older
    #: than this field; the report then works it out from the config)
    ema_reached: float | None = None
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

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies the run among records: (config hash, method, seed), as
        ``planner.RunSpec.key``."""
        return (self.config_hash, self.method, self.seed)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, allow_nan=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        """A record from its JSON object, each known field checked against its annotation
        (``RecordError`` names the first that does not fit); unknown keys are ignored, and a
        record of a newer schema than this code reads is refused."""
        schema = d.get("schema", SCHEMA_VERSION)
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise RecordError(f"schema: {schema!r} is not an integer")
        if schema > SCHEMA_VERSION:
            raise RecordError(f"schema {schema} is newer than this version of bench reads "
                              f"(schema {SCHEMA_VERSION}): update bench to read it")
        hints = _field_types()
        for name in ("method", "dataset", "seed", "status"):
            if name not in d:
                raise RecordError(f"{name}: missing")
        for name, value in d.items():
            if name in hints and not _fits(value, hints[name]):
                raise RecordError(f"{name}: {value!r:.60} is not {_describe(hints[name])}")
        return cls(**{k: v for k, v in d.items() if k in hints})


class RecordError(ValueError):
    """A line of a records file that is not a valid run record."""


@functools.cache
def _field_types() -> dict[str, Any]:
    """RunRecord's field annotations, resolved once (resolving costs ~0.6 ms: per record
    read, it would dominate reading a records file)."""
    return typing.get_type_hints(RunRecord)


def _fits(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits the annotation ``tp`` (the types RunRecord uses)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is float:  # JSON writes 2.0 as 2.0, but NaN-free ints are numbers too
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (str, bool):
        return isinstance(value, tp)
    if origin is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and _fits(v, args[1]) for k, v in value.items())
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    raise TypeError(f"RunRecord uses an annotation _fits does not know: {tp}")


def _describe(tp: Any) -> str:
    return str(tp).replace("typing.", "")


def append_record(path: str | Path, record: RunRecord) -> None:
    """Append one whole line under an exclusive lock; flush and fsync before unlocking."""
    append_line(path, record.to_json())


def append_json_line(path: str | Path, obj: dict) -> None:
    """Any JSON object as one appended line, with the same guarantees as append_record."""
    append_line(path, json.dumps(obj, sort_keys=True, default=str))


def append_line(path: str | Path, text: str) -> None:
    """Append ``text`` as one line under an exclusive lock, fsynced. The line goes through an
    unbuffered descriptor; if the write fails (a full disk), the file is cut back to its size
    before the write with ``os.ftruncate`` and ``DiskFull`` (or the error) is raised: the
    records already there stay intact and no torn line is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (text + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        # A torn last line (a killed writer) must not swallow this record: start a new line.
        if size > 0 and _torn(path, size):
            data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as err:
            os.ftruncate(fd, size)
            if is_disk_full(err):
                raise DiskFull(path, "append a line to") from None
            raise
    finally:
        os.close(fd)  # closing releases the lock


def _torn(path: Path, size: int) -> bool:
    """Whether the file's byte at ``size - 1`` is not a newline (a torn last line)."""
    with open(path, "rb") as r:
        r.seek(size - 1)
        return r.read(1) != b"\n"


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
                if not isinstance(d, dict):
                    raise RecordError(f"not a JSON object but {type(d).__name__}")
                records.append(RunRecord.from_dict(d))
            except RecordError as err:
                skipped.append((i, str(err)[:200]))
            except (ValueError, TypeError) as err:
                skipped.append((i, f"{type(err).__name__}: {err}"[:200]))
    return ReadResult(records, skipped)


def ok_keys(path: str | Path) -> set[tuple[str, str, int]]:
    """(config hash, method, seed) of every run with an ``ok`` record in ``path``."""
    return {r.key for r in read_records(path).records
            if r.status == "ok"}


def last_ok(path: str | Path, key: tuple[str, str, int]) -> RunRecord | None:
    """The last ``ok`` record of run ``key`` (config hash, method, seed) in ``path``."""
    found = None
    for r in read_records(path).records:
        if r.status == "ok" and r.key == key:
            found = r
    return found


def describe_error(err: BaseException) -> str:
    """``Type: message (at file:line)`` of the innermost frame, for a record's ``error``."""
    tb = traceback.extract_tb(err.__traceback__)
    where = f" (at {tb[-1].filename.split('/')[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(err).__name__}: {err}{where}"
