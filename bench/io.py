"""Atomic file writes: write a temporary file beside the target, then rename it over.

A reader never sees a half-written checkpoint, report, sample file or cached extractor, and
two processes writing the same target never share a temporary file (its name carries the
process id and a random suffix).
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


class DiskFull(OSError):
    """A write found no space left: what was being written is not there, and what was there
    before is as it was. The message names the file and says how to go on."""

    def __init__(self, path: str | Path, what: str = "write") -> None:
        super().__init__(errno.ENOSPC, f"disk full: could not {what} {path} (no space left "
                         "on the device); the file is as it was before. Free some space and "
                         "run the same command again: finished runs are kept and skipped")
        self.path, self.what = Path(path), what

    def __reduce__(self):  # crosses process boundaries whole (worker processes, Slurm jobs)
        return (type(self), (str(self.path), self.what))


def is_disk_full(err: BaseException) -> bool:
    """An ``OSError`` for a full disk or an exceeded quota."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a unique temporary path next to ``path``, then rename it to
    ``path``. On any error the temporary file is removed and ``path`` is left as it was; a
    full disk raises ``DiskFull`` naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the suffix keeps the target's extension last: np.save and torch.save add none then
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err) and not isinstance(err, DiskFull):
            raise DiskFull(path) from err
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_or_print(text: str, out: str | Path | None) -> None:
    """A script's Markdown: written atomically to ``out`` (and said so), else printed."""
    if out is None:
        print(text)
        return
    atomic_write_text(out, text)
    print(f"wrote {out}")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save`` through ``atomic_write``. It writes into a Python file object, so a full
    disk surfaces as ``OSError(ENOSPC)`` (a path given to torch.save reports it as
    ``unexpected pos ...`` instead) and becomes ``DiskFull``. torch is imported here, not at
    the top: reading and writing records and reports needs no torch."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, write)
