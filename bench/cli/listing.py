"""``bench list``: the registered methods, datasets and metrics, and the method families with a
sampler axis (``fm@euler7``: any sampler and step count of a family)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from bench.cli.console import console, load_plugins
from bench.cli.options import PluginOpt
from bench.methods.base import FAMILIES, SampledFamily
from bench.registry import DATASETS, METHODS, METRICS


def list_cmd(
    plugin: PluginOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """List the registered methods, datasets and metrics."""
    load_plugins(plugin)
    if as_json:
        data = {
            "methods": {e.name: {"help": e.help, **e.meta} for e in METHODS.entries()},
            "datasets": {e.name: {"help": e.help} for e in DATASETS.entries()},
            "metrics": {e.name: {"help": e.help, **e.meta} for e in METRICS.entries()},
            "families": {f.family: {"help": f.help, "samplers": f.samplers,
                                    "registered": {f.spell(s, n): name for (s, n), name
                                                   in f.registered.items()}}
                         for f in FAMILIES.values()},
        }
        console.print_json(json.dumps(data, default=_plain))
        return
    in_family = {n for f in FAMILIES.values() for n in f.registered.values()}
    table = Table(title="Method families (FAMILY@SAMPLER{N}: any step count, e.g. fm@euler7)",
                  title_justify="left", show_lines=False)
    table.add_column("family", style="bold")
    table.add_column("samplers")
    table.add_column("registered (named as before: fm-euler100, meanflow-2step, ...)")
    table.add_column("description")
    for f in FAMILIES.values():
        table.add_row(f.family, f.usage(), _registered(f), f.help)
    console.print(table)
    for title, reg, header, extra in (
        ("Methods (others)", METHODS, "recipe", lambda e: e.meta.get("recipe", e.name)),
        ("Datasets", DATASETS, "kind", lambda e: e.meta.get("kind", "")),
        ("Metrics", METRICS, "outputs", lambda e: ", ".join(
            f"{k} ({v})" for k, v in e.meta.get("outputs", {}).items())),
    ):
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("name", style="bold")
        table.add_column(header)
        table.add_column("description")
        for e in reg.entries():
            if reg is METHODS and e.name in in_family:
                continue
            table.add_row(e.name, extra(e), e.help)
        console.print(table)


def _registered(fam: SampledFamily) -> str:
    """A family's registered combinations, by sampler: ``euler 1, 2, 4; dopri5``."""
    steps: dict[str, list[int]] = {}
    for sampler, n in fam.registered:
        steps.setdefault(sampler, []).append(n)
    return "; ".join(s if fam.samplers[s] is None else f"{s} {', '.join(map(str, ns))}"
                     for s, ns in steps.items())


def _plain(obj: object) -> object:
    """JSON for registry metadata: tuples as lists, callables (preflight checks) by name."""
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return list(obj)  # type: ignore[call-overload]
