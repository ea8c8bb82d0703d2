"""Reports as data: one row per dataset x method (x config), for leaderboards and notebooks."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from bench.records import RunRecord
from bench.report.model import Source, by_config, label, latest_only
from bench.report.stats import summarize
from bench.report.tables import COST_COLUMNS


def _stat(values: list) -> dict[str, float | int | None]:
    s = summarize(values)
    if s.n == 0:
        return {"mean": None, "std": None, "ci95_lo": None, "ci95_hi": None, "n": 0}

    def clean(v: float) -> float | None:
        return None if not math.isfinite(v) else v

    return {"mean": s.mean, "std": s.std, "ci95_lo": clean(s.lo), "ci95_hi": clean(s.hi),
            "n": s.n}


def rows(sources: list[Source]) -> list[dict[str, Any]]:
    """Every (dataset, method, config) of the ok records (reruns superseded): the mean, std and
    95% interval over seeds of each metric, the counted NFE and the costs."""
    records, _ = latest_only([r for s in sources for r in s.records])
    ok: list[RunRecord] = [r for r in records if r.status == "ok"]
    out = []
    for (dataset, method, config_hash, space), runs in by_config(ok).items():
        runs = sorted(runs, key=lambda r: r.seed)
        metrics = sorted({k for r in runs for k in r.metrics})
        nfe = [r.nfe for r in runs if r.nfe is not None]
        out.append({
            "dataset": dataset, "method": method, "label": label(runs[0]),
            "config_hash": config_hash, "scored_by": space or None, "sweep": runs[0].sweep,
            "seeds": [r.seed for r in runs], "nfe": sum(nfe) / len(nfe) if nfe else None,
            "metrics": {m: _stat([r.metrics.get(m) for r in runs]) for m in metrics},
            "costs": {k: _stat([get(r) for r in runs]) for k, _, get in COST_COLUMNS},
            "run_ids": [r.run_id for r in runs],
        })
    return out


def as_json(sources: list[Source]) -> str:
    return json.dumps(rows(sources), indent=1, sort_keys=True) + "\n"


def as_csv(sources: list[Source]) -> str:
    """The same rows flattened: ``<metric>.<mean|std|ci95_lo|ci95_hi|n>`` columns."""
    flat = []
    for r in rows(sources):
        row = {k: r[k] for k in ("dataset", "method", "label", "config_hash", "scored_by",
                                 "nfe")}
        row["seeds"] = " ".join(map(str, r["seeds"]))
        for group in ("metrics", "costs"):
            for name, stat in r[group].items():
                for k, v in stat.items():
                    row[f"{name}.{k}"] = v
        flat.append(row)
    columns: list[str] = []
    for row in flat:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()
