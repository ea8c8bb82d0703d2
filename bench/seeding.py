"""One seed per run, split into named, independent random streams (NVlabs/edm style).

Every consumer receives an explicit generator; library code never touches the global RNGs
except inside ``init_scope`` (module initialisers only know the global torch RNG), which forks
and restores it.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import numpy as np
import torch

#: The named streams of a run. Names, not positions, derive the seeds, so adding a stream
#: later never shifts the others.
STREAMS = ("data", "init", "noise", "time", "coupling", "eval", "metrics", "probes", "bank")


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for stream ``name`` of run seed ``seed``."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(name.encode())])
    lo, hi = (int(v) for v in ss.generate_state(2, dtype=np.uint32))
    return (lo | hi << 32) >> 1


class Streams:
    """Named torch / numpy generators for one run seed, created on ``device``."""

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = int(seed)
        self.device = torch.device(device)
        self._torch: dict[str, torch.Generator] = {}

    def torch(self, name: str) -> torch.Generator:
        if name not in self._torch:
            g = torch.Generator(device=self.device)
            g.manual_seed(stream_seed(self.seed, name))
            self._torch[name] = g
        return self._torch[name]

    def __getitem__(self, name: str) -> torch.Generator:
        return self.torch(name)

    def numpy(self, name: str) -> np.random.Generator:
        return np.random.default_rng(stream_seed(self.seed, name))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: g.get_state() for k, g in self._torch.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, s in state.items():
            self.torch(k).set_state(s)


@contextlib.contextmanager
def init_scope(seed: int, devices: list[torch.device] | None = None) -> Iterator[None]:
    """Deterministic parameter initialisation without leaking into the global RNG."""
    cuda = [d for d in (devices or []) if d.type == "cuda"]
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield
