"""Trained models: build a registered method, train its recipe or load its checkpoint, and
restore a method from a checkpoint's EMA weights.

``Models`` keeps the recipes trained or loaded in this session, so methods sharing a recipe
(the ``fm-euler`` family) train once, and a teacher (reflow's ``fm``) is trained once and
shared with the teacher's own runs, even with ``--force``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch

from bench.checkpoints import CheckpointMismatch, CheckpointStore, Trained
from bench.claims import Claims
from bench.config import Config, curve_steps
from bench.datasets.base import DataBundle
from bench.distributed import is_main
from bench.env import now
from bench.evaluate import curve_bank_scores, curve_scores
from bench.methods.base import BuildContext, Method
from bench.nets import n_params
from bench.planner import Plan, RunSpec
from bench.progress import Reporter, SilentReporter
from bench.registry import METHODS
from bench.results import append_json_line
from bench.seeding import Streams, init_scope, stream_seed
from bench.trainer import EMA, Checkpointing, CurveHook, train


def build_method(name: str, data: DataBundle, cfg: Config, device: torch.device,
                 seed: int) -> Method:
    """Build a registered method with deterministic initialisation from the ``init`` stream."""
    factory = METHODS.get(name)
    with init_scope(stream_seed(seed, "init"), [device]):
        method = factory(BuildContext(data=data, cfg=cfg, device=device))
    if not isinstance(method, Method):
        raise TypeError(f"method factory {name!r} returned {type(method).__name__}, not a Method")
    if device.type == "cuda" and data.kind == "images":  # NHWC convolutions on GPUs
        method = method.to(memory_format=torch.channels_last)
    return method.to(device)


def net_signature(method: Method) -> dict[str, Any]:
    """What the code builds into a network beyond its weights and the config (a UNet's time
    scale): saved with a checkpoint and its partial state, and compared when they are loaded,
    so that weights trained under another construction are never reused or resumed."""
    return {"time_scale": getattr(method.net, "time_scale", None)}


def restore(name: str, data: DataBundle, cfg: Config, device: torch.device, seed: int,
            state: dict[str, Any]) -> Method:
    """Build ``name`` and load a checkpoint's EMA weights (the raw weights when trained
    without EMA) and its extra state, in eval mode. A checkpoint whose network signature
    differs from the one built now is refused (one saved before signatures is accepted)."""
    method = build_method(name, data, cfg, device, seed)
    saved, built = state.get("net"), net_signature(method)
    if saved is not None and saved != built:
        raise CheckpointMismatch(f"the checkpoint of {name} was trained with network "
                                 f"{saved}, the code builds {built}: retrain it (--force)")
    method.load_state_dict(state["ema"] or state["model"])
    method.load_extra_state_dict(state["extra"])
    return method.eval()


def ema_weights(method: Method, ema: EMA | None) -> dict[str, torch.Tensor] | None:
    if ema is None:
        return None
    with ema.applied(method):
        return {k: v.detach().cpu().clone() for k, v in method.state_dict().items()}


def total_compute(own: dict[str, float], parts: dict[str, Any]) -> dict[str, Any]:
    """The recipe's own counted compute, the parts it built on (a teacher's training, the
    pairs it generated) and ``total_flops`` over all of them."""
    return {**own, **parts, "total_flops": add_flops(own.get("flops"), parts_flops(parts))}


def parts_flops(parts: dict[str, Any]) -> float | None:
    """FLOPs of what a recipe built on: a teacher's training and the pairs it generated."""
    teacher = parts["teacher"].get("total_flops") if "teacher" in parts else 0.0
    return add_flops(teacher, parts.get("pairs", {}).get("pairs_flops", 0.0))


def add_flops(*values: float | None) -> float | None:
    """A sum of counted FLOPs; None when a part was not counted (under torch.compile), so an
    uncounted part never reads as a smaller total."""
    return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]


class Models:
    """Trains or loads the checkpoint of each planned recipe, at most once per session."""

    def __init__(self, plan: Plan, store: CheckpointStore, device: torch.device, *,
                 force: bool = False, reporter: Reporter | None = None,
                 claims: Claims | None = None) -> None:
        self.plan, self.store, self.device, self.force = plan, store, device, force
        self.claims = claims
        self.reporter: Reporter = reporter or SilentReporter()
        self._session: dict[str, Trained] = {}

    def clear(self) -> None:
        """Forget this session's checkpoints (they are per dataset and seed: bounded memory)."""
        self._session.clear()

    def get(self, spec: RunSpec, data: DataBundle,
            siblings: list[RunSpec] | None = None) -> Trained:
        """The trained recipe of ``spec``: from this session, from its checkpoint (unless
        ``force``), or trained now (resuming a partial state of the same config).
        ``siblings``: the planned methods of the recipe, scored on the learning curve (None:
        ``spec`` alone; empty: no curve)."""
        key = str(self.store.path(spec))
        if key in self._session:
            return dataclasses.replace(self._session[key], reused=True)
        trained = None if self.force else self.store.load(spec)
        if trained is not None and curve_steps(self.plan.cfg.eval, self.plan.cfg.train.steps) \
                and not trained.state["train"].get("curve"):
            self.reporter.log(f"{trained.path}: trained without a learning curve; its runs get "
                              "none (eval.curve is not part of the recipe; --force retrains)")
        if trained is None:
            trained = self._train(spec, data, [spec] if siblings is None else siblings)
        self._session[key] = trained
        return trained

    def restore(self, spec: RunSpec, data: DataBundle, trained: Trained) -> Method:
        return restore(spec.method, data, self.plan.cfg, self.device, spec.seed, trained.state)

    def _curve(self, method: Method, specs: list[RunSpec], data: DataBundle,
               seconds_before: float, flops_before: float | None) -> CurveHook | None:
        """Scoring of the recipe's planned methods during training (``eval.curve``); every
        sampler variant shares the network being trained."""
        cfg = self.plan.cfg
        at = curve_steps(cfg.eval, cfg.train.steps)
        if not at or not specs:
            return None
        variants = {}
        for s in specs:
            variants[s.method] = build_method(s.method, data, cfg, self.device, s.seed)
            variants[s.method].net = method.net
        seed = specs[0].seed

        def score(step: int, seconds: float, flops: float | None) -> dict[str, Any]:
            scores, n = curve_scores(variants, data, cfg.eval, seed, self.device)
            point = {"step": step, "train_seconds": seconds_before + seconds,
                     "train_flops": add_flops(flops_before, flops), "samples": n,
                     "metrics": scores}
            bank = curve_bank_scores(variants, method.coupling, data, cfg.eval, seed,
                                     self.device)
            return {**point, "bank": bank} if bank else point

        return CurveHook(at, score)

    def _from_teacher(self, spec: RunSpec, method: Method, data: DataBundle, gens: Streams,
                      label: str) -> dict[str, dict[str, Any]]:
        """A distilled method's start (e.g. reflow): its teacher's checkpoint (trained once,
        under the teacher's own claim, and shared with the teacher's own runs) and
        ``prepare``; returns their seconds and counted compute."""
        t_spec = self.plan.spec(spec.teacher, spec.dataset, spec.seed)
        planned = [s for s in self.plan.runs(spec.dataset, spec.seed)
                   if s.recipe_hash == t_spec.recipe_hash]
        with (self.claims.hold(self.store.path(t_spec).stem) if self.claims is not None
              else contextlib.nullcontext()):
            t_trained = self.get(t_spec, data, planned)
        teacher = self.restore(t_spec, data, t_trained)
        self.reporter.log(f"{label}: starting from {spec.teacher}")
        prep = method.prepare(teacher, data.train.shape[0], gens,
                              partial=self.store.pairs_path(spec))
        return {"breakdown": {"teacher_seconds": t_trained.state["train"]["seconds"],
                              "pairs_seconds": prep.pop("pairs_seconds")},
                "compute": {"teacher": t_trained.state["train"].get("compute", {}),
                            "pairs": prep}}

    def _train(self, spec: RunSpec, data: DataBundle, siblings: list[RunSpec]) -> Trained:
        cfg = self.plan.cfg
        label = f"{data.name} · {spec.recipe} · seed {spec.seed}"
        method = build_method(spec.method, data, cfg, self.device, spec.seed)
        gens = Streams(spec.seed, self.device)
        resume = None
        if not self.force:
            resume, message = self.store.load_partial(spec, net_signature(method))
            if message:
                self.reporter.log(f"{label}: {message}")
        # a resumed student has its weights and pairs in the saved state: only their cost
        # is carried over, the teacher's pairs are not generated again
        prepared = (resume or {}).get("meta", {}).get("prepared") or (
            self._from_teacher(spec, method, data, gens, label) if spec.teacher else {})
        breakdown, compute = dict(prepared.get("breakdown", {})), dict(prepared.get("compute", {}))
        self.reporter.start(label, cfg.train.steps)
        ckpt = Checkpointing(self.store.partial_path(spec), cfg.checkpoint_every,
                             {"recipe_hash": spec.recipe_hash, "prepared": prepared,
                              "net": net_signature(method)})
        before = parts_flops(compute)
        curve = self._curve(method, siblings, data, sum(breakdown.values()), before)
        stats = self.store.stats_path(spec)
        result, ema = train(method, data, cfg.train, gens, on_step=self.reporter.advance,
                            coupling_cfg=cfg.coupling, checkpoint=ckpt, resume=resume,
                            curve=curve, on_log=lambda row: is_main() and append_json_line(
                                stats, {**row, "time": now()}))
        if breakdown:
            breakdown["student_seconds"] = result.seconds
            result.seconds = sum(breakdown.values())
            result.breakdown = breakdown
        result.compute = total_compute(result.compute, compute)
        state = {
            "recipe_hash": spec.recipe_hash,
            "model": {k: v.detach().cpu() for k, v in method.state_dict().items()},
            "ema": ema_weights(method, ema),
            "extra": method.extra_state_dict(),
            "train": dataclasses.asdict(result),
            "net_params": n_params(method.net), "net": net_signature(method),
            # enough to rebuild the model without the records file (bench.load)
            "method": spec.method, "recipe": spec.recipe, "dataset": spec.dataset,
            "seed": spec.seed, "config": spec.config,
        }
        if not is_main():  # under torchrun every rank holds the same weights; rank 0 writes
            return Trained(self.store.path(spec), state, reused=False)
        return self.store.save(spec, state)
