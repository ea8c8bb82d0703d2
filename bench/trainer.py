"""The one training loop: AdamW, warm-up + cosine schedule, grad clipping, EMA, NaN guard.

Methods only provide ``loss``; everything that touches the optimizer lives here.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass, field, fields
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
from bench.stopping import StopFlag, sigint_stop
from bench.vocab import ema_decay


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
        d = ema_decay(self.decay, self.n)
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


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))


@contextlib.contextmanager
def training_net(method: Method, cfg: TrainConfig, distributed: bool = True) -> Iterator[None]:
    """The network as training runs it: ``torch.compile(method.net)`` with ``cfg.compile``,
    split across the ranks under torchrun (the global batch is kept) unless ``distributed``
    is off (a step this process times alone); the plain module is put back afterwards."""
    plain = method.net
    if cfg.compile:
        method.net = torch.compile(plain)
    if distributed and world()[1] > 1:  # torchrun: split the network work, keep the batch
        method.net = ShardedNet(method.net)
    try:
        yield
    finally:
        method.net = plain


@dataclass
class StepResult:
    """What one ``Trainer.step`` reports: the loss, the method's logs, the gradient norm
    before clipping and the learning rate the step used."""

    loss: float
    logs: dict[str, float]
    grad_norm: float
    lr: float


#: ``timer(part)``: a context manager around each part of a step ("forward", "backward",
#: "optimizer"), e.g. bench perf's synchronised clock
PartTimer = Callable[[str], contextlib.AbstractContextManager]


def _untimed(part: str) -> contextlib.AbstractContextManager:  # noqa: ARG001
    return contextlib.nullcontext()


class Trainer:
    """The one training step, shared by ``train``, ``bench estimate`` and ``bench perf``:
    forward and loss (under bf16 autocast with ``cfg.amp``), the NaN guard, backward, gradient
    averaging across ranks, clipping, AdamW, the warm-up + cosine schedule and the EMA. A method
    that takes its targets from an EMA teacher gets the teacher attached here. Wrap the steps in
    ``training_net`` for ``cfg.compile`` (``train`` does)."""

    def __init__(self, method: Method, cfg: TrainConfig, device_type: str,
                 distributed: bool = True) -> None:
        #: ``distributed`` off: no gradient all-reduce under torchrun (the estimate and perf
        #: time a step on rank 0 alone; a collective would wait for the other ranks forever)
        self.method, self.cfg, self.distributed = method, cfg, distributed
        self.autocast = (torch.autocast(device_type=device_type, dtype=torch.bfloat16)
                         if cfg.amp == "bf16" else contextlib.nullcontext())
        method.train()
        self.opt = torch.optim.AdamW(method.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        self.ema = EMA(method, cfg.ema) if cfg.ema > 0 else None
        self.teacher: nn.Module | None = None
        if method.wants_ema_teacher:  # e.g. shortcut models' bootstrap targets
            if self.ema is None:
                raise ValueError(f"{type(method).__name__} takes its targets from an EMA "
                                 "teacher: train.ema must be > 0")
            self.teacher = self.ema.view(method.net)
            method.attach_teacher(self.teacher)

    def step(self, batch: Batch, gens: Streams,
             before_backward: Callable[[], None] | None = None,
             timer: PartTimer = _untimed) -> StepResult:
        """One training step on ``batch``. ``before_backward`` runs between the forward and
        backward passes (the loop draws the next batch there and starts its pairing, which
        then overlaps the backward pass)."""
        method = self.method
        with timer("forward"), self.autocast:
            loss, logs = method.loss(batch, gens)
        if before_backward is not None:
            before_backward()
        last = float(loss.detach())
        if not math.isfinite(last):
            raise TrainingDiverged(f"loss became {last} at step {self.sched.last_epoch}")
        with timer("backward"):
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        with timer("optimizer"):
            if self.distributed:
                average_gradients(method.parameters())
            norm = nn.utils.clip_grad_norm_(
                method.parameters(), self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf"))
            self.opt.step()
            if self.ema is not None:
                self.ema.update(method)
            lr = self.sched.get_last_lr()[0]
            self.sched.step()
        return StepResult(last, logs, float(norm), lr)

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


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
    try:
        with training_net(method, cfg):
            loop = _Loop(method, data, cfg, gens, coupling_cfg or CouplingConfig(), checkpoint,
                         curve, on_step, on_log)
            return loop.run(resume)
    finally:
        if method.coupling is not None:
            method.coupling.close()


@dataclass
class _Progress:
    """The loop's resumable bookkeeping, saved in the training state under these names."""

    history: list[dict[str, float]] = field(default_factory=list)
    window: dict[str, float] = field(default_factory=dict)
    count: int = 0
    coupling_seconds: float = 0.0
    solver_seconds: float = 0.0
    #: seconds of diagnostics and checkpoints, left out of the training time
    diag_seconds: float = 0.0
    #: training seconds before this (resumed) process
    elapsed: float = 0.0
    last: float = float("nan")
    curve: list[dict] = field(default_factory=list)
    curve_seconds: float = 0.0

    @classmethod
    def from_state(cls, state: dict) -> _Progress:
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Loop:
    """``train``'s loop: ``Trainer.step`` per batch, then the side jobs (the history log, the
    consistency probe, learning-curve points, progress, checkpoints and stopping), each a
    method called after the step."""

    def __init__(self, method: Method, data: DataBundle, cfg: TrainConfig, gens: Streams,
                 coupling_cfg: CouplingConfig, checkpoint: Checkpointing | None,
                 curve: CurveHook | None, on_step: Callable[[int, float], None] | None,
                 on_log: Callable[[dict], None] | None) -> None:
        device = data.train.device
        self.method, self.data, self.cfg, self.gens = method, data, cfg, gens
        self.checkpoint, self.curve, self.on_step, self.on_log = checkpoint, curve, on_step, on_log
        self.overlap = method.coupling is not None and (
            coupling_cfg.overlap == "on" or (coupling_cfg.overlap == "auto"
                                             and device.type == "cuda"))
        self.trainer = Trainer(method, cfg, device.type)
        self.meter = ComputeMeter(method.net, self.trainer.teacher)
        bs = cfg.batch_size
        if method.coupling is not None:
            bs = method.coupling.data_batch_size(cfg.batch_size)
        self.batches = batch_indices(data.train.shape[0], bs, gens["data"], device)
        self.probe = ConsistencyProbe(method, data, coupling_cfg, cfg.steps, gens)
        self.p = _Progress()
        self.idx: torch.Tensor | None = None  # the next batch's rows
        self.start = 0.0

    def load(self, resume: dict) -> int:
        """Continue from a saved state; returns the steps it had done."""
        device = self.data.train.device
        self.method.load_state_dict(resume["model"])
        self.method.load_extra_state_dict(resume["extra"])
        self.trainer.load_state_dict(resume)
        self.gens.load_state_dict(resume["streams"])
        self.batches.load_state_dict(resume["sampler"])
        self.probe.targets = [t.to(device) for t in resume["probe_targets"]]
        self.p = _Progress.from_state(resume)
        self.meter.count = ComputeCount.from_dict(resume.get("compute", {}))
        idx = resume["next_idx"]
        self.idx = None if idx is None else idx.to(device)
        return int(resume["step"])

    def state(self, step: int) -> dict:
        """The whole training state after ``step`` steps (``resume`` takes it back)."""
        return {
            "step": step,
            "model": {k: v.detach().cpu() for k, v in self.method.state_dict().items()},
            "extra": self.method.extra_state_dict(), **self.trainer.state_dict(),
            "streams": self.gens.state_dict(), "sampler": self.batches.state_dict(),
            "probe_targets": [t.cpu() for t in self.probe.targets], **self.p.state_dict(),
            "elapsed": self.p.elapsed + time.perf_counter() - self.start,
            "next_idx": None if self.idx is None else self.idx.cpu(),
            "compute": self.meter.count.as_dict(),
        }

    def train_seconds(self, now: float) -> float:
        """Training wall-clock up to ``now``: diagnostics, checkpoints and curves left out."""
        return self.p.elapsed + now - self.start - self.p.diag_seconds - self.p.curve_seconds

    def run(self, resume: dict | None) -> tuple[TrainResult, EMA | None]:
        cfg, meter = self.cfg, self.meter
        first = self.load(resume) if resume is not None else 0
        every = self.checkpoint.every if self.checkpoint is not None else 0
        self.start = time.perf_counter()
        if self.idx is None and first < cfg.steps:
            self.idx = next(self.batches)
        # FLOPs of one whole step, measured once, on the second step (the first may carry
        # one-off work such as a global OT solve) or the only one; not under torch.compile,
        # whose graphs the counter cannot see. Counting changes no number.
        measure_at = -1
        if meter.count.flops_per_step is None and not cfg.compile:
            measure_at = first + 1 if first == 0 and cfg.steps > 1 else first
        with sigint_stop() as stop, meter.attached():
            for step in range(first, cfg.steps):
                idx = self.idx
                save_now = every > 0 and (step + 1) % every == 0 and step + 1 < cfg.steps
                with (ComputeMeter.flop_counter() if step == measure_at
                      else contextlib.nullcontext()) as fc:
                    out = self.trainer.step(
                        Batch(self.data.train[idx], idx), self.gens,
                        before_backward=functools.partial(self.draw_next, step, save_now, stop))
                if fc is not None:
                    meter.count.flops_per_step = float(fc.get_total_flops())
                meter.step_done()
                self.after_step(step + 1, out, save_now, stop)
        seconds = self.train_seconds(time.perf_counter())
        self.method.eval()
        p = self.p
        result = TrainResult(cfg.steps, seconds, p.coupling_seconds, p.last, p.history,
                             solver_seconds=p.solver_seconds, compute=meter.count.as_dict())
        result.diagnostics = {**self.probe.result(), "diagnostics_seconds": p.diag_seconds}
        result.curve, result.curve_seconds = p.curve, p.curve_seconds
        return result, self.trainer.ema

    def draw_next(self, step: int, save_now: bool, stop: StopFlag) -> None:
        """Between this step's forward and backward passes: draw the next batch, and let the
        coupling start pairing it (not across a checkpoint: its noise would be drawn before the
        state is saved)."""
        if step + 1 >= self.cfg.steps:
            return
        self.idx = idx = next(self.batches)
        if self.overlap and not save_now and not stop.requested:
            self.method.coupling.prefetch(self.data.train[idx], idx, self.gens["noise"])

    def after_step(self, done: int, out: StepResult, save_now: bool, stop: StopFlag) -> None:
        """The side jobs after ``done`` steps, in order."""
        p = self.p
        logs = out.logs
        p.last = out.loss
        p.coupling_seconds += logs.get("coupling_wait_seconds", logs.get("solver_seconds", 0.0))
        p.solver_seconds += logs.get("solver_seconds", 0.0)
        for k, v in {"loss": out.loss, "grad_norm": out.grad_norm, "lr": out.lr, **logs}.items():
            p.window[k] = p.window.get(k, 0.0) + float(v)
        p.count += 1
        diag_start = time.perf_counter()  # diagnostics are excluded from the training time
        self.log(done)
        self.probe.maybe_measure(done)
        p.diag_seconds += time.perf_counter() - diag_start
        if self.curve is not None and done in self.curve.at and is_main():  # rank 0 records
            self.score(done)
        if self.on_step is not None:
            self.on_step(done, p.last)
        self.save_or_stop(done, save_now, stop)

    def log(self, done: int) -> None:
        """A history row per ``log_every`` steps (and at the end): the window's means and the
        coupling's own statistics (online OT: the bank's cost)."""
        p, cfg = self.p, self.cfg
        if p.count != cfg.log_every and done != cfg.steps:
            return
        row = {"step": done, **{k: v / p.count for k, v in p.window.items()}}
        if self.method.coupling is not None:
            row.update(self.method.coupling.stats(self.data.train))
        p.history.append(row)
        if self.on_log is not None:
            self.on_log({**row, "steps": cfg.steps,
                         "train_seconds": self.train_seconds(time.perf_counter())})
        p.window, p.count = {}, 0

    def score(self, done: int) -> None:
        """A learning-curve point, with the EMA weights, outside the training time and
        compute."""
        assert self.curve is not None
        ema = self.trainer.ema
        curve_start = time.perf_counter()
        seconds_so_far = self.train_seconds(curve_start)
        with (ema.applied(self.method) if ema is not None else contextlib.nullcontext(),
              self.meter.paused()):
            self.method.eval()
            self.p.curve.append(self.curve.score(done, seconds_so_far, self.meter.count.flops))
            self.method.train()
        self.p.curve_seconds += time.perf_counter() - curve_start

    def save_or_stop(self, done: int, save_now: bool, stop: StopFlag) -> None:
        """Checkpoint every ``checkpoint.every`` steps; on a stop request, save and raise."""
        ckpt = self.checkpoint
        if ckpt is not None and done < self.cfg.steps and (save_now or stop.requested):
            ckpt_start = time.perf_counter()
            ckpt.save(self.state(done))
            self.p.diag_seconds += time.perf_counter() - ckpt_start
            if stop.requested:
                raise TrainingInterrupted(
                    f"interrupted after step {done}; state saved to {ckpt.path}")
        elif stop.requested:
            raise KeyboardInterrupt
