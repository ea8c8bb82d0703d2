"""Render run records into a Markdown report with tables (mean ± std over seeds) and plots."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report.plots import scatter_grid
from bench.report.stats import fmt_num, summarize
from bench.results import RunRecord

ARROWS = {"min": "↓", "max": "↑", "one": "→1"}
FLOOR = "data"
#: Columns about cost, shown after the metrics: (record field, header)
COST_COLUMNS = (
    ("train_seconds", "train s"),
    ("coupling_seconds", "coupling s"),
    ("sample_ms_per_1k", "sample ms/1k"),
)


@dataclass
class Source:
    """Records read from one file."""

    path: str
    records: list[RunRecord]
    skipped: int = 0


def _metric_order(records: list[RunRecord], directions: dict[str, str]) -> list[str]:
    present = {k for r in records for k in r.metrics}
    ordered = [k for k in directions if k in present]
    return ordered + sorted(present - set(ordered))


def _header_name(metric: str, directions: dict[str, str]) -> str:
    arrow = ARROWS.get(directions.get(metric, ""), "")
    return f"{metric} {arrow}".strip()


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
    shape = "×".join(str(s) for s in info.get("shape", []))
    return f"{r.dataset}: {shape} {info.get('description', '')}".strip()


def render_report(sources: list[Source], out: str | Path, directions: dict[str, str],
                  title: str | None = None, plots: bool = True) -> str:
    """Write ``out`` (Markdown) and its figures into ``<out stem>/``; returns the Markdown."""
    out = Path(out)
    fig_dir = out.parent / out.stem
    records = [r for s in sources for r in s.records]
    bases = {id(r): Path(s.path).parent for s in sources for r in s.records}
    ok = [r for r in records if r.status == "ok"]
    failed = [r for r in records if r.status != "ok"]
    suites = sorted({r.suite for r in records if r.suite})
    lines: list[str] = [f"# {title or 'OT-NFM Bench report: ' + ', '.join(suites or ['runs'])}", ""]
    files = ", ".join(f"`{s.path}`" for s in sources)
    cfg_files = sorted({r.config_file for r in records if r.config_file})
    commits = sorted({r.git_commit for r in records if r.git_commit})
    devices = sorted({r.device for r in records if r.device})
    lines.append(
        f"Built from {len(records)} records ({len(ok)} ok, {len(failed)} failed) in {files}"
        + (f"; configs: {', '.join(f'`{c}`' for c in cfg_files)}" if cfg_files else "")
        + (f"; commits: {', '.join(f'`{c[:12]}`' for c in commits)}" if commits else "")
        + (f"; devices: {', '.join(devices)}" if devices else "") + "."
    )
    skipped = sum(s.skipped for s in sources)
    if skipped:
        lines.append(f"\n**{skipped} malformed line(s) were skipped** while reading the records.")
    lines.append("")
    lines.append(
        "Each cell is mean ± sample std over seeds (n = seeds column). ↓ lower is better, "
        "↑ higher is better, →1 best at 1. NFE is counted by hooking the network during "
        "sampling. `data` is held-out data scored as if it were samples: the floor a perfect "
        "generator reaches at this sample size. Training and coupling seconds belong to the "
        "checkpoint a method was evaluated from (the `fm-euler*` family shares one)."
    )
    lines.append("")
    groups = _group(ok)
    for dataset in sorted({r.dataset for r in ok}):
        ds_records = [r for r in ok if r.dataset == dataset]
        metrics = _metric_order(ds_records, directions)
        lines += [f"## {dataset}", "", _data_line(ds_records[0]), ""]
        mi = next((r.metric_info for r in ds_records if r.metric_info), {})
        if mi:
            lines += [f"Metrics on {mi.get('n_samples')} samples against {mi.get('n_reference')} "
                      f"held-out points ({mi.get('features')}); W2 on {mi.get('w2_samples')} "
                      f"per side.", ""]
        header = (["method", "seeds", "NFE"] + [_header_name(m, directions) for m in metrics]
                  + [h for _, h in COST_COLUMNS])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        keys = [k for k in groups if k[0] == dataset]
        order = _method_order([r.method for r in ds_records])
        keys.sort(key=lambda k: (order.index(k[1]), k[2]))
        multi_cfg = len({k[2] for k in keys if k[1] != FLOOR}) > len(
            {k[1] for k in keys if k[1] != FLOOR})
        for key in keys:
            runs = sorted(groups[key], key=lambda r: r.seed)
            name = f"{key[1]} ({key[2][:8]})" if multi_cfg else key[1]
            if key[1] == FLOOR:
                name = "data (floor)"
            row = [name, str(len(runs)), _nfe_cell(runs)]
            row += [summarize([r.metrics.get(m) for r in runs]).fmt() for m in metrics]
            if key[1] == FLOOR:
                row += ["–"] * len(COST_COLUMNS)
            else:
                row += [summarize([getattr(r, f) for r in runs]).fmt() for f, _ in COST_COLUMNS]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        if plots:
            fig = _scatter(ds_records, dataset, fig_dir, order, bases)
            if fig is not None:
                rel = fig.relative_to(out.parent)
                lines += [f"![{dataset}: samples of each method (lowest seed)]({rel.as_posix()})",
                          ""]
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


def _scatter(records: list[RunRecord], dataset: str, fig_dir: Path, order: list[str],
             bases: dict[int, Path]) -> Path | None:
    panels: list[tuple[str, np.ndarray]] = []
    for method in order:
        runs = sorted((r for r in records if r.method == method and r.samples_path),
                      key=lambda r: r.seed)
        if not runs:
            continue
        r = runs[0]
        full = bases[id(r)] / r.samples_path  # relative to the records file's folder
        if not full.exists():
            continue
        pts = np.load(full, allow_pickle=False)
        if pts.ndim != 2 or pts.shape[1] != 2:
            return None
        label = "data (held-out)" if method == FLOOR else f"{method} (NFE {r.nfe})"
        panels.append((label, pts))
    if not panels:
        return None
    return scatter_grid(panels, fig_dir / f"{dataset}_samples.png", f"{dataset}: seed "
                        f"{min(r.seed for r in records)}")
