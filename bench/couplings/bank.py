"""The noise bank of the bank couplings (online OT, global OT): noise vectors per training
point, re-paired by permutation only."""

from __future__ import annotations

import torch

from bench.couplings.base import SourceFn, pair_cost


class NoiseBank:
    """``caches`` noise vectors per training point: ``bank[k, i]`` is the noise that slot ``k``
    of training point ``i`` is paired with; ``ids[k, i]`` says which of the ``caches * n``
    noise vectors drawn at the start sits there, so each one can be followed as it moves.

    Re-pairing only permutes vectors between slots: none is ever lost or duplicated.
    """

    def __init__(self, bank: torch.Tensor) -> None:
        self.bank = bank  # [K, n, *shape]
        self.ids = torch.arange(bank.shape[0] * bank.shape[1],
                                device=bank.device).reshape(bank.shape[:2])

    @classmethod
    def draw(cls, source: SourceFn, caches: int, n: int, gen: torch.Generator) -> NoiseBank:
        x0 = source(caches * n, gen)
        return cls(x0.reshape(caches, n, *x0.shape[1:]))

    @property
    def caches(self) -> int:
        return self.bank.shape[0]

    @property
    def size(self) -> int:
        return self.bank.shape[1]

    def to(self, device: torch.device) -> None:
        self.bank, self.ids = self.bank.to(device), self.ids.to(device)

    def slots(self, n: int, gen: torch.Generator) -> torch.Tensor | None:
        """A cache drawn uniformly for each of ``n`` visits (LOOM-CFM draws one per sample);
        None with a single cache, which draws nothing from ``gen``."""
        if self.caches == 1:
            return None
        return torch.randint(0, self.caches, (n,), generator=gen,
                             device=gen.device).to(self.bank.device)

    def get(self, slots: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        return self.bank[0 if slots is None else slots, idx]

    def put(self, slots: torch.Tensor | None, idx: torch.Tensor, perm: torch.Tensor) -> None:
        """Permute the visited entries: entry j of the visit moves to position i = perm^-1."""
        k = 0 if slots is None else slots
        self.bank[k, idx] = self.bank[k, idx][perm]
        self.ids[k, idx] = self.ids[k, idx][perm]

    def targets_of(self, first: int, data: torch.Tensor) -> torch.Tensor:
        """The training points that noise vectors 0..first-1 sit with right now."""
        pos = torch.empty(self.ids.numel(), dtype=torch.long, device=self.ids.device)
        pos[self.ids.flatten()] = torch.arange(self.ids.numel(), device=self.ids.device)
        return data[(pos[:first] % self.size).to(data.device)]

    def cost(self, data: torch.Tensor) -> float:
        """Mean pair cost over every slot (slot (k, i) paired with training point i)."""
        return pair_cost(self.bank.flatten(0, 1), data.repeat(self.caches, *[1] * (data.dim() - 1)))

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` bank entries drawn without replacement (for the bank-vs-fresh-noise gap)."""
        flat = self.bank.flatten(0, 1)
        rows = torch.randperm(flat.shape[0], generator=gen, device=gen.device)[:n]
        return flat[rows.to(flat.device)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank.detach().cpu().clone(), "ids": self.ids.cpu().clone()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], n: int, name: str) -> NoiseBank:
        bank, ids = state["bank"], state.get("ids")
        if bank.shape[0] == n and (ids is None or ids.dim() == 1):  # saved with one cache
            bank = bank[None]
            ids = None if ids is None else ids[None]
        if bank.shape[1] != n:
            raise ValueError(f"{name} bank has {bank.shape[1]} entries, the training set {n}")
        out = cls(bank.clone())
        if ids is not None:  # else a bank saved without tracking: ids start here
            out.ids = ids.clone()
        return out

