"""Runs a suite: every (dataset, seed, method) -> train (once per recipe) -> evaluate -> record.

A failure in one run is recorded as ``failed`` with its reason and the others go on. Runs whose
``ok`` record already exists (same config hash and seed) are skipped unless ``force``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from bench.config import Config, ConfigError, stable_hash, to_dict
from bench.datasets.base import DataBundle
from bench.evaluate import compute_metrics, generate, time_sampling
from bench.methods.base import BuildContext, Method
from bench.nets import n_params
from bench.registry import DATASETS, METHODS, METRICS
from bench.results import (
    RECORDS_FILE,
    RunRecord,
    append_record,
    git_commit,
    library_versions,
    read_records,
)
from bench.seeding import Streams, init_scope, stream_seed
from bench.trainer import EMA, Checkpointing, TrainingInterrupted, train

FLOOR_METHOD = "data"


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; anything else is passed to ``torch.device``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return dev


class Reporter(Protocol):
    def start(self, label: str, total: int) -> None: ...
    def advance(self, step: int, loss: float) -> None: ...
    def done(self, record: RunRecord) -> None: ...
    def log(self, message: str) -> None: ...


class SilentReporter:
    def start(self, label: str, total: int) -> None: ...
    def advance(self, step: int, loss: float) -> None: ...
    def done(self, record: RunRecord) -> None: ...
    def log(self, message: str) -> None: ...


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def split_dataset(key: str) -> tuple[str, str | None]:
    """``"moons@8gmm"`` -> ("moons", "8gmm"): a dataset with its own source distribution."""
    name, _, source = key.partition("@")
    return name, (source or None)


def expand_datasets(patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Names, globs and ``name@source`` keys -> dataset keys (unknown names raise)."""
    out: list[str] = []
    for pat in patterns:
        name, source = split_dataset(pat)
        if source is None:
            keys = DATASETS.match([name])
        else:
            DATASETS.entry(name)
            if source not in ("gaussian", "8gmm"):
                raise ConfigError(f"dataset {pat!r}: unknown source {source!r}; "
                                  "choices: gaussian, 8gmm")
            keys = [pat]
        out += [k for k in keys if k not in out]
    return out


def dataset_config(cfg: Config, dataset: str) -> Config:
    """``cfg`` with ``data.name`` (and ``data.source`` for ``name@source`` keys) filled in."""
    name, source = split_dataset(dataset)
    data = dataclasses.replace(cfg.data, name=dataset)
    if source:
        data = dataclasses.replace(data, source=source)
    return dataclasses.replace(cfg, data=data)


def run_config(cfg: Config, method: str, dataset: str) -> dict[str, Any]:
    """The resolved config of one run (everything that can change its numbers but the seed)."""
    d = to_dict(dataset_config(cfg, dataset))
    for key in ("name", "methods", "datasets", "seeds", "device", "checkpoint_every"):
        d.pop(key)
    d["coupling"].pop("overlap")  # where the solve runs changes no number (tested)
    d["method"] = method
    d["recipe"] = recipe_of(method)
    teacher = METHODS.entry(method).meta.get("teacher")
    if teacher:  # a distilled method's numbers depend on its teacher's recipe too
        d["teacher"] = teacher
    return d


def recipe_of(method: str) -> str:
    return METHODS.entry(method).meta.get("recipe", method)


def recipe_hash(run_cfg: dict[str, Any]) -> str:
    """Hash of what determines the trained weights: recipe, data, network, training, coupling,
    path and teacher (everything but the evaluation settings)."""
    keys = ("recipe", "data", "net", "train", "coupling", "path", "teacher")
    return stable_hash({k: run_cfg.get(k) for k in keys if k in run_cfg})


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


@dataclass
class Trained:
    path: Path
    state: dict[str, Any]
    reused: bool


class Runner:
    def __init__(self, cfg: Config, out: str | Path, device: torch.device, *,
                 config_file: str | None = None, force: bool = False,
                 reporter: Reporter | None = None,
                 sweep: dict[str, Any] | None = None) -> None:
        self.sweep = dict(sweep or {})
        self.cfg = cfg
        self.out = Path(out)
        self.device = device
        self.config_file = config_file
        self.force = force
        self.reporter: Reporter = reporter or SilentReporter()
        self.records_path = self.out / RECORDS_FILE
        self.methods = METHODS.match(cfg.methods)
        self.datasets = expand_datasets(cfg.datasets)
        if cfg.eval.metrics:
            METRICS.match(cfg.eval.metrics)  # an unknown metric fails before any training
            if "fid" in METRICS.match(cfg.eval.metrics):
                from bench.metrics.extractors import InceptionWeightsMissing, inception_weights

                try:  # missing Inception weights fail before any training, not after it
                    inception_weights(cfg.eval.inception_weights)
                except InceptionWeightsMissing as err:
                    raise ConfigError(str(err)) from None
        self.commit = git_commit()
        #: checkpoints trained or loaded in this session (a teacher is trained once even
        #: with --force, and shared with the teacher's own runs)
        self._trained: dict[Path, Trained] = {}
        self.versions = library_versions()

    # -- planning -------------------------------------------------------------------------
    def plan(self) -> list[dict[str, Any]]:
        """Every run this suite would make (for ``--dry-run``)."""
        return [
            {"dataset": d, "method": m, "seed": s, "recipe": recipe_of(m),
             "config_hash": stable_hash(run_config(self.cfg, m, d))}
            for d in self.datasets for s in self.cfg.seeds for m in self.methods
        ]

    def _done(self) -> set[tuple[str, str, int]]:
        if self.force:
            return set()
        res = read_records(self.records_path)
        return {(r.config_hash, r.method, r.seed) for r in res.records if r.status == "ok"}

    # -- running --------------------------------------------------------------------------
    def run(self) -> list[RunRecord]:
        from bench.distributed import barrier

        done = self._done()
        barrier()  # under torchrun: every rank plans from the same records
        written: list[RunRecord] = []
        for dataset in self.datasets:
            for seed in self.cfg.seeds:
                written += self._run_dataset_seed(dataset, seed, done)
        return written

    def groups(self) -> list[tuple[str, int]]:
        """The (dataset, seed) units of this suite (what a worker process or job runs)."""
        return [(d, s) for d in self.datasets for s in self.cfg.seeds]

    def run_group(self, dataset: str, seed: int) -> list[RunRecord]:
        """Only the runs of one (dataset, seed); skips those with ok records."""
        return self._run_dataset_seed(dataset, seed, self._done())

    def _base_record(self, method: str, dataset: str, seed: int, run_cfg: dict[str, Any],
                     data: DataBundle | None) -> RunRecord:
        chash = stable_hash(run_cfg)
        return RunRecord(
            method=method, dataset=dataset, seed=seed, status="running",
            run_id=f"{dataset}.{method}.s{seed}.{chash[:8]}", suite=self.cfg.name,
            sweep=self.sweep,
            config_file=self.config_file, recipe=run_cfg["recipe"], config=run_cfg,
            config_hash=chash, recipe_hash=recipe_hash(run_cfg), git_commit=self.commit,
            versions=self.versions, device=str(self.device), threads=torch.get_num_threads(),
            started_at=now(),
            data_info={} if data is None else {"shape": list(data.shape), "kind": data.kind,
                                               **data.info},
        )

    def _finish(self, rec: RunRecord, err: BaseException | None = None,
                status: str = "failed") -> RunRecord:
        from bench.distributed import is_main

        if not is_main():  # under torchrun, rank 0 alone evaluates and writes
            return rec
        if err is not None:
            rec.status = status
            tb = traceback.extract_tb(err.__traceback__)
            where = f" (at {tb[-1].filename.split('/')[-1]}:{tb[-1].lineno})" if tb else ""
            rec.error = f"{type(err).__name__}: {err}{where}"
        else:
            rec.status = "ok"
        rec.finished_at = now()
        try:
            append_record(self.records_path, rec)
        except OSError as werr:  # e.g. a full disk: the file is left as it was
            if rec.status != "ok":
                raise
            rec.status, rec.metrics = "failed", {}
            rec.error = f"could not write the record: {type(werr).__name__}: {werr}"
            append_record(self.records_path, rec)  # a short failed record may still fit
        self.reporter.done(rec)
        return rec

    def _run_dataset_seed(self, dataset: str, seed: int,
                          done: set[tuple[str, str, int]]) -> list[RunRecord]:
        cfg = self.cfg
        self._trained.clear()  # checkpoints are per (dataset, seed): keep memory bounded
        todo = [m for m in self.methods
                if (stable_hash(run_config(cfg, m, dataset)), m, seed) not in done]
        floor_cfg = self._floor_config(dataset)
        want_floor = cfg.eval.floor and (stable_hash(floor_cfg), FLOOR_METHOD, seed) not in done
        skipped = len(self.methods) - len(todo)
        if skipped:
            self.reporter.log(f"{dataset} seed {seed}: {skipped} run(s) already recorded, skipped")
        if not todo and not want_floor:
            return []
        out: list[RunRecord] = []
        try:
            dcfg = dataset_config(cfg, dataset)
            data = DATASETS.get(split_dataset(dataset)[0])(dcfg.data, seed, self.device)
            data.name = dataset
        except Exception as err:  # a dataset that cannot load fails every run on it
            for m in todo:
                rec = self._base_record(m, dataset, seed, run_config(cfg, m, dataset), None)
                out.append(self._finish(rec, err))
            return out
        if want_floor:
            out.append(self._floor(data, seed, floor_cfg))
        groups: dict[str, list[str]] = {}
        for m in todo:
            groups.setdefault(recipe_of(m), []).append(m)
        for names in groups.values():
            out += self._run_recipe(names, data, seed)
        return out

    def _floor_config(self, dataset: str) -> dict[str, Any]:
        d = to_dict(dataset_config(self.cfg, dataset))
        return {"method": FLOOR_METHOD, "recipe": FLOOR_METHOD, "data": d["data"],
                "eval": d["eval"]}

    def _floor(self, data: DataBundle, seed: int, floor_cfg: dict[str, Any]) -> RunRecord:
        """Held-out data scored as if it were samples: what a perfect generator would get."""
        from bench.distributed import is_main

        if not is_main():
            return self._base_record(FLOOR_METHOD, data.name, seed, floor_cfg, data)
        rec = self._base_record(FLOOR_METHOD, data.name, seed, floor_cfg, data)
        rec.recipe_hash = ""
        try:
            assert data.floor is not None
            return self._score(rec, data.floor[: self.cfg.eval.n_samples], data, seed)
        except Exception as err:
            return self._finish(rec, err)

    def _checkpoint_path(self, dataset: str, recipe: str, seed: int, rhash: str) -> Path:
        return self.out / "checkpoints" / f"{dataset}.{recipe}.s{seed}.{rhash}.pt"

    def _train_or_load(self, name: str, data: DataBundle, seed: int, rhash: str,
                       run_cfg: dict[str, Any]) -> Trained:
        path = self._checkpoint_path(data.name, run_cfg["recipe"], seed, rhash)
        if path in self._trained:
            return dataclasses.replace(self._trained[path], reused=True)
        trained = self._train_or_load_uncached(name, data, seed, rhash, run_cfg, path)
        self._trained[path] = trained
        return trained

    def _train_or_load_uncached(self, name: str, data: DataBundle, seed: int, rhash: str,
                                run_cfg: dict[str, Any], path: Path) -> Trained:
        if path.exists() and not self.force:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("recipe_hash") != rhash:
                raise ValueError(f"checkpoint {path} belongs to another config")
            return Trained(path, state, reused=True)
        method = build_method(name, data, self.cfg, self.device, seed)
        gens = Streams(seed, self.device)
        breakdown: dict[str, float] = {}
        teacher_name = run_cfg.get("teacher")
        if teacher_name:
            # e.g. reflow: the teacher checkpoint is trained once and shared with its own runs
            t_cfg = run_config(self.cfg, teacher_name, data.name)
            t_trained = self._train_or_load(teacher_name, data, seed, recipe_hash(t_cfg), t_cfg)
            teacher = self._load_method(teacher_name, data, seed, t_trained)
            breakdown["teacher_seconds"] = t_trained.state["train"]["seconds"]
            self.reporter.log(f"{data.name} · {run_cfg['recipe']} · seed {seed}: "
                              f"generating pairs with {teacher_name}")
            breakdown.update(method.prepare(teacher, data.train.shape[0], gens,
                                            self.cfg.eval.batch_size))
        partial = path.with_suffix(".partial.pt")
        resume = None
        if partial.exists() and not self.force:
            saved = torch.load(partial, map_location="cpu", weights_only=True)
            if saved.get("meta", {}).get("recipe_hash") == rhash:
                resume = saved
                self.reporter.log(f"{data.name} · {run_cfg['recipe']} · seed {seed}: resuming "
                                  f"from step {saved['step']} ({partial})")
            else:
                self.reporter.log(f"ignoring {partial}: saved by another config")
        self.reporter.start(f"{data.name} · {run_cfg['recipe']} · seed {seed}",
                            self.cfg.train.steps)
        ckpt = Checkpointing(partial, self.cfg.checkpoint_every, {"recipe_hash": rhash})
        result, ema = train(method, data, self.cfg.train, gens, on_step=self.reporter.advance,
                            coupling_cfg=self.cfg.coupling, checkpoint=ckpt, resume=resume)
        if breakdown:
            breakdown["student_seconds"] = result.seconds
            result.seconds = sum(breakdown.values())
            result.breakdown = breakdown
        state = {
            "recipe_hash": rhash,
            "model": {k: v.detach().cpu() for k, v in method.state_dict().items()},
            "ema": _ema_state(method, ema),
            "extra": method.extra_state_dict(),
            "train": dataclasses.asdict(result),
            "net_params": n_params(method.net),
        }
        from bench.distributed import is_main

        if is_main():  # under torchrun every rank holds the same weights; rank 0 writes
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(path)  # write-then-rename: never a half-written checkpoint
            partial.unlink(missing_ok=True)
        return Trained(path, state, reused=False)

    def _run_recipe(self, names: list[str], data: DataBundle, seed: int) -> list[RunRecord]:
        run_cfgs = {m: run_config(self.cfg, m, data.name) for m in names}
        rhash = recipe_hash(run_cfgs[names[0]])
        try:
            trained = self._train_or_load(names[0], data, seed, rhash, run_cfgs[names[0]])
        except TrainingInterrupted as err:  # Ctrl-C: say so in the records, then stop
            for m in names:
                rec = self._base_record(m, data.name, seed, run_cfgs[m], data)
                self._finish(rec, err, status="interrupted")
            raise
        except Exception as err:
            return [self._finish(self._base_record(m, data.name, seed, run_cfgs[m], data), err)
                    for m in names]
        return [self._evaluate(m, data, seed, run_cfgs[m], trained) for m in names]

    def _evaluate(self, name: str, data: DataBundle, seed: int, run_cfg: dict[str, Any],
                  trained: Trained) -> RunRecord:
        from bench.distributed import is_main

        rec = self._base_record(name, data.name, seed, run_cfg, data)
        if not is_main():
            return rec
        tr = trained.state["train"]
        rec.train_steps, rec.train_seconds = tr["steps"], tr["seconds"]
        rec.coupling_seconds, rec.train_history = tr["coupling_seconds"], tr["history"]
        rec.checkpoint, rec.checkpoint_reused = str(trained.path), trained.reused
        rec.net_params = trained.state["net_params"]
        rec.train_breakdown = tr.get("breakdown", {})
        rec.coupling_diagnostics = tr.get("diagnostics", {})
        try:
            method = self._load_method(name, data, seed, trained)
            ecfg = self.cfg.eval
            gens = Streams(seed, self.device)
            x0 = data.source(ecfg.n_samples, gens["eval"])
            self.reporter.start(f"{data.name} · {name} · seed {seed}: sampling", ecfg.n_samples)
            x, nfe = generate(method, x0, ecfg.batch_size,
                              on_batch=lambda done: self.reporter.advance(done, float("nan")))
            if not torch.isfinite(x).all():
                raise FloatingPointError("generated samples contain NaN or inf")
            rec.nfe = nfe
            timing = time_sampling(method, data.source(ecfg.timing_batch, gens["eval"]),
                                   ecfg.timing_repeats)
            rec.sample_ms_per_1k, rec.sample_ms_spread = timing.ms_per_1k, timing.spread
            rec.timing_batch = timing.batch
            return self._score(rec, x, data, seed)
        except Exception as err:
            return self._finish(rec, err)

    def _load_method(self, name: str, data: DataBundle, seed: int, trained: Trained) -> Method:
        """Build ``name`` and load the checkpoint's EMA weights (raw weights without EMA)."""
        method = build_method(name, data, self.cfg, self.device, seed)
        method.load_state_dict(trained.state["ema"] or trained.state["model"])
        method.load_extra_state_dict(trained.state["extra"])
        return method.eval()

    def _score(self, rec: RunRecord, x: torch.Tensor, data: DataBundle, seed: int) -> RunRecord:
        """Metrics of samples ``x`` against the held-out data; store samples; write ``rec``."""
        gen = Streams(seed, "cpu")["metrics"]  # same subsample for every method of a seed
        info: dict[str, Any] = {"n_samples": int(x.shape[0]),
                                "n_reference": int(data.eval.shape[0])}
        if data.kind == "points":
            info.update({"w2_samples": self.cfg.eval.w2_samples, "features": "raw coordinates"})
        rec.metrics = compute_metrics(x.cpu(), data.eval.cpu(), data.kind, self.cfg.eval, gen,
                                      data.name, data=data, device=self.device, info=info)
        rec.metric_info = info
        rec.samples_path = self._save_samples(rec.run_id, x)
        return self._finish(rec)

    def _save_samples(self, run_id: str, x: torch.Tensor) -> str:
        rel = Path("samples") / f"{run_id}.npy"
        (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out / rel.with_suffix(".tmp.npy")
        np.save(tmp, x[: self.cfg.eval.save_samples].cpu().numpy().astype(np.float32))
        tmp.replace(self.out / rel)
        return str(rel)


def _ema_state(method: Method, ema: EMA | None) -> dict[str, torch.Tensor] | None:
    if ema is None:
        return None
    with ema.applied(method):
        return {k: v.detach().cpu().clone() for k, v in method.state_dict().items()}


