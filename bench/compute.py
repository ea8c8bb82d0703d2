"""Training compute, counted like NFE: hooks on the networks count every forward call (and the
samples it processed), forward calls made under ``torch.func.jvp`` separately, backward passes,
and PyTorch's FLOP counter measures one whole training step once.

Nothing is declared by a method: a method that calls its network three times per step, or
queries an EMA teacher, shows it in these counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

# torch.func.jvp hands the network wrapped (dual) tensors; there is no public predicate for
# that, so the private one is used where it exists. Without it JVP calls count as forwards,
# and every count says so (``jvps_detectable``).
_WRAPPED_PREDICATE = getattr(getattr(torch._C, "_functorch", None),
                             "is_functorch_wrapped_tensor", None)
JVPS_DETECTABLE = _WRAPPED_PREDICATE is not None
_is_wrapped: Callable[[torch.Tensor], bool] = _WRAPPED_PREDICATE or (lambda x: False)


@dataclass
class ComputeCount:
    """What training cost, counted. ``forwards`` / ``forward_samples``: calls of the trained
    network and the rows they processed (outside JVPs); ``jvps`` / ``jvp_samples``: its calls
    under forward-mode AD (a JVP costs about 2-3 forwards); ``teacher_forwards`` /
    ``teacher_samples``: calls of a frozen teacher network (an EMA copy) during training;
    ``backwards``: backward passes; ``flops_per_step``: one whole step (forward, JVP and
    backward) measured by torch.utils.flop_counter; ``flops`` = steps x flops_per_step."""

    steps: int = 0
    forwards: int = 0
    forward_samples: int = 0
    jvps: int = 0
    jvp_samples: int = 0
    teacher_forwards: int = 0
    teacher_samples: int = 0
    backwards: int = 0
    #: None until measured (and under torch.compile, whose graphs the counter cannot see)
    flops_per_step: float | None = None

    @property
    def flops(self) -> float | None:
        return None if self.flops_per_step is None else self.steps * self.flops_per_step

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flops": self.flops, "jvps_detectable": JVPS_DETECTABLE}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComputeCount:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class ComputeMeter:
    """Counts the compute of a training run on the networks it is attached to."""

    def __init__(self, net: nn.Module, teacher: nn.Module | None = None) -> None:
        self.count = ComputeCount()
        self.net, self.teacher = net, teacher
        self.counting = True

    @contextlib.contextmanager
    def attached(self) -> Iterator[ComputeCount]:
        handles = [self.net.register_forward_pre_hook(self._student)]
        if self.teacher is not None:
            handles.append(self.teacher.register_forward_pre_hook(self._teach))
        try:
            yield self.count
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Calls made in the block are not training compute (scoring a learning curve)."""
        self.counting = False
        try:
            yield
        finally:
            self.counting = True

    def _student(self, module: nn.Module, args: tuple) -> None:
        if not self.counting:
            return
        x = args[0]
        if _is_wrapped(x):
            self.count.jvps += 1
            self.count.jvp_samples += x.shape[0]
        else:
            self.count.forwards += 1
            self.count.forward_samples += x.shape[0]

    def _teach(self, module: nn.Module, args: tuple) -> None:
        if not self.counting:
            return
        self.count.teacher_forwards += 1
        self.count.teacher_samples += args[0].shape[0]

    def step_done(self) -> None:
        self.count.steps += 1
        self.count.backwards += 1

    @staticmethod
    @contextlib.contextmanager
    def flop_counter() -> Iterator[Any]:
        """torch's FlopCounterMode (imported here: it pulls in torch's decompositions, a
        fifth of a second that ``bench list`` need not pay)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            yield fc


def forward_flops(net: nn.Module, *inputs: torch.Tensor) -> float:
    """FLOPs of one call ``net(*inputs)`` (no gradients), per sample of the batch."""
    with torch.no_grad(), ComputeMeter.flop_counter() as fc:
        net(*inputs)
    return fc.get_total_flops() / inputs[0].shape[0]
