"""``bench run``, ``bench sweep`` and ``bench status``: plan runs, execute them here, in local
workers or as Slurm jobs, and summarise what the records say."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import torch
import typer
import yaml
from rich.table import Table

from bench import executors, jobs
from bench.checkpoints import in_training
from bench.cli.console import (
    RichReporter,
    conclude,
    console,
    err_console,
    fail,
    load_plugins,
    log,
    progress_bar,
)
from bench.cli.options import (
    ClusterOpt,
    ConfigOpt,
    DataRootOpt,
    DeviceOpt,
    ExecutorOpt,
    ExecutorOptions,
    ForceOpt,
    GpusOpt,
    MemOpt,
    OutOpt,
    PartitionOpt,
    PluginOpt,
    SetOpt,
    TimeOpt,
    WaitOpt,
    WorkersOpt,
)
from bench.config import ConfigError, expand_sweep, resolve, to_dict
from bench.datasets.base import preset_of, split_key
from bench.distributed import init_from_env, is_main, shutdown
from bench.env import pick_device
from bench.estimate import estimate, human
from bench.io import DiskFull, is_disk_full
from bench.nets import unet_preset
from bench.nets.unet import UNET_PRESETS
from bench.planner import Plan, expand_datasets
from bench.registry import DATASETS, RegistryError
from bench.results import RECORDS_FILE, RunRecord, read_records
from bench.runner import Runner


def run_cmd(
    config: ConfigOpt = None,
    methods: Annotated[str | None, typer.Option(
        "--methods", "-m", help="Comma-separated names or globs, e.g. 'otnfm-*,fm-euler100'",
    )] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Dataset name(s), comma-separated or globs")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, e.g. 0,1,2")] = None,
    set_: SetOpt = None, out: OutOpt = None, plugin: PluginOpt = None,
    device: DeviceOpt = None, data_root: DataRootOpt = None,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", help="Metric names (sets eval.metrics), e.g. 'fd,classes,fid'")] = None,
    inception_weights: Annotated[str | None, typer.Option(
        "--inception-weights", help="Inception weights file for --metrics fid "
        "(sets eval.inception_weights)")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the resolved config and the planned runs, run nothing")] = False,
    force: ForceOpt = False,
    executor: ExecutorOpt = "local", workers: WorkersOpt = 1, cluster: ClusterOpt = None,
    partition: PartitionOpt = None, gpus: GpusOpt = None, time_min: TimeOpt = 240,
    mem_gb: MemOpt = None, wait: WaitOpt = False,
) -> None:
    """Train and evaluate methods x datasets x seeds; append one JSON record per run."""
    load_plugins(plugin)
    opts = ExecutorOptions(executor, workers, cluster, partition, gpus, time_min, mem_gb, wait)
    overrides = flag_overrides(methods=methods, datasets=dataset, seeds=seeds, device=device,
                               data_root=data_root, metrics=metrics,
                               inception_weights=inception_weights)
    try:
        # a dataset's default recipe applies when no config file is given
        preset_name, preset = (None, {}) if config else preset_of(
            expand_datasets(overrides.get("datasets", "moons").split(",")))
        cfg = resolve(config, overrides, set_ or [], preset=preset)
        dev = init_from_env() or pick_device(cfg.device)  # torchrun: this rank's device
        out_dir = out or Path("results") / cfg.name
        check_out(out_dir, create=not dry_run)
        runner = Runner(cfg, out_dir, dev, config_file=str(config) if config else None,
                        force=force)
    except (ConfigError, RegistryError, ValueError) as err:
        fail(str(err))
    if dry_run:
        console.print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="", markup=False)
        console.print(f"# preset: {preset_name or 'none'} (a dataset's default recipe, used "
                      "without --config; the config file and --set override it)", markup=False)
        console.print(f"# device: {dev}   results: {out_dir / RECORDS_FILE}", markup=False)
        for s in runner.plan.runs():
            console.print(f"# run {s.dataset} {s.method} seed {s.seed} "
                          f"(recipe {s.recipe}, config {s.config_hash})", markup=False)
        show_estimate(runner, dev)
        return
    # only for runs in this process: Slurm jobs and worker processes run on other devices,
    # and a method's code runs in the jobs' isolation, never in the submitting process
    if dev.type == "cpu" and is_main() and opts.in_process:
        show_estimate(runner, dev, only_if_longer=3600, proceeding=True)
    if not is_main():  # torchrun: the other ranks train their share and stay quiet
        runner.run()
        shutdown()
        return
    try:
        launch([runner], out_dir, opts, plugin, str(config) if config else None, force,
               "Nothing to do: every run already has an ok record (use --force to rerun).")
    finally:
        shutdown()


def sweep_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML suite with a 'sweep:' grid")],
    set_: SetOpt = None, out: OutOpt = None, plugin: PluginOpt = None,
    device: DeviceOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the grid, run nothing")] = False,
    force: ForceOpt = False,
    executor: ExecutorOpt = "local", workers: WorkersOpt = 1, cluster: ClusterOpt = None,
    partition: PartitionOpt = None, gpus: GpusOpt = None, time_min: TimeOpt = 240,
    mem_gb: MemOpt = None, wait: WaitOpt = False,
) -> None:
    """Expand a grid of config values into runs; skip runs whose ok record exists."""
    load_plugins(plugin)
    opts = ExecutorOptions(executor, workers, cluster, partition, gpus, time_min, mem_gb, wait)
    try:
        points = expand_sweep(config, (set_ or []) + ([f"device={device}"] if device else []))
        dev = pick_device(points[0][1].device)
        out_dir = out or Path("results") / points[0][1].name
        check_out(out_dir, create=not dry_run)
        runners = [Runner(cfg, out_dir, dev, config_file=str(config), force=force, sweep=assign)
                   for assign, cfg in points]
    except (ConfigError, RegistryError, ValueError) as err:
        fail(str(err))
    total = sum(len(r.plan.runs()) for r in runners)
    console.print(f"sweep {config}: {len(points)} grid point(s), {total} run(s) in all")
    if dry_run:
        for r in runners:
            console.print(f"# {r.plan.sweep or '(no grid keys)'}: {len(r.plan.runs())} run(s)")
        return
    launch(runners, out_dir, opts, plugin, str(config), force,
           f"Nothing to do: all {total} runs of this sweep already have ok records; nothing "
           "was trained (use --force to rerun).")


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
            raise ConfigError(f"--out {out_dir}: {parent} is not writable")
        return
    probe = out_dir / f".write-probe-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"--out {out_dir}: cannot write there ({err.strerror or err}); "
                          "give a writable folder") from None


def show_estimate(runner: Runner, device: torch.device, only_if_longer: float = 0.0,
                  proceeding: bool = False) -> None:
    """Print the measured wall-clock estimate (``bench.estimate``); for a long one, how to
    scale the plan down. Nothing is asked: the run proceeds."""
    console.print("[dim]· estimating the wall-clock from a few measured steps …[/]")
    try:
        est = estimate(runner.plan, device, runner.done(),
                       None if runner.force else runner.models.store.steps_done)
    except Exception as err:  # e.g. missing dataset files: the runs will record the reason
        console.print(f"# no estimate: {type(err).__name__}: {err}", markup=False)
        return
    if est.total < only_if_longer:
        return
    console.print(f"# estimate: about {human(est.total)} on {device} (training "
                  f"{human(est.train_seconds)}, sampling {human(est.sample_seconds)}, metrics "
                  f"{human(est.metric_seconds)})", markup=False)
    for line in est.lines:
        console.print(f"#   {line}", markup=False)
    if est.total >= 3600 and device.type == "cpu":
        console.print("# this is long for a CPU; to scale it down: "
                      + ", ".join(scale_down_hints(runner.plan)) + "."
                      + (" Proceeding." if proceeding else ""), markup=False)


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


def flag_overrides(**flags: str | None) -> dict[str, Any]:
    """The config keys set by the run command's flags (``None``: not given)."""
    keys = {"methods": ("methods",), "datasets": ("datasets",), "seeds": ("seeds",),
            "device": ("device",), "data_root": ("data", "root"),
            "metrics": ("eval", "metrics"), "inception_weights": ("eval", "inception_weights")}
    out: dict[str, Any] = {}
    for flag, value in flags.items():
        if value:
            *section, key = keys[flag]
            target = out
            for s in section:
                target = target.setdefault(s, {})
            target[key] = value
    return out


def launch(runners: list[Runner], out_dir: Path, opts: ExecutorOptions,
           plugin: list[Path] | None, config_file: str | None, force: bool,
           nothing_to_do: str) -> None:
    """Execute the runners' work units as ``opts`` says, then summarise their records (exit 1
    if any run failed)."""
    if opts.in_process:
        written: list[RunRecord] = []
        for i, r in enumerate(runners, 1):
            label = (f" [{i}/{len(runners)}] " + ", ".join(f"{k}={v}" for k, v in
                                                           r.plan.sweep.items())
                     if len(runners) > 1 else "")
            written += execute(r, out_dir, label)
        if not written:
            console.print(nothing_to_do)
            return
        conclude(written, out_dir)
        return
    units = [u for r in runners for u in r.plan.units()]
    plugins = [str(p) for p in plugin or []]
    device = runners[0].plan.cfg.device
    if opts.executor == "slurm":
        executors.submit_slurm(units, out_dir, device, config_file, force, plugins,
                               opts.cluster, opts.slurm_params(), opts.waits, log)
        if not opts.waits:
            console.print(f"submitted {len(units)} job(s); `bench status {out_dir}` shows "
                          "them, and the same command again collects: finished runs are "
                          "skipped.")
            return
    else:
        try:
            executors.run_local(units, out_dir, device, config_file, force, plugins,
                                opts.workers, log)
        except KeyboardInterrupt as err:
            interrupted(err)
        except OSError as err:
            stop_if_disk_full(err)
    keys = {(u.dataset, u.seed, json.dumps(u.sweep, sort_keys=True)) for u in units}
    latest: dict[tuple[str, str, int], RunRecord] = {}  # an earlier attempt's failure is over
    for r in read_records(out_dir / RECORDS_FILE).records:
        if (r.dataset, r.seed, json.dumps(r.sweep, sort_keys=True)) in keys:
            latest[(r.config_hash, r.method, r.seed)] = r
    conclude(list(latest.values()), out_dir)


def execute(runner: Runner, out_dir: Path, label: str = "") -> list[RunRecord]:
    """Run ``runner`` in this process with a progress bar; Ctrl-C or SIGTERM exits 130 after
    saving."""
    plan = runner.plan
    console.print(f"[bold]{plan.cfg.name}[/]{label}: {len(plan.methods)} method(s) × "
                  f"{len(plan.datasets)} dataset(s) × {len(plan.cfg.seeds)} seed(s) on "
                  f"{runner.device} → {out_dir / RECORDS_FILE}")
    progress = progress_bar()
    runner.set_reporter(RichReporter(progress))
    try:
        with executors.stop_on_signals(), progress:  # SIGTERM (kill PID) acts as Ctrl-C
            return runner.run()
    except KeyboardInterrupt as err:
        interrupted(err)
    except OSError as err:
        stop_if_disk_full(err)


def stop_if_disk_full(err: OSError) -> NoReturn:
    """A full disk ends the suite with one line (exit 1); any other OSError is raised on."""
    if not is_disk_full(err):
        raise err
    fail(str(err) if isinstance(err, DiskFull) else str(DiskFull(err.filename or "a file")),
         code=1)


def interrupted(err: KeyboardInterrupt) -> NoReturn:
    """Say that a stopped run can resume, and exit 130 (as a shell does after Ctrl-C)."""
    msg = str(err) or "interrupted"
    err_console.print(f"[bold yellow]interrupted:[/] {msg}. Finished runs are recorded; "
                      "run the same command again to resume.", highlight=False)
    raise typer.Exit(130) from None


def number(value: Any, spec: str) -> str:
    """A live log's number formatted, or ``?`` for a missing or non-numeric value."""
    return format(value, spec) if isinstance(value, (int, float)) else "?"


def status_cmd(
    results: Annotated[Path, typer.Argument(help="Results folder of a submitted suite")],
) -> None:
    """Runs training now (from their live logs) and jobs submitted with --executor slurm
    (scheduler state and runs ok / failed / missing)."""
    rows = jobs.status(results)
    training = in_training(results)
    if not rows and not training:
        fail(f"nothing to show in {results}: no recipe is training there (no live log without "
             f"a finished checkpoint) and nothing was submitted ({jobs.JOBS_FILE})")
    if training:
        live = Table(title=f"unfinished recipes in {results} (live logs in stats/; training = "
                           "a process holds its claim now)")
        live.add_column("run", overflow="fold")
        for col in ("state", "step", "loss", "grad norm", "lr", "train s", "last update"):
            live.add_column(col, overflow="fold")
        for r in training:
            live.add_row(r["run"], r["state"], f"{r.get('step', '?')}/{r.get('steps', '?')}",
                         number(r.get("loss"), ".4g"), number(r.get("grad_norm"), ".3g"),
                         number(r.get("lr"), ".3g"), number(r.get("train_seconds"), ".0f"),
                         str(r.get("time", "?")))
            if r["skipped_lines"]:
                err_console.print(f"[yellow]warning:[/] {results}/stats/{r['run']}.jsonl: "
                                  f"{r['skipped_lines']} damaged or unfinished line(s) at the "
                                  "end skipped", highlight=False)
        console.print(live)
    if not rows:
        return
    table = Table(title=f"jobs in {results}")
    for col in ("job", "cluster", "dataset", "seed", "grid", "scheduler", "ok", "failed",
                "missing", "summary"):
        table.add_column(col)
    for r in rows:
        done = r["missing"] == 0
        summary = ("done" if done and not r["failed"] else "failed" if done
                   else "running or queued")
        table.add_row(r["job_id"], r["cluster"], r["dataset"], str(r["seed"]),
                      ", ".join(f"{k}={v}" for k, v in r.get("sweep", {}).items()) or "–",
                      r["state"], str(r["ok"]), str(r["failed"]), str(r["missing"]), summary)
    console.print(table)
