"""``bench report``: render a Markdown report from run records alone (it never trains)."""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.cli.console import console, err_console, fail, load_plugins
from bench.cli.options import PluginOpt
from bench.config import ConfigError, load_yaml
from bench.evaluate import metric_vocabulary
from bench.io import atomic_write_text
from bench.methods.base import grid_cells
from bench.report.export import as_csv, as_json
from bench.report.markdown import Source, render_report
from bench.results import RECORDS_FILE, RunRecord, read_records
from bench.vocab import FLOOR_METHOD


def report_cmd(
    results: Annotated[list[Path] | None, typer.Argument(
        help="Results folders or records.jsonl files (default: results/)")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Markdown file to write (figures go to <stem>/ beside it)")] = None,
    title: Annotated[str | None, typer.Option(help="Report title")] = None,
    compare: Annotated[list[str] | None, typer.Option(
        help="Paired comparison A:B over common seeds (repeatable; default: every method vs "
             "fm-euler100 when present)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="markdown (with figures), json or csv "
                                     "(one row per dataset x method: mean, std and 95% "
                                     "interval of every metric, NFE, costs)")] = "markdown",
    methods: Annotated[str | None, typer.Option(
        "--methods", "-m", help="Only these methods: comma-separated names or globs (each "
                                "dataset's data floor stays)")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Only these datasets: comma-separated names or globs")] = None,
    config: Annotated[list[Path] | None, typer.Option(
        "--config", "-c", help="Only the runs of this suite file (repeatable, the union): its "
                               "methods, datasets and seeds, and its sweep grid points (none "
                               "for a file without a sweep); for folders that several suites "
                               "share")] = None,
    across_only: Annotated[bool, typer.Option(
        "--across-only", help="Only the 'Across datasets' verdict table (the grid comparisons "
                              "of every dataset side by side) and the runs it was built from")
    ] = False,
    plugin: PluginOpt = None,
) -> None:
    """Render a report from run records alone (never trains)."""
    load_plugins(plugin)
    if fmt not in FORMATS:
        fail(f"--format {fmt!r}: choices: {', '.join(FORMATS)}")
    paths = results or [Path("results")]
    sources = read_sources(paths)
    try:
        sources = select(sources, methods, dataset, [suite_filter(c) for c in config or []])
    except ValueError as err:
        fail(str(err))
    base = paths[0] if paths[0].is_dir() else paths[0].parent
    target = out or base / f"report.{FORMATS[fmt]}"
    if fmt == "markdown":
        render_report(sources, target, metric_vocabulary(), title=title,
                      compare=parse_pairs(compare), grid=grid_cells(),
                      across_only=across_only)
    else:
        atomic_write_text(target, as_json(sources) if fmt == "json" else as_csv(sources))
    n = sum(len(s.records) for s in sources)
    console.print(f"wrote {target} from {n} record(s) in {len(sources)} file(s)")


#: report format -> file extension
FORMATS = {"markdown": "md", "json": "json", "csv": "csv"}


def read_sources(paths: list[Path]) -> list[Source]:
    """Every records file in the given folders (recursively) or files; malformed lines are
    skipped with a warning and counted."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.rglob(RECORDS_FILE))
        elif p.is_file():
            files.append(p)
        else:
            fail(f"no results at {str(p)!r} (give a results folder or a records.jsonl file)")
    if not files:
        fail(f"no {RECORDS_FILE} under {', '.join(map(str, paths))}")
    out = []
    for f in files:
        res = read_records(f)
        for line, why in res.skipped:
            err_console.print(f"[yellow]warning:[/] {f}:{line}: skipped malformed record ({why})")
        out.append(Source(str(f), res.records, len(res.skipped)))
    return out


#: a suite file's selection: method and dataset names, seeds, and the sweep grid points
#: (dotted key -> value; [{}] = unswept runs only)
Suite = tuple[list[str], list[str], list[int], list[dict[str, Any]]]


def suite_filter(path: Path) -> Suite:
    """The runs a suite file asks for (``bench run``/``bench sweep --config``)."""
    try:
        raw = load_yaml(path)
    except ConfigError as err:
        fail(str(err))
    grid = raw.get("sweep") or {}
    points = [dict(zip(grid, values, strict=True))
              for values in itertools.product(*(grid[k] for k in grid))]
    return ([str(m) for m in raw.get("methods") or []], [str(d) for d in raw.get("datasets") or []],
            [int(s) for s in raw.get("seeds") or [0]], points or [{}])


def _matches(name: str, patterns: str | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(name, p.strip())
                                   for p in patterns.split(",") if p.strip())


def select(sources: list[Source], methods: str | None, datasets: str | None,
           suites: list[Suite]) -> list[Source]:
    """The records of the named methods and datasets (globs) and, with suite files, of their
    runs only; a dataset's data-floor record stays while any of its runs does. A selection
    that keeps nothing is an error that lists what the records hold."""
    if methods is None and datasets is None and not suites:
        return sources

    def wanted(r: RunRecord) -> bool:
        in_suite = not suites or any(
            r.dataset in d and r.seed in seeds
            and (r.method == FLOOR_METHOD or (r.method in m and r.sweep in points))
            for m, d, seeds, points in suites)
        return (in_suite and _matches(r.dataset, datasets)
                and (r.method == FLOOR_METHOD or _matches(r.method, methods)))

    kept = [replace(s, records=[r for r in s.records if wanted(r)]) for s in sources]
    runs = {(r.dataset, r.seed) for s in kept for r in s.records if r.method != FLOOR_METHOD}
    kept = [replace(s, records=[r for r in s.records
                                if r.method != FLOOR_METHOD or (r.dataset, r.seed) in runs])
            for s in kept]
    if not any(s.records for s in kept):
        held = sorted({(r.dataset, r.method) for s in sources for r in s.records})
        raise ValueError("the selection keeps no record; the records hold: "
                         + ", ".join(f"{d}/{m}" for d, m in held[:40])
                         + (" …" if len(held) > 40 else ""))
    return kept


def parse_pairs(items: list[str] | None) -> list[tuple[str, str]] | None:
    """``["A:B", ...]`` -> [(A, B), ...]; None when none were given."""
    if not items:
        return None
    out = []
    for item in items:
        a, sep, b = item.partition(":")
        if not sep or not a or not b:
            fail(f"--compare {item!r}: expected A:B, e.g. otnfm-online:fm-euler100")
        out.append((a, b))
    return out
