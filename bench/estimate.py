"""A plan's wall-clock, estimated from a few measured steps on this device.

For each dataset and training recipe one training step is timed at a small batch (after one
untimed step) and scaled linearly to the configured batch; one sampling call of each method is
timed and scaled to ``eval.n_samples``; Inception FID, when asked for, is charged per image at
the speed measured on a few images (reference statistics once per dataset). Only the runs
without an ok record count (a resumed suite skips the others), and given ``steps_done`` (the
runner passes its checkpoint store's) only the steps still to train: none where the recipe's
checkpoint exists (another sampler of it is done), the rest where a saved partial state will
resume; a bank method's evaluation counts twice (fresh and bank noise). It
is an estimate: it leaves out the coupling's solver at full batch size (an online-OT step is
timed as one minibatch assignment), global OT's one-off solve, a reflow teacher's pair
generation, the domain classifier's one-off training, the floor's metrics, learning-curve
scoring and the sampling-time measurement; an untrained network's adaptive-solver NFE is not a
trained one's; and scaling linearly from a small batch overestimates devices that run a small
batch no faster than a large one (GPUs).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bench.config import Config
from bench.couplings import GlobalOT, Independent, MinibatchOT, OnlineOT
from bench.datasets.base import DataBundle, dataset_config, load_dataset
from bench.methods.base import Batch, Method
from bench.metrics.extractors import to_uint8
from bench.metrics.inception import FAST_NAME, InceptionWeightsMissing
from bench.models import build_method
from bench.perf_fid import images_per_second
from bench.planner import Plan, RunSpec, by_recipe
from bench.registry import METHODS
from bench.sampling import generate, sync
from bench.seeding import Streams
from bench.trainer import Trainer, batch_indices, training_net

#: the batch the estimate measures at (scaled linearly to the configured one)
PROBE_BATCH = 16


@dataclass
class Estimate:
    train_seconds: float = 0.0
    sample_seconds: float = 0.0
    metric_seconds: float = 0.0
    lines: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.train_seconds + self.sample_seconds + self.metric_seconds


def human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _step_seconds(name: str, data: DataBundle, cfg: Config, device: torch.device) -> float:
    """One training step of ``name`` at PROBE_BATCH (after an untimed one), scaled to the
    configured batch. A method built on a teacher is timed as its teacher's recipe (the same
    network and loss), with the training's own step (``Trainer.step``: AMP, compile, schedule
    and EMA as configured)."""
    b = min(PROBE_BATCH, cfg.train.batch_size, data.train.shape[0])
    small = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=b))
    teacher = METHODS.entry(name).meta.get("teacher")
    method = build_method(teacher or name, data, small, device, 0)
    if isinstance(method.coupling, GlobalOT):  # its steps are lookups; its one-off solve is
        method.coupling = Independent(data.source)  # not timed here (see the docstring)
    elif isinstance(method.coupling, OnlineOT):  # a step costs one batch assignment, like
        method.coupling = MinibatchOT(data.source, cfg.coupling.solver)  # minibatch OT's:
        # timing it so spares building the whole bank (gigabytes on CIFAR-10)
    gens = Streams(0, device)
    # this process alone (rank 0 under torchrun); attaches an EMA teacher if wanted
    trainer = Trainer(method, small.train, device.type, distributed=False)
    bs = method.coupling.data_batch_size(b) if method.coupling is not None else b
    batches = batch_indices(data.train.shape[0], bs, gens["data"], device)
    seconds = 0.0
    with training_net(method, small.train, distributed=False):
        for _ in range(2):  # the first is a warm-up (and compiles, with train.compile)
            idx = next(batches)
            sync(device)
            start = time.perf_counter()
            trainer.step(Batch(data.train[idx], idx), gens)
            sync(device)
            seconds = time.perf_counter() - start
    return seconds * cfg.train.batch_size / b


@torch.no_grad()
def _forward_seconds(method: Method, x0: torch.Tensor) -> float:
    """One network call on the batch ``x0`` (after an untimed one), with every time input."""
    method.eval()
    times = [torch.full((x0.shape[0],), 0.5, device=x0.device)] * method.net.time_inputs
    method.net(x0, *times)
    sync(x0.device)
    start = time.perf_counter()
    method.net(x0, *times)
    sync(x0.device)
    return time.perf_counter() - start


def estimate(plan: Plan, device: torch.device,
             done: set[tuple[str, str, int]] | frozenset = frozenset(),
             steps_done: Callable[[RunSpec, int], int] | None = None) -> Estimate:
    """The wall-clock of the plan's runs whose keys are not in ``done`` (runs that already
    have an ok record, which a resumed suite skips); a recipe with nothing left is not timed.
    ``steps_done(spec, steps)`` (e.g. ``CheckpointStore.steps_done``) says how many of a
    recipe's steps are trained already (a finished checkpoint or a partial state)."""
    cfg, est = plan.cfg, Estimate()
    if skipped := sum(s.key in done for s in plan.runs()):
        est.lines.append(f"{skipped} run(s) already recorded are not counted")
    for dataset in plan.datasets:
        todo = [s for s in plan.runs(dataset) if s.key not in done]
        if not todo:
            continue
        data = load_dataset(cfg, dataset, cfg.seeds[0], device)
        dcfg = dataset_config(cfg, dataset)
        scored = 0
        for specs in by_recipe(todo):  # one recipe, every seed it still has to train
            spec, by_seed = specs[0], {s.seed: s for s in specs}
            steps, seeds = cfg.train.steps, len(by_seed)
            left = sum(steps - (steps_done(s, steps) if steps_done else 0)
                       for s in by_seed.values())
            what = f"{steps} steps × {seeds} seed(s)" + (
                f", {left} of {steps * seeds} left to train" if left < steps * seeds else "")
            if left:
                per_step = _step_seconds(spec.method, data, dcfg, device)
                est.train_seconds += left * per_step
                est.lines.append(f"{dataset} · {spec.recipe}: {what} at {per_step:.3g} s/step")
            else:
                est.lines.append(f"{dataset} · {spec.recipe}: {what}")
            x0 = data.source(min(PROBE_BATCH, cfg.eval.n_samples), Streams(0, device)["eval"])
            per_forward = _forward_seconds(build_method(spec.method, data, dcfg, device, 0),
                                           x0) / x0.shape[0]
            for method_name in dict.fromkeys(s.method for s in specs):
                runs = sum(s.method == method_name for s in specs)
                method = build_method(method_name, data, dcfg, device, 0).eval()
                nfe = method.nfe_hint()
                if nfe is None:  # adaptive: count one (untrained) sample's evaluations
                    nfe = generate(method, x0[:1], 1)[1]
                # a bank method samples twice: fresh noise, then its bank (eval.bank_gap)
                bank = method.coupling is not None and method.coupling.has_bank
                times = 2 if cfg.eval.bank_gap and bank else 1
                est.sample_seconds += times * runs * cfg.eval.n_samples * nfe * per_forward
                scored += runs
        if "fid" in cfg.eval.metrics:
            est.metric_seconds += _fid_seconds(data, cfg, scored, est)
    return est


def _fid_seconds(data: DataBundle, cfg: Config, scored: int, est: Estimate) -> float:
    """Inception features of every scored sample set plus the reference set once."""
    try:
        rate = images_per_second(to_uint8(data.eval[:4].cpu()), cfg.eval.inception_weights)
    except InceptionWeightsMissing:
        est.lines.append("Inception FID: weights not found, its cost is not estimated")
        return 0.0
    n_ref = data.train.shape[0] if cfg.eval.reference == "train" else data.eval.shape[0]
    images = scored * cfg.eval.n_samples + min(n_ref, 50_000)
    est.lines.append(f"Inception FID ({FAST_NAME}): {images} images at {rate:.3g} images/s")
    return images / rate
