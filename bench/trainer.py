"""The one training loop: AdamW, warm-up + cosine schedule, grad clipping, EMA, NaN guard.

Methods only provide ``loss``; everything that touches the optimizer lives here.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bench.compute import ComputeCount, ComputeMeter
from bench.config import CouplingConfig, TrainConfig
from bench.datasets.base import DataBundle
from bench.distributed import ShardedNet, average_gradients, is_main, world
from bench.io import atomic_torch_save
from bench.methods.base import Batch, Method
from bench.seeding import Streams


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run is recorded as failed with this message."""


class EMA:
    """Exponential moving average of parameters, with the usual (1+n)/(10+n) warm-up."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.n = 0
        self.shadow = [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for s, p in zip(self.shadow, module.parameters(), strict=True):
            s.lerp_(p.detach(), 1 - d)

    @contextlib.contextmanager
    def applied(self, module: nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into ``module``."""
        saved = [p.detach().clone() for p in module.parameters()]
        self.copy_to(module)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(module.parameters(), saved, strict=True):
                    p.copy_(s)

    def state_dict(self) -> dict:
        return {"n": self.n, "shadow": [t.detach().cpu().clone() for t in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        self.n = int(state["n"])
        for s, t in zip(self.shadow, state["shadow"], strict=True):
            s.copy_(t)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for p, s in zip(module.parameters(), self.shadow, strict=True):
            p.copy_(s)

    def view(self, net: nn.Module) -> nn.Module:
        """A frozen copy of ``net`` whose parameters are the averaged weights themselves
        (shared storage: it follows every update). ``net``'s parameters must be the averaged
        module's, in order (a method whose only parametrised child is its network)."""
        copy = deepcopy(net).requires_grad_(False)
        params = list(copy.parameters())
        if len(params) != len(self.shadow):
            raise ValueError("the EMA view needs the network to hold all the method's parameters")
        for p, s in zip(params, self.shadow, strict=True):
            p.data = s
        return copy.eval()


class BatchSampler:
    """Epochs of random permutations cut into full batches ([B] index tensors); its position
    is part of a resumable training state."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator,
                 device: torch.device) -> None:
        if batch_size > n:
            raise ValueError(f"train.batch_size {batch_size} exceeds the {n} training points")
        self.n, self.batch_size, self.gen, self.device = n, batch_size, gen, device
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> torch.Tensor:
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen, device=self.device)
            self.pos = 0
        out = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return out

    def state_dict(self) -> dict:
        return {"perm": None if self.perm is None else self.perm.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        perm = state["perm"]
        self.perm = None if perm is None else perm.to(self.device)
        self.pos = int(state["pos"])


def batch_indices(n: int, batch_size: int, gen: torch.Generator,
                  device: torch.device) -> BatchSampler:
    """Epochs of random permutations cut into full batches ([B] index tensors)."""
    return BatchSampler(n, batch_size, gen, device)


@dataclass
class CurveHook:
    """Scoring during training: at each step in ``at`` the trainer calls
    ``score(step, train_seconds_so_far, train_flops_so_far)`` with the EMA weights loaded and
    the method in eval mode, and keeps the dict it returns. Its time is kept out of the
    training seconds and its network calls out of the training compute, and it must not touch
    the training's random streams (it changes no number of the run)."""

    at: set[int]
    score: Callable[[int, float, float | None], dict]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the state after the last finished step was checkpointed."""


@dataclass
class Checkpointing:
    """Resumable training: the whole state is written to ``path`` every ``every`` steps (and
    on Ctrl-C), write-then-rename; ``meta`` is stored with it (the runner's recipe hash)."""

    path: Path
    every: int = 0
    meta: dict = field(default_factory=dict)

    def save(self, state: dict) -> None:
        if is_main():
            atomic_torch_save(self.path, {**state, "meta": self.meta})


@contextlib.contextmanager
def _sigint_flag() -> Iterator[dict]:
    """In the main thread, the first Ctrl-C sets a flag the loop checks between steps (so the
    state can be saved whole); a second one interrupts at once."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    handler.flag = flag  # type: ignore[attr-defined]  # read by executors.stop_on_signals
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


def apply_update(method: Method, opt: torch.optim.Optimizer, cfg: TrainConfig,
                 ema: EMA | None) -> float:
    """One optimizer update from the gradients in place: clipping, the step, the EMA; returns
    the gradient norm before clipping."""
    norm = nn.utils.clip_grad_norm_(method.parameters(),
                                    cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    opt.step()
    if ema is not None:
        ema.update(method)
    return float(norm)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    steps: int
    seconds: float
    #: seconds the training loop spent in the coupling (waiting for it when overlapped)
    coupling_seconds: float
    final_loss: float
    #: one dict per ``log_every`` window: step, loss and the coupling's averaged statistics
    history: list[dict[str, float]] = field(default_factory=list)
    #: coupling consistency: ``target_var_ratio`` = mean over probe noise points of the variance
    #: of the data points the coupling assigns them (over repeated draws in the second half of
    #: training) / the data's total variance. 1: as random as independent pairs; 0: each noise
    #: point always gets the same target (a deterministic map exists).
    diagnostics: dict[str, float] = field(default_factory=dict)
    #: for methods with a teacher: teacher_seconds, pairs_seconds, student_seconds (all in
    #: ``seconds``)
    breakdown: dict[str, float] = field(default_factory=dict)
    #: solver work in seconds (cost matrices + assignments), overlapped or not
    solver_seconds: float = 0.0
    #: what the training cost, counted (compute.ComputeCount.as_dict)
    compute: dict[str, float] = field(default_factory=dict)
    #: learning-curve points (``CurveHook.score``'s dicts) and the seconds they took (kept out
    #: of ``seconds``)
    curve: list[dict] = field(default_factory=list)
    curve_seconds: float = 0.0


class ConsistencyProbe:
    """How consistent a coupling is: one procedure for every coupling.

    ``coupling.probes`` noise points are followed through training. At ``coupling.diagnostics``
    moments spread evenly over the second half of training, each probe's current data partner
    is recorded once: for a bank coupling (online OT, global OT, reflow's fixed pairs) the
    probes are the bank's own first noise vectors and the partner is whatever the bank holds
    at that moment; for minibatch OT the probes are placed in one fresh OT batch; for
    independent pairs the partner is a random data point. ``target_var_ratio`` is the mean
    over probes of the variance of their partners across the moments, over the data's total
    variance: 0 for a pairing that does not change (a deterministic map, whichever coupling
    holds it), about 1 (n - 1 moments) / n for independent pairs. It is the variance of the
    regression target the model faces at a noise point late in training.
    """

    def __init__(self, method: Method, data: DataBundle, cfg: CouplingConfig, steps: int,
                 gens: Streams) -> None:
        self.coupling = method.coupling
        self.data = data.train
        self.cfg = cfg
        self.gen = gens["probes"]
        self.probes = data.source(cfg.probes, self.gen)
        n = cfg.diagnostics if self.coupling is not None and cfg.probes > 0 else 0
        # measured in the second half of training, where the coupling has settled
        self.at = {max(1, round(steps * (0.5 + 0.5 * (i + 1) / n))) for i in range(n)}
        self.targets: list[torch.Tensor] = []

    @torch.no_grad()
    def maybe_measure(self, step: int) -> None:
        if step not in self.at or self.coupling is None:
            return
        self.targets.append(self.coupling.probe_targets(self.probes, self.data, self.gen))

    def result(self) -> dict[str, float]:
        if len(self.targets) < 2:
            return {}
        t = torch.stack(self.targets).flatten(2).double()  # [draws, K, d]
        per_probe = t.var(0).sum(-1)  # total variance of each probe's targets
        data_var = self.data.flatten(1).double().var(0).sum()
        return {"target_var_ratio": float(per_probe.mean() / data_var),
                "draws": float(t.shape[0]), "probes": float(t.shape[1])}


def train(
    method: Method, data: DataBundle, cfg: TrainConfig, gens: Streams,
    on_step: Callable[[int, float], None] | None = None,
    coupling_cfg: CouplingConfig | None = None,
    checkpoint: Checkpointing | None = None, resume: dict | None = None,
    curve: CurveHook | None = None,
    on_log: Callable[[dict], None] | None = None,
) -> tuple[TrainResult, EMA | None]:
    """Train ``method`` on ``data.train`` for ``cfg.steps`` steps; returns the result and EMA.

    ``cfg.compile`` trains through ``torch.compile(method.net)`` (the plain module is put back
    afterwards, so checkpoints and NFE counting see the same network). With ``checkpoint`` the
    whole state (model, optimizer, schedule, EMA, random streams, batch position, coupling
    state such as the online-OT bank, logs) is saved every ``checkpoint.every`` steps and on
    Ctrl-C; ``resume`` (such a saved state) continues from it, and the result equals that of
    an uninterrupted run on the CPU (tested)."""
    plain = method.net
    if cfg.compile:
        method.net = torch.compile(plain)
    if world()[1] > 1:  # torchrun: split the network work, keep the global batch
        method.net = ShardedNet(method.net)
    try:
        return _train(method, data, cfg, gens, on_step, coupling_cfg, checkpoint, resume, curve,
                      on_log)
    finally:
        method.net = plain
        close = getattr(method.coupling, "close", None)
        if close is not None:
            close()


def _train(method: Method, data: DataBundle, cfg: TrainConfig, gens: Streams,
           on_step: Callable[[int, float], None] | None,
           coupling_cfg: CouplingConfig | None, checkpoint: Checkpointing | None,
           resume: dict | None, curve: CurveHook | None,
           on_log: Callable[[dict], None] | None) -> tuple[TrainResult, EMA | None]:
    device = data.train.device
    coupling_cfg = coupling_cfg or CouplingConfig()
    overlap = coupling_cfg.overlap == "on" or (coupling_cfg.overlap == "auto"
                                               and device.type == "cuda")
    prefetch = getattr(method.coupling, "prefetch", None) if overlap else None
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                if cfg.amp == "bf16" else contextlib.nullcontext())
    method.train()
    opt = torch.optim.AdamW(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    ema = EMA(method, cfg.ema) if cfg.ema > 0 else None
    teacher = None
    if method.wants_ema_teacher:  # e.g. shortcut models' bootstrap targets
        if ema is None:
            raise ValueError(f"{type(method).__name__} takes its targets from an EMA teacher: "
                             "train.ema must be > 0")
        teacher = ema.view(method.net)
        method.attach_teacher(teacher)
    meter = ComputeMeter(method.net, teacher)
    bs = cfg.batch_size
    if method.coupling is not None:
        bs = method.coupling.data_batch_size(cfg.batch_size)
    batches = batch_indices(data.train.shape[0], bs, gens["data"], device)
    probe = ConsistencyProbe(method, data, coupling_cfg, cfg.steps, gens)
    history: list[dict[str, float]] = []
    window: dict[str, float] = {}
    count = 0
    coupling_seconds = solver_seconds = 0.0
    last = float("nan")
    diag_seconds = elapsed = curve_seconds = 0.0
    points: list[dict] = []
    first = 0
    idx = None
    if resume is not None:
        method.load_state_dict(resume["model"])
        method.load_extra_state_dict(resume["extra"])
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        if ema is not None:
            ema.load_state_dict(resume["ema"])
        gens.load_state_dict(resume["streams"])
        batches.load_state_dict(resume["sampler"])
        probe.targets = [t.to(data.train.device) for t in resume["probe_targets"]]
        history, window, count = resume["history"], resume["window"], resume["count"]
        coupling_seconds, solver_seconds = resume["coupling_seconds"], resume["solver_seconds"]
        diag_seconds, elapsed, last = resume["diag_seconds"], resume["elapsed"], resume["last"]
        meter.count = ComputeCount.from_dict(resume.get("compute", {}))
        points, curve_seconds = resume.get("curve", []), resume.get("curve_seconds", 0.0)
        first = int(resume["step"])
        idx = resume["next_idx"]
        idx = None if idx is None else idx.to(data.train.device)

    def state(step: int, next_idx: torch.Tensor | None) -> dict:
        return {
            "step": step, "model": {k: v.detach().cpu() for k, v in method.state_dict().items()},
            "extra": method.extra_state_dict(), "opt": opt.state_dict(),
            "sched": sched.state_dict(), "ema": None if ema is None else ema.state_dict(),
            "streams": gens.state_dict(), "sampler": batches.state_dict(),
            "probe_targets": [t.cpu() for t in probe.targets], "history": history,
            "window": window, "count": count, "coupling_seconds": coupling_seconds,
            "solver_seconds": solver_seconds, "diag_seconds": diag_seconds,
            "elapsed": elapsed + time.perf_counter() - start, "last": last,
            "next_idx": None if next_idx is None else next_idx.cpu(),
            "compute": meter.count.as_dict(), "curve": points,
            "curve_seconds": curve_seconds,
        }

    def train_seconds(now: float) -> float:
        """Training wall-clock up to ``now``: diagnostics, checkpoints and curves left out."""
        return elapsed + now - start - diag_seconds - curve_seconds

    every = checkpoint.every if checkpoint is not None else 0
    start = time.perf_counter()
    if idx is None and first < cfg.steps:
        idx = next(batches)
    # FLOPs of one whole step, measured once, on the second step (the first may carry one-off
    # work such as a global OT solve) or the only one; not under torch.compile, whose graphs
    # the counter cannot see. Counting changes no number.
    measure_at = -1
    if meter.count.flops_per_step is None and not cfg.compile:
        measure_at = first + 1 if first == 0 and cfg.steps > 1 else first
    with _sigint_flag() as flag, meter.attached():
        for step in range(first, cfg.steps):
            with contextlib.ExitStack() as counter:  # the FLOP counter, first step only
                fc = (counter.enter_context(ComputeMeter.flop_counter()) if step == measure_at
                      else None)
                with autocast:
                    loss, logs = method.loss(Batch(data.train[idx], idx), gens)
                save_now = every > 0 and (step + 1) % every == 0 and step + 1 < cfg.steps
                if step + 1 < cfg.steps:
                    idx = next(batches)
                    # the next assignment is solved during this step (not across a checkpoint:
                    # its noise would be drawn before the state is saved)
                    if prefetch is not None and not save_now and not flag["stop"]:
                        prefetch(data.train[idx], idx, gens["noise"])
                last = float(loss.detach())
                if not math.isfinite(last):
                    raise TrainingDiverged(f"loss became {last} at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
            if fc is not None:
                meter.count.flops_per_step = float(fc.get_total_flops())
            meter.step_done()
            average_gradients(method.parameters())
            grad_norm = apply_update(method, opt, cfg, ema)
            lr = sched.get_last_lr()[0]
            sched.step()
            coupling_seconds += logs.get("coupling_wait_seconds",
                                         logs.get("solver_seconds", 0.0))
            solver_seconds += logs.get("solver_seconds", 0.0)
            for k, v in {"loss": last, "grad_norm": grad_norm, "lr": lr, **logs}.items():
                window[k] = window.get(k, 0.0) + float(v)
            count += 1
            diag_start = time.perf_counter()  # diagnostics are excluded from the training time
            if count == cfg.log_every or step == cfg.steps - 1:
                row = {"step": step + 1, **{k: v / count for k, v in window.items()}}
                bank_cost = getattr(method.coupling, "bank_cost", None)
                if bank_cost is not None:  # online OT: mean cost of the whole bank over time
                    row["bank_cost"] = bank_cost(data.train)
                history.append(row)
                if on_log is not None:
                    on_log({**row, "steps": cfg.steps,
                            "train_seconds": train_seconds(time.perf_counter())})
                window, count = {}, 0
            probe.maybe_measure(step + 1)
            diag_seconds += time.perf_counter() - diag_start
            if curve is not None and step + 1 in curve.at and is_main():  # rank 0 records
                curve_start = time.perf_counter()
                seconds_so_far = train_seconds(curve_start)
                with (ema.applied(method) if ema is not None else contextlib.nullcontext(),
                      meter.paused()):
                    method.eval()
                    points.append(curve.score(step + 1, seconds_so_far, meter.count.flops))
                    method.train()
                curve_seconds += time.perf_counter() - curve_start
            if on_step is not None:
                on_step(step + 1, last)
            if checkpoint is not None and step + 1 < cfg.steps and (save_now or flag["stop"]):
                ckpt_start = time.perf_counter()
                checkpoint.save(state(step + 1, idx))
                diag_seconds += time.perf_counter() - ckpt_start
                if flag["stop"]:
                    raise TrainingInterrupted(
                        f"interrupted after step {step + 1}; state saved to {checkpoint.path}")
            elif flag["stop"]:
                raise KeyboardInterrupt
    seconds = train_seconds(time.perf_counter())
    method.eval()
    result = TrainResult(cfg.steps, seconds, coupling_seconds, last, history,
                         solver_seconds=solver_seconds, compute=meter.count.as_dict())
    result.diagnostics = {**probe.result(), "diagnostics_seconds": diag_seconds}
    result.curve, result.curve_seconds = points, curve_seconds
    return result, ema
