"""``bench report``: render a Markdown report from run records alone (it never trains)."""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from bench.cli.console import console, err_console, fail, load_plugins
from bench.cli.options import PluginOpt
from bench.config import ConfigError
from bench.io import atomic_write_text
from bench.methods.base import grid_cells
from bench.report.export import as_csv, as_json
from bench.report.markdown import ReportError, Source, render_report
from bench.report.model import SkippedFile
from bench.results import RECORDS_FILE, RunRecord, read_records
from bench.suite import RunPoints, Suite, suite_file
from bench.vocab import FLOOR_METHOD, REFERENCE_METHOD, metric_vocabulary


def report_cmd(
    results: Annotated[list[Path] | None, typer.Argument(
        help="Results folders or records.jsonl files (default: results/)")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="File to write. Markdown: default report.md in the first "
                            "folder, figures in <stem>/ beside it. json, csv: default "
                            "stdout")] = None,
    title: Annotated[str | None, typer.Option(help="Report title")] = None,
    compare: Annotated[list[str] | None, typer.Option(
        help="Paired comparison A:B over common seeds (repeatable), drawn in addition to the "
             "default ones: every method vs the reference method where it ran")] = None,
    default_compare: Annotated[bool, typer.Option(
        "--default-compare/--no-default-compare",
        help="Draw the default comparisons (every method vs the reference method); "
             "--no-default-compare leaves only the --compare pairs")] = True,
    reference: Annotated[str | None, typer.Option(
        "--reference", help="The reference method: every method is compared with it, and "
                            "learning curves measure their gap to it (default: the suite "
                            "files' report.reference, else " + REFERENCE_METHOD + ")")] = None,
    fmt: Annotated[str, typer.Option("--format", help="markdown (with figures unless "
                                     "--no-figures), json or csv (one row per dataset x "
                                     "method: mean, std and 95% interval of every metric, "
                                     "NFE, costs)")] = "markdown",
    methods: Annotated[str | None, typer.Option(
        "--methods", "-m", help="Only these methods: comma-separated names or globs (each "
                                "dataset's data floor stays)")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Only these datasets: comma-separated names or globs")] = None,
    config: Annotated[list[Path] | None, typer.Option(
        "--config", "-c", help="Only the runs this suite file plans (repeatable, the union): "
                               "its methods, datasets, seeds and sweep points at its settings "
                               "(matched by config hash); for folders that several suites "
                               "share")] = None,
    across_only: Annotated[bool, typer.Option(
        "--across-only", help="Only the 'Across datasets' verdict table (the grid comparisons "
                              "of every dataset side by side) and the list of records read")
    ] = False,
    figures: Annotated[bool, typer.Option(
        "--figures/--no-figures",
        help="Draw the figures (PNG files in <stem>/ beside the report, linked from it); "
             "--no-figures writes the Markdown alone, without figures or their links")] = True,
    plugin: PluginOpt = None,
) -> None:
    """Render a report from run records alone (never trains)."""
    load_plugins(plugin)
    if fmt not in FORMATS:
        fail(f"--format {fmt!r}: choices: {', '.join(FORMATS)}")
    paths = results or [Path("results")]
    sources = read_sources(paths)
    suites = [suite_configs(c) for c in config or []]
    try:
        sources = select(sources, methods, dataset, [s.run_points() for s in suites])
    except ValueError as err:
        fail(str(err))
    reference = reference or suite_reference(suites)
    base = paths[0] if paths[0].is_dir() else paths[0].parent
    target = out or base / f"report.{FORMATS[fmt]}"
    if across_only and fmt != "markdown":
        fail("--across-only writes Markdown: leave out --format")
    if fmt == "markdown":
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SkippedFile)
                render_report(sources, target, metric_vocabulary(), title=title,
                              compare=parse_pairs(compare), grid=grid_cells(),
                              across_only=across_only, default_pairs=default_compare,
                              reference=reference, plots_on=figures)
        except ReportError as err:
            fail(str(err))
        for w in caught:
            if issubclass(w.category, SkippedFile):
                err_console.print(f"[yellow]warning:[/] {w.message}", highlight=False)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    else:
        text = as_json(sources) if fmt == "json" else as_csv(sources)
        if out is None:  # json and csv go to stdout unless --out names a file
            typer.echo(text, nl=not text.endswith("\n"))
            return
        atomic_write_text(target, text)
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


def suite_configs(path: Path) -> Suite:
    """A suite file planned as ``bench run --config`` / ``bench sweep --config`` plan it
    (``bench.suite.suite_file``): its configs, one per sweep point, and its runs."""
    try:
        return suite_file(path)
    except ConfigError as err:
        fail(str(err))


def suite_reference(suites: list[Suite]) -> str:
    """The reference method the suite files name (``report.reference``), the default without
    any; suite files that name different ones need ``--reference``."""
    refs = sorted({cfg.report.reference for suite in suites for _, cfg in suite.points})
    if len(refs) > 1:
        fail(f"the suite files name different reference methods ({', '.join(refs)}): "
             "choose one with --reference")
    return refs[0] if refs else REFERENCE_METHOD


def _matches(name: str, patterns: str | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(name, p.strip())
                                   for p in patterns.split(",") if p.strip())


def select(sources: list[Source], methods: str | None, datasets: str | None,
           suites: list[RunPoints]) -> list[Source]:
    """The records of the named methods and datasets (globs) and, with suite files, of their
    runs only, each labelled with its sweep point in the suite files (when they agree on it:
    a run two suites share was recorded with the point of the suite that made it); a
    dataset's data-floor record stays while any of its runs does. A selection that keeps
    nothing is an error that lists what the records hold."""
    if methods is None and datasets is None and not suites:
        return sources

    def wanted(r: RunRecord) -> bool:
        return ((not suites or any(r.key in k for k in suites))
                and _matches(r.dataset, datasets)
                and (r.method == FLOOR_METHOD or _matches(r.method, methods)))

    def point(r: RunRecord) -> RunRecord:
        key = r.key
        found = [s[key] for s in suites if key in s]
        if (r.method == FLOOR_METHOD or not found or any(p != found[0] for p in found)
                or found[0] == r.sweep):
            return r
        return replace(r, sweep=dict(found[0]))

    kept = [replace(s, records=[point(r) for r in s.records if wanted(r)]) for s in sources]
    runs = {(r.dataset, r.seed) for s in kept for r in s.records if r.method != FLOOR_METHOD}
    kept = [replace(s, records=[r for r in s.records
                                if r.method != FLOOR_METHOD or (r.dataset, r.seed) in runs])
            for s in kept]
    if not any(s.records for s in kept):
        held = sorted({(r.dataset, r.method) for s in sources for r in s.records})
        raise ValueError("the selection keeps no record"
                         + (" (a suite file selects the runs it plans today, by config hash: "
                            "records made with other settings or --set are not its runs)"
                            if suites else "")
                         + "; the records hold: "
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
