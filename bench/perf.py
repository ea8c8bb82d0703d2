"""``bench perf``: where a training step and a sampling call spend their time.

Every timed region is preceded by warm-up calls and bracketed by device synchronisation;
each figure is the median over ``repeats`` with the interquartile range as its spread.

- training step of each recipe, split into data (index + gather), coupling (the time the
  step waits for its pairs), forward (the rest of the loss), backward and optimizer (clip +
  AdamW + schedule + EMA), all of it the training's own ``Trainer.step``; then whole
  ``train()`` steps with the coupling overlapped and not;
- sampling: counted NFE, latency at batch 1, throughput (samples/s) at a large batch;
- couplings: exact-solver seconds vs batch size (both solvers, and the one ``auto`` picks);
  online OT's per-step coupling time with a bank of 1,000 and of 50,000 entries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.config import Config
from bench.couplings import OnlineOT, measured_choice, time_solvers
from bench.datasets.base import DataBundle
from bench.methods.base import Batch, Method
from bench.models import build_method
from bench.planner import recipe_of
from bench.sampling import counting, sync
from bench.seeding import Streams
from bench.trainer import Trainer, batch_indices, train, training_net

DEFAULT_METHODS = ("naive-map", "nfm-random", "otnfm-minibatch", "otnfm-online", "fm-euler1",
                   "fm-euler100")


@dataclass
class Stat:
    median: float
    iqr: float
    n: int

    @classmethod
    def of(cls, xs: list[float]) -> Stat:
        q = np.percentile(xs, [25, 75]) if len(xs) > 1 else [xs[0], xs[0]]
        return cls(float(statistics.median(xs)), float(q[1] - q[0]), len(xs))


@contextlib.contextmanager
def _part(device: torch.device, into: dict[str, float], name: str) -> Iterator[None]:
    """Seconds of the part ``name`` of a step, device synchronised, into ``into[name]``."""
    sync(device)
    t0 = time.perf_counter()
    yield
    sync(device)
    into[name] = time.perf_counter() - t0


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def step_breakdown(method: Method, data: DataBundle, cfg: Config, device: torch.device,
                   warmup: int, repeats: int, seed: int = 0) -> dict[str, Stat]:
    """Seconds per part of one training step: the training's own step (``Trainer.step``, with
    AMP, compile, schedule and EMA as configured), each part timed between synchronisations."""
    gens = Streams(seed, device)
    tc = cfg.train
    trainer = Trainer(method, tc, device.type, distributed=False)
    bs = method.coupling.data_batch_size(tc.batch_size) if method.coupling else tc.batch_size
    batches = batch_indices(data.train.shape[0], bs, gens["data"], device)
    parts: dict[str, list[float]] = {k: [] for k in
                                     ("data", "coupling", "forward", "backward", "optimizer")}
    with training_net(method, tc, distributed=False):
        for i in range(warmup + repeats):
            t_data, batch = _timed(lambda: (lambda j: Batch(data.train[j], j))(next(batches)),
                                   device)
            took: dict[str, float] = {}
            out = trainer.step(batch, gens, timer=functools.partial(_part, device, took))
            if i < warmup:
                continue
            coupling = float(out.logs.get("coupling_wait_seconds", 0.0))
            parts["data"].append(t_data)
            parts["coupling"].append(coupling)
            parts["forward"].append(max(0.0, took["forward"] - coupling))
            parts["backward"].append(took["backward"])
            parts["optimizer"].append(took["optimizer"])
    totals = [sum(v[i] for v in parts.values()) for i in range(repeats)]
    out_stats = {k: Stat.of(v) for k, v in parts.items()}
    out_stats["step"] = Stat.of(totals)
    return out_stats


def train_steps(name: str, data: DataBundle, cfg: Config, device: torch.device, steps: int,
                overlap: str) -> dict[str, float]:
    """Seconds per step of the real training loop (``steps`` steps after a short warm-up),
    and the share of it spent waiting for the coupling."""
    c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps,
                                                           log_every=steps),
                            coupling=dataclasses.replace(cfg.coupling, overlap=overlap,
                                                         diagnostics=0))
    method = build_method(name, data, c, device, 0)
    warm = dataclasses.replace(c.train, steps=3)
    train(build_method(name, data, c, device, 0), data, warm, Streams(0, device),
          coupling_cfg=c.coupling)
    res, _ = train(method, data, c.train, Streams(0, device), coupling_cfg=c.coupling)
    return {"step_seconds": res.seconds / steps, "coupling_seconds": res.coupling_seconds / steps,
            "coupling_share": res.coupling_seconds / res.seconds if res.seconds else 0.0}


@torch.no_grad()
def sampling(method: Method, data: DataBundle, device: torch.device, batch: int,
             warmup: int, repeats: int) -> dict[str, Any]:
    """Counted NFE, batch-1 latency and large-batch throughput."""
    method.eval()
    gen = Streams(0, device)["eval"]
    x1 = data.source(1, gen)
    xb = data.source(batch, gen)
    with counting(method.net) as c:
        out = method.sample(x1)
    if out.nfe is not None and c.calls != out.nfe:
        raise RuntimeError(f"{type(method).__name__} claims NFE {out.nfe}, counted {c.calls}")
    lat, thr = [], []
    for i in range(warmup + repeats):
        t1, _ = _timed(lambda: method.sample(x1), device)
        tb, _ = _timed(lambda: method.sample(xb), device)
        if i >= warmup:
            lat.append(t1)
            thr.append(batch / tb)
    return {"nfe": c.calls, "latency_ms": Stat.of([1000 * t for t in lat]),
            "throughput": Stat.of(thr), "batch": batch}


def solver_scaling(dim: int, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        t = time_solvers(n, dim, repeats)
        rows.append({"n": n, "dim": dim, **{f"{k}_ms": 1000 * v for k, v in t.items()},
                     "auto": measured_choice(n, dim)[0]})
    return rows


def bank_scaling(data: DataBundle, cfg: Config, device: torch.device, banks: tuple[int, ...],
                 warmup: int, repeats: int) -> dict[int, Stat]:
    """Online OT: seconds per pair() call at the training batch size, for each bank size."""
    out = {}
    bs = cfg.train.batch_size
    for n_bank in banks:
        gen = torch.Generator(device=device).manual_seed(0)
        coupling = OnlineOT(data.source, n_train=n_bank, solver=cfg.coupling.solver,
                            caches=cfg.coupling.caches)
        coupling.data_batch_size(bs)
        rows = torch.randint(0, data.train.shape[0], (n_bank,), generator=gen, device=device)
        pool = data.train[rows]  # a training set of n_bank points (drawn from the data)
        batches = batch_indices(n_bank, bs, gen, device)
        times = []
        for i in range(warmup + repeats):
            idx = next(batches)
            t, _ = _timed(lambda c=coupling, p=pool, i=idx, g=gen: c.pair(p[i], i, g), device)
            if i >= warmup:
                times.append(t)
        out[n_bank] = Stat.of(times)
    return out


def run_perf(cfg: Config, data: DataBundle, device: torch.device, methods: list[str],
             warmup: int, repeats: int, train_steps_n: int, sample_batch: int,
             ot_sizes: list[int], banks: tuple[int, ...],
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Everything ``bench perf`` measures, as one JSON-able dict."""
    result: dict[str, Any] = {"training": {}, "train_loop": {}, "sampling": {}}
    recipes: dict[str, str] = {}
    for m in methods:
        recipes.setdefault(recipe_of(m), m)
    for recipe, m in recipes.items():
        log(f"training step: {recipe}")
        method = build_method(m, data, cfg, device, 0)
        result["training"][recipe] = step_breakdown(method, data, cfg, device, warmup, repeats)
        if method.coupling is not None and method.coupling.can_prefetch:
            result["train_loop"][recipe] = {
                "overlap": train_steps(m, data, cfg, device, train_steps_n, "on"),
                "sequential": train_steps(m, data, cfg, device, train_steps_n, "off")}
    for m in methods:
        log(f"sampling: {m}")
        method = build_method(m, data, cfg, device, 0)
        result["sampling"][m] = sampling(method, data, device, sample_batch, warmup, repeats)
    log("exact solvers vs batch size")
    result["solvers"] = solver_scaling(data.dim, ot_sizes, max(3, repeats // 4))
    log("online OT bank size")
    result["bank"] = bank_scaling(data, cfg, device, banks, warmup, repeats)
    return result


def jsonable(obj: Any) -> Any:
    if isinstance(obj, Stat):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def _ms(s: dict[str, float]) -> str:
    return f"{1000 * s['median']:.3g} [{1000 * s['iqr']:.2g}]"


def markdown(rec: dict[str, Any]) -> str:
    """A Markdown summary of one ``bench perf`` record (figures: median [IQR])."""
    lines = [f"# bench perf: {rec['dataset']}", "",
             f"Device {rec['device']} ({rec['threads']} torch threads), commit "
             f"`{(rec.get('git_commit') or '')[:12]}`, training batch {rec['batch_size']}, "
             f"{rec['repeats']} timed repeats after {rec['warmup']} warm-up calls; every figure "
             "is the median [interquartile range] of the repeats, device synchronised around "
             "each timed region.", "", "## Training step (ms)", "",
             "| recipe | data | coupling | forward | backward | optimizer | step "
             "| coupling share |", "|---|---|---|---|---|---|---|---|"]
    for recipe, parts in rec["training"].items():
        share = parts["coupling"]["median"] / parts["step"]["median"]
        lines.append(f"| {recipe} | " + " | ".join(_ms(parts[k]) for k in (
            "data", "coupling", "forward", "backward", "optimizer", "step")) +
            f" | {100 * share:.1f}% |")
    if rec.get("train_loop"):
        lines += ["", "## The training loop with the OT solve overlapped (ms per step)", "",
                  "Whole `train()` steps; coupling = time the loop waited for its pairs. "
                  "Overlapped: the next batch's assignment is solved in a worker thread during "
                  "this step (identical pairs).", "",
                  "| recipe | mode | step ms | coupling ms | coupling share |",
                  "|---|---|---|---|---|"]
        for recipe, modes in rec["train_loop"].items():
            for mode, r in modes.items():
                lines.append(f"| {recipe} | {mode} | {1000 * r['step_seconds']:.3g} | "
                             f"{1000 * r['coupling_seconds']:.3g} | "
                             f"{100 * r['coupling_share']:.1f}% |")
    samp = rec["sampling"]
    ref = samp.get("fm-euler100", {}).get("throughput", {}).get("median")
    lines += ["", "## Sampling", "",
              "| method | counted NFE | latency at batch 1 (ms) | throughput at batch "
              f"{next(iter(samp.values()))['batch'] if samp else '?'} (samples/s) | "
              "× fm-euler100 |", "|---|---|---|---|---|"]
    for m, r in samp.items():
        thr = r["throughput"]
        ratio = f"{thr['median'] / ref:.1f}×" if ref else "–"
        lines.append(f"| {m} | {r['nfe']} | {r['latency_ms']['median']:.3g} "
                     f"[{r['latency_ms']['iqr']:.2g}] | {thr['median']:.4g} [{thr['iqr']:.2g}] "
                     f"| {ratio} |")
    lines += ["", "## Exact OT solvers vs batch size (ms, cost matrix included)", "",
              "| n | dim | POT emd | scipy LSA | auto picks |", "|---|---|---|---|---|"]
    for r in rec["solvers"]:
        lines.append(f"| {r['n']} | {r['dim']} | {r['pot_ms']:.3g} | {r['scipy_ms']:.3g} | "
                     f"{r['auto']} |")
    bank = rec["bank"]
    lines += ["", "## Online OT: coupling time per step vs bank size", "",
              "| bank | ms per step |", "|---|---|"]
    for n, st in bank.items():
        lines.append(f"| {n} | {_ms(st)} |")
    sizes = sorted(bank, key=int)
    if len(sizes) > 1:
        lo, hi = bank[sizes[0]]["median"], bank[sizes[-1]]["median"]
        lines += ["", f"Ratio {sizes[-1]} / {sizes[0]}: {hi / lo:.2f}×."]
    return "\n".join(lines) + "\n"
