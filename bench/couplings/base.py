"""The coupling protocol: what a coupling returns (``Pairs``) and what it may do besides
pairing (``Coupling``'s optional capabilities, each with a default the trainer can call), plus
the pair-cost statistics every coupling logs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

SourceFn = Callable[[int, torch.Generator], torch.Tensor]


@dataclass
class Pairs:
    """``x0``, ``x1``: [B, *shape] coupled noise and data; ``stats``: floats for the logs."""

    x0: torch.Tensor
    x1: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


def pair_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Mean squared Euclidean distance of the given pairs (row i with row i)."""
    return float((x0 - x1).flatten(1).pow(2).sum(1).mean())


def independent_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Mean of the full [B, B] cost matrix = expected pair cost of a uniformly random pairing.

    Closed form: E|x0|^2 + E|x1|^2 - 2 <mean x0, mean x1>, so no B x B matrix is built.
    """
    a, b = x0.flatten(1), x1.flatten(1)
    return float(a.pow(2).sum(1).mean() + b.pow(2).sum(1).mean() - 2 * a.mean(0) @ b.mean(0))


class Coupling(ABC):
    """Draws or looks up noise for the data batch ``x1`` (rows ``idx`` of the training set).

    The protocol the trainer calls, with every optional capability declared here with a
    default, so no caller probes a coupling's attributes:

    - ``pair`` (required): the pairs of one batch, with the statistics for the logs;
    - ``data_batch_size``: how many data points a step draws;
    - ``prefetch`` / ``can_prefetch``: start the next batch's pairing during this step
      (default: nothing; ``pair`` does all the work);
    - ``stats``: statistics of the coupling's whole state for the training history (default
      none; a bank coupling logs its ``bank_cost``);
    - ``probe_targets``: the consistency probe's support (default: independent pairing);
    - ``has_bank`` / ``bank_noise``: noise the model was trained on, for the bank-vs-fresh
      evaluation (a coupling with ``has_bank`` defines ``bank_noise(n, gen)``);
    - ``state_dict`` / ``load_state_dict``: resumable state (default: none);
    - ``close``: release worker threads (default: nothing to release).
    """

    name: str = "coupling"
    #: True when ``prefetch`` overlaps real work with the training step
    can_prefetch: bool = False
    #: True when the coupling holds the noise it trained on and defines ``bank_noise``
    has_bank: bool = False

    def __init__(self, source: SourceFn) -> None:
        self.source = source

    @abstractmethod
    def pair(self, x1: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> Pairs: ...

    def data_batch_size(self, train_batch: int) -> int:
        """How many data points to draw per step for a training batch of ``train_batch``."""
        return train_batch

    def prefetch(self, x1: torch.Tensor, idx: torch.Tensor,  # noqa: B027 (optional)
                 gen: torch.Generator) -> None:
        """Start pairing the next batch (``x1``, rows ``idx``) while this step trains; the next
        ``pair`` call with the same ``idx`` then gives the same pairs as without it. Default:
        nothing to start."""

    def bank_noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` noise vectors of the bank the model trained on (``has_bank`` couplings)."""
        raise NotImplementedError(f"coupling {self.name!r} holds no noise bank")

    def close(self) -> None:  # noqa: B027 (optional: nothing to release by default)
        """Release what ``prefetch`` started (worker threads). Default: nothing."""

    def stats(self, data: torch.Tensor) -> dict[str, float]:
        """Statistics of the coupling's whole state against the training set ``data``, for
        each row of the training history. Default: none."""
        return {}

    def probe_targets(self, probes: torch.Tensor, data: torch.Tensor,
                      gen: torch.Generator) -> torch.Tensor:
        """The data points this coupling pairs with the noise points ``probes`` [K, *shape]
        right now (one draw; trainer.ConsistencyProbe takes one at each of several moments).
        The variance of a probe's targets over those moments is the regression-target
        variance a model faces at that noise point. Default: independent pairing, a random
        data point each."""
        rows = torch.randint(0, data.shape[0], (probes.shape[0],), generator=gen,
                             device=gen.device).to(data.device)
        return data[rows]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{self.name} coupling has no state, got keys {sorted(state)}")

