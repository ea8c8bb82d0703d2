"""The one Method protocol every generator implements.

``loss(batch, gens) -> (loss, logs)`` and ``sample(x0) -> SampleOut(x, nfe)``. The trainer owns
the optimizer, EMA, clipping and checkpoints; a method never steps an optimizer. ``self.net`` is
the network whose forward passes the evaluator counts as NFE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.config import Config
from bench.couplings import Coupling, GlobalOT, Independent, MinibatchOT, OnlineOT
from bench.datasets.base import DataBundle
from bench.nets import build_net
from bench.paths import expand_t  # noqa: F401  (re-exported for methods)
from bench.registry import METHODS, register_method
from bench.seeding import Streams
from bench.vocab import GRID_COLUMNS, GRID_ROWS

#: the couplings a method can ask its BuildContext for
COUPLINGS = ("independent", "minibatch-ot", "online-ot", "global-ot")


def grid_cells() -> dict[str, tuple[str, str]]:
    """Registered method -> (row label, column label) of the report's coupling x
    parametrisation grid (``bench.vocab.GRID_ROWS`` / ``GRID_COLUMNS``), for methods
    registered with ``grid=(row, coupling)``."""
    out = {}
    for e in METHODS.entries():
        if "grid" in e.meta:
            row, coupling = e.meta["grid"]
            out[e.name] = (GRID_ROWS[row], GRID_COLUMNS[coupling])
    return out


@dataclass
class Batch:
    """``x1``: [B, *shape] data; ``idx``: [B] their rows in the training set."""

    x1: torch.Tensor
    idx: torch.Tensor


@dataclass
class SampleOut:
    """``x``: [n, *shape] samples; ``nfe``: network evaluations the method claims per sample,
    or None for an adaptive solver whose count is only known afterwards (the evaluator counts
    it either way, and a claim that differs from the count is an error)."""

    x: torch.Tensor
    nfe: int | None


@dataclass
class BuildContext:
    """What a method factory gets: the data, the resolved config and the device."""

    data: DataBundle
    cfg: Config
    device: torch.device

    def net(self, time_inputs: int, time_scale: float | None = None) -> nn.Module:
        """The dataset's shared backbone (same family/width/depth for every method);
        ``time_scale``: see ``bench.nets.build_net`` (None: the network's default)."""
        return build_net(self.data.shape, self.data.kind, self.cfg.net, time_inputs, time_scale)

    def require_linear_path(self, method: str) -> None:
        """For methods whose identities assume the straight path (MeanFlow, shortcut)."""
        if self.cfg.path.kind != "linear":
            raise ValueError(f"{method} is defined on the linear path only, "
                             f"got path.kind={self.cfg.path.kind!r}")

    def coupling(self, kind: str) -> Coupling:
        """A coupling of ``COUPLINGS`` over this dataset's source and training set."""
        src, c = self.data.source, self.cfg.coupling
        if kind == "independent":
            return Independent(src)
        if kind == "minibatch-ot":
            return MinibatchOT(src, c.solver, ot_batch=c.batch_size)
        if kind == "online-ot":
            return OnlineOT(src, n_train=self.data.train.shape[0], solver=c.solver,
                            ot_batch=c.batch_size, caches=c.caches)
        if kind == "global-ot":
            return GlobalOT(src, self.data.train, solver=c.solver, caches=c.caches,
                            max_points=c.global_max)
        raise ValueError(f"unknown coupling {kind!r}; choices: {', '.join(COUPLINGS)}")


class Method(nn.Module):
    """Base class. Subclasses set ``net`` (and ``coupling`` if they pair noise with data)."""

    net: nn.Module
    coupling: Coupling | None = None
    #: the trainer hands such a method a frozen EMA copy of its network (``attach_teacher``)
    wants_ema_teacher: bool = False

    def loss(self, batch: Batch, gens: Streams) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, x0: torch.Tensor) -> SampleOut:
        raise NotImplementedError

    def nfe_hint(self) -> int | None:
        """The NFE the sampler is built for, for wall-clock estimates only (records hold the
        counted NFE); None when only sampling can tell (an adaptive solver)."""
        return getattr(self, "steps", 1)

    def prepare(self, teacher: Method, n_train: int, gens: Streams,
                partial: Path | None = None) -> dict[str, float]:
        """Hook for methods registered with ``teacher=...`` (runs before training); returns
        what it cost (``pairs_seconds`` and counts). ``partial``: a file where long work may
        keep its progress, to resume after a stop."""
        raise NotImplementedError(f"{type(self).__name__} does not take a teacher")

    def attach_teacher(self, teacher: nn.Module) -> None:
        """For ``wants_ema_teacher`` methods: the EMA copy of ``net`` for this training."""
        raise NotImplementedError(f"{type(self).__name__} does not take an EMA teacher")

    def extra_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """Training state outside the parameters (e.g. the online-OT bank), for checkpoints."""
        return {"coupling": self.coupling.state_dict()} if self.coupling is not None else {}

    def load_extra_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        if self.coupling is not None:
            self.coupling.load_state_dict(state.get("coupling", {}))


def uniform_t(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def register_step_family(family: str, steps: tuple[int, ...],
                         build: Callable[[BuildContext, int], Method], help: str,
                         **meta: Any) -> None:
    """Register ``family`` (one step) and ``family-{n}step`` for the other step counts, all
    sharing the training recipe ``family`` (one checkpoint evaluated at every step count)."""
    for n in steps:
        name = family if n == 1 else f"{family}-{n}step"

        def factory(ctx: BuildContext, n: int = n) -> Method:
            return build(ctx, n)

        register_method(name, recipe=family, help=f"{help}; {n} step(s)", **meta)(factory)
