"""Name -> object registries filled by decorators (lm-eval / timm style).

Keys are lowercase ``<family>-<variant>``. A duplicate key is an error; an unknown key raises
with the close matches; ``match`` accepts fnmatch globs (``'otnfm-*'``).

A registry may also answer names it does not list: a *resolver* (``add_resolver``) maps a name
such as ``fm@euler7`` (a method family at any sampler and step count,
``bench.methods.base.register_sampled_family``) either to a registered name (``fm@euler100``
is ``fm-euler100``) or to an entry built on demand. Resolution depends on the name alone, so a
worker process or a Slurm job resolves the same name to the same entry. Entries built on
demand are not listed (``names``, ``entries``, globs): only names asked for resolve to them.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from bench.config import DataConfig
    from bench.problems import Problem

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate registry key. ``str(err)`` is the user-facing message."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    help: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A named collection of factories. ``kind`` is used in error messages ("method", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        #: other spellings of registered names (``fm@euler100`` -> ``fm-euler100``)
        self._aliases: dict[str, str] = {}
        #: entries built on demand by a resolver, by their canonical name
        self._dynamic: dict[str, Entry[T]] = {}
        self._resolvers: list[Callable[[str], Any]] = []

    def register(self, name: str, *, help: str | None = None, **meta: Any) -> Callable[[T], T]:
        if name != name.lower() or not name or any(c.isspace() for c in name):
            raise RegistryError(f"{self.kind} key {name!r} must be lowercase without spaces")

        def deco(obj: T) -> T:
            if name in self._entries:
                raise RegistryError(f"duplicate {self.kind} {name!r}: already registered")
            for section, cls in meta.get("config", {}).items():
                declare_section(section, cls, f"{self.kind} {name!r}")
            doc = help if help is not None else (getattr(obj, "__doc__", None) or "")
            first = doc.strip().splitlines()[0] if doc.strip() else ""
            self._entries[name] = Entry(name, obj, first, dict(meta))
            return obj

        return deco

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._dynamic.pop(name, None)
        for alias in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[alias]

    def alias(self, alias: str, name: str) -> None:
        """Let ``alias`` name the registered entry ``name`` (``match`` and ``entry`` answer
        ``name``; records keep ``name``)."""
        if alias in self._entries or self._aliases.get(alias, name) != name:
            raise RegistryError(f"duplicate {self.kind} alias {alias!r}")
        self._aliases[alias] = name

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def add_resolver(self, resolver: Callable[[str], Any]) -> None:
        """``resolver(name)`` returns, for a name it knows, a registered name (an alias) or a
        new ``Entry``; None for a name it does not know. It raises ``RegistryError`` for a
        name it knows but refuses (a bad step count, an unknown sampler of a known family)."""
        self._resolvers.append(resolver)

    def canonical(self, name: str) -> str:
        """The name records use for ``name``: itself if registered, the registered name of an
        alias, the canonical name of an entry built on demand. Unknown names raise."""
        if name in self._entries or name in self._dynamic:
            return name
        if name in self._aliases:
            return self._aliases[name]
        for resolver in self._resolvers:
            got = resolver(name)
            if got is None:
                continue
            if isinstance(got, str):
                self.entry(got)  # a resolver's alias must name a registered entry
                return got
            if got.name in self._entries:
                return got.name
            self._dynamic.setdefault(got.name, got)
            return got.name
        raise RegistryError(self._unknown(name))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.canonical(name)
        except RegistryError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def entry(self, name: str) -> Entry[T]:
        if name in self._entries:
            return self._entries[name]
        key = self.canonical(name)
        return self._entries[key] if key in self._entries else self._dynamic[key]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def _unknown(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return (
            f"unknown {self.kind} {name!r}.{hint} Choices: {', '.join(self.names())} "
            f"(see `bench list`)."
        )

    def match(self, patterns: str | Iterable[str]) -> list[str]:
        """Expand comma-separated names or globs, in registry order for globs, deduplicated,
        as canonical names (an alias gives its registered name). A glob with ``@`` matches
        the aliases (``fm@euler*``), one without matches the registered names."""
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",")]
        out: list[str] = []
        for raw in patterns:
            pat = raw.strip()
            if not pat:
                continue
            if any(ch in pat for ch in "*?["):
                pool = self._aliases if "@" in pat else self.names()
                hits = [self.canonical(n) for n in pool if fnmatch.fnmatchcase(n, pat)]
                if not hits:
                    raise RegistryError(
                        f"no {self.kind} matches {pat!r}. Choices: {', '.join(self.names())}"
                    )
            else:
                hits = [self.canonical(pat)]  # raises with close matches
            out.extend(h for h in hits if h not in out)
        if not out:
            raise RegistryError(f"no {self.kind} given")
        return out


#: config sections declared by registered methods: section name -> frozen dataclass. A method
#: declares its own knobs at registration (``register_method(...,
#: config={"reflow": ReflowConfig})``); ``bench.config`` builds, checks and hashes them like
#: the built-in sections, and a run's config holds a section only if its method declares it.
SECTIONS: dict[str, type] = {}


def declare_section(name: str, cls: type, owner: str = "") -> None:
    """Add config section ``name`` (a frozen dataclass); several components may share one
    section class, but a name cannot mean two classes."""
    if name != name.lower() or not name.isidentifier():
        raise RegistryError(f"config section {name!r} ({owner}) must be a lowercase identifier")
    if SECTIONS.get(name, cls) is not cls:
        raise RegistryError(f"config section {name!r} ({owner}) is already declared with "
                            f"{SECTIONS[name].__qualname__}")
    SECTIONS[name] = cls


METHODS: Registry[Any] = Registry("method")
DATASETS: Registry[Any] = Registry("dataset")
METRICS: Registry[Any] = Registry("metric")

register_method = METHODS.register
register_metric = METRICS.register


def register_dataset(name: str, *, help: str | None = None,
                     check: Callable[[str, DataConfig], list[Problem]] | None = None,
                     **meta: Any) -> Callable[[T], T]:
    """Register a dataset loader ``(cfg: DataConfig, seed, device) -> DataBundle`` as ``name``
    (metadata: ``kind``, "points" or "images"; ``preset``, its default recipe). ``check``:
    what is checked of it before any work, e.g. that its files are there. ``check(key,
    data_cfg)`` (``key`` is the dataset as named, ``name`` or ``name@source``) returns a list
    of ``bench.problems.Problem`` (what is wrong, why, the fix), empty when nothing is:
    ``bench run --dry-run`` lists them, and a real run records that dataset's runs failed
    with the reason. It must be quick and download nothing."""
    if check is not None:
        if not callable(check):
            raise RegistryError(f"dataset {name!r}: check must be a function (key, data "
                                f"config) -> list of problems, not {type(check).__name__}")
        meta["check"] = check
    return DATASETS.register(name, help=help, **meta)
