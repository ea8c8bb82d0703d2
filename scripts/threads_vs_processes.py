#!/usr/bin/env python
"""How to spend a CPU's cores on training: one process with N threads, or N processes with
one thread each (the mnist5k study's lanes)?

    python scripts/threads_vs_processes.py --unet s --batch 128 --steps 12

Times a plain training step (forward, backward, Adam; a 28x28 UNet preset, random data) in
three set-ups, each in fresh processes: one process with 1 thread, one with ``--cores``
threads, and ``--cores`` 1-thread processes at once. It prints the median ms per step of
each and the steps per second the whole machine makes. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def worker(unet: str, batch: int, steps: int, threads: int) -> float:
    """Median seconds per training step in this process."""
    import torch

    from bench.nets.unet import UNET_PRESETS, UNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = UNet(1, UNET_PRESETS[unet])
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, t = torch.randn(batch, 1, 28, 28), torch.rand(batch)

    def step() -> None:
        loss = (net(x, t) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _spawn(args: argparse.Namespace, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", "--unet", args.unet, "--batch", str(args.batch),
         "--steps", str(args.steps), "--threads", str(threads)],
        stdout=subprocess.PIPE, text=True, env=env)


def _collect(procs: list[subprocess.Popen]) -> list[float]:
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a timing process failed (exit {p.returncode})")
        out.append(float(text.strip().splitlines()[-1]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unet", default="s", help="UNet preset (bench.nets.unet.UNET_PRESETS)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per process")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.cores < 1:
        ap.error("--batch, --steps and --cores must be >= 1")
    if args.worker:
        print(worker(args.unet, args.batch, args.steps, args.threads))
        return 0
    setups = [("1 process x 1 thread", 1, 1),
              (f"1 process x {args.cores} threads", 1, args.cores),
              (f"{args.cores} processes x 1 thread", args.cores, 1)]
    print(f"UNet preset {args.unet}, batch {args.batch}, median of {args.steps} steps after 3 "
          f"warm-up steps, {args.cores} cores\n")
    print("| set-up | ms per step (each process) | steps/s, whole machine |")
    print("|---|---|---|")
    for name, procs, threads in setups:
        secs = _collect([_spawn(args, threads) for _ in range(procs)])
        each = ", ".join(f"{1000 * s:.0f}" for s in secs)
        print(f"| {name} | {each} | {sum(1 / s for s in secs):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
