"""Render run records into a Markdown report: per dataset its verdict in words, a table (mean ±
std and 95% CI over seeds), paired comparisons, coupling diagnostics and figures; then failed
runs and the list of every run the report was built from. A section with nothing to show is
left out, heading and all."""

from __future__ import annotations

from pathlib import Path

from bench.env import short_commit
from bench.io import atomic_write_text
from bench.records import RunRecord
from bench.report.curves import (
    bank_curve_table,
    copy_curve_table,
    curve_overhead,
    curve_table,
    curves_figure,
    gap_table,
    time_to_quality,
)
from bench.report.figures import figures
from bench.report.grid import Cells, Grid, across_section, dataset_grid, grid_section
from bench.report.model import (
    IN_PROGRESS,
    DatasetView,
    Source,
    by_config,
    latest_only,
    scored_by,
    sections,
    stopped_left_out,
)
from bench.report.ranking import ranking_section
from bench.report.stats import fmt_num
from bench.report.tables import (
    bank_gap_table,
    compute_table,
    data_line,
    default_compare,
    diagnostics_table,
    main_table,
    metric_line,
    metric_order,
    pairs_table,
    sweep_notes,
)
from bench.report.verdict import verdict_section
from bench.vocab import FLOOR_METHOD, REFERENCE_METHOD, MetricVocabulary, ema_decay

EXPLANATION = (
    "Each metric cell is mean ± sample std over seeds, then the 95% confidence interval of "
    "the mean (Student t, n − 1 degrees of freedom; n = seeds column; a single seed says "
    "so). ↓ lower is better, ↑ higher is better, →1 best at 1. NFE is counted by hooking "
    "the network during sampling (an adaptive solver's is its mean over samples and seeds). "
    "`data` is held-out data scored as if it were samples: the floor a perfect generator "
    "reaches at this sample size. Training seconds, training FLOPs (counted) and coupling "
    "seconds belong to the checkpoint a method was evaluated from (every sampler of a family "
    "shares one; `reflow` includes its teacher and pair generation)."
)


SPACES_NOTE = (
    "The {dataset} records were scored by {n} domain classifiers (different weights: "
    "different feature spaces). Each has its own section; no figure, pairing or ranking "
    "crosses two."
)


class ReportError(ValueError):
    """A report that cannot be made from these records as asked (bad input, not a bug)."""


def render_report(sources: list[Source], out: str | Path, vocab: MetricVocabulary,
                  title: str | None = None, plots_on: bool = True,
                  compare: list[tuple[str, str]] | None = None,
                  grid: Cells | None = None, across_only: bool = False,
                  default_pairs: bool = True, reference: str = REFERENCE_METHOD) -> str:
    """Write ``out`` (Markdown) and its figures into ``<out stem>/``; returns the Markdown.
    ``grid``: method -> (row, column) of the coupling x parametrisation grid
    (``bench.methods.base.grid_cells()``); without it no grid section is drawn.
    ``compare``: paired comparisons A - B drawn in addition to the default ones (every method
    against ``reference`` where it ran), or instead of them with ``default_pairs=False``.
    ``reference`` also sets the learning curves' first time-to-quality target and the method
    their gap is measured to.
    ``across_only``: the header, the "Across datasets" section and the list of the records
    read alone (no per-dataset sections, no figures): a verdict page over several suites'
    records; ReportError when fewer than two datasets have grid comparisons."""
    out = Path(out)
    read = [r for s in sources for r in s.records]
    records, superseded = latest_only(read)
    stopped = stopped_left_out(read, records)
    bases = {id(r): Path(s.path).parent for s in sources for r in s.records}
    ok = [r for r in records if r.status == "ok"]
    failed = [r for r in records if r.status != "ok"]
    lines = header(sources, records, ok, failed, superseded - stopped, title, stopped)
    groups = by_config(ok)
    grids: dict[str, Grid] = {}  # one a dataset: its latest feature space's
    views = [DatasetView.of(dataset, ok, groups, bases, out.parent / out.stem, out.parent, space)
             for dataset in sorted({r.dataset for r in ok}) for space in sections(ok, dataset)]
    for view in views:
        g = dataset_grid(view, vocab, grid or {})
        if g is not None:
            grids[view.dataset] = g
        if across_only:
            continue
        metrics = metric_order(view.records, vocab.directions)
        lines += [f"## {view.title}", "", data_line(view.records[0]), ""]
        if view.space is not None:
            n = sum(v.dataset == view.dataset and bool(v.space) for v in views)
            lines += [SPACES_NOTE.format(n=n, dataset=view.dataset), ""]
        mline = metric_line(view.records)
        if mline:
            lines += [mline, ""]
        pairs = list(dict.fromkeys((default_compare(view, reference) if default_pairs else [])
                                   + list(compare or [])))
        lines += verdict_section(view, vocab, pairs)
        lines += main_table(view, metrics, vocab) + [""]
        pair_lines = pairs_table(view, metrics, vocab, pairs)
        if pair_lines:
            lines += [f"### Paired comparisons ({view.title})", ""] + pair_lines + [""]
        lines += grid_section(g)
        lines += (compute_table(view) + diagnostics_table(view) + bank_gap_table(view)
                  + sweep_notes(view) + ranking_section(view, vocab))
        lines += learning_curves(view, vocab, reference, plots_on)
        if plots_on:
            lines += figures(view, vocab)
    across = across_section(list(grids.values()))
    if across_only and not across:
        raise ReportError(f"no 'Across datasets' table: {len(grids)} dataset(s) have a grid with "
                         "neural-flow comparisons, it needs two or more")
    lines += across + footer(records, failed, split=any(v.space is not None for v in views))
    text = "\n".join(lines)
    atomic_write_text(out, text)
    return text


def learning_curves(view: DatasetView, vocab: MetricVocabulary, reference: str,
                    plots_on: bool) -> list[str]:
    """The learning-curve section: its figure and tables, none of it without curve points."""
    if not any(r.curve for r in view.records):
        return []
    fig = curves_figure(view, vocab) if plots_on else None
    body = ([f"![{view.title}: learning curves]({fig.relative_to(view.root).as_posix()})", ""]
            if fig is not None else [])
    body += (curve_table(view, vocab) + bank_curve_table(view, vocab)
             + copy_curve_table(view, vocab)
             + time_to_quality(view, vocab, reference)
             + gap_table(view, vocab, reference) + curve_overhead(view))
    return ["### Learning curves", "", *body] if body else []


def header(sources: list[Source], records: list[RunRecord], ok: list[RunRecord],
           failed: list[RunRecord], superseded: int, title: str | None,
           stopped: int = 0) -> list[str]:
    """Title, what the report was built from, and how to read its cells. ``failed``: every
    record not ok (failed, or stopped before it finished and not yet resumed); ``stopped``:
    the records of stopped runs left out because the run has another record."""
    suites = sorted({r.suite for r in records if r.suite})
    lines: list[str] = [f"# {title or 'OT-NFM Bench report: ' + ', '.join(suites or ['runs'])}", ""]
    files = ", ".join(f"`{s.path}`" for s in sources)
    cfg_files = sorted({r.config_file for r in records if r.config_file})
    commits = sorted({short_commit(r.git_commit) for r in records if r.git_commit})
    devices = sorted({r.device + (f" ({r.threads} torch threads)" if r.threads else "")
                      for r in records if r.device})
    lines.append(
        f"Built from {len(records)} records ({counts(ok, failed)}) in {files}"
        + (f"; configs: {', '.join(f'`{c}`' for c in cfg_files)}" if cfg_files else "")
        + (f"; commits: {', '.join(f'`{c}`' for c in commits)}" if commits else "")
        + (f"; devices: {', '.join(devices)}" if devices else "") + "."
    )
    if superseded:
        lines.append(f"\n{superseded} older record(s) of a rerun (same config and seed) were "
                     "superseded by the later one.")
    if stopped:
        lines.append(f"\n{stopped} record(s) of a run stopped before it finished were left "
                     "out: the same run (config and seed) has a finished record, earlier or "
                     "later, which stands.")
    lines += ema_lines(ok)
    skipped = sum(s.skipped for s in sources)
    if skipped:
        lines.append(f"\n**{skipped} malformed line(s) were skipped** while reading the records.")
    return lines + ["", EXPLANATION, ""]


def counts(ok: list[RunRecord], not_ok: list[RunRecord]) -> str:
    """"12 ok, 1 failed", with the runs stopped before they finished counted apart."""
    stopped = sum(r.status in IN_PROGRESS for r in not_ok)
    text = f"{len(ok)} ok, {len(not_ok) - stopped} failed"
    return text + (f", {stopped} stopped before finishing" if stopped else "")


def ema_lines(ok: list[RunRecord]) -> list[str]:
    """Where the EMA warm-up (1 + n) / (10 + n) never let ``train.ema`` be reached, the decay
    that was: records of the same steps and setting trained alike above the cap. A record
    without ``ema_reached`` (older than the field) has it worked out from its config."""
    capped: dict[tuple[float, float, int], int] = {}
    for r in ok:
        ema = float((r.config.get("train") or {}).get("ema") or 0.0)
        if r.method == FLOOR_METHOD or not r.train_steps or ema <= 0:
            continue
        reached = r.ema_reached if r.ema_reached is not None else ema_decay(ema, r.train_steps)
        if reached < ema:
            key = (ema, round(reached, 4), r.train_steps)
            capped[key] = capped.get(key, 0) + 1
    return [f"\nEMA: `train.ema` {ema:g} is set, but the warm-up (1 + n) / (10 + n) holds the "
            f"decay at {reached:.4f} at the last of {steps:,} steps, so the {n} run(s) here "
            f"averaged their weights at {reached:.4f} at most (any setting above it trains "
            "them alike)."
            for (ema, reached, steps), n in sorted(capped.items())]


def footer(records: list[RunRecord], failed: list[RunRecord], split: bool = False) -> list[str]:
    """Failed runs with their reasons, then every run the report was built from (with the
    domain classifier that scored it when ``split``: a run rescored in another feature space
    is listed once per space)."""
    lines: list[str] = []
    if failed:
        stopped = any(r.status in IN_PROGRESS for r in failed)
        lines += ["## Failed runs" + (" and runs stopped before finishing" if stopped else ""),
                  "", "| run | error |", "|---|---|"]
        for r in failed:
            err = (r.error or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{r.run_id}` | {err} |")
        lines.append("")
    scored = " scored by |" if split else ""
    lines += ["## Runs", "",
              f"| run | config hash | seed | status | checkpoint trained in |{scored}",
              "|---|---|---|---|---|" + "---|" * split]
    for r in records:
        where = "–" if r.method == FLOOR_METHOD or not r.train_steps else (
            "reused" if r.checkpoint_reused else f"{fmt_num(r.train_seconds)} s")
        by = ""
        if split:
            by = f" `{scored_by(r)}` |" if scored_by(r) else " – |"
        lines.append(f"| `{r.run_id}` | `{r.config_hash}` | {r.seed} | {r.status} | {where} |{by}")
    lines.append("")
    return lines
