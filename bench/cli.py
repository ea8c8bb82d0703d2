"""``bench``: run, report and list (typer + rich)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bench.config import ConfigError, resolve, to_dict
from bench.registry import DATASETS, METHODS, METRICS, RegistryError, load_builtins
from bench.results import RECORDS_FILE, RunRecord, read_records

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="OT-NFM Bench: one-step generators vs multi-step flow matching.")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True,
                      highlight=False)
    raise typer.Exit(code)


def _setup(plugins: list[Path] | None) -> None:
    from bench.plugins import PluginError, load_entry_points, load_plugin

    load_builtins()
    try:
        load_entry_points()
        for p in plugins or []:
            load_plugin(p)
    except (PluginError, RegistryError) as err:
        _fail(str(err))


class RichReporter:
    """Progress bar per training run, one line per finished run."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: int | None = None

    def start(self, label: str, total: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(label, total=max(total, 1), loss=float("nan"))

    def advance(self, step: int, loss: float) -> None:
        if self.task is not None and (step % 10 == 0 or step == 1):
            self.progress.update(self.task, completed=step, loss=loss)

    def done(self, rec: RunRecord) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        if rec.status == "ok":
            ms = rec.metrics
            main = ", ".join(f"{k}={ms[k]:.4g}" for k in list(ms)[:3])
            self.progress.console.print(
                f"[green]ok[/]     {rec.dataset:<14} {rec.method:<18} seed {rec.seed}  "
                f"NFE {rec.nfe if rec.nfe is not None else '–':<4} {main}")
        else:
            self.progress.console.print(
                f"[red]failed[/] {rec.dataset:<14} {rec.method:<18} seed {rec.seed}  {rec.error}")

    def log(self, message: str) -> None:
        self.progress.console.print(f"[dim]{message}[/]")


def _summary(records: list[RunRecord]) -> Table:
    from bench.report.stats import fmt_num, summarize

    def cell(values: list) -> str:
        s = summarize(values)
        if s.n == 0:
            return "–"
        return fmt_num(s.mean, 3) + (f"±{fmt_num(s.std, 1)}" if s.n > 1 else "")

    table = Table(title="Summary (mean±std over seeds; full report: bench report)")
    quality = next((m for m in ("w2", "fd_domain", "fid") if any(
        m in r.metrics for r in records)), "w2")
    for col in ("dataset", "method", "ok", "NFE", quality, "var ratio", "train s", "ms/1k"):
        table.add_column(col, no_wrap=True)
    keys: list[tuple[str, str]] = []
    for r in records:
        if (r.dataset, r.method) not in keys:
            keys.append((r.dataset, r.method))
    for ds, m in keys:
        runs = [r for r in records if r.dataset == ds and r.method == m]
        good = [r for r in runs if r.status == "ok"]
        trained = [r.train_seconds for r in good if r.train_steps]
        nfe = sorted({r.nfe for r in good if r.nfe is not None})
        table.add_row(ds, m, f"{len(good)}/{len(runs)}", "/".join(map(str, nfe)) or "–",
                      cell([r.metrics.get(quality) for r in good]),
                      cell([r.metrics.get("var_ratio") for r in good]), cell(trained),
                      cell([r.sample_ms_per_1k for r in good]))
    return table


ExecutorOpt = Annotated[str, typer.Option(
    help="local (this machine) or slurm (one submitit job per dataset x seed)")]
WorkersOpt = Annotated[int, typer.Option(help="Local worker processes")]
ClusterOpt = Annotated[str | None, typer.Option(
    help="submitit cluster: slurm, or local (submitit's local executor)")]
PartitionOpt = Annotated[str | None, typer.Option(help="Slurm partition")]
GpusOpt = Annotated[int | None, typer.Option(help="GPUs per Slurm job")]
TimeOpt = Annotated[int, typer.Option(help="Slurm time limit per job (minutes)")]
MemOpt = Annotated[int | None, typer.Option(help="Memory per Slurm job (GB)")]
WaitOpt = Annotated[bool, typer.Option(help="Wait for Slurm jobs and collect them")]


@app.command("run")
def run_cmd(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML suite file")] = None,
    methods: Annotated[str | None, typer.Option(
        "--methods", "-m", help="Comma-separated names or globs, e.g. 'otnfm-*,fm-euler100'",
    )] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Dataset name(s), comma-separated or globs")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, e.g. 0,1,2")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Override a config key: --set train.steps=2000 (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Results folder (default results/<suite name>)")] = None,
    plugin: Annotated[list[Path] | None, typer.Option(
        help="Python file registering extra methods/datasets/metrics (repeatable)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    data_root: Annotated[str | None, typer.Option(
        "--data-root", help="Folder with dataset files (sets data.root)")] = None,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", help="Metric names (sets eval.metrics), e.g. 'fd,classes,fid'")] = None,
    inception_weights: Annotated[str | None, typer.Option(
        "--inception-weights", help="Inception weights file for --metrics fid "
        "(sets eval.inception_weights)")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the resolved config and the planned runs, run nothing")] = False,
    force: Annotated[bool, typer.Option(
        help="Re-run (and retrain) even if an ok record / checkpoint exists")] = False,
    executor: ExecutorOpt = "local", workers: WorkersOpt = 1, cluster: ClusterOpt = None,
    partition: PartitionOpt = None, gpus: GpusOpt = None, time_min: TimeOpt = 240,
    mem_gb: MemOpt = None, wait: WaitOpt = False,
) -> None:
    """Train and evaluate methods x datasets x seeds; append one JSON record per run."""
    _setup(plugin)
    from bench.runner import Runner, pick_device

    overrides: dict = {}
    if methods:
        overrides["methods"] = methods
    if dataset:
        overrides["datasets"] = dataset
    if seeds:
        overrides["seeds"] = seeds
    if device:
        overrides["device"] = device
    if data_root:
        overrides["data"] = {"root": data_root}
    if metrics:
        overrides.setdefault("eval", {})["metrics"] = metrics
    if inception_weights:
        overrides.setdefault("eval", {})["inception_weights"] = inception_weights
    from bench.distributed import init_from_env, is_main, shutdown

    try:
        cfg = resolve(config, overrides, set_ or [])
        dev = init_from_env() or pick_device(cfg.device)  # torchrun: this rank's device
        out_dir = out or Path("results") / cfg.name
        runner = Runner(cfg, out_dir, dev, config_file=str(config) if config else None,
                        force=force)
    except (ConfigError, RegistryError, ValueError) as err:
        _fail(str(err))
    if dry_run:
        console.print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        console.print(f"# device: {dev}   results: {out_dir / RECORDS_FILE}")
        for p in runner.plan():
            console.print(f"# run {p['dataset']} {p['method']} seed {p['seed']} "
                          f"(recipe {p['recipe']}, config {p['config_hash']})")
        return
    if executor not in ("local", "slurm"):
        _fail(f"--executor {executor!r}: choices: local, slurm")
    if executor == "slurm" or workers > 1:
        _dispatch([runner], out_dir, executor, workers, cluster, _slurm_params(
            partition, gpus, time_min, mem_gb), wait, plugin,
            str(config) if config else None, cfg.device, force)
        return
    if not is_main():  # torchrun: the other ranks train their share and stay quiet
        runner.run()
        shutdown()
        return
    try:
        written = _execute(runner, out_dir)
    finally:
        shutdown()
    if not written:
        console.print("Nothing to do: every run already has an ok record (use --force to rerun).")
        return
    _finish(written, out_dir)


def _slurm_params(partition, gpus, time_min, mem_gb) -> dict:
    return {"slurm_partition": partition, "gpus_per_node": gpus, "timeout_min": time_min,
            "mem_gb": mem_gb}


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.4f}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    transient=True)


def _execute(runner, out_dir: Path, label: str = "") -> list[RunRecord]:
    cfg = runner.cfg
    console.print(f"[bold]{cfg.name}[/]{label}: {len(runner.methods)} method(s) × "
                  f"{len(runner.datasets)} dataset(s) × {len(cfg.seeds)} seed(s) on "
                  f"{runner.device} → {out_dir / RECORDS_FILE}")
    progress = _progress()
    runner.reporter = RichReporter(progress)
    try:
        with progress:
            return runner.run()
    except KeyboardInterrupt as err:
        msg = str(err) or "interrupted"
        err_console.print(f"[bold yellow]interrupted:[/] {msg}. Finished runs are recorded; "
                          "run the same command again to resume.", highlight=False)
        raise typer.Exit(130) from None




def _dispatch(runners, out_dir: Path, executor: str, workers: int, cluster: str | None,
              slurm: dict, wait: bool, plugin: list[Path] | None, config_file: str | None,
              device: str, force: bool) -> None:
    """Run the suite's (grid point, dataset, seed) groups in worker processes or as submitit
    jobs, then summarise what the records file holds for them."""
    from bench import executors

    groups = [executors.Group(r.cfg, r.sweep, d, s) for r in runners for d, s in r.groups()]
    plugins = [str(p) for p in plugin or []]

    def log(msg: str) -> None:
        console.print(f"[dim]·[/] {msg}", highlight=False)

    if executor == "slurm":
        executors.submit_slurm(groups, out_dir, device, config_file, force, plugins, cluster,
                               slurm, wait or cluster == "local", log)
        if not (wait or cluster == "local"):
            console.print(f"submitted {len(groups)} job(s); `bench status {out_dir}` shows "
                          "them, and the same command again collects: finished runs are "
                          "skipped.")
            return
    else:
        executors.run_local(groups, out_dir, device, config_file, force, plugins, workers, log)
    keys = {(g.dataset, g.seed, json.dumps(g.sweep, sort_keys=True)) for g in groups}
    recs = [r for r in read_records(out_dir / RECORDS_FILE).records
            if (r.dataset, r.seed, json.dumps(r.sweep, sort_keys=True)) in keys]
    _finish(recs, out_dir)


def _finish(written: list[RunRecord], out_dir: Path) -> None:
    console.print(_summary(written))
    failed = [r for r in written if r.status != "ok"]
    if failed:
        err_console.print(f"[red]{len(failed)} of {len(written)} run(s) failed[/] "
                          f"(recorded with their reasons in {out_dir / RECORDS_FILE})")
        raise typer.Exit(1)


@app.command("sweep")
def sweep_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML suite with a 'sweep:' grid")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Override a config key for every grid point (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Results folder (default results/<suite name>)")] = None,
    plugin: Annotated[list[Path] | None, typer.Option(help="Plugin files (repeatable)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, ...")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the grid, run nothing")] = False,
    force: Annotated[bool, typer.Option(help="Re-run runs that already have an ok record")] = False,
    executor: ExecutorOpt = "local", workers: WorkersOpt = 1, cluster: ClusterOpt = None,
    partition: PartitionOpt = None, gpus: GpusOpt = None, time_min: TimeOpt = 240,
    mem_gb: MemOpt = None, wait: WaitOpt = False,
) -> None:
    """Expand a grid of config values into runs; skip runs whose ok record exists."""
    _setup(plugin)
    from bench.config import expand_sweep
    from bench.runner import Runner, pick_device

    try:
        points = expand_sweep(config, (set_ or []) + ([f"device={device}"] if device else []))
        dev = pick_device(points[0][1].device)
        out_dir = out or Path("results") / points[0][1].name
        runners = [(assign, Runner(cfg, out_dir, dev, config_file=str(config), force=force,
                                   sweep=assign)) for assign, cfg in points]
    except (ConfigError, RegistryError, ValueError) as err:
        _fail(str(err))
    total = sum(len(r.plan()) for _, r in runners)
    console.print(f"sweep {config}: {len(points)} grid point(s), {total} run(s) in all")
    if dry_run:
        for assign, r in runners:
            console.print(f"# {assign or '(no grid keys)'}: {len(r.plan())} run(s)")
        return
    if executor not in ("local", "slurm"):
        _fail(f"--executor {executor!r}: choices: local, slurm")
    if executor == "slurm" or workers > 1:
        _dispatch([r for _, r in runners], out_dir, executor, workers, cluster,
                  _slurm_params(partition, gpus, time_min, mem_gb), wait, plugin, str(config),
                  points[0][1].device, force)
        return
    written: list[RunRecord] = []
    for i, (assign, r) in enumerate(runners, 1):
        label = f" [{i}/{len(runners)}] " + ", ".join(f"{k}={v}" for k, v in assign.items())
        written += _execute(r, out_dir, label)
    if not written:
        console.print(f"Nothing to do: all {total} runs of this sweep already have ok records; "
                      "nothing was trained (use --force to rerun).")
        return
    _finish(written, out_dir)


def _sources(paths: list[Path]):
    from bench.report.markdown import Source

    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.rglob(RECORDS_FILE))
        elif p.is_file():
            files.append(p)
        else:
            _fail(f"no results at {str(p)!r} (give a results folder or a records.jsonl file)")
    if not files:
        _fail(f"no {RECORDS_FILE} under {', '.join(map(str, paths))}")
    out = []
    for f in files:
        res = read_records(f)
        for line, why in res.skipped:
            err_console.print(f"[yellow]warning:[/] {f}:{line}: skipped malformed record ({why})")
        out.append(Source(str(f), res.records, len(res.skipped)))
    return out


def _pairs(items: list[str] | None) -> list[tuple[str, str]] | None:
    if not items:
        return None
    out = []
    for item in items:
        a, sep, b = item.partition(":")
        if not sep or not a or not b:
            _fail(f"--compare {item!r}: expected A:B, e.g. otnfm-online:fm-euler100")
        out.append((a, b))
    return out


@app.command("report")
def report_cmd(
    results: Annotated[list[Path] | None, typer.Argument(
        help="Results folders or records.jsonl files (default: results/)")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Markdown file to write (figures go to <stem>/ beside it)")] = None,
    title: Annotated[str | None, typer.Option(help="Report title")] = None,
    compare: Annotated[list[str] | None, typer.Option(
        help="Paired comparison A:B over common seeds (repeatable; default: every method vs "
             "fm-euler100 when present)")] = None,
    plugin: Annotated[list[Path] | None, typer.Option(help="Plugin files (for their metrics)")]
    = None,
) -> None:
    """Render a Markdown report from run records alone (never trains)."""
    _setup(plugin)
    from bench.evaluate import directions
    from bench.report import render_report

    paths = results or [Path("results")]
    sources = _sources(paths)
    target = out or (paths[0] if paths[0].is_dir() else paths[0].parent) / "report.md"
    render_report(sources, target, directions(), title=title, compare=_pairs(compare))
    n = sum(len(s.records) for s in sources)
    console.print(f"wrote {target} from {n} record(s) in {len(sources)} file(s)")


@app.command("status")
def status_cmd(
    results: Annotated[Path, typer.Argument(help="Results folder of a submitted suite")],
) -> None:
    """Jobs submitted with --executor slurm: scheduler state and runs ok / failed / missing."""
    from bench.executors import JOBS_FILE, status

    rows = status(results)
    if not rows:
        _fail(f"no {JOBS_FILE} in {results}: nothing was submitted there")
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


@app.command("perf")
def perf_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset, e.g. moons, mnist5k")
                       ] = "moons",
    methods: Annotated[str | None, typer.Option(
        "--methods", "-m", help="Methods (default: the core ones)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML suite file")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key")
                    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, ...")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root")] = None,
    repeats: Annotated[int, typer.Option(help="Timed repeats per figure")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing")] = 3,
    train_steps: Annotated[int, typer.Option(help="Steps of the real loop per overlap mode")
                           ] = 30,
    sample_batch: Annotated[int, typer.Option(help="Large batch for sampling throughput")
                            ] = 1000,
    ot_sizes: Annotated[str, typer.Option(help="Batch sizes for the solver timings")
                        ] = "64,128,256,512,1024",
    banks: Annotated[str, typer.Option(help="Online OT bank sizes")] = "1000,50000",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for perf.jsonl")
                   ] = Path("results/perf"),
    md: Annotated[Path | None, typer.Option(help="Also write a Markdown summary here")] = None,
    plugin: Annotated[list[Path] | None, typer.Option(help="Plugin files")] = None,
) -> None:
    """Time training steps (data/coupling/forward/backward/optimizer), sampling (batch-1
    latency, large-batch throughput, counted NFE), exact solvers vs batch size and the online
    OT bank; print tables and append one JSON line to OUT/perf.jsonl."""
    _setup(plugin)
    import torch

    from bench import perf
    from bench.results import git_commit, library_versions
    from bench.runner import dataset_config, pick_device, split_dataset

    overrides: dict = {"datasets": dataset}
    if device:
        overrides["device"] = device
    if data_root:
        overrides["data"] = {"root": data_root}
    try:
        cfg = resolve(config, overrides, set_ or [])
        names = METHODS.match([m.strip() for m in methods.split(",")]) if methods else \
            list(perf.DEFAULT_METHODS)
        dev = pick_device(cfg.device)
        dcfg = dataset_config(cfg, dataset)
        data = DATASETS.get(split_dataset(dataset)[0])(dcfg.data, 0, dev)
        data.name = dataset
        sizes = [int(x) for x in ot_sizes.split(",") if x.strip()]
        bank_sizes = tuple(int(x) for x in banks.split(",") if x.strip())
    except (ConfigError, RegistryError, ValueError) as err:
        _fail(str(err))
    res = perf.run_perf(dcfg, data, dev, names, warmup, repeats, train_steps, sample_batch,
                        sizes, bank_sizes, log=lambda m: console.print(f"[dim]· {m}[/]"))
    record = {"dataset": dataset, "device": str(dev), "threads": torch.get_num_threads(),
              "git_commit": git_commit(), "versions": library_versions(),
              "batch_size": cfg.train.batch_size, "repeats": repeats, "warmup": warmup,
              "config": to_dict(dcfg), **perf.jsonable(res)}
    out.mkdir(parents=True, exist_ok=True)
    from bench.results import append_json_line

    append_json_line(out / "perf.jsonl", record)
    text = perf.markdown(record)
    console.print(text, markup=False, highlight=False)
    if md is not None:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(text, encoding="utf-8")
    console.print(f"appended to {out / 'perf.jsonl'}" + (f"; wrote {md}" if md else ""))


@app.command("list")
def list_cmd(
    plugin: Annotated[list[Path] | None, typer.Option(help="Plugin files to include")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """List the registered methods, datasets and metrics."""
    _setup(plugin)
    if as_json:
        data = {
            "methods": {e.name: {"help": e.help, **e.meta} for e in METHODS.entries()},
            "datasets": {e.name: {"help": e.help} for e in DATASETS.entries()},
            "metrics": {e.name: {"help": e.help, **e.meta} for e in METRICS.entries()},
        }
        console.print_json(json.dumps(data, default=list))
        return
    for title, reg, extra in (
        ("Methods", METHODS, lambda e: e.meta.get("recipe", e.name)),
        ("Datasets", DATASETS, lambda e: e.meta.get("kind", "")),
        ("Metrics", METRICS, lambda e: ", ".join(
            f"{k} ({v})" for k, v in e.meta.get("outputs", {}).items())),
    ):
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("name", style="bold")
        table.add_column({"Methods": "recipe", "Datasets": "kind", "Metrics": "outputs"}[title])
        table.add_column("description")
        for e in reg.entries():
            table.add_row(e.name, extra(e), e.help)
        console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
