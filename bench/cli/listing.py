"""``bench list``: the registered methods, datasets and metrics, and the method families with a
sampler axis (``fm@euler7``: any sampler and step count of a family)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from bench.cli.console import console, fail, load_plugins
from bench.cli.options import PluginOpt
from bench.methods.base import FAMILIES, SampledFamily, family_of
from bench.registry import DATASETS, METHODS, METRICS, Entry

SECTIONS = ("methods", "datasets", "metrics")


def list_cmd(
    what: Annotated[str | None, typer.Argument(
        help="Only one registry: methods, datasets or metrics")] = None,
    grep: Annotated[str | None, typer.Option(
        "--grep", "-g", help="Only names or descriptions containing TEXT (any case)")] = None,
    plugin: PluginOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """List the registered methods, datasets and metrics (NFE: per sample, as the sampler
    is built; blank where only a run tells)."""
    load_plugins(plugin)
    if what is not None and what not in SECTIONS:
        fail(f"bench list {what!r}: choose {', '.join(SECTIONS)} (or nothing: all)")
    regs = {"methods": METHODS, "datasets": DATASETS, "metrics": METRICS}
    shown = [what] if what else list(SECTIONS)
    needle = (grep or "").lower()

    def hit(e: Entry) -> bool:
        return needle in e.name.lower() or needle in (e.help or "").lower()

    def matching(section: str) -> list[Entry]:
        return [e for e in regs[section].entries() if hit(e)]

    if as_json:
        data: dict[str, object] = {}
        if "methods" in shown:
            data["methods"] = {e.name: {"help": e.help, **e.meta, "nfe": nfe_claim(e.name)}
                               for e in matching("methods")}
        if "datasets" in shown:
            data["datasets"] = {e.name: {"help": e.help} for e in matching("datasets")}
        if "metrics" in shown:
            data["metrics"] = {e.name: {"help": e.help, **e.meta} for e in matching("metrics")}
        if "methods" in shown:
            data["families"] = {
                f.family: {"help": f.help, "samplers": f.samplers,
                           "registered": {f.spell(s, n): name for (s, n), name
                                          in f.registered.items()}}
                for f in FAMILIES.values() if not grep or needle in f.family.lower()
                or needle in f.help.lower() or any(hit(METHODS.entry(n))
                                                   for n in f.registered.values())}
        console.print_json(json.dumps(data, default=_plain))
        return
    in_family = {n for f in FAMILIES.values() for n in f.registered.values()}
    if "methods" in shown and not grep:
        table = Table(title="Method families (FAMILY@SAMPLER{N}: any step count, e.g. "
                            "fm@euler7)", title_justify="left", show_lines=False)
        table.add_column("family", style="bold")
        table.add_column("samplers (NFE per step)")
        table.add_column("registered (named as before: fm-euler100, meanflow-2step, ...)")
        table.add_column("description")
        for f in FAMILIES.values():
            table.add_row(f.family, _per_step(f), _registered(f), f.help)
        console.print(table)
    for title, section, header, extra in (
        ("Methods" if grep else "Methods (others)", "methods", "recipe",
         lambda e: e.meta.get("recipe", e.name)),
        ("Datasets", "datasets", "kind", lambda e: e.meta.get("kind", "")),
        ("Metrics", "metrics", "outputs", lambda e: ", ".join(
            f"{k} ({v})" for k, v in e.meta.get("outputs", {}).items())),
    ):
        if section not in shown:
            continue
        entries = [e for e in matching(section)
                   if grep or section != "methods" or e.name not in in_family]
        if grep and not entries:
            continue
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("name", style="bold")
        table.add_column(header)
        if section == "methods":
            table.add_column("NFE")
        table.add_column("description")
        for e in entries:
            nfe = [_nfe_text(nfe_claim(e.name))] if section == "methods" else []
            table.add_row(e.name, extra(e), *nfe, e.help)
        console.print(table)
    if grep and not any(matching(s) for s in shown):
        console.print(f"nothing registered matches {grep!r}")


def nfe_claim(method: str) -> int | str | None:
    """The NFE per sample a method's sampler is built for, from the registry alone: a
    registration's ``nfe`` meta, else its family's sampler (NFE per step x steps; "adaptive"
    for an adaptive one); None where only building it (or a run) tells."""
    entry = METHODS.entry(method)
    if "nfe" in entry.meta:
        return entry.meta["nfe"]
    fam = family_of(method)
    if fam is None:
        return None
    for (sampler, n), name in fam.registered.items():
        if name == method:
            per_step = fam.samplers[sampler]
            return "adaptive" if per_step is None else per_step * n
    return None


def _nfe_text(nfe: int | str | None) -> str:
    return "" if nfe is None else str(nfe)


def _per_step(fam: SampledFamily) -> str:
    """A family's samplers with their NFE per step: ``euler{N} (1), dopri5 (adaptive)``."""
    return ", ".join(f"{s} (adaptive)" if k is None else f"{s}{{N}} ({k})"
                     for s, k in fam.samplers.items())


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
