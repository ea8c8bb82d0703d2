"""Claims: two processes on one results folder never both train or record the same run.

Before a process trains a recipe (and evaluates and records the runs that share it) it takes
that recipe's claim: an exclusive POSIX lock (``fcntl.lockf``, which NFS servers honour too)
on ``<results>/claims/<checkpoint name>.lock``. Another process that wants the same recipe
first does the recipes nobody holds, then waits for the held ones and finds their runs
recorded: two processes started on one suite split its recipes between them. The operating
system drops the lock when its holder exits, however it exits (SIGKILL included), so a claim
is never left stale; the file itself says who holds or last held it (process, host, time).

Under torchrun the ranks of one job are one run: they take no claims (rank 0 alone writes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.distributed import world
from bench.env import now

CLAIMS_DIR = "claims"


class Claims:
    def __init__(self, out: str | Path, log: Callable[[str], None] | None = None) -> None:
        self.root = Path(out) / CLAIMS_DIR
        self.log = log or (lambda message: None)

    @contextlib.contextmanager
    def hold(self, name: str, wait: bool = True) -> Iterator[bool]:
        """Hold the claim ``name`` for the duration of the block, waiting while another process
        holds it; with ``wait=False`` the block gets False at once instead (and holds
        nothing), so the caller can do other work first."""
        if world()[1] > 1:
            yield True
            return
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{name}.lock"
        with open(path, "a+") as f:
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if not wait:
                    yield False
                    return
                f.seek(0)
                holder = f.read().strip() or "another process"
                self.log(f"waiting for {name}: claimed by {holder}")
                fcntl.lockf(f, fcntl.LOCK_EX)
            try:
                f.seek(0)
                f.truncate()
                f.write(f"pid {os.getpid()} on {socket.gethostname()} since {now()}\n")
                f.flush()
                yield True
            finally:
                fcntl.lockf(f, fcntl.LOCK_UN)


def is_held(out: str | Path, name: str) -> bool:
    """Whether a process holds the claim ``name`` right now (a dead holder holds nothing).
    For other processes only (``bench status``): POSIX locks belong to a process, so asking
    from the holding process would answer no, and closing the file there would drop its
    lock."""
    path = Path(out) / CLAIMS_DIR / f"{name}.lock"
    if not path.exists():
        return False
    with open(path, "a+") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(f, fcntl.LOCK_UN)
        return False
