"""Name -> object registries filled by decorators (lm-eval / timm style).

Keys are lowercase ``<family>-<variant>``. A duplicate key is an error; an unknown key raises
with the close matches; ``match`` accepts fnmatch globs (``'otnfm-*'``).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self._unknown(name)) from None

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
        """Expand comma-separated names or globs, in registry order for globs, deduplicated."""
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",")]
        out: list[str] = []
        for raw in patterns:
            pat = raw.strip()
            if not pat:
                continue
            if any(ch in pat for ch in "*?["):
                hits = [n for n in self.names() if fnmatch.fnmatchcase(n, pat)]
                if not hits:
                    raise RegistryError(
                        f"no {self.kind} matches {pat!r}. Choices: {', '.join(self.names())}"
                    )
            else:
                self.entry(pat)  # raises with close matches
                hits = [pat]
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
register_dataset = DATASETS.register
register_metric = METRICS.register
