"""Runs a plan: for every (dataset, seed), load the data, score the floor, train (or load) each
recipe once, evaluate every method from it and write one record per run.

A failure in one run is recorded as ``failed`` with its reason and the others go on. Runs
whose ``ok`` record already exists (same config hash and seed) are skipped unless ``force``.
Each recipe is trained, evaluated and recorded under its claim (``claims``), so two processes
on one results folder never both do it: the second waits, then skips what the first recorded.
The pieces live elsewhere: the plan (``planner``), checkpoints (``checkpoints``), training and
restoring (``models``), sampling and metrics (``evaluate``), records (``results``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bench.checkpoints import CHECKPOINT_DIR, CheckpointStore, Trained
from bench.claims import Claims
from bench.config import Config
from bench.datasets.base import DataBundle, load_dataset
from bench.distributed import barrier, is_main
from bench.evaluate import bank_gap, curve_floor, draw_samples, metric_vocabulary, score
from bench.io import DiskFull
from bench.jobs import floor_due
from bench.models import Models
from bench.planner import Plan, RunSpec, WorkUnit, by_recipe
from bench.progress import Reporter, SilentReporter
from bench.results import RecordWriter, RunRecord, ok_keys
from bench.vocab import ema_decay

Done = set[tuple[str, str, int]]


class Runner:
    def __init__(self, cfg: Config, out: str | Path, device: torch.device, *,
                 config_file: str | None = None, force: bool = False,
                 reporter: Reporter | None = None, sweep: dict[str, Any] | None = None) -> None:
        self.plan = Plan.of(cfg, sweep)
        self.out, self.device, self.force = Path(out), device, force
        self.reporter: Reporter = reporter or SilentReporter()
        self.records = RecordWriter(self.out, suite=cfg.name, device=device,
                                    config_file=config_file, reporter=self.reporter)
        self.claims = Claims(self.out, log=lambda m: self.reporter.log(m))
        self.models = Models(self.plan, CheckpointStore(self.out / CHECKPOINT_DIR), device,
                             force=force, reporter=self.reporter, claims=self.claims)

    def set_reporter(self, reporter: Reporter) -> None:
        self.reporter = self.records.reporter = self.models.reporter = reporter

    def done(self) -> Done:
        return set() if self.force else ok_keys(self.records.path)

    def run(self, deferred: list[WorkUnit] | None = None) -> list[RunRecord]:
        """Units whose recipe another process holds are waited for last (``run_held``), or
        given to ``deferred`` (a sweep passes them to ``run_held`` after its other points)."""
        done = self.done()
        barrier()  # under torchrun: every rank plans from the same records
        later: list[WorkUnit] = [] if deferred is None else deferred
        out = [r for u in self.plan.units() for r in self.run_unit(u, done, later)]
        return out if deferred is not None else out + self.run_held(later, out)

    def run_held(self, units: list[WorkUnit], tried: list[RunRecord]) -> list[RunRecord]:
        """Deferred units, waiting for their claims; what ``tried`` recorded (failed too) stays."""
        done = self.done() | {r.key for r in tried}
        return [r for u in units for r in self.run_unit(u, done)]

    def run_unit(self, unit: WorkUnit, done: Done | None = None,
                 deferred: list[WorkUnit] | None = None) -> list[RunRecord]:
        """The runs of one (dataset, seed) with no ok record yet. Recipes another process holds
        come last: waited for, or with ``deferred`` given, left for later (unit appended)."""
        done = self.done() if done is None else done
        self.models.clear()
        todo = [s for s in self.plan.runs(unit.dataset, unit.seed) if s.key not in done]
        floor = self.plan.floor(unit.dataset, unit.seed)
        want_floor = floor_due(self.plan, floor, done, self.records.path)
        if skipped := len(self.plan.methods) - len(todo):
            self.reporter.log(f"{unit.label}: {skipped} run(s) already recorded, skipped")
        if not todo and not want_floor:
            return []
        recs, data = [self.records.new(s) for s in todo], None
        with guarded(self.records, recs, "loading the data"):  # fails every run on it
            data = load_dataset(self.plan.cfg, unit.dataset, unit.seed, self.device)
        if data is None:
            return recs
        out = []
        if want_floor:
            with self.claims.hold(floor.run_id):  # another process may have scored it
                if floor_due(self.plan, floor, self.done(), self.records.path):
                    out.append(self._floor(floor, data))
        held = [specs for specs in by_recipe(todo)
                if not self._claimed_recipe(specs, data, out, wait=False)]
        if held and deferred is not None:
            deferred.append(unit)
            return out
        for specs in held:
            self._claimed_recipe(specs, data, out, wait=True)
        return out

    def _claimed_recipe(self, specs: list[RunSpec], data: DataBundle, out: list[RunRecord],
                        wait: bool) -> bool:
        """Train and evaluate a recipe's runs under its claim, unless another process recorded
        them meanwhile; False (without waiting) when the claim is held and ``wait`` is off."""
        with self.claims.hold(self.models.store.path(specs[0]).stem, wait=wait) as held:
            fresh = self.done() if held else set()  # recorded elsewhere before the claim came
            if specs := [s for s in specs if held and s.key not in fresh]:
                out += self._recipe(specs, data)
        return held

    def _floor(self, spec: RunSpec, data: DataBundle) -> RunRecord:
        """Held-out data scored as if it were samples: what a perfect generator would get
        (and, in a suite with curves, what a curve point's sample count lets one read)."""
        rec = self.records.new(spec, data_info(data))
        if not is_main():
            return rec
        with guarded(self.records, [rec], "scoring the data floor"):
            assert data.floor is not None
            self._score(rec, data.floor[: self.plan.cfg.eval.n_samples], data, spec)
            if data.floor_is_train:
                drop_against_train(rec)
            if self.plan.curves():
                rec.curve_floor = curve_floor(data, self.plan.cfg.eval, spec.seed, self.device)
            self.records.finish(rec)
        return rec

    def _recipe(self, specs: list[RunSpec], data: DataBundle) -> list[RunRecord]:
        recs, trained = [self.records.new(s, data_info(data)) for s in specs], None
        with guarded(self.records, recs, "training"):  # recs: if training fails
            trained = self.models.get(specs[0], data, specs)
        return recs if trained is None else [self._evaluate(s, data, trained) for s in specs]

    def _evaluate(self, spec: RunSpec, data: DataBundle, trained: Trained) -> RunRecord:
        rec = self.records.new(spec, data_info(data))
        if not is_main():  # under torchrun, rank 0 alone evaluates and writes
            return rec
        train_facts(rec, trained)
        with guarded(self.records, [rec], "evaluating"):
            method = self.models.restore(spec, data, trained)
            ecfg = self.plan.cfg.eval
            self.reporter.start(f"{data.name} · {spec.method} · seed {spec.seed}: sampling",
                                ecfg.n_samples)
            s = draw_samples(method, data, ecfg, spec.seed, self.device,
                             on_batch=lambda n: self.reporter.advance(n, float("nan")))
            s.into(rec)
            self._score(rec, s.x, data, spec)
            rec.bank_gap = bank_gap(method, data, ecfg, spec.seed, self.device, s.x, rec.metrics)
            self.records.finish(rec)
        return rec

    def _score(self, rec: RunRecord, x: torch.Tensor, data: DataBundle, spec: RunSpec) -> None:
        ecfg = self.plan.cfg.eval  # metrics against the held-out data; the samples stored
        rec.metrics, rec.metric_info = score(x, data, ecfg, spec.seed, self.device)
        rec.samples_path = self.records.save_samples(rec.run_id, x, ecfg.save_samples)


def drop_against_train(rec: RunRecord) -> None:
    """A floor made of training items would read as copies of itself: its metrics measured
    against the training set are removed, and ``metric_info`` names them."""
    skipped = sorted(set(rec.metrics) & metric_vocabulary().against_train)
    for m in skipped:
        del rec.metrics[m]
    if skipped:
        rec.metric_info["floor_not_scored"] = skipped


@contextlib.contextmanager
def guarded(records: RecordWriter, recs: list[RunRecord], during: str) -> Iterator[None]:
    """Runs whose work the block does: an error fails them with its reason (recorded, the
    suite goes on); a stop (Ctrl-C, SIGTERM) or a full disk records them as ``interrupted`` or
    ``failed`` where a record still fits, and is raised on, which ends the suite. Runs already
    written (``status`` no longer ``running``) are left alone."""
    try:
        yield
    except (KeyboardInterrupt, DiskFull) as err:
        records.stopped(recs, err, during)
        raise
    except Exception as err:
        for rec in recs:
            if rec.status == "running":
                records.finish(rec, err)


def data_info(data: DataBundle) -> dict[str, Any]:
    return {"shape": list(data.shape), "kind": data.kind, **data.info}


def train_facts(rec: RunRecord, trained: Trained) -> None:
    """What the record says about the checkpoint it was evaluated from."""
    tr = trained.state["train"]
    rec.train_steps, rec.train_seconds = tr["steps"], tr["seconds"]
    ema = float(rec.config.get("train", {}).get("ema", 0.0))
    rec.ema_reached = ema_decay(ema, tr["steps"]) if ema > 0 else None
    rec.coupling_seconds, rec.train_history = tr["coupling_seconds"], tr["history"]
    rec.checkpoint, rec.checkpoint_reused = str(trained.path), trained.reused
    rec.net_params = trained.state["net_params"]
    rec.train_breakdown = tr.get("breakdown", {})
    rec.train_compute = tr.get("compute", {})
    rec.curve = [{**{k: v for k, v in p.items() if k not in ("metrics", "bank")},
                  "metrics": p["metrics"].get(rec.method, {}),
                  **({"bank": p["bank"][rec.method]} if rec.method in p.get("bank", {}) else {})}
                 for p in tr.get("curve", []) if rec.method in p["metrics"]]
    rec.curve_seconds = tr.get("curve_seconds", 0.0)
    rec.coupling_diagnostics = tr.get("diagnostics", {})
