"""The coupling x parametrisation grid of a dataset, and the sentences that read it.

Rows are parametrisations (a time-free map G(z), the neural flow F(z, 1), flow matching at one
Euler step and at 100), columns are couplings (independent, minibatch, online and global OT).
At the optimum the first three rows give the same sample, E[x1 | x0 = z], for a given
coupling, so differences inside a column come from optimisation; differences inside a row
come from the coupling. Every sentence is generated from paired comparisons over seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.evaluate import MetricVocabulary
from bench.methods.base import GRID_COLUMNS, GRID_ROWS
from bench.report.model import DatasetView
from bench.report.stats import Summary, fmt_num, paired, summarize
from bench.report.tables import by_seed
from bench.results import RunRecord

#: method -> (row label, column label)
Cells = dict[str, tuple[str, str]]
FLOW, MAP, FM1, FM100 = (GRID_ROWS[k] for k in ("flow", "map", "fm1", "fm100"))


@dataclass
class Cell:
    method: str
    runs: list[RunRecord]
    summary: Summary


#: the config sections that must agree for two cells to be compared
SETTING = ("data", "net", "train", "path", "eval")


def _setting(r: RunRecord) -> str:
    return json.dumps({k: r.config.get(k) for k in SETTING}, sort_keys=True)


def _cells(view: DatasetView, cells: Cells,
           metric: str) -> tuple[dict[tuple[str, str], Cell], int, str]:
    """The grid's cells of one setting (the one with most cells: records of other data,
    network, training, path or evaluation settings are never compared with them), unswept
    runs only, one config per method; also how many cells other settings held, and the
    setting's path kind."""
    groups: dict[str, dict[tuple[str, str], Cell]] = {}
    for (_, method, _), runs in view.rows():
        if method not in cells or runs[0].sweep:
            continue
        group = groups.setdefault(_setting(runs[0]), {})
        if cells[method] not in group:
            group[cells[method]] = Cell(method, runs,
                                        summarize([r.metrics.get(metric) for r in runs]))
    if not groups:
        return {}, 0, "linear"
    best = max(groups, key=lambda k: len(groups[k]))
    others = sum(len(g) for k, g in groups.items() if k != best)
    path = json.loads(best).get("path") or {}
    return groups[best], others, path.get("kind", "linear")


def grid_section(view: DatasetView, vocab: MetricVocabulary, cells: Cells) -> list[str]:
    """The grid table and its generated reading; nothing when fewer than two rows and two
    columns are present."""
    metric = vocab.headline_of(k for r in view.records for k in r.metrics)
    if metric is None:
        return []
    present, others, path = _cells(view, cells, metric)
    rows = [r for r in GRID_ROWS.values() if any(k[0] == r for k in present)]
    cols = [c for c in GRID_COLUMNS.values() if any(k[1] == c for k in present)]
    if len(rows) < 2 or len(cols) < 2:
        return []
    arrow = {"min": "lower is better", "max": "higher is better"}.get(
        vocab.directions.get(metric, ""), "")
    same = ("the first three rows give" if path == "linear" else
            f"the map and the neural flow give (on the `{path}` path one Euler step of FM does "
            "not)")
    lines = [f"### Coupling × parametrisation ({view.dataset})", "",
             f"`{metric}` ({arrow}), mean ± std [95% interval] over seeds; the method of each "
             f"cell is named under its value. Within a column the coupling is the same, and at "
             f"the optimum {same} the same sample E[x1 | x0 = z]: what differs there comes "
             "from optimisation (the t² weighting and t input of the neural flow, the budget), "
             "not from the target."
             + (f" {others} cell(s) recorded with other data, network, training, path or "
                "evaluation settings are left out." if others else ""), "",
             "| parametrisation | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for row in rows:
        out = []
        for col in cols:
            c = present.get((row, col))
            out.append("–" if c is None else f"{c.summary.fmt(ci=True)}<br>`{c.method}`")
        lines.append(f"| {row} | " + " | ".join(out) + " |")
    lines += ["", *reading(present, metric, vocab.directions.get(metric, "min")), ""]
    return lines


def _compare(a: Cell, b: Cell, metric: str, direction: str) -> str:
    d = paired(by_seed(a.runs, metric), by_seed(b.runs, metric))
    if d.n < 2:
        return (f"`{a.method}` {fmt_num(a.summary.mean)} vs `{b.method}` "
                f"{fmt_num(b.summary.mean)} ({d.n} common seed: no interval)")
    significant = d.lo > 0 or d.hi < 0
    better = (d.mean < 0) == (direction != "max")
    verdict = (f"significant: `{a.method}` is {'better' if better else 'worse'}"
               if significant else "not significant")
    return (f"`{a.method}` {fmt_num(a.summary.mean)} vs `{b.method}` {fmt_num(b.summary.mean)}: "
            f"Δ {fmt_num(d.mean)} [{fmt_num(d.lo)}, {fmt_num(d.hi)}] over {d.n} seeds, "
            f"{verdict}")


def reading(present: dict[tuple[str, str], Cell], metric: str, direction: str) -> list[str]:
    """Generated sentences: inside each column the neural flow against the other rows;
    along the neural-flow row each coupling against the previous one."""
    lines = [f"Paired differences of `{metric}` over common seeds (A − B, 95% interval; "
             "significant when the interval excludes 0):"]
    for col in GRID_COLUMNS.values():
        flow = present.get((FLOW, col))
        if flow is None:
            continue
        for other in (MAP, FM1, FM100):
            cell = present.get((other, col))
            if cell is not None:
                lines.append(f"- {col}, neural flow vs {other}: "
                             f"{_compare(flow, cell, metric, direction)}.")
    flows = [(col, present[(FLOW, col)]) for col in GRID_COLUMNS.values()
             if (FLOW, col) in present]
    for (col_a, a), (col_b, b) in zip(flows[1:], flows[:-1], strict=False):
        lines.append(f"- neural flow, {col_a} vs {col_b}: {_compare(a, b, metric, direction)}.")
    return lines
