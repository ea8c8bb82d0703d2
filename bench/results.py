"""Run records: one JSON line per run, appended whole, flushed and fsynced under a file lock.

A reader skips (and reports) a torn or malformed line instead of failing, so a process killed
while writing never makes earlier results unreadable.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RECORDS_FILE = "records.jsonl"


@dataclass
class RunRecord:
    method: str
    dataset: str
    seed: int
    status: str  # "ok" | "failed"
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
    #: consistency of the coupling (trainer.ConsistencyProbe): target_var_ratio, draws, probes
    coupling_diagnostics: dict[str, float] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_reused: bool = False
    net_params: int = 0
    #: counted network evaluations per sample (forward pre-hook on the network)
    nfe: int | None = None
    sample_ms_per_1k: float | None = None
    sample_ms_spread: float | None = None
    timing_batch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    metric_info: dict[str, Any] = field(default_factory=dict)
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


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "scipy", "pot", "torch-fidelity", "rectified-flow",
                 "otnfm-bench"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
