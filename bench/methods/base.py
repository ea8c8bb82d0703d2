"""The one Method protocol every generator implements.

``loss(batch, gens) -> (loss, logs)`` and ``sample(x0) -> SampleOut(x, nfe)``. The trainer owns
the optimizer, EMA, clipping and checkpoints; a method never steps an optimizer. ``self.net`` is
the network whose forward passes the evaluator counts as NFE.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.config import Config
from bench.couplings import Coupling, GlobalOT, Independent, MinibatchOT, OnlineOT
from bench.datasets.base import DataBundle
from bench.nets import build_net
from bench.paths import expand_t  # noqa: F401  (re-exported for methods)
from bench.registry import METHODS, Entry, RegistryError, register_method
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


#: the most steps a sampler may be asked for by name (``fm@euler10000``)
MAX_STEPS = 10_000


@dataclass(frozen=True)
class SampledFamily:
    """A training recipe evaluated by several samplers at any step count: the method
    ``{family}@{sampler}{N}`` (``fm@euler7``, ``otcfm@heun3``; an adaptive sampler takes no N:
    ``fm@dopri5``). Every one shares the recipe ``family`` (one checkpoint)."""

    family: str
    build: Callable[[BuildContext, str, int], Method]
    #: sampler -> network evaluations per step; None: adaptive (no step count, NFE counted)
    samplers: dict[str, int | None]
    #: the family in a line (``bench list``)
    help: str
    #: (sampler, N) -> the help line of that method
    describe: Callable[[str, int], str]
    #: (sampler, N) -> why that combination is refused, or None
    check: Callable[[str, int], str | None] | None = None
    #: meta of every method of the family (``recipe`` is the family)
    meta: dict[str, Any] = field(default_factory=dict)
    #: (sampler, N) -> registered name of that combination (N = 0 for an adaptive sampler)
    registered: dict[tuple[str, int], str] = field(default_factory=dict)

    def spell(self, sampler: str, n: int) -> str:
        """The ``family@samplerN`` spelling of one combination."""
        return f"{self.family}@{sampler}{'' if self.samplers[sampler] is None else n}"

    def usage(self) -> str:
        return ", ".join(s if k is None else f"{s}{{N}}" for s, k in self.samplers.items())

    def parse(self, name: str, spec: str) -> tuple[str, int]:
        """``spec`` (after the ``@``) -> (sampler, N); refuses with the family's samplers."""
        fam = self.family
        sampler = next((s for s in sorted(self.samplers, key=len, reverse=True)
                        if spec.startswith(s)), None)
        if sampler is None:
            close = difflib.get_close_matches(spec, list(self.samplers), n=3, cutoff=0.4)
            spelled = [f"{fam}@{c}" + ("" if self.samplers[c] is None else "{N}")
                       for c in close]
            hint = f" Did you mean: {', '.join(spelled)}?" if close else ""
            raise RegistryError(f"unknown method {name!r}: {fam!r} has no sampler "
                                f"{spec!r}.{hint} Samplers of {fam!r}: {self.usage()} "
                                f"(e.g. {self.example()}; see `bench list`).")
        rest = spec[len(sampler):]
        if self.samplers[sampler] is None:
            if rest:
                raise RegistryError(f"method {name!r}: {sampler} is adaptive and takes no step "
                                    f"count: ask for {fam}@{sampler}")
            return sampler, 0
        if not (rest.isascii() and rest.isdigit()) or not 1 <= int(rest) <= MAX_STEPS:
            raise RegistryError(f"method {name!r}: {sampler} takes a step count N from 1 to "
                                f"{MAX_STEPS:,}: {fam}@{sampler}{{N}}, e.g. {fam}@{sampler}10 "
                                f"(samplers of {fam!r}: {self.usage()})")
        n = int(rest)
        why = self.check(sampler, n) if self.check else None
        if why:
            raise RegistryError(f"method {name!r}: {why}")
        return sampler, n

    def example(self) -> str:
        sampler = next(iter(self.samplers))
        return self.spell(sampler, 10 if self.samplers[sampler] else 0)

    def nfe(self, sampler: str, n: int) -> int | None:
        """NFE per sample (None: adaptive, counted when sampling)."""
        per = self.samplers[sampler]
        return None if per is None else per * n

    def entry(self, sampler: str, n: int) -> Entry[Any]:
        """An entry for a combination that is not registered, built on demand."""

        def factory(ctx: BuildContext) -> Method:
            return self.build(ctx, sampler, n)

        return Entry(self.spell(sampler, n), factory, self.describe(sampler, n),
                     {"recipe": self.family, **self.meta})


#: families with a sampler axis, by name (``register_sampled_family``)
FAMILIES: dict[str, SampledFamily] = {}


def register_sampled_family(family: str, build: Callable[[BuildContext, str, int], Method],
                            samplers: dict[str, int | None], help: str,
                            registered: Iterable[tuple[str, int]],
                            name: Callable[[str, int], str],
                            describe: Callable[[str, int], str],
                            check: Callable[[str, int], str | None] | None = None,
                            extra: Callable[[str, int], dict[str, Any]] | None = None,
                            **meta: Any) -> SampledFamily:
    """A recipe ``family`` sampled by ``samplers`` (name -> NFE per step, None: adaptive) at
    any step count: ``{family}@{sampler}{N}`` names a method sharing the ``family``
    checkpoint. The combinations ``registered`` ((sampler, N), N = 0 for an adaptive one) are
    registered methods as well, named ``name(sampler, N)`` in that order (records and config
    hashes use that name; ``family@samplerN`` is its alias), with ``extra(sampler, N)`` added to
    their meta. ``build(ctx, sampler, N)`` builds one; ``describe(sampler, N)`` is its help."""
    if family in FAMILIES:
        raise RegistryError(f"duplicate sampled method family {family!r}")
    fam = SampledFamily(family, build, dict(samplers), help, describe, check, dict(meta))
    for sampler, n in registered:
        key = name(sampler, n)

        def factory(ctx: BuildContext, sampler: str = sampler, n: int = n) -> Method:
            return build(ctx, sampler, n)

        register_method(key, recipe=family, help=describe(sampler, n), **meta,
                        **(extra(sampler, n) if extra else {}))(factory)
        fam.registered[(sampler, n)] = key
        METHODS.alias(fam.spell(sampler, n), key)
    FAMILIES[family] = fam
    return fam


def family_of(method: str) -> SampledFamily | None:
    """The sampled family a registered or on-demand method belongs to (None: none)."""
    recipe = METHODS.entry(method).meta.get("recipe")
    fam = FAMILIES.get(recipe) if recipe else None
    return fam if fam is not None and (method in fam.registered.values()
                                       or method.startswith(f"{fam.family}@")) else None


def _resolve(name: str) -> str | Entry[Any] | None:
    """``family@samplerN`` -> the registered name of that combination, or a new entry."""
    family, sep, spec = name.partition("@")
    if not sep:
        _hint_old_spelling(name)
        return None
    fam = FAMILIES.get(family)
    if fam is None:
        close = difflib.get_close_matches(family, list(FAMILIES), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(f'{c}@{spec}' for c in close)}?" if close else ""
        what = (f"method {family!r} has no sampler axis" if family in METHODS.names()
                else f"unknown method family {family!r}")
        raise RegistryError(f"unknown method {name!r}: {what}.{hint} Families with samplers: "
                            f"{', '.join(FAMILIES)} (see `bench list`).")
    sampler, n = fam.parse(name, spec)
    return fam.registered.get((sampler, n)) or fam.entry(sampler, n)


def _hint_old_spelling(name: str) -> None:
    """``fm-euler7`` (an unregistered step count in the old spelling): point to ``fm@euler7``."""
    for fam in sorted(FAMILIES.values(), key=lambda f: len(f.family), reverse=True):
        if not name.startswith(f"{fam.family}-"):
            continue
        try:
            sampler, n = fam.parse(name, name[len(fam.family) + 1:])
        except RegistryError:
            continue
        raise RegistryError(f"unknown method {name!r}. Did you mean: {fam.spell(sampler, n)}? "
                            f"(any step count: {fam.family}@SAMPLER{{N}} with samplers "
                            f"{fam.usage()}; see `bench list`)")


METHODS.add_resolver(_resolve)


def register_step_family(family: str, steps: tuple[int, ...],
                         build: Callable[[BuildContext, int], Method], help: str,
                         check: Callable[[int], str | None] | None = None,
                         **meta: Any) -> SampledFamily:
    """Register ``family`` (one step) and ``family-{n}step`` for the other step counts, all
    sharing the training recipe ``family`` (one checkpoint evaluated at every step count);
    ``family@step{N}`` asks for any N (``check(N)``: why an N is refused, or None)."""
    return register_sampled_family(
        family, lambda ctx, sampler, n: build(ctx, n), {"step": 1}, help,
        registered=[("step", n) for n in steps],
        name=lambda sampler, n: family if n == 1 else f"{family}-{n}step",
        describe=lambda sampler, n: f"{help}; {n} step(s)",
        check=(lambda sampler, n: check(n)) if check else None, **meta)
