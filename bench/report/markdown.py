"""Render run records into a Markdown report: tables (mean ± std and 95% CI over seeds),
paired comparisons, sweep plots, coupling diagnostics and quality-vs-cost plots."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report import plots
from bench.report.stats import Summary, fmt_num, paired, summarize
from bench.results import RunRecord

ARROWS = {"min": "↓", "max": "↑", "one": "→1"}
FLOOR = "data"
#: Columns about cost, shown after the metrics: (record field, header)
COST_COLUMNS = (
    ("train_seconds", "train s"),
    ("coupling_seconds", "coupling s"),
    ("sample_ms_per_1k", "sample ms/1k"),
)
#: Metrics in the paired-comparison table and the plots (when present)
KEY_METRICS = ("w2", "mmd", "fd_domain", "fid", "class_entropy", "var_ratio")
#: the headline quality metric of a dataset (first one present), for the cost plot
QUALITY_METRICS = ("w2", "fid", "fd_domain")
DEFAULT_REFERENCE = "fm-euler100"


@dataclass
class Source:
    """Records read from one file."""

    path: str
    records: list[RunRecord]
    skipped: int = 0


def latest_only(records: list[RunRecord]) -> tuple[list[RunRecord], int]:
    """One record per (dataset, method, config hash, seed): the last written (a rerun with
    --force supersedes the earlier one). Returns the records and how many were dropped."""
    last: dict[tuple[str, str, str, int], RunRecord] = {}
    for r in records:
        last[(r.dataset, r.method, r.config_hash, r.seed)] = r
    kept = {id(r) for r in last.values()}
    return [r for r in records if id(r) in kept], len(records) - len(kept)


def _metric_order(records: list[RunRecord], directions: dict[str, str]) -> list[str]:
    present = {k for r in records for k in r.metrics}
    ordered = [k for k in directions if k in present]
    return ordered + sorted(present - set(ordered))


def _header_name(metric: str, directions: dict[str, str]) -> str:
    arrow = ARROWS.get(directions.get(metric, ""), "")
    return f"{metric} {arrow}".strip()


def _sweep_label(r: RunRecord) -> str:
    return ", ".join(f"{k}={v}" for k, v in r.sweep.items())


def _sweep_key(r: RunRecord) -> tuple:
    """Order grid points by their values, numbers numerically (32 before 128 before 1024)."""
    return tuple((k, plots.sort_key(v)) for k, v in sorted(r.sweep.items()))


def _label(r: RunRecord) -> str:
    """Table label of a (method, config) group."""
    if r.method == FLOOR:
        return "data (floor)"
    return f"{r.method} · {_sweep_label(r)}" if r.sweep else r.method


def _group(records: list[RunRecord]) -> dict[tuple[str, str, str], list[RunRecord]]:
    groups: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[(r.dataset, r.method, r.config_hash)].append(r)
    return groups


def _method_order(methods: list[str]) -> list[str]:
    """Floor first, then the order the records were written in."""
    return sorted(set(methods), key=lambda m: (m != FLOOR, methods.index(m)))


def _nfe_cell(runs: list[RunRecord]) -> str:
    nfes = sorted({r.nfe for r in runs if r.nfe is not None})
    return "–" if not nfes else "/".join(str(n) for n in nfes)


def _data_line(r: RunRecord) -> str:
    info = r.data_info
    if info.get("kind") == "points":
        return (f"2-D {r.dataset} ({info.get('description', '')}); source "
                f"`{info.get('source')}`; {info.get('n_train')} training points from each run's "
                f"seed, {info.get('n_eval')} held-out points from a fixed seed.")
    if info.get("kind") == "images":
        return (f"{r.dataset}: {info.get('description', '')}. Resolution "
                f"{info.get('resolution')}, {info.get('channels')} channel(s), scaled to "
                f"{info.get('range')}; {info.get('n_train')} training / {info.get('n_eval')} "
                f"held-out images; floor = {info.get('floor')}.")
    shape = "×".join(str(s) for s in info.get("shape", []))
    return f"{r.dataset}: {shape} {info.get('description', '')}".strip()


def _metric_line(ds_records: list[RunRecord]) -> str:
    mi = next((r.metric_info for r in ds_records if r.metric_info and r.method != FLOOR),
              next((r.metric_info for r in ds_records if r.metric_info), {}))
    if not mi:
        return ""
    if "w2_samples" in mi:
        return (f"Metrics on {mi.get('n_samples')} samples against {mi.get('n_reference')} "
                f"held-out points ({mi.get('features')}); W2 on {mi.get('w2_samples')} per side.")
    parts = [f"Metrics on {mi.get('n_samples')} generated samples against "
             f"{mi.get('n_reference')} held-out images, computed by torch-fidelity on uint8 "
             "images."]
    if "fd_extractor" in mi:
        acc = mi.get("fd_extractor_eval_accuracy")
        parts.append(
            f"`fd_domain`, `kid_domain`, `prec_domain`, `rec_domain` use the features of the "
            f"domain classifier `{mi['fd_extractor']}` (a small CNN trained on the training "
            f"split; held-out accuracy {fmt_num(acc, 3) if acc is not None else '?'}): a "
            "Fréchet distance in those features, **not Inception FID**. `class_entropy` is the "
            "entropy of its class histogram of the samples over log 10 (0 = one class), "
            "`class_coverage` the share of classes holding at least half their uniform share.")
    if "fid_extractor" in mi:
        parts.append(f"`fid`, `kid`, `prec_inception`, `rec_inception`: torch-fidelity "
                     f"`{mi['fid_extractor']}` (Inception FID).")
    return " ".join(parts)


def _by_seed(runs: list[RunRecord], metric: str) -> dict[int, float]:
    return {r.seed: r.metrics[metric] for r in runs if metric in r.metrics}


def _main_table(keys, groups, metrics, directions) -> list[str]:
    header = (["method", "seeds", "NFE"] + [_header_name(m, directions) for m in metrics]
              + [h for _, h in COST_COLUMNS])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in keys:
        runs = sorted(groups[key], key=lambda r: r.seed)
        row = [_label(runs[0]), str(len(runs)), _nfe_cell(runs)]
        row += [summarize([r.metrics.get(m) for r in runs]).fmt(ci=True) for m in metrics]
        if key[1] == FLOOR:
            row += ["–"] * len(COST_COLUMNS)
        else:
            row += [summarize([getattr(r, f) for r in runs]).fmt() for f, _ in COST_COLUMNS]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _pairs_table(keys, groups, metrics, compare) -> list[str]:
    """Paired differences A - B over the seeds both have, with 95% t-intervals."""
    by_label: dict[str, tuple[str, str, str]] = {}
    for k in keys:
        # two configs with one label (e.g. records from two code versions): compare neither
        lab = _label(groups[k][0])
        by_label[lab] = None if lab in by_label else k  # type: ignore[assignment]
    by_label = {lab: k for lab, k in by_label.items() if k is not None}
    pairs = [(a, b) for a, b in compare if a in by_label and b in by_label]
    metrics = [m for m in KEY_METRICS if m in metrics]
    if not pairs or not metrics:
        return []
    lines = ["Paired over common seeds: mean difference A − B with its 95% interval; **bold** "
             "where the interval excludes 0.", "",
             "| A | B | seeds | " + " | ".join(f"Δ {m}" for m in metrics) + " |",
             "|" + "---|" * (3 + len(metrics))]
    for a, b in pairs:
        ra, rb = groups[by_label[a]], groups[by_label[b]]
        cells = []
        n = 0
        for m in metrics:
            s = paired(_by_seed(ra, m), _by_seed(rb, m))
            n = s.n
            cell = s.fmt(ci=True)
            if s.n > 1 and (s.lo > 0 or s.hi < 0):
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {a} | {b} | {n} | " + " | ".join(cells) + " |")
    return lines


def _default_compare(keys, groups) -> list[tuple[str, str]]:
    labels = [_label(groups[k][0]) for k in keys if k[1] != FLOOR]
    if DEFAULT_REFERENCE not in labels:
        return []
    return [(lab, DEFAULT_REFERENCE) for lab in labels if lab != DEFAULT_REFERENCE]


def render_report(sources: list[Source], out: str | Path, directions: dict[str, str],
                  title: str | None = None, plots_on: bool = True,
                  compare: list[tuple[str, str]] | None = None) -> str:
    """Write ``out`` (Markdown) and its figures into ``<out stem>/``; returns the Markdown."""
    out = Path(out)
    fig_dir = out.parent / out.stem
    records, superseded = latest_only([r for s in sources for r in s.records])
    bases = {id(r): Path(s.path).parent for s in sources for r in s.records}
    ok = [r for r in records if r.status == "ok"]
    failed = [r for r in records if r.status != "ok"]
    suites = sorted({r.suite for r in records if r.suite})
    lines: list[str] = [f"# {title or 'OT-NFM Bench report: ' + ', '.join(suites or ['runs'])}", ""]
    files = ", ".join(f"`{s.path}`" for s in sources)
    cfg_files = sorted({r.config_file for r in records if r.config_file})
    commits = sorted({r.git_commit for r in records if r.git_commit})
    devices = sorted({r.device + (f" ({r.threads} torch threads)" if r.threads else "")
                      for r in records if r.device})
    lines.append(
        f"Built from {len(records)} records ({len(ok)} ok, {len(failed)} failed) in {files}"
        + (f"; configs: {', '.join(f'`{c}`' for c in cfg_files)}" if cfg_files else "")
        + (f"; commits: {', '.join(f'`{c[:12]}`' for c in commits)}" if commits else "")
        + (f"; devices: {', '.join(devices)}" if devices else "") + "."
    )
    if superseded:
        lines.append(f"\n{superseded} older record(s) of a rerun (same config and seed) were "
                     "superseded by the later one.")
    skipped = sum(s.skipped for s in sources)
    if skipped:
        lines.append(f"\n**{skipped} malformed line(s) were skipped** while reading the records.")
    lines.append("")
    lines.append(
        "Each metric cell is mean ± sample std over seeds, then the 95% confidence interval of "
        "the mean (Student t, n − 1 degrees of freedom; n = seeds column; a single seed says "
        "so). ↓ lower is better, ↑ higher is better, →1 best at 1. NFE is counted by hooking "
        "the network during sampling. `data` is held-out data scored as if it were samples: "
        "the floor a perfect generator reaches at this sample size. Training and coupling "
        "seconds belong to the checkpoint a method was evaluated from (the `fm-euler*` family "
        "shares one; `reflow` includes its teacher and pair generation)."
    )
    lines.append("")
    groups = _group(ok)
    for dataset in sorted({r.dataset for r in ok}):
        ds_records = [r for r in ok if r.dataset == dataset]
        metrics = _metric_order(ds_records, directions)
        lines += [f"## {dataset}", "", _data_line(ds_records[0]), ""]
        mline = _metric_line(ds_records)
        if mline:
            lines += [mline, ""]
        order = _method_order([r.method for r in ds_records])
        keys = [k for k in groups if k[0] == dataset]
        keys.sort(key=lambda k: (order.index(k[1]), _sweep_key(groups[k][0])))
        lines += _main_table(keys, groups, metrics, directions) + [""]
        pair_lines = _pairs_table(keys, groups, metrics,
                                  compare if compare is not None
                                  else _default_compare(keys, groups))
        if pair_lines:
            lines += [f"### Paired comparisons ({dataset})", ""] + pair_lines + [""]
        lines += _diagnostics_table(keys, groups)
        if plots_on:
            lines += _figures(ds_records, dataset, fig_dir, out.parent, order, bases, keys, groups)
    if failed:
        lines += ["## Failed runs", "", "| run | error |", "|---|---|"]
        for r in failed:
            err = (r.error or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{r.run_id}` | {err} |")
        lines.append("")
    lines += ["## Runs", "", "| run | config hash | seed | status | checkpoint trained in |",
              "|---|---|---|---|---|"]
    for r in records:
        where = "–" if r.method == FLOOR or not r.train_steps else (
            "reused" if r.checkpoint_reused else f"{fmt_num(r.train_seconds)} s")
        lines.append(f"| `{r.run_id}` | `{r.config_hash}` | {r.seed} | {r.status} | {where} |")
    lines.append("")
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return text


def _diagnostics_table(keys, groups) -> list[str]:
    """Coupling consistency next to the collapse diagnostic, for runs that measured it."""
    rows = []
    for key in keys:
        runs = groups[key]
        tv = summarize([r.coupling_diagnostics.get("target_var_ratio") for r in runs])
        if tv.n == 0:
            continue
        hist = [r.train_history for r in runs if r.train_history]
        ratio = summarize([h[-1]["cost"] / h[-1]["cost_independent"] for h in hist
                           if h[-1].get("cost_independent")])
        reassigned = summarize([h[-1].get("reassigned") for h in hist])
        vr = summarize([r.metrics.get("var_ratio") for r in runs])
        rows.append(f"| {_label(runs[0])} | {tv.fmt(ci=True)} | {ratio.fmt()} | "
                    f"{reassigned.fmt()} | {vr.fmt()} |")
    if not rows:
        return []
    return ["### Coupling diagnostics", "",
            "Target variance: for fixed probe noise points, the variance of the data points the "
            "coupling pairs them with (repeated draws in the second half of training) over the "
            "data's variance — 1 is as random as independent pairs, 0 a deterministic "
            "assignment. Cost ratio: pair cost / independent-pair cost in the last logged "
            "window. Reassigned: share of the online bank re-paired per epoch at the end.", "",
            "| method | target variance ↓ | cost ratio ↓ | reassigned/epoch "
            "| sample var_ratio →1 |",
            "|---|---|---|---|---|", *rows, ""]


def _summary_point(runs: list[RunRecord], metric: str) -> Summary:
    return summarize([r.metrics.get(metric) for r in runs])


def _figures(ds_records, dataset, fig_dir, root, order, bases, keys, groups) -> list[str]:
    lines: list[str] = []

    def link(path: Path, alt: str) -> None:
        lines.extend([f"![{alt}]({path.relative_to(root).as_posix()})", ""])

    fig = _scatter(ds_records, dataset, fig_dir, order, bases)
    if fig is not None:
        link(fig, f"{dataset}: samples of each method (lowest seed)")
    sweeps = sorted({k for r in ds_records for k in r.sweep})
    metric = next((m for m in QUALITY_METRICS if any(m in r.metrics for r in ds_records)), None)
    if metric and not sweeps:
        series: dict[str, list] = defaultdict(list)
        for key in keys:
            runs = groups[key]
            if key[1] == FLOOR or runs[0].nfe is None:
                continue
            s = _summary_point(runs, metric)
            series[runs[0].recipe].append((
                key[1], runs[0].nfe, summarize([r.sample_ms_per_1k for r in runs]).mean,
                summarize([r.train_seconds for r in runs]).mean, s.mean, s.std))
        if series:
            link(plots.quality_vs_cost(series, metric, fig_dir / f"{dataset}_cost.png",
                                       f"{dataset}: {metric} vs NFE, sampling and training time"),
                 f"{dataset}: quality vs cost")
    for skey in sweeps:
        panels = []
        for m, getter in (("w2", lambda r: r.metrics.get("w2")),
                          ("var_ratio", lambda r: r.metrics.get("var_ratio")),
                          ("target variance", lambda r: r.coupling_diagnostics.get(
                              "target_var_ratio"))):
            series = defaultdict(list)
            for key in keys:
                runs = groups[key]
                if key[1] == FLOOR or skey not in runs[0].sweep:
                    continue
                s = summarize([getter(r) for r in runs])
                if s.n:
                    half = s.ci95 if s.n > 1 else 0.0
                    series[key[1]].append((runs[0].sweep[skey], s.mean, half, s.n))
            if series:
                panels.append((m, dict(series)))
        if panels:
            name = skey.replace(".", "_")
            link(plots.sweep_lines(panels, skey, fig_dir / f"{dataset}_sweep_{name}.png",
                                   f"{dataset}: metrics vs {skey} (band: 95% CI over seeds)"),
                 f"{dataset}: sweep over {skey}")
    pts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in ds_records:
        tv = r.coupling_diagnostics.get("target_var_ratio")
        if tv is not None and "var_ratio" in r.metrics:
            pts[r.method].append((tv, r.metrics["var_ratio"]))
    if pts:
        link(plots.consistency_scatter(dict(pts), fig_dir / f"{dataset}_consistency.png",
                                       f"{dataset}: coupling consistency vs collapse"),
             f"{dataset}: coupling consistency vs sample variance ratio")
    curves = {}
    for method in order:
        runs = sorted((r for r in ds_records if r.method == method and r.train_history
                       and not r.sweep), key=lambda r: r.seed)
        if runs and runs[0].recipe not in {c[0] for c in curves.values()}:
            hist = runs[0].train_history
            curves[method] = (runs[0].recipe, [(row["step"], {
                **row, "cost / independent": row["cost"] / row["cost_independent"]})
                for row in hist if row.get("cost_independent")])
    online = any("bank_cost" in row for _, h in curves.values() for _, row in h)
    if curves:
        keys_plot = ["cost / independent"] + (["bank_cost", "reassigned"] if online else [])
        link(plots.training_curves({m: h for m, (_, h) in curves.items()}, keys_plot,
                                   fig_dir / f"{dataset}_coupling.png",
                                   f"{dataset}: coupling statistics during training "
                                   "(lowest seed)"),
             f"{dataset}: coupling statistics during training")
    return lines


def _scatter(records: list[RunRecord], dataset: str, fig_dir: Path, order: list[str],
             bases: dict[int, Path]) -> Path | None:
    panels: list[tuple[str, np.ndarray]] = []
    seen: set[str] = set()
    for method in order:
        runs = sorted((r for r in records if r.method == method and r.samples_path),
                      key=lambda r: (r.seed, json.dumps(r.sweep, sort_keys=True)))
        if not runs or method in seen:
            continue
        seen.add(method)
        r = runs[0]
        full = bases[id(r)] / r.samples_path  # relative to the records file's folder
        if not full.exists():
            continue
        pts = np.load(full, allow_pickle=False)
        if pts.ndim not in (2, 4) or (pts.ndim == 2 and pts.shape[1] != 2):
            return None
        label = "data (floor)" if method == FLOOR else f"{method} (NFE {r.nfe})"
        if r.sweep and method != FLOOR:
            label += f"\n{_sweep_label(r)}"
        panels.append((label, pts))
    if not panels:
        return None
    if panels[0][1].ndim == 4:  # images: one 8x8 grid per method, real data first
        return plots.image_grids(panels, fig_dir / f"{dataset}_samples.png", f"{dataset}: "
                                 f"seed {min(r.seed for r in records)}, first 64 samples")
    return plots.scatter_grid(panels, fig_dir / f"{dataset}_samples.png", f"{dataset}: seed "
                              f"{min(r.seed for r in records)}")
