"""``bench list``: the registered methods, datasets and metrics."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from bench.cli.console import console, load_plugins
from bench.cli.options import PluginOpt
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
        }
        console.print_json(json.dumps(data, default=_plain))
        return
    for title, reg, header, extra in (
        ("Methods", METHODS, "recipe", lambda e: e.meta.get("recipe", e.name)),
        ("Datasets", DATASETS, "kind", lambda e: e.meta.get("kind", "")),
        ("Metrics", METRICS, "outputs", lambda e: ", ".join(
            f"{k} ({v})" for k, v in e.meta.get("outputs", {}).items())),
    ):
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("name", style="bold")
        table.add_column(header)
        table.add_column("description")
        for e in reg.entries():
            table.add_row(e.name, extra(e), e.help)
        console.print(table)


def _plain(obj: object) -> object:
    """JSON for registry metadata: tuples as lists, callables (preflight checks) by name."""
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return list(obj)  # type: ignore[call-overload]
