"""The environment a run executes in: its device, the code's commit and the library versions.

The device is picked once per process (by the CLI, a worker or ``bench.load``) and passed
explicitly to every dataset, network, coupling and generator: nothing reads a global device.
torch is imported inside the functions that need it: the report imports this module.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: the distributions whose versions every record and perf measurement carries
TRACKED_DISTRIBUTIONS = ("torch", "numpy", "scipy", "pot", "torch-fidelity", "rectified-flow",
                         "otnfm-bench")


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; anything else is passed to ``torch.device``."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return dev


def now() -> str:
    """UTC time stamp for records, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the code that runs (``+dirty`` with uncommitted changes), if in git."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=here)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, cwd=here).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def short_commit(full: str) -> str:
    """A ``git_commit`` value shortened to 12 hex digits, keeping its ``+dirty`` mark."""
    return full[:12] + ("+dirty" if full.endswith("+dirty") else "")


def provenance() -> str:
    """The line a script's report states its code by: "commit `…`, Python …, torch …"."""
    import torch

    full = git_commit()
    return (f"commit `{short_commit(full) if full else 'unknown'}`, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in TRACKED_DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
