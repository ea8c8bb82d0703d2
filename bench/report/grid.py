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

from bench.records import RunRecord
from bench.report.model import DatasetView
from bench.report.pairing import Pairing, left_out_notes, pair_seeds
from bench.report.stats import Summary, fmt_num, summarize
from bench.report.tables import BETTER
from bench.vocab import GRID_COLUMNS, GRID_ROWS, MetricVocabulary

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
    for (_, method, _, _), runs in view.rows():
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


@dataclass
class Grid:
    """One dataset's grid: its headline metric, the cells of its main setting, and the rows
    and columns present."""

    dataset: str
    metric: str
    direction: str  # "min" | "max" (vocabulary direction of the metric)
    #: the metric's feature-space kind (``MetricVocabulary.features``), None outside any
    space: str | None
    present: dict[tuple[str, str], Cell]
    others: int
    path: str
    rows: list[str]
    cols: list[str]


def dataset_grid(view: DatasetView, vocab: MetricVocabulary, cells: Cells) -> Grid | None:
    """The grid of one dataset; None when it does not apply: fewer than two rows or two
    columns present, or no two cells in one row or one column (nothing to read across: a
    table of dashes)."""
    metric = vocab.headline_of(k for r in view.records for k in r.metrics)
    if metric is None:
        return None
    present, others, path = _cells(view, cells, metric)
    rows = [r for r in GRID_ROWS.values() if any(k[0] == r for k in present)]
    cols = [c for c in GRID_COLUMNS.values() if any(k[1] == c for k in present)]
    if len(rows) < 2 or len(cols) < 2:
        return None
    shared = (any(sum(k[0] == r for k in present) > 1 for r in rows)
              or any(sum(k[1] == c for k in present) > 1 for c in cols))
    if not shared:
        return None
    return Grid(view.title, metric, vocab.directions.get(metric, "min"),
                vocab.features.get(metric), present, others, path, rows, cols)


def grid_section(grid: Grid | None) -> list[str]:
    """The grid table and its generated reading."""
    if grid is None:
        return []
    arrow = BETTER.get(grid.direction, "")
    same = ("the first three rows give" if grid.path == "linear" else
            f"the map and the neural flow give (on the `{grid.path}` path one Euler step of FM "
            "does not)")
    lines = [f"### Coupling × parametrisation ({grid.dataset})", "",
             f"`{grid.metric}` ({arrow}), mean ± std [95% interval] over seeds; the method of "
             f"each cell is named under its value. Within a column the coupling is the same, "
             f"and at the optimum {same} the same sample E[x1 | x0 = z]: what differs there "
             "comes from optimisation (the t² weighting and t input of the neural flow, the "
             "budget), not from the target."
             + (f" {grid.others} cell(s) recorded with other data, network, training, path or "
                "evaluation settings are left out." if grid.others else ""), "",
             "| parametrisation | " + " | ".join(grid.cols) + " |",
             "|---|" + "---|" * len(grid.cols)]
    for row in grid.rows:
        out = []
        for col in grid.cols:
            c = grid.present.get((row, col))
            out.append("–" if c is None else f"{c.summary.fmt(ci=True)}<br>`{c.method}`")
        lines.append(f"| {row} | " + " | ".join(out) + " |")
    lines += ["", *reading(grid)]
    return lines + [""] if lines[-1] else lines


@dataclass
class Comparison:
    """A paired comparison A − B of two cells over their common seeds."""

    label: str
    a: Cell
    b: Cell
    diff: Summary
    direction: str
    #: the seeds paired, and those left out (scored in different feature spaces)
    pairing: Pairing
    #: place among a full grid's comparisons (inside the columns first, then along the flow
    #: row), so that every dataset's table lists them in one order
    rank: tuple[int, int, int] = (0, 0, 0)

    @property
    def verdict(self) -> str:
        """"better" / "worse" (A against B) when the 95% interval excludes 0, "n.s." when it
        does not, "–" without an interval (fewer than two common seeds)."""
        if self.diff.n < 2:
            return "–"
        if not (self.diff.lo > 0 or self.diff.hi < 0):
            return "n.s."
        return "better" if (self.diff.mean < 0) == (self.direction != "max") else "worse"

    def sentence(self) -> str:
        a, b, d = self.a, self.b, self.diff
        head = (f"`{a.method}` {fmt_num(a.summary.mean)} vs `{b.method}` "
                f"{fmt_num(b.summary.mean)}")
        left = "".join(f"; {n[0].lower()}{n[1:-1]}"
                       for n in left_out_notes([(a.method, b.method, self.pairing)]))
        if d.n < 2:
            return f"{head} ({d.n} common seed: no interval){left}"
        verdict = ("not significant" if self.verdict == "n.s." else
                   f"significant: `{a.method}` is {self.verdict}")
        return (f"{head}: Δ {fmt_num(d.mean)} [{fmt_num(d.lo)}, {fmt_num(d.hi)}] over {d.n} "
                f"seeds, {verdict}{left}")


def comparisons(grid: Grid) -> list[Comparison]:
    """Inside each column the neural flow against the other rows; along the neural-flow row
    each coupling against the previous one."""

    def compare(label: str, a: Cell, b: Cell, rank: tuple[int, int, int]) -> Comparison:
        pairing = pair_seeds(a.runs, b.runs, grid.metric, grid.space)
        return Comparison(label, a, b, pairing.diff(), grid.direction, pairing, rank)

    cols = list(GRID_COLUMNS.values())
    out = []
    for i, col in enumerate(cols):
        flow = grid.present.get((FLOW, col))
        if flow is None:
            continue
        for j, other in enumerate((MAP, FM1, FM100)):
            cell = grid.present.get((other, col))
            if cell is not None:
                out.append(compare(f"{col}, neural flow vs {other}", flow, cell, (0, i, j)))
    flows = [(i, col, grid.present[(FLOW, col)]) for i, col in enumerate(cols)
             if (FLOW, col) in grid.present]
    for (i, col_a, a), (j, col_b, b) in zip(flows[1:], flows[:-1], strict=False):
        out.append(compare(f"neural flow, {col_a} vs {col_b}", a, b, (1, i, j)))
    return out


def reading(grid: Grid) -> list[str]:
    """Generated sentences, one per comparison; nothing when the grid compares nothing."""
    found = comparisons(grid)
    if not found:
        return []
    return [f"Paired differences of `{grid.metric}` over common seeds (A − B, 95% interval; "
            "significant when the interval excludes 0):",
            *(f"- {c.label}: {c.sentence()}." for c in found)]


def across_section(grids: list[Grid]) -> list[str]:
    """The grid's comparisons side by side for every dataset whose grid has any, with a tally
    of where A is significantly better, worse, not distinguishable from B, or without an
    interval (fewer than two common seeds); nothing for fewer than two such datasets."""
    compared = [(g, comparisons(g)) for g in grids]
    compared = [(g, cs) for g, cs in compared if cs]
    if len(compared) < 2:
        return []
    table: dict[str, dict[str, Comparison]] = {}
    rank: dict[str, tuple[int, int, int]] = {}
    for g, cs in compared:
        for c in cs:
            table.setdefault(c.label, {})[g.dataset] = c
            rank[c.label] = c.rank
    labels = sorted(table, key=rank.__getitem__)  # one order whichever datasets hold a label
    head = []
    for g, cs in compared:
        ns = sorted({c.diff.n for c in cs})
        span = f"{ns[0]}" if ns[0] == ns[-1] else f"{ns[0]}–{ns[-1]}"
        head.append(f"{g.dataset} (`{g.metric}`, {span} seed{'' if ns[-1] == 1 else 's'})")
    lines = ["## Across datasets", "",
             "The paired comparisons of each dataset's coupling × parametrisation grid side by "
             "side: Δ = A − B of the dataset's headline metric, mean [95% interval] over common "
             "seeds, **bold** where the interval excludes 0, then whether A (the first method "
             "named) is better or worse there, or not significantly different (n.s.); the last "
             "column counts the datasets, the fourth count those without an interval (fewer "
             "than two common seeds). The metrics differ in scale between datasets: read each "
             "column on its own. Every interval is a 95% interval on its own, with no "
             "correction for the many comparisons in this table: about one in twenty true ties "
             "shows as significant by chance.", "",
             "| comparison (A vs B) | " + " | ".join(head)
             + " | A better / worse / n.s. / no interval |",
             "|---|" + "---|" * (len(compared) + 1)]
    for label in labels:
        by_data = table[label]
        first = next(iter(by_data.values()))
        names = (first.a.method, first.b.method)
        cells, tally = [], {"better": 0, "worse": 0, "n.s.": 0, "–": 0}
        for g, _ in compared:
            c = by_data.get(g.dataset)
            if c is None:
                cells.append("–")
                continue
            tally[c.verdict] += 1
            d = c.diff
            if d.n < 2:
                cell = ("no common seed" if d.n == 0 else
                        f"{fmt_num(d.mean)} (1 common seed, no interval)")
            else:
                mean = (f"**{fmt_num(d.mean)}**" if c.verdict in ("better", "worse")
                        else fmt_num(d.mean))
                cell = f"{mean} [{fmt_num(d.lo)}, {fmt_num(d.hi)}] {c.verdict}"
            if (c.a.method, c.b.method) != names:
                cell += f"<br>`{c.a.method}` − `{c.b.method}`"
            cells.append(cell)
        lines.append(f"| {label}<br>`{names[0]}` − `{names[1]}` | " + " | ".join(cells)
                     + f" | {tally['better']} / {tally['worse']} / {tally['n.s.']} / "
                     f"{tally['–']} |")
    return lines + [""]

