"""Stopping a training run between two steps: the first Ctrl-C sets a ``StopFlag`` the training
loop checks after each step (so the state can be saved whole); a second one interrupts at once.

The flags of the loops running in this process are held here, so that other signal handlers
(``bench.executors.stop_on_signals``) can ask whether a stop is already under way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class StopFlag:
    """A request to stop after the current step."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True


#: the flags of the loops now running in the main thread, innermost last
_ACTIVE: list[StopFlag] = []


def stop_requested() -> bool:
    """Whether the innermost training loop of this process has been asked to stop."""
    return bool(_ACTIVE) and _ACTIVE[-1].requested


@contextlib.contextmanager
def sigint_stop() -> Iterator[StopFlag]:
    """In the main thread, the first Ctrl-C requests a stop of the yielded flag; a second one
    raises KeyboardInterrupt at once. Elsewhere the flag is only ever set by its holder."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag.requested:
            raise KeyboardInterrupt
        flag.request()

    old = signal.signal(signal.SIGINT, handler)
    _ACTIVE.append(flag)
    try:
        yield flag
    finally:
        _ACTIVE.remove(flag)
        signal.signal(signal.SIGINT, old)
