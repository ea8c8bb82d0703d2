#!/usr/bin/env python
"""Check ``bench run``'s wall-clock estimate against a real run of the same suite.

    python scripts/check_estimate.py -m otnfm-online,fm-euler100 -d moons --seeds 0 \\
        --set train.steps=300
    python scripts/check_estimate.py --config configs/quick.yaml --out results/check-quick \\
        --table results/check-quick.md

The suite options are ``bench run``'s (``--config``, ``-m``, ``-d``, ``--seeds``, ``--set``,
``--device``, ``--metrics``, ``--data-root``, ``--inception-weights``). It prints the estimate
(``bench.estimate``, as ``bench run --dry-run`` does), runs the suite in this process into
``--out`` (default: a new temporary folder, removed afterwards) and prints a Markdown table,
also written to ``--table`` (or ``<out>/estimate-check.md`` with ``--out``): the estimate's
centre and range against the measured wall-clock, and their ratio. The measured training is
the recorded training seconds of each checkpoint trained now; the rest (sampling, metrics,
learning curves, data loading) is the wall-clock of the run without it. Runs already recorded
in ``--out`` are skipped by both, as by ``bench run``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cli.console import load_plugins
from bench.cli.run import flag_overrides
from bench.env import pick_device
from bench.estimate import Estimate, Span, human, human_range
from bench.results import RunRecord
from bench.suite import estimate_runs, execute, plan_suite


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", "-c", type=Path)
    p.add_argument("--methods", "-m")
    p.add_argument("--dataset", "-d")
    p.add_argument("--seeds")
    p.add_argument("--device")
    p.add_argument("--metrics")
    p.add_argument("--data-root")
    p.add_argument("--inception-weights")
    p.add_argument("--set", dest="sets", action="append", default=[])
    p.add_argument("--plugin", action="append", default=[])
    p.add_argument("--out", type=Path, help="results folder (default: a temporary one)")
    p.add_argument("--table", type=Path, help="Markdown output (default <out>/estimate-check.md)")
    return p.parse_args(argv)


def measured(records: list[RunRecord], wall: float) -> dict[str, float]:
    """Training seconds of the checkpoints trained now, and the rest of the wall-clock."""
    # one checkpoint serves every sampler of a family (fm-euler1 ... fm-euler100): its
    # training counts once
    trained = {r.checkpoint or r.run_id: r.train_seconds or 0.0 for r in records
               if r.status == "ok" and not r.checkpoint_reused and r.train_steps}
    train = sum(trained.values())
    return {"training": train, "evaluation": wall - train, "total": wall}


def rows_of(est: Estimate, got: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Estimate (a Span), measured seconds and their ratio, per row."""
    spans = {"training": est.train, "evaluation": est.sample + est.metric, "total": est.span}
    return {k: {"estimate": spans[k], "measured": got[k],
                "ratio": got[k] / spans[k].mid if spans[k].mid > 0 else float("nan")}
            for k in spans}


def table(rows: dict[str, dict[str, Any]], title: str, facts: list[str]) -> str:
    labels = {"training": "training", "evaluation": "sampling, metrics and the rest",
              "total": "total"}
    out = ["# Wall-clock estimate against a real run", "", title, "", *facts, "",
           "| part | estimate | estimate range | measured | measured / estimate | in range |",
           "|---|---|---|---|---|---|"]
    for key, row in rows.items():
        span: Span = row["estimate"]
        inside = "yes" if span.low <= row["measured"] <= span.high else "no"
        out.append(f"| {labels[key]} | {human(span.mid)} ({span.mid:.1f} s) | "
                   f"{human_range(span.low, span.high)} | {human(row['measured'])} "
                   f"({row['measured']:.1f} s) | {row['ratio']:.2f} | {inside} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Estimate, run, compare; returns the table's rows."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    load_plugins(args.plugin)
    overrides = flag_overrides(methods=args.methods, datasets=args.dataset, seeds=args.seeds,
                               device=args.device, data_root=args.data_root,
                               metrics=args.metrics, inception_weights=args.inception_weights)
    suite = plan_suite(args.config, overrides, args.sets)
    device = pick_device(suite.cfg.device)
    with tempfile.TemporaryDirectory(prefix="check-estimate-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        runners = suite.runners(out, device)
        start = time.perf_counter()
        ests = [estimate_runs(r) for r in runners]
        probe = time.perf_counter() - start
        est = Estimate(sum((e.train for e in ests), Span()),
                       sum((e.sample for e in ests), Span()),
                       sum((e.metric for e in ests), Span()),
                       [ln for e in ests for ln in e.lines],
                       [ln for e in ests for ln in e.eval_lines])
        print(f"estimate: about {human(est.total)} on {device} (range "
              f"{human_range(est.low, est.high)}; training {human(est.train_seconds)}, "
              f"sampling {human(est.sample_seconds)}, metrics {human(est.metric_seconds)}), "
              f"made in {probe:.1f} s", flush=True)
        for line in est.lines + est.eval_lines:
            print(f"  {line}", flush=True)
        print("running the suite …", flush=True)
        start = time.perf_counter()
        records = execute(suite, out, device=device, runners=runners)
        wall = time.perf_counter() - start
        rows = rows_of(est, measured(records, wall))
        runs = sum(len(r.plan.runs()) for r in runners)
        facts = [f"- suite: {suite.name}, {runs} run(s), {len(records)} record(s) written now "
                 f"({sum(r.status == 'ok' for r in records)} ok), device {device}",
                 f"- the estimate took {probe:.1f} s to make (not in the measured time)",
                 "- measured: `execute` in this process; training = the recorded training "
                 "seconds of the checkpoints trained now"]
        text = table(rows, "`" + " ".join(["python scripts/check_estimate.py", *argv]) + "`",
                     facts)
        path = args.table or out / "estimate-check.md"
        if args.out is not None or args.table is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
        print(text)
    return rows


if __name__ == "__main__":
    main()
