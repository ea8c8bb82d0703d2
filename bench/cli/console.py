"""What the commands share: the consoles, errors, plugin loading, the progress display and the
closing summary of a suite."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import bench.builtins  # noqa: F401  (every command sees the built-in registries)
from bench.evaluate import metric_vocabulary
from bench.plugins import PluginError, load_entry_points, load_plugin
from bench.registry import RegistryError
from bench.report.stats import fmt_num, summarize
from bench.results import RECORDS_FILE, RunRecord, read_records


def _width(stream) -> int | None:
    """A terminal's own width; piped to a file or a log, 160 columns (or $COLUMNS) instead of
    rich's 80, so that the summary and status tables of a background run stay readable."""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 160


console = Console(soft_wrap=True, width=_width(sys.stdout))
err_console = Console(stderr=True, soft_wrap=True, width=_width(sys.stderr))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code`` (2: bad input)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, markup=True,
                      highlight=False)
    raise typer.Exit(code)


PLUGIN_HINT = ("If it is a plugin's, load its file: --plugin path/to/file.py (repeatable; "
               "installed plugin packages load by themselves).")


def unknown_name_hint(message: str, results: Path | None = None, method: str | None = None
                      ) -> str:
    """``message`` with a way out when it says a name is unknown: the ``--plugin`` file that
    the records of ``results`` name for ``method`` (where a run of it recorded one), else,
    without a close match, the general ``--plugin`` hint. Other messages come back as they
    are."""
    if not message.startswith("unknown "):
        return message
    if results is not None and method is not None:
        files = plugin_files(results, method)
        if files:
            return (f"{message} Its runs in {results} name the plugin file that registered "
                    f"it: --plugin {' --plugin '.join(files)}")
    if "Did you mean" in message:
        return message
    return f"{message} {PLUGIN_HINT}"


def plugin_files(results: Path, method: str) -> list[str]:
    """The ``--plugin`` files that the records under ``results`` (a folder or a records file)
    name as the origin of ``method``, oldest first."""
    paths = [results] if results.is_file() else (
        sorted(results.rglob(RECORDS_FILE)) if results.is_dir() else [])
    files: list[str] = []
    for path in paths:
        for r in read_records(path).records:
            if r.method == method and r.plugin and r.plugin not in files:
                files.append(r.plugin)
    return files


def load_plugins(plugins: list[Path] | None) -> None:
    """Installed entry points, then the ``--plugin`` files, on top of the built-ins."""
    try:
        load_entry_points()
        for p in plugins or []:
            load_plugin(p)
    except (PluginError, RegistryError) as err:
        fail(str(err))


def log(message: str) -> None:
    console.print(f"[dim]·[/] {message}", highlight=False)


class RichReporter:
    """Progress bar per training run, one line per finished run."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: int | None = None

    def start(self, label: str, total: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(label, total=max(total, 1), loss=float("nan"))

    def advance(self, step: int, loss: float) -> None:
        if self.task is not None and (step % 10 == 0 or step == 1):
            self.progress.update(self.task, completed=step, loss=loss)

    def done(self, rec: RunRecord) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        if rec.status == "ok":
            ms = rec.metrics
            main = ", ".join(f"{k}={ms[k]:.4g}" for k in list(ms)[:3])
            self.progress.console.print(
                f"[green]ok[/]     {rec.dataset:<14} {rec.method:<18} seed {rec.seed}  "
                f"NFE {rec.nfe if rec.nfe is not None else '–':<4} {main}")
        else:
            self.progress.console.print(
                f"[red]{rec.status}[/] {rec.dataset:<14} {rec.method:<18} seed {rec.seed}  "
                f"{rec.error}")

    def log(self, message: str) -> None:
        self.progress.console.print(f"[dim]{message}[/]")


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.4f}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    transient=True)


def summary_table(records: list[RunRecord]) -> Table:
    """One row per (dataset, method): ok runs, NFE, the headline metric, the collapse
    diagnostic and costs (mean ± std over seeds)."""

    def cell(values: list) -> str:
        s = summarize(values)
        if s.n == 0:
            return "–"
        return fmt_num(s.mean, 3) + (f"±{fmt_num(s.std, 1)}" if s.n > 1 else "")

    table = Table(title="Summary (mean±std over seeds; full report: bench report)")
    vocab = metric_vocabulary()
    quality = vocab.headline_of(k for r in records for k in r.metrics) or vocab.headline[0]
    for col in ("dataset", "method", "ok", "NFE", quality, "var ratio", "train s", "ms/1k"):
        table.add_column(col, no_wrap=True)
    keys: list[tuple[str, str]] = []
    for r in records:
        if (r.dataset, r.method) not in keys:
            keys.append((r.dataset, r.method))
    for ds, m in keys:
        runs = [r for r in records if r.dataset == ds and r.method == m]
        good = [r for r in runs if r.status == "ok"]
        trained = [r.train_seconds for r in good if r.train_steps]
        nfe = sorted({r.nfe for r in good if r.nfe is not None})
        table.add_row(ds, m, f"{len(good)}/{len(runs)}", "/".join(map(str, nfe)) or "–",
                      cell([r.metrics.get(quality) for r in good]),
                      cell([r.metrics.get("var_ratio") for r in good]), cell(trained),
                      cell([r.sample_ms_per_1k for r in good]))
    return table


def conclude(records: list[RunRecord], out_dir: Path) -> None:
    """Print the summary of a suite's records; exit 1 if any run did not end ok."""
    console.print(summary_table(records))
    failed = [r for r in records if r.status != "ok"]
    if failed:
        err_console.print(f"[red]{len(failed)} of {len(records)} run(s) failed[/] "
                          f"(recorded with their reasons in {out_dir / RECORDS_FILE})")
        raise typer.Exit(1)
