#!/usr/bin/env python
"""Why one Heun step (2 NFE) from noise can be far worse than one Euler step: a trained
flow-matching checkpoint, the same noise, the pieces of its first step taken apart.

    python scripts/heun_one_step.py results/mnist5k-study --method otcfm-heun1 \\
        --dataset mnist5k --n 500 --out reports/heun-one-step-mnist5k.md

One Heun step from t = 0 is ``x = z + (v(z, 0) + v(x_e, 1)) / 2`` with the Euler point
``x_e = z + v(z, 0)``. On the straight path x_t = (1 − t)·x0 + t·x1 the velocity is
x1 − x0, so the network's guess of the noise behind a point x at time t is
``x − t·v(x, t)``; at t = 1 the corrector therefore adds ``(z − ẑ) / 2`` to the Euler point,
where ẑ is the noise the network reads off x_e. Where the network cannot recover z from a
point at t = 1 (ẑ uncorrelated with z), half of a fresh noise vector lands on the sample.
The midpoint step evaluates at t = 1/2 instead, where part of z is still in the input.

Per seed (every checkpoint of the method's recipe in the folder unless ``--seeds``) the table
gives: RMS of z, of v(z, 0) and of v(x_e, 1); the cosine between z and the network's noise
guess at t = 1 (at x_e) and at t = 1/2 (at the midpoint's point z + v(z, 0)/2); the RMS of the
Heun step's change to the Euler point and its cosine with z; and the largest difference
between the Heun point computed here and the registered sampler's own output on the same
noise (torchdiffeq's ``heun2``), which checks that the decomposition is the sampler's. Nothing
is trained.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).mean().item()


def _rms(a: torch.Tensor) -> float:
    return a.pow(2).mean().sqrt().item()


def decompose(model, n: int, noise_seed: int = 0) -> dict:
    """The pieces of one Heun step and one midpoint step of ``model`` (a
    ``bench.api.TrainedModel`` of a flow-matching method on the straight path)."""
    from bench.sampling import generate

    method, dev = model.method, model.device
    kind = getattr(getattr(method, "path", None), "kind", None)
    if kind != "linear":
        raise ValueError(f"{model.name}: the noise guess x − t·v needs the linear (straight) path "
                         f"(this checkpoint's path is {kind!r})")
    z = model.data.source(n, torch.Generator(device=dev).manual_seed(noise_seed))
    with torch.no_grad():
        net = method.net
        t0, th, t1 = (torch.full((n,), t, device=dev) for t in (0.0, 0.5, 1.0))
        v0 = net(z, t0)
        xe = z + v0
        v1 = net(xe, t1)
        xh = z + 0.5 * (v0 + v1)
        xm_in = z + 0.5 * v0
        vm = net(xm_in, th)
        sampled, _ = generate(method, z, n)
    return {
        "seed": model.seed, "checkpoint": str(model.checkpoint), "n": n,
        "rms_z": _rms(z), "rms_v0": _rms(v0), "rms_v1": _rms(v1),
        "cos_guess_t1": _cos(xe - v1, z), "cos_guess_half": _cos(xm_in - 0.5 * vm, z),
        "rms_heun_change": _rms(xh - xe), "cos_heun_change": _cos(xh - xe, z),
        "sampler_gap": (xh - sampled).abs().max().item(),
    }


def measure(results: Path, method: str, dataset: str | None, seeds: list[int] | None,
            n: int, noise_seed: int = 0, device: str = "auto") -> list[dict]:
    from bench.api import checkpoint_parts, checkpoints, load

    if seeds is None:
        seeds = sorted({checkpoint_parts(p, method)[1]
                        for p in checkpoints(results, method, dataset)})
        if not seeds:  # let load() say what exists and how to train it
            load(results, method, dataset, device=device)
    rows = []
    for seed in seeds:
        model = load(results, method, dataset=dataset, seed=seed, device=device)
        rows.append({**decompose(model, n, noise_seed), "dataset": model.dataset,
                     "device": str(model.device),
                     "train_steps": model.info["train"].get("steps")})
    return rows


def render(rows: list[dict], method: str, command: str, noise_seed: int) -> str:
    from bench.env import provenance

    r0 = rows[0]
    lines = [
        f"# One Heun step from noise, taken apart ({r0['dataset']}, `{method}`)",
        "",
        f"{r0['n']} noise vectors (noise seed {noise_seed}) per checkpoint; the network is "
        f"each checkpoint's EMA weights ({r0['train_steps']} training steps); {r0['device']}, "
        f"{torch.get_num_threads()} torch thread(s), {provenance()}.",
        "",
        f"Command: `{command}`",
        "",
        "One Heun step is z + (v(z, 0) + v(x_e, 1)) / 2 with x_e = z + v(z, 0), the Euler "
        "point. The network's guess of the noise behind x at time t is x − t·v(x, t) (the "
        "straight path), so the corrector moves the Euler point by (z − ẑ) / 2, ẑ the noise "
        "it reads off x_e at t = 1. `cos(ẑ, z)` near 0 means the network cannot recover the "
        "noise there, and the Heun step adds half a fresh noise vector to the sample; the "
        "midpoint step asks at t = 1/2, where z is still in its input. `sampler gap`: largest "
        "difference between the Heun point computed here and the registered sampler's output "
        "on the same noise.",
        "",
        "| seed | RMS z | RMS v(z, 0) | RMS v(x_e, 1) | cos(ẑ, z) at t = 1 | "
        "cos(ẑ, z) at t = 1/2 | RMS Heun − Euler | cos(Heun − Euler, z) | sampler gap | "
        "checkpoint |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['rms_z']:.2f} | {r['rms_v0']:.2f} | {r['rms_v1']:.2f} | "
            f"{r['cos_guess_t1']:.2f} | {r['cos_guess_half']:.2f} | "
            f"{r['rms_heun_change']:.2f} | {r['cos_heun_change']:.2f} | "
            f"{r['sampler_gap']:.1e} | `{r['checkpoint']}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="results folder holding the checkpoints")
    ap.add_argument("--method", "-m", default="otcfm-heun1",
                    help="a flow-matching method of the folder (its recipe's checkpoints)")
    ap.add_argument("--dataset", "-d")
    ap.add_argument("--seeds", help="comma-separated seeds (default: every checkpoint)")
    ap.add_argument("--n", type=int, default=500, help="noise vectors per checkpoint")
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, help="Markdown file to write (else printed)")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        ap.error(f"--seeds {args.seeds!r}: comma-separated integers, e.g. 1,2")
    if args.n < 2:
        ap.error("--n: at least 2 noise vectors")
    from bench.api import ModelNotFound

    try:
        rows = measure(args.results, args.method, args.dataset, seeds, args.n,
                       args.noise_seed, args.device)
    except (ModelNotFound, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = render(rows, args.method, "python scripts/heun_one_step.py " + " ".join(
        sys.argv[1:] if argv is None else argv), args.noise_seed)
    from bench.io import write_or_print

    write_or_print(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
