"""Atomic file writes: write a temporary file beside the target, then rename it over.

A reader never sees a half-written checkpoint, report, sample file or cached extractor, and
two processes writing the same target never share a temporary file (its name carries the
process id and a random suffix).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a unique temporary path next to ``path``, then rename it to
    ``path``. On any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the suffix keeps the target's extension last: np.save and torch.save add none then
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
