"""``bench sample``: draw samples from a trained run's checkpoint and write them to disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from bench.api import ModelNotFound, load
from bench.cli.console import console, fail, load_plugins, unknown_name_hint
from bench.cli.options import DeviceOpt, PluginOpt
from bench.io import atomic_write
from bench.metrics.extractors import to_uint8
from bench.registry import RegistryError

FORMATS = ("png", "npz")


def sample_cmd(
    results: Annotated[Path, typer.Argument(help="Results folder of the run")],
    method: Annotated[str, typer.Option("--method", "-m", help="The method to sample")],
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Dataset (needed when the folder holds several)")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Training seed (needed when the folder holds several)")] = None,
    recipe_hash: Annotated[str | None, typer.Option(
        help="Recipe hash (or its start) when the folder holds several configs")] = None,
    n: Annotated[int, typer.Option("-n", help="Number of samples")] = 1000,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write")] = Path("samples"),
    fmt: Annotated[str | None, typer.Option(
        "--format", help="png (one file per image) or npz (one array: uint8 [n, H, W, C] "
                         "images, as clean-fid and EDM's fid.py read, or float32 points). "
                         "Default: png for images, npz for points")] = None,
    noise_seed: Annotated[int, typer.Option(help="Seed of the noise")] = 0,
    batch: Annotated[int, typer.Option(help="Sampling batch size")] = 500,
    device: DeviceOpt = None,
    plugin: PluginOpt = None,
) -> None:
    """Sample a trained method (counted NFE) and write PNG files or one .npz."""
    load_plugins(plugin)
    if fmt is not None and fmt not in FORMATS:
        fail(f"--format {fmt!r}: choices: {', '.join(FORMATS)}")
    try:
        model = load(results, method, dataset=dataset, seed=seed, device=device or "auto",
                     recipe_hash=recipe_hash)
    except (ModelNotFound, RegistryError, ValueError) as err:
        fail(unknown_name_hint(str(err), results, method))
    if fmt is None:
        fmt = "png" if model.data.kind == "images" else "npz"
    if model.data.kind != "images" and fmt == "png":
        fail(f"{model.dataset} holds {model.data.kind}, not images: --format png writes "
             "images only; use --format npz (the default for points)")
    gen = torch.Generator(device=model.device).manual_seed(noise_seed)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"sampling {method}", total=n)
        x = model.sample(n, generator=gen, batch_size=batch,
                         on_batch=lambda done: progress.update(task, completed=done))
    out.mkdir(parents=True, exist_ok=True)
    if model.data.kind == "images":
        arr, what = to_uint8(x.cpu()).permute(0, 2, 3, 1).numpy(), "images, uint8 [n, H, W, 3]"
    else:
        arr, what = x.cpu().numpy(), "points, float32"
    if fmt == "png":
        write_pngs(arr, out)
        written = f"{n} PNG files in {out}"
    else:
        path = atomic_write(out / "samples.npz", lambda tmp: np.savez(tmp, samples=arr))
        written = f"{path} ({n} {what})"
    console.print(f"wrote {written}; {method} on {model.dataset}, seed {model.seed}, counted "
                  f"NFE {model.nfe:g} per sample, checkpoint {model.checkpoint}")


def write_pngs(u8: np.ndarray, out: Path) -> None:
    """One PNG per image, named by its index (uint8 [n, H, W, 3])."""
    from PIL import Image  # Pillow comes with torchvision; only this command needs it

    width = len(str(len(u8) - 1))
    for i, img in enumerate(u8):
        atomic_write(out / f"{i:0{width}d}.png", lambda tmp, img=img: Image.fromarray(img)
                     .save(tmp, format="PNG"))
