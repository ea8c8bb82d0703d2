#!/usr/bin/env python
"""What reflow's pair tolerance changes: one trained flow-matching teacher, the same noise,
its dopri5 pairs at several atol = rtol, compared with the tightest.

    python scripts/reflow_pair_tolerance.py results/mnist5k-study --dataset mnist5k --seed 1 \\
        --tols 1e-5,1e-4,1e-3 --n 500 --out reports/reflow-pairs-mnist5k.md

The teacher is the ``fm`` checkpoint that reflow starts from (``bench.api.load`` of
``fm-dopri5``); ``--n`` noise vectors (one reflow pair batch, 500, by default: dopri5 adapts
its steps to the whole batch) are drawn once with ``--noise-seed`` and integrated at each
tolerance. The table gives the counted NFE per pair, the seconds, and the change of the pairs
against the tightest tolerance: RMS and largest absolute change (data in [-1, 1]), the median
of each pair's own RMS change and the share of pairs whose own RMS change exceeds ``--moved``
(whether the change is spread over all pairs or concentrated in a few), and, for images, the
same in 8-bit grey levels (1 level = 2/255) with the share of pixels whose 8-bit value
changes. Nothing is trained.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

LEVEL = 2.0 / 255.0  # one 8-bit grey level of data scaled to [-1, 1]


def measure(results: Path, dataset: str | None, seed: int | None, tols: list[float], n: int,
            noise_seed: int = 0, device: str = "auto", moved: float = 0.1,
            ) -> tuple[list[dict], dict]:
    """One row per tolerance (tightest first) and the provenance of the teacher."""
    from bench.api import load
    from bench.metrics.extractors import to_uint8

    model = load(results, "fm-dopri5", dataset=dataset, seed=seed, device=device)
    tols = sorted(tols)
    images = model.data.kind == "images"
    rows, ref, ref_u8 = [], None, None
    for tol in tols:
        model.method.tol = tol
        gen = torch.Generator(device=model.device).manual_seed(noise_seed)
        start = time.perf_counter()
        x = model.sample(n, generator=gen, batch_size=n).cpu()
        row = {"tol": tol, "nfe": float(model.nfe), "seconds": time.perf_counter() - start}
        u8 = to_uint8(x) if images else None
        if ref is None:
            ref, ref_u8 = x, u8
        d = (x - ref).reshape(n, -1)
        row["rms"], row["max"] = d.pow(2).mean().sqrt().item(), d.abs().max().item()
        per_pair = d.pow(2).mean(1).sqrt()
        row["pair_median"] = per_pair.median().item()
        row["moved"] = (per_pair > moved).float().mean().item()
        if images:
            row["u8_changed"] = (u8 != ref_u8).float().mean().item()
        rows.append(row)
    info = {"checkpoint": str(model.checkpoint), "dataset": model.dataset, "seed": model.seed,
            "kind": model.data.kind, "n": n, "noise_seed": noise_seed, "moved": moved,
            "device": str(model.device), "threads": torch.get_num_threads(),
            "train_steps": model.info["train"].get("steps")}
    return rows, info


def render(rows: list[dict], info: dict, command: str) -> str:
    from bench.env import provenance

    images = info["kind"] == "images"
    ref = rows[0]["tol"]
    lines = [
        f"# Reflow pairs: dopri5 tolerance ({info['dataset']}, teacher seed {info['seed']})",
        "",
        f"Teacher `{info['checkpoint']}` (the `fm` checkpoint reflow starts from, "
        f"{info['train_steps']} training steps), {info['n']} noise vectors (noise seed "
        f"{info['noise_seed']}) integrated from t = 0 to 1 by torchdiffeq's dopri5 at each "
        f"atol = rtol in one batch; {info['device']}, {info['threads']} torch thread(s), "
        f"{provenance()}.",
        "",
        f"Command: `{command}`",
        "",
        f"Change against the pairs at {ref:g}: RMS and largest absolute change of the values "
        "(data in [-1, 1]); the median over pairs of each pair's own RMS change, and the share "
        f"of pairs whose own RMS change exceeds {info['moved']:g}" + (
            "; the RMS, the largest change and the median in 8-bit grey levels (1 level = "
            "2/255), and the share of pixels whose 8-bit value changes." if images else "."),
        "",
    ]
    head = ["atol = rtol", "NFE per pair", "seconds", "RMS change", "max change",
            "median pair RMS", f"pairs moved > {info['moved']:g}"]
    if images:
        head += ["RMS (levels)", "max (levels)", "median pair (levels)",
                 "8-bit values changed"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['tol']:g}", f"{r['nfe']:.1f}", f"{r['seconds']:.0f}",
                 f"{r['rms']:.2e}", f"{r['max']:.2e}", f"{r['pair_median']:.2e}",
                 f"{100 * r['moved']:.1f}%"]
        if images:
            cells += [f"{r['rms'] / LEVEL:.3f}", f"{r['max'] / LEVEL:.2f}",
                      f"{r['pair_median'] / LEVEL:.3f}", f"{100 * r['u8_changed']:.2f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="results folder holding the fm checkpoint")
    ap.add_argument("--dataset", "-d")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--tols", default="1e-5,1e-4,1e-3",
                    help="comma-separated atol = rtol values; the tightest is the reference")
    ap.add_argument("--n", type=int, default=500, help="pairs (one batch); reflow's is 500")
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--moved", type=float, default=0.1,
                    help="a pair counts as moved when its own RMS change exceeds this")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, help="Markdown file to write (else printed)")
    args = ap.parse_args(argv)
    try:
        tols = [float(t) for t in args.tols.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--tols {args.tols!r}: comma-separated numbers, e.g. 1e-5,1e-4")
    if len(tols) < 2 or any(not 0 < t < 1 for t in tols):
        ap.error("--tols: at least two tolerances, each in (0, 1)")
    from bench.api import ModelNotFound

    try:
        rows, info = measure(args.results, args.dataset, args.seed, tols, args.n,
                             args.noise_seed, args.device, args.moved)
    except ModelNotFound as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = render(rows, info, "python scripts/reflow_pair_tolerance.py " + " ".join(
        sys.argv[1:] if argv is None else argv))
    from bench.io import write_or_print

    write_or_print(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
