"""The suite service: plan a suite, execute it (in this process, in local worker processes or
as Slurm jobs) and collect its records. ``bench run`` and ``bench sweep`` only parse flags,
call it and print; Python users call it the same way::

    from bench.suite import plan_suite, run_suite
    suite = plan_suite(overrides={"datasets": "moons", "methods": "otnfm-online,fm-euler100"},
                       sets=["train.steps=500"])
    records = run_suite(suite, "results/quick")  # the records written now, one per run

Dataset presets (a dataset's default recipe, e.g. digits' UNet) apply by one rule for
``run`` and ``sweep`` alike: **only when no suite file is given**. A suite file is the whole
recipe: its settings sit on the config defaults, never on a preset, whether it is run with
``bench run --config`` or ``bench sweep --config`` (a sweep always has a file). This is the
rule the committed suites were hashed under, so their config hashes stay.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import executors
from bench.config import Config, ConfigError, expand_sweep, load_yaml, resolve
from bench.datasets.base import preset_of, split_key
from bench.env import pick_device
from bench.estimate import Estimate, estimate
from bench.nets import unet_preset
from bench.nets.unet import UNET_PRESETS
from bench.planner import Plan, WorkUnit, expand_datasets
from bench.progress import Reporter, SilentReporter
from bench.registry import DATASETS
from bench.results import RECORDS_FILE, RunRecord, read_records
from bench.runner import Runner

EXECUTORS = ("local", "slurm")

#: runs as records identify them, (config hash, method, seed) -> the sweep point each belongs
#: to in one suite file ({} outside a sweep)
RunPoints = dict[tuple[str, str, int], dict[str, Any]]


@dataclass(frozen=True)
class Suite:
    """A planned suite: one resolved config (``bench run``) or one per sweep grid point, each
    with its assignments and plan."""

    points: tuple[tuple[dict[str, Any], Config], ...]
    plans: tuple[Plan, ...]
    config_file: str | None = None
    preset: str | None = None  # the dataset whose default recipe is underneath, if any

    @property
    def cfg(self) -> Config:
        """The first point's config (the suite's name, device and seeds are shared)."""
        return self.points[0][1]

    @property
    def name(self) -> str:
        return self.cfg.name

    def units(self) -> list[WorkUnit]:
        """The work units (dataset x seed x grid point), in plan order."""
        return [u for p in self.plans for u in p.units()]

    def run_points(self) -> RunPoints:
        """Every run, data floors included, as records identify them -> its sweep point in
        this suite (a run two suites share, e.g. a peers run that is also one point of a
        sweep, is recorded with the point of the suite that made it; a report of this suite
        labels it with this one's)."""
        points: RunPoints = {}
        for plan in self.plans:
            for key in [s.key for s in plan.runs()] + [
                    plan.floor(d, seed).key for d in plan.datasets for seed in plan.cfg.seeds]:
                points.setdefault(key, dict(plan.sweep))
        return points

    def runners(self, out: str | Path, device: torch.device, force: bool = False
                ) -> list[Runner]:
        """One runner per grid point, writing to ``out``."""
        return [Runner(cfg, out, device, config_file=self.config_file, force=force,
                       sweep=assign) for assign, cfg in self.points]


def plan_suite(config_path: str | Path | None = None, overrides: dict[str, Any] | None = None,
               sets: list[str] | tuple[str, ...] = (), sweep: bool = False,
               check: bool = True) -> Suite:
    """Resolve a suite: defaults <- the datasets' preset (only without ``config_path``) <- the
    suite file <- ``overrides`` (flags, e.g. ``{"datasets": "digits", "seeds": "0,1"}``) <-
    ``sets`` (``"train.steps=500"``). ``sweep``: the file has a ``sweep:`` grid (one config per
    point). Raises ``ConfigError``, ``RegistryError`` or ``ValueError`` for a bad suite; with
    ``check`` off, missing prerequisites are left to ``Plan.problems`` (``bench run`` lists
    them all)."""
    overrides = dict(overrides or {})
    if sweep:
        if config_path is None:
            raise ConfigError("a sweep needs a suite file with a 'sweep:' grid (--config)")
        points = expand_sweep(config_path, sets, overrides)
        preset_name = None
    else:
        names = overrides.get("datasets", "moons")
        names = names.split(",") if isinstance(names, str) else list(names)
        preset_name, preset = (None, {}) if config_path else preset_of(expand_datasets(names))
        points = [({}, resolve(config_path, overrides, sets, preset=preset))]
    return Suite(tuple(points), tuple(Plan.of(cfg, assign, check) for assign, cfg in points),
                 str(config_path) if config_path else None, preset_name)


def suite_file(path: str | Path) -> Suite:
    """A suite file as ``bench run --config`` or, with a ``sweep:`` grid, ``bench sweep
    --config`` plans it."""
    return plan_suite(path, sweep="sweep" in load_yaml(path))


def default_out(suite: Suite) -> Path:
    return Path("results") / suite.name


def check_out(out_dir: Path, create: bool) -> None:
    """A results folder that cannot hold results fails before any work (``ConfigError``): a
    file in its place or on its path, or a folder this process cannot write. With ``create``
    the folder is made and a probe file written and removed; without (a dry run), the nearest
    existing folder is checked for write permission."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: is a file, not a folder; give a folder for the "
                          "results")
    parent = out_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out_dir}: {parent} is a file, so the folder cannot be made")
    if not create:
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out_dir}: cannot write there ({parent} is not "
                              "writable)")
        return
    probe = out_dir / f".write-probe-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"--out {out_dir}: cannot write there ({err.strerror or err}); "
                          "give a writable folder") from None


@dataclass(frozen=True)
class Executor:
    """Where a suite's work units run: this process, local workers or Slurm jobs."""

    executor: str = "local"
    workers: int = 1
    cluster: str | None = None
    partition: str | None = None
    gpus: int | None = None
    time_min: int = 240
    mem_gb: int | None = None
    wait: bool = False
    #: times a Slurm job may be requeued at its time limit before it is recorded as failed
    #: (submitit's ``max_num_timeout``, whose own default is 3: a long unit under a short
    #: limit needs more)
    max_requeues: int = 10

    def check(self) -> None:
        """``ValueError`` for an unknown executor or no workers."""
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor {self.executor!r}: choices: {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise ValueError(f"--workers {self.workers}: at least 1")
        if self.max_requeues < 0:
            raise ValueError(f"--max-requeues {self.max_requeues}: at least 0")

    @property
    def in_process(self) -> bool:
        """Run here, with a progress bar (no worker processes, no jobs)."""
        return self.executor == "local" and self.workers == 1

    @property
    def waits(self) -> bool:
        """Collect the results before returning (submitit's local executor always waits)."""
        return self.executor == "local" or self.wait or self.cluster == "local"

    def slurm_params(self) -> dict[str, Any]:
        return {"slurm_partition": self.partition, "gpus_per_node": self.gpus,
                "timeout_min": self.time_min, "mem_gb": self.mem_gb}


#: ``display(plan, label, device, records_file)`` -> a context in which that grid point runs
#: in this process, giving the reporter of its progress
Display = Callable[[Plan, str, torch.device, Path], AbstractContextManager[Reporter]]


@contextmanager
def silent(plan: Plan, label: str, device: torch.device, records: Path  # noqa: ARG001
           ) -> Iterator[Reporter]:
    yield SilentReporter()


def execute(suite: Suite, out: str | Path, *, device: torch.device | None = None,
            force: bool = False, executor: Executor | None = None,
            plugins: list[str] | tuple[str, ...] = (), display: Display = silent,
            log: Callable[[str], None] = lambda message: None,
            runners: list[Runner] | None = None) -> list[RunRecord]:
    """Execute a suite's work units as ``executor`` says (default: in this process). In this
    process: the records written now (none when every run already had an ok record), with
    ``display`` around each grid point (stopped by SIGTERM as by Ctrl-C); in local workers or
    Slurm jobs waited for: the latest record of every run (``collect``); Slurm jobs not waited
    for: none. ``runners``: those ``suite.runners`` already built for ``out``. Raises
    ``KeyboardInterrupt`` when stopped, ``OSError`` (``DiskFull``) for a full disk."""
    executor = executor or Executor()
    executor.check()
    out = Path(out)
    if executor.in_process:
        device = device or pick_device(suite.cfg.device)
        written: list[RunRecord] = []
        # a unit whose recipe another process holds (a second `bench sweep` on the same
        # folder) is left until every other grid point is done, then waited for: two
        # processes split a sweep instead of one waiting behind the other
        later: list[tuple[Runner, str, list[WorkUnit]]] = []

        def shown(r: Runner, label: str, work: Callable[[], list[RunRecord]]) -> None:
            with display(r.plan, label, r.device, out / RECORDS_FILE) as reporter:
                r.set_reporter(reporter)
                with executors.stop_on_signals():  # SIGTERM (kill PID) acts as Ctrl-C
                    written.extend(work())

        for i, r in enumerate(runners or suite.runners(out, device, force), 1):
            label = (f" [{i}/{len(suite.plans)}] " + ", ".join(f"{k}={v}" for k, v in
                                                               r.plan.sweep.items())
                     if len(suite.plans) > 1 else "")
            held: list[WorkUnit] = []
            shown(r, label, lambda r=r, held=held: r.run(deferred=held))
            if held:
                later.append((r, label, held))
        for r, label, held in later:
            shown(r, f"{label} (recipes another process held)",
                  lambda r=r, held=held: r.run_held(held, written))
        return written
    units = suite.units()
    plugins = [str(p) for p in plugins]
    if executor.executor == "slurm":
        executors.submit_slurm(units, out, suite.cfg.device, suite.config_file, force, plugins,
                               executor.cluster, executor.slurm_params(), executor.waits, log,
                               max_requeues=executor.max_requeues)
        if not executor.waits:
            return []
    else:
        executors.run_local(units, out, suite.cfg.device, suite.config_file, force, plugins,
                            executor.workers, log)
    return collect(out, units)


def collect(out: str | Path, units: list[WorkUnit]) -> list[RunRecord]:
    """The latest record of every run of ``units`` in ``out`` (an earlier attempt's failure
    is over once a later attempt is recorded)."""
    keys = {(u.dataset, u.seed, json.dumps(u.sweep, sort_keys=True)) for u in units}
    latest: dict[tuple[str, str, int], RunRecord] = {}
    for r in read_records(Path(out) / RECORDS_FILE).records:
        if (r.dataset, r.seed, json.dumps(r.sweep, sort_keys=True)) in keys:
            latest[r.key] = r
    return list(latest.values())


def run_suite(suite: Suite, out: str | Path, **options: Any) -> list[RunRecord]:
    """``execute`` (the same options), then ``collect``: the latest record of every run."""
    execute(suite, out, **options)
    return collect(out, suite.units())


def estimate_runs(runner: Runner) -> Estimate:
    """The measured wall-clock estimate of a runner's remaining runs (``bench.estimate``)."""
    return estimate(runner.plan, runner.device, runner.done(),
                    None if runner.force else runner.models.store.steps_done)


def scale_down_hints(plan: Plan) -> list[str]:
    """Ways to shrink a long CPU plan, only those that would change it: a smaller UNet preset
    than the one in use, a smaller image dataset than MNIST or CIFAR-10."""
    hints = ["--set train.steps=N", "--set eval.n_samples=N", "fewer --seeds or --methods"]
    names = [split_key(d)[0] for d in plan.datasets]
    if any(DATASETS.entry(n).meta.get("kind") == "images" for n in names):
        presets = list(UNET_PRESETS)  # smallest first
        unet = unet_preset(plan.cfg.net)
        if unet in presets and presets.index(unet) > 0:
            hints.append(f"a smaller network (--set net.unet={presets[presets.index(unet) - 1]})")
        if any(n in ("mnist", "cifar10") for n in names):
            hints.append("a smaller dataset (-d mnist5k)")
    return hints + ["a GPU (--device cuda)"]
