"""``bench run``, ``bench sweep`` and ``bench status``: plan runs, execute them here, in local
workers or as Slurm jobs, and summarise what the records say."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import torch
import typer
import yaml
from rich.table import Table

from bench import jobs
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
    unknown_name_hint,
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
    RequeuesOpt,
    SetOpt,
    TimeOpt,
    WaitOpt,
    WorkersOpt,
)
from bench.config import ConfigError, ema_note
from bench.distributed import init_from_env, is_main, shutdown
from bench.env import pick_device
from bench.estimate import human, human_range
from bench.io import DiskFull, is_disk_full
from bench.planner import Plan, Problem
from bench.registry import RegistryError
from bench.report.model import latest_only
from bench.results import RECORDS_FILE, read_records
from bench.runner import Runner
from bench.suite import (
    Suite,
    check_out,
    default_out,
    estimate_runs,
    execute,
    plan_suite,
    scale_down_hints,
)


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
        "--dry-run", help="Print the planned runs and everything they miss (data files, "
        "weights), run nothing; exit 2 if anything is missing")] = False,
    show_config: Annotated[bool, typer.Option(
        "--show-config", help="Print the resolved config of each dataset's runs (only the "
        "sections they use)")] = False,
    estimate: Annotated[bool, typer.Option(
        "--estimate/--no-estimate", help="Measure the wall-clock estimate (a few training "
        "steps, the sampling and the metrics on this machine: seconds to a minute)")] = True,
    force: ForceOpt = False,
    executor: ExecutorOpt = "local", workers: WorkersOpt = 1, cluster: ClusterOpt = None,
    partition: PartitionOpt = None, gpus: GpusOpt = None, time_min: TimeOpt = 240,
    mem_gb: MemOpt = None, wait: WaitOpt = False, max_requeues: RequeuesOpt = 10,
) -> None:
    """Train and evaluate methods x datasets x seeds; append one JSON record per run."""
    load_plugins(plugin)
    opts = ExecutorOptions(executor, workers, cluster, partition, gpus, time_min, mem_gb, wait,
                           max_requeues)
    overrides = flag_overrides(methods=methods, datasets=dataset, seeds=seeds, device=device,
                               data_root=data_root, metrics=metrics,
                               inception_weights=inception_weights)
    try:
        suite = plan_suite(config, overrides, set_ or [], check=False)
    except (ConfigError, RegistryError, ValueError) as err:
        fail(unknown_name_hint(str(err)))
    out_dir = out or default_out(suite)
    ema_warnings(suite)
    dev, problems = preflight(suite, out_dir)
    if show_config:
        print_configs(suite)
    if dry_run:
        print_plan(suite, dev, out_dir)
    if not dry_run:  # a dataset without its files: its runs are recorded failed, the rest go on
        for p in (p for p in problems if p.dataset is not None):
            err_console.print(f"warning: {p.message}; its runs will be recorded failed with "
                              "this reason", markup=False, highlight=False)
        problems = [p for p in problems if p.dataset is None]
    if problems or dev is None:
        refuse(problems)
    try:
        check_out(out_dir, create=not dry_run)
        runners = suite.runners(out_dir, dev, force=force)
    except (ConfigError, RegistryError, ValueError) as err:
        fail(unknown_name_hint(str(err)))
    runner = runners[0]
    if dry_run:
        if estimate:
            show_estimate(runner, dev)
        return
    # only for runs in this process: Slurm jobs and worker processes run on other devices,
    # and a method's code runs in the jobs' isolation, never in the submitting process
    if estimate and dev.type == "cpu" and is_main() and opts.in_process:
        show_estimate(runner, dev, only_if_longer=3600, proceeding=True)
    if not is_main():  # torchrun: the other ranks train their share and stay quiet
        runner.run()
        shutdown()
        return
    try:
        launch(suite, runners, out_dir, dev, opts, plugin, force,
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
    mem_gb: MemOpt = None, wait: WaitOpt = False, max_requeues: RequeuesOpt = 10,
) -> None:
    """Expand a grid of config values into runs; skip runs whose ok record exists."""
    load_plugins(plugin)
    opts = ExecutorOptions(executor, workers, cluster, partition, gpus, time_min, mem_gb, wait,
                           max_requeues)
    try:
        suite = plan_suite(config, {"device": device} if device else {}, set_ or [],
                           sweep=True)
        dev = pick_device(suite.cfg.device)
        out_dir = out or default_out(suite)
        check_out(out_dir, create=not dry_run)
        runners = suite.runners(out_dir, dev, force=force)
    except (ConfigError, RegistryError, ValueError) as err:
        fail(unknown_name_hint(str(err)))
    ema_warnings(suite)
    total = sum(len(p.runs()) for p in suite.plans)
    console.print(f"sweep {config}: {len(suite.points)} grid point(s), {total} run(s) in all")
    if dry_run:
        for p in suite.plans:
            console.print(f"# {p.sweep or '(no grid keys)'}: {len(p.runs())} run(s)")
        return
    launch(suite, runners, out_dir, dev, opts, plugin, force,
           f"Nothing to do: all {total} runs of this sweep already have ok records; nothing "
           "was trained (use --force to rerun).")


def ema_warnings(suite: Suite) -> None:
    """Say once for each distinct ``train.ema`` setting that the warm-up keeps from acting."""
    for note in dict.fromkeys(ema_note(cfg.train) for _, cfg in suite.points):
        if note:
            err_console.print(f"note: {note}", markup=False, highlight=False)


def preflight(suite: Suite, out_dir: Path) -> tuple[torch.device | None, list[Problem]]:
    """This process's device (None when it cannot be had) and every problem that would stop
    the suite: its plans' (``Plan.problems``: metric prerequisites, data files), a results
    folder that cannot be written, a device that is not there. Nothing is created."""
    problems: list[Problem] = []
    for plan in suite.plans:
        problems += [p for p in plan.problems() if p not in problems]
    try:
        check_out(out_dir, create=False)
    except ConfigError as err:
        problems.append(Problem(str(err), "the records are written there",
                                "give --out a folder you can write"))
    dev = init_from_env()  # torchrun: this rank's device
    if dev is None:
        try:
            dev = pick_device(suite.cfg.device)
        except (ValueError, RuntimeError) as err:  # no CUDA; not a device name
            problems.append(Problem(str(err), "the runs train and sample there",
                                    "--device cpu, or auto (CUDA when there is one)"))
    return dev, problems


def print_configs(suite: Suite) -> None:
    """``--show-config``: the resolved config of each dataset's runs (``Plan.shown_config``)."""
    for plan in suite.plans:
        for d in plan.datasets:
            console.print(f"# config of the {d} runs", markup=False)
            console.print(yaml.safe_dump(plan.shown_config(d), sort_keys=False), end="",
                          markup=False)


def print_plan(suite: Suite, device: torch.device | None, out_dir: Path) -> None:
    """The dry run's plan: the preset underneath, the device, the results file, each run."""
    console.print(f"# preset: {suite.preset or 'none'} (a dataset's default recipe, used "
                  "without --config; the config file and --set override it)", markup=False)
    console.print(f"# device: {device or suite.cfg.device + ' (not available)'}   results: "
                  f"{out_dir / RECORDS_FILE}", markup=False)
    for plan in suite.plans:
        for s in plan.runs():
            console.print(f"# run {s.dataset} {s.method} seed {s.seed} "
                          f"(recipe {s.recipe}, config {s.config_hash})", markup=False)


def refuse(problems: list[Problem]) -> NoReturn:
    """List the problems (what, why, the fix) and exit 2: nothing is run."""
    err_console.print(f"Problems ({len(problems)}):", markup=False, highlight=False)
    for i, p in enumerate(problems, 1):
        err_console.print(f"  {i}. {p.what}\n     why: {p.why}\n     fix: {p.fix}",
                          markup=False, highlight=False)
    fail(f"{len(problems)} problem(s), listed above; nothing was run")


def show_estimate(runner: Runner, device: torch.device, only_if_longer: float = 0.0,
                  proceeding: bool = False) -> None:
    """Print the measured wall-clock estimate (``bench.estimate``); for a long one, how to
    scale the plan down. Nothing is asked: the run proceeds."""
    console.print("[dim]· estimating the wall-clock from a few measured steps …[/]")
    try:
        est = estimate_runs(runner)
    except Exception as err:  # e.g. missing dataset files: the runs will record the reason
        console.print(f"# no estimate: {type(err).__name__}: {err}", markup=False)
        return
    if est.total < only_if_longer:
        return
    console.print(f"# estimate: about {human(est.total)} on {device} (range "
                  f"{human_range(est.low, est.high)}; training {human(est.train_seconds)}, "
                  f"sampling {human(est.sample_seconds)}, metrics {human(est.metric_seconds)})",
                  markup=False)
    for line in est.lines + est.eval_lines:
        console.print(f"#   {line}", markup=False)
    if est.total >= 3600 and device.type == "cpu":
        console.print("# this is long for a CPU; to scale it down: "
                      + ", ".join(scale_down_hints(runner.plan)) + "."
                      + (" Proceeding." if proceeding else ""), markup=False)


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


def launch(suite: Suite, runners: list[Runner], out_dir: Path, device: torch.device,
           opts: ExecutorOptions, plugin: list[Path] | None, force: bool,
           nothing_to_do: str) -> None:
    """Execute the suite as ``opts`` says (``bench.suite.execute``), then summarise its
    records (exit 1 if any run failed; 130 when stopped)."""
    try:
        records = execute(suite, out_dir, device=device, force=force, executor=opts,
                          plugins=[str(p) for p in plugin or []], display=show_progress,
                          log=log, runners=runners)
    except KeyboardInterrupt as err:
        interrupted(err)
    except OSError as err:
        stop_if_disk_full(err)
    if opts.executor == "slurm" and not opts.waits:
        console.print(f"submitted {len(suite.units())} job(s); `bench status {out_dir}` shows "
                      "them, and the same command again collects: finished runs are "
                      "skipped.")
        return
    if opts.in_process and not records:
        console.print(nothing_to_do)
        return
    conclude(records, out_dir)


@contextmanager
def show_progress(plan: Plan, label: str, device: torch.device, records: Path
                  ) -> Iterator[RichReporter]:
    """A grid point run in this process: its header line, then a progress bar."""
    console.print(f"[bold]{plan.cfg.name}[/]{label}: {len(plan.methods)} method(s) × "
                  f"{len(plan.datasets)} dataset(s) × {len(plan.cfg.seeds)} seed(s) on "
                  f"{device} → {records}")
    progress = progress_bar()
    with progress:
        yield RichReporter(progress)


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


def record_counts(results: Path) -> list[dict[str, Any]]:
    """Per dataset and method, the runs whose latest record is ok / failed / interrupted (a
    run: its config hash, method and seed; a retried run counts once)."""
    latest, _ = latest_only(read_records(results / RECORDS_FILE).records, by_space=False)
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for r in latest:
        row = counts.setdefault((r.dataset, r.method), {
            "dataset": r.dataset, "method": r.method, "ok": 0, "failed": 0, "interrupted": 0})
        if r.status in ("ok", "failed", "interrupted"):
            row[r.status] += 1
    return list(counts.values())


def status_cmd(
    results: Annotated[Path, typer.Argument(help="Results folder of a suite")],
) -> None:
    """Runs training now (from their live logs), jobs submitted with --executor slurm
    (scheduler state and runs ok / failed / missing), else the runs the records hold."""
    rows = jobs.status(results)
    training = in_training(results)
    counts = record_counts(results) if not rows else []
    if not rows and not training and not counts:
        fail(f"nothing to show in {results}: no records ({RECORDS_FILE}), no recipe is "
             "training there (no live log without a finished checkpoint) and nothing was "
             f"submitted ({jobs.JOBS_FILE})")
    if counts:
        table = Table(title=f"runs recorded in {results / RECORDS_FILE} (latest record of "
                            "each run)")
        for col in ("dataset", "method", "ok", "failed", "interrupted"):
            table.add_column(col)
        for c in counts:
            table.add_row(c["dataset"], c["method"], str(c["ok"]), str(c["failed"]),
                          str(c["interrupted"]))
        console.print(table)
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
