"""User methods, datasets and metrics from a Python file (``--plugin``) or an entry point.

A plugin runs only when the user names it with ``--plugin`` or installs a package that declares
the ``otnfm_bench.plugins`` entry-point group: nothing else the harness reads executes code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

ENTRY_POINT_GROUP = "otnfm_bench.plugins"
_loaded: dict[str, ModuleType] = {}


class PluginError(RuntimeError):
    pass


def load_plugin(path: str | Path) -> ModuleType:
    """Execute ``path`` once per process; its ``@register_*`` decorators fill the registries."""
    p = Path(path).resolve()
    key = str(p)
    if key in _loaded:
        return _loaded[key]
    if not p.is_file() or p.suffix != ".py":
        raise PluginError(f"plugin {str(path)!r} is not a .py file")
    name = f"bench_plugin_{p.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(name, None)
        raise PluginError(f"plugin {str(path)!r} failed to load: {type(err).__name__}: {err}") \
            from err
    _loaded[key] = module
    return module


def load_entry_points() -> list[str]:
    names = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
        names.append(ep.name)
    return names


def origin(obj: object) -> str | None:
    """The ``--plugin`` file (absolute path) whose module defined ``obj``; None for anything
    else (the built-ins, installed packages)."""
    module = getattr(obj, "__module__", None)
    for path, mod in _loaded.items():
        if mod.__name__ == module:
            return path
    return None
