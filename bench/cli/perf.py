"""``bench perf``: where a training step and a sampling call spend their time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from bench import perf
from bench.cli.console import console, fail, load_plugins
from bench.cli.options import ConfigOpt, DataRootOpt, DeviceOpt, PluginOpt, SetOpt
from bench.config import ConfigError, resolve, to_dict
from bench.datasets.base import dataset_config, load_dataset
from bench.env import git_commit, library_versions, pick_device
from bench.io import atomic_write_text
from bench.metrics.inception_weights import InceptionWeightsMissing
from bench.perf_fid import fid_speed
from bench.registry import METHODS, RegistryError
from bench.results import append_json_line


def perf_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset, e.g. moons, mnist5k")
                       ] = "moons",
    methods: Annotated[str | None, typer.Option(
        "--methods", "-m", help="Methods (default: the core ones)")] = None,
    config: ConfigOpt = None, set_: SetOpt = None, device: DeviceOpt = None,
    data_root: DataRootOpt = None,
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
    fid: Annotated[bool, typer.Option(
        "--fid", help="Only time Inception feature extraction: torch-fidelity's "
        "inception-v3-compat against the harness's inception-v3-fast on the same images "
        "(images/s, feature and FID differences)")] = False,
    fid_images: Annotated[int, typer.Option(help="--fid: images per set (two sets)")] = 64,
    inception_weights: Annotated[str | None, typer.Option(
        "--inception-weights", help="--fid: weights file (default: found offline)")] = None,
    plugin: PluginOpt = None,
) -> None:
    """Time training steps (data/coupling/forward/backward/optimizer), sampling (batch-1
    latency, large-batch throughput, counted NFE), exact solvers vs batch size and the online
    OT bank; print tables and append one JSON line to OUT/perf.jsonl."""
    load_plugins(plugin)
    if fid:
        fid_perf(dataset, fid_images, repeats, inception_weights, out, md)
        return
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
        data = load_dataset(cfg, dataset, 0, dev)
        sizes = [int(x) for x in ot_sizes.split(",") if x.strip()]
        bank_sizes = tuple(int(x) for x in banks.split(",") if x.strip())
    except (ConfigError, RegistryError, ValueError) as err:
        fail(str(err))
    dcfg = dataset_config(cfg, dataset)
    res = perf.run_perf(dcfg, data, dev, names, warmup, repeats, train_steps, sample_batch,
                        sizes, bank_sizes, log=lambda m: console.print(f"[dim]· {m}[/]"))
    record = {"dataset": dataset, "device": str(dev), "threads": torch.get_num_threads(),
              "git_commit": git_commit(), "versions": library_versions(),
              "batch_size": cfg.train.batch_size, "repeats": repeats, "warmup": warmup,
              "config": to_dict(dcfg), **perf.jsonable(res)}
    append_json_line(out / "perf.jsonl", record)
    text = perf.markdown(record)
    console.print(text, markup=False, highlight=False)
    if md is not None:
        atomic_write_text(md, text)
    console.print(f"appended to {out / 'perf.jsonl'}" + (f"; wrote {md}" if md else ""))


def fid_perf(dataset: str, n: int, repeats: int, weights: str | None, out: Path,
             md: Path | None) -> None:
    """Inception extraction, both extractors side by side in one process (``--fid``)."""
    try:
        res = fid_speed(dataset, n, batch=32, repeats=max(1, repeats), weights=weights)
    except (InceptionWeightsMissing, RegistryError, ValueError) as err:
        fail(str(err))
    record = {"kind": "fid", "device": "cpu", "git_commit": git_commit(),
              "versions": library_versions(), **res}
    append_json_line(out / "perf.jsonl", record)
    text = (f"# bench perf --fid: {dataset}\n\n"
            f"{res['n_images']} images ({' + '.join(map(str, res['set_sizes']))}, "
            f"{'x'.join(map(str, res['input_size']))} upsampled to 299), batch {res['batch']}, "
            f"{res['threads']} threads, median of {res['repeats']}; weights "
            f"{res['weights_source']} (tensors sha256 {res['weights_sha256'][:12]}), commit "
            f"`{(record['git_commit'] or '')[:12]}`.\n\n"
            "| extractor | images/s |\n|---|---|\n"
            f"| inception-v3-compat (torch-fidelity) | {res['compat_images_per_s']:.3g} |\n"
            f"| inception-v3-fast (harness) | {res['fast_images_per_s']:.3g} |\n\n"
            f"Speed-up {res['speedup']:.2f}x; largest feature difference "
            f"{res['max_abs_feature_diff']:.2e} ({res['max_rel_feature_diff']:.2e} of the "
            f"largest feature); FID between the two sets {res['fid_compat']:.6g} (compat) vs "
            f"{res['fid_fast']:.6g} (fast), difference {res['fid_abs_diff']:.2e}.\n")
    console.print(text, markup=False, highlight=False)
    if md is not None:
        atomic_write_text(md, text)
