"""The PNG figures of one dataset's section, and the Markdown lines linking them."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.records import RunRecord
from bench.report import plots
from bench.report.model import DatasetView, SkippedFile, label
from bench.report.stats import summarize
from bench.report.tables import BETTER, train_flops
from bench.vocab import FLOOR_METHOD, MetricVocabulary

#: the coupling's consistency, drawn in sweep panels after the key metrics
TARGET_VARIANCE = "target variance"


def figures(view: DatasetView, vocab: MetricVocabulary) -> list[str]:
    """Every figure of the section, each followed by its Markdown link."""
    lines: list[str] = []

    def link(path: Path | None, alt: str) -> None:
        if path is not None:
            lines.extend([f"![{alt}]({path.relative_to(view.root).as_posix()})", ""])

    ds = view.title
    link(scatter(view), f"{ds}: samples of each row (lowest seed)")
    sweeps = sorted({k for r in view.records for k in r.sweep})
    if not sweeps:
        link(cost_figure(view, vocab), f"{ds}: quality vs cost")
    for skey in sweeps:
        link(sweep_figure(view, vocab, skey), f"{ds}: sweep over {skey}")
    link(consistency_figure(view), f"{ds}: coupling consistency vs sample variance ratio")
    link(coupling_figure(view), f"{ds}: coupling statistics during training")
    return lines


def cost_figure(view: DatasetView, vocab: MetricVocabulary) -> Path | None:
    """The headline metric against counted NFE, sampling time and training time."""
    metric = vocab.headline_of(k for r in view.records for k in r.metrics)
    if metric is None:
        return None
    series: dict[str, list] = defaultdict(list)
    for key, runs in view.rows():
        if key[1] == FLOOR_METHOD or runs[0].nfe is None:
            continue
        s = summarize([r.metrics.get(metric) for r in runs])
        series[runs[0].recipe].append((
            key[1], runs[0].nfe, summarize([r.sample_ms_per_1k for r in runs]).mean,
            summarize([r.train_seconds for r in runs]).mean, s.mean, s.std,
            summarize([train_flops(r) for r in runs]).mean))
    if not series:
        return None
    return plots.quality_vs_cost(series, axis_label(metric, vocab),
                                 view.fig_dir / f"{view.slug}_cost.png",
                                 f"{view.title}: {metric} vs NFE, sampling time, training "
                                 "time and training compute (mean over seeds, error bars ± std; "
                                 "colour: recipe)")


def axis_label(metric: str, vocab: MetricVocabulary) -> str:
    """A metric's axis label, with which way is better: "w2 (lower is better)"."""
    better = BETTER.get(vocab.directions.get(metric, ""))
    return f"{metric} ({better})" if better else metric


def sweep_figure(view: DatasetView, vocab: MetricVocabulary, skey: str) -> Path | None:
    """One panel per key metric present (and the coupling's target variance) against the
    swept value, one line per method with its 95% band over seeds."""
    present = {k for r in view.records for k in r.metrics}
    getters: list[tuple[str, Callable[[RunRecord], float | None]]] = [
        (axis_label(m, vocab), lambda r, m=m: r.metrics.get(m)) for m in vocab.key
        if m in present]
    getters.append((f"{TARGET_VARIANCE} (0: consistent)",
                    lambda r: r.coupling_diagnostics.get("target_var_ratio")))
    panels = []
    for name, getter in getters:
        series = defaultdict(list)
        for key, runs in view.rows():
            if key[1] == FLOOR_METHOD or skey not in runs[0].sweep:
                continue
            s = summarize([getter(r) for r in runs])
            if s.n:
                half = s.ci95 if s.n > 1 else 0.0
                series[key[1]].append((runs[0].sweep[skey], s.mean, half, s.n))
        if series:
            panels.append((name, dict(series)))
    if not panels:
        return None
    name = skey.replace(".", "_")
    return plots.sweep_lines(panels, skey, view.fig_dir / f"{view.slug}_sweep_{name}.png",
                             f"{view.title}: metrics vs {skey} (band: 95% CI over seeds)")


def consistency_figure(view: DatasetView) -> Path | None:
    pts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in view.records:
        tv = r.coupling_diagnostics.get("target_var_ratio")
        if tv is not None and "var_ratio" in r.metrics:
            pts[r.method].append((tv, r.metrics["var_ratio"]))
    if not pts:
        return None
    return plots.consistency_scatter(dict(pts), view.fig_dir / f"{view.slug}_consistency.png",
                                     f"{view.title}: coupling consistency vs collapse")


def coupling_figure(view: DatasetView) -> Path | None:
    """The coupling's cost ratio (and the online bank's cost and reassigned share) over
    training, lowest seed, one line per recipe."""
    curves = {}
    for method in view.order:
        runs = sorted((r for r in view.records if r.method == method and r.train_history
                       and not r.sweep), key=lambda r: r.seed)
        if runs and runs[0].recipe not in {c[0] for c in curves.values()}:
            hist = runs[0].train_history
            curves[method] = (runs[0].recipe, [(row["step"], {
                **row, "cost / independent": row["cost"] / row["cost_independent"]})
                for row in hist if row.get("cost_independent")])
    if not curves:
        return None
    online = any("bank_cost" in row for _, h in curves.values() for _, row in h)
    keys_plot = ["cost / independent"] + (["bank_cost", "reassigned"] if online else [])
    return plots.training_curves({m: h for m, (_, h) in curves.items()}, keys_plot,
                                 view.fig_dir / f"{view.slug}_coupling.png",
                                 f"{view.title}: coupling statistics during training "
                                 "(lowest seed)")


def scatter(view: DatasetView) -> Path | None:
    """Samples of each table row (its lowest seed: every sweep point and config of a method,
    not only its first) next to the floor's data: scatter plots for points, 8x8 image grids
    for images."""
    panels: list[tuple[str, np.ndarray]] = []
    seen: set[str] = set()
    for _, group in view.rows():
        runs = sorted((r for r in group if r.samples_path), key=lambda r: r.seed)
        if not runs or (lab := label(runs[0])) in seen:
            continue
        r = runs[0]
        seen.add(lab)
        full = view.bases[id(r)] / r.samples_path  # relative to the records file's folder
        if not full.exists():
            continue
        try:
            pts = np.load(full, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:  # an object array, a torn file
            warnings.warn(SkippedFile(f"{full}: sample file not drawn ({err})"), stacklevel=1)
            continue
        if pts.ndim not in (2, 4) or (pts.ndim == 2 and pts.shape[1] != 2):
            return None
        name = lab if r.method == FLOOR_METHOD else f"{r.method} (NFE {r.nfe})"
        if r.method != FLOOR_METHOD and (rest := lab.removeprefix(r.method)):
            name += "\n" + rest.removeprefix(" · ")
        panels.append((name, pts))
    if not panels:
        return None
    seed = min(r.seed for r in view.records)
    path = view.fig_dir / f"{view.slug}_samples.png"
    if panels[0][1].ndim == 4:  # images: one 8x8 grid per method, real data first
        return plots.image_grids(panels, path, f"{view.title}: seed {seed}, first 64 samples")
    return plots.scatter_grid(panels, path, f"{view.title}: seed {seed}")
