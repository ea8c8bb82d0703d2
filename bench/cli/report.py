"""``bench report``: render a Markdown report from run records alone (it never trains)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli.console import console, err_console, fail, load_plugins
from bench.cli.options import PluginOpt
from bench.evaluate import metric_vocabulary
from bench.io import atomic_write_text
from bench.methods.base import grid_cells
from bench.report.export import as_csv, as_json
from bench.report.markdown import Source, render_report
from bench.results import RECORDS_FILE, read_records


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
    plugin: PluginOpt = None,
) -> None:
    """Render a report from run records alone (never trains)."""
    load_plugins(plugin)
    if fmt not in FORMATS:
        fail(f"--format {fmt!r}: choices: {', '.join(FORMATS)}")
    paths = results or [Path("results")]
    sources = read_sources(paths)
    base = paths[0] if paths[0].is_dir() else paths[0].parent
    target = out or base / f"report.{FORMATS[fmt]}"
    if fmt == "markdown":
        render_report(sources, target, metric_vocabulary(), title=title,
                      compare=parse_pairs(compare), grid=grid_cells())
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
