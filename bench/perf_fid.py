"""Inception feature-extraction timings (``bench perf --fid``, scripts/perf_inception_options.py).

- :func:`speed_comparison` / :func:`fid_speed`: torch-fidelity's ``inception-v3-compat`` against
  the ``fid`` metric's extractor on the same images, same weights, same threads;
- :func:`options_comparison`: the library-built variants of ``inception-v3-compat`` (as is,
  BatchNorm fused into the convolutions with ``torch.nn.utils.fusion.fuse_conv_bn_eval``,
  channels-last, both, optionally ``torch.compile``) against the metric's extractor, written up
  by :func:`options_markdown` (reports/perf-inception-options.md, which also records the
  hand-written graph the metric used before).

Every measurement runs the extractors interleaved in one process: after one warm-up batch each,
every repeat times all of them back to back over all images in batches of ``batch`` (as
``torch_fidelity.calculate_metrics`` feeds them), so load from other jobs hits them alike;
images/s are medians over repeats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import bench.builtins  # noqa: F401  (the built-in datasets, for callers outside the CLI)
from bench.config import DataConfig
from bench.metrics.extractors import to_uint8
from bench.metrics.inception_fast import (
    CHUNK,
    FAST_NAME,
    FastInception,
    compat_extractor,
    fuse_compat,
)
from bench.metrics.inception_weights import COMPAT_NAME, load_checked, resolve_weights
from bench.registry import DATASETS

Extractor = Callable[[torch.Tensor], torch.Tensor]


def _fid(a: torch.Tensor, b: torch.Tensor) -> float:
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )

    sa, sb = (fid_features_to_statistics(f.double()) for f in (a, b))
    return float(fid_statistics_to_metric(sa, sb, False)[KEY_METRIC_FID])


def _sets(images_uint8: torch.Tensor, other_uint8: torch.Tensor | None) -> list[torch.Tensor]:
    sets = [images_uint8, other_uint8] if other_uint8 is not None else list(
        images_uint8.split((images_uint8.shape[0] + 1) // 2))
    if any(s.dtype != torch.uint8 or s.dim() != 4 or s.shape[1] != 3 for s in sets):
        raise ValueError("expected uint8 [N, 3, H, W] images")
    return sets


def interleaved(paths: dict[str, Extractor], sets: list[torch.Tensor], batch: int,
                repeats: int, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> tuple[dict[str, list[float]], dict[str, list[torch.Tensor]], dict]:
    """Seconds per repeat and the features of each extractor (see the module docstring);
    ``prepare`` maps a batch before every call (e.g. to channels-last), timed with it."""
    prep = prepare or (lambda x: x)

    def run(fn) -> list[torch.Tensor]:
        with torch.no_grad():  # what torch-fidelity's feature loop uses
            return [torch.cat([fn(prep(s[i:i + batch])) for i in range(0, s.shape[0], batch)])
                    for s in sets]

    warm = {}
    for name, fn in paths.items():
        t0 = time.perf_counter()
        with torch.no_grad():
            fn(prep(sets[0][:batch]))  # warm-up: oneDNN primitive creation, allocator, compile
        warm[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in paths}
    feats: dict[str, list[torch.Tensor]] = {}
    for _ in range(max(1, repeats)):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            feats[name] = run(fn)
            times[name].append(time.perf_counter() - t0)
    return times, feats, warm


def speed_comparison(images_uint8: torch.Tensor, other_uint8: torch.Tensor | None = None, *,
                     batch: int = 32, repeats: int = 3, weights: str | None = None,
                     chunk: int = CHUNK) -> dict:
    """torch-fidelity's ``inception-v3-compat`` against ``inception-v3-fast`` on the same uint8
    images, in one process, same weights, same threads, interleaved (module docstring).

    Also returns the largest feature difference (absolute, and relative to the largest feature
    magnitude of the compat path) and the FID each path gives between ``images_uint8`` and
    ``other_uint8`` (default: the two halves of ``images_uint8``)."""
    sets = _sets(images_uint8, other_uint8)
    n = sum(s.shape[0] for s in sets)
    info = resolve_weights(weights)
    state, _ = load_checked(info.path)
    compat, fast = compat_extractor(state), FastInception(state, chunk=chunk)
    paths = {COMPAT_NAME: lambda x: compat(x)[0], FAST_NAME: fast}
    times, feats, _ = interleaved(paths, sets, batch, repeats)
    ref = torch.cat(feats[COMPAT_NAME])
    got = torch.cat(feats[FAST_NAME])
    diff = float((got - ref).abs().max())
    scale = float(ref.abs().max())
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    fid = {k: _fid(*f) for k, f in feats.items()}
    return {
        "n_images": n, "set_sizes": [int(s.shape[0]) for s in sets],
        "input_size": list(sets[0].shape[2:]), "batch": batch, "chunk": chunk,
        "repeats": max(1, repeats), "threads": torch.get_num_threads(),
        "compat_images_per_s": rate[COMPAT_NAME], "fast_images_per_s": rate[FAST_NAME],
        "speedup": rate[FAST_NAME] / rate[COMPAT_NAME],
        "compat_seconds": times[COMPAT_NAME], "fast_seconds": times[FAST_NAME],
        "max_abs_feature_diff": diff, "feature_scale": scale,
        "max_rel_feature_diff": diff / scale if scale > 0 else diff,
        "fid_compat": fid[COMPAT_NAME], "fid_fast": fid[FAST_NAME],
        "fid_abs_diff": abs(fid[FAST_NAME] - fid[COMPAT_NAME]),
        "weights_sha256": info.weights_sha256, "weights_source": info.source,
    }


def images_per_second(u8: torch.Tensor, weights: str | None = None) -> float:
    """Throughput of the ``fid`` metric's extractor on the uint8 images ``u8`` (after one
    warm-up pass), for wall-clock estimates."""
    info = resolve_weights(weights)
    fast = FastInception(load_checked(info.path)[0])
    fast(u8)
    t0 = time.perf_counter()
    fast(u8)
    return u8.shape[0] / max(1e-9, time.perf_counter() - t0)


def _dataset_images(dataset: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = DATASETS.get(dataset)(DataConfig(name=dataset), 0, torch.device("cpu"))
    if data.kind != "images":
        raise ValueError(f"{dataset} is not an image dataset")
    return to_uint8(data.eval[:n]), to_uint8(data.train[:n])


def fid_speed(dataset: str = "mnist5k", n: int = 64, *, batch: int = 32, repeats: int = 3,
              weights: str | None = None, chunk: int = CHUNK) -> dict:
    """:func:`speed_comparison` on ``n`` evaluation images of ``dataset`` against ``n`` of its
    training images (the hook for ``bench perf --fid``)."""
    a, b = _dataset_images(dataset, n)
    res = speed_comparison(a, b, batch=batch, repeats=repeats, weights=weights, chunk=chunk)
    return {"dataset": dataset, **res}


# -- library-built options against the hand-written graph -------------------------------------

OPTIONS = {
    "a": "inception-v3-compat as is",
    "b": "(a) + fuse_conv_bn_eval on every conv+BN pair",
    "c": "(a) + channels-last (module and input)",
    "d": "(b) + (c)",
    "e": "(d) + torch.compile (inductor, CPU)",
    "f": "inception-v3-fast, the fid metric's extractor (since this report: (d) in chunks)",
}


def option_extractors(state: dict[str, torch.Tensor], options: str = "abcdf",
                      chunk: int = CHUNK) -> dict[str, Extractor]:
    """The extractors :func:`options_comparison` times, keyed like :data:`OPTIONS` (those in
    ``options``); each maps uint8 [N, 3, H, W] to [N, 2048] features."""
    cl = torch.channels_last

    def feats(m: nn.Module, channels_last: bool = False) -> Extractor:
        if channels_last:
            return lambda x: m(x.contiguous(memory_format=cl))[0]
        return lambda x: m(x)[0]

    build: dict[str, Callable[[], Extractor]] = {
        "a": lambda: feats(compat_extractor(state)),
        "b": lambda: feats(fuse_compat(compat_extractor(state))),
        "c": lambda: feats(compat_extractor(state).to(memory_format=cl), True),
        "d": lambda: feats(fuse_compat(compat_extractor(state)).to(memory_format=cl), True),
        "e": lambda: feats(torch.compile(
            fuse_compat(compat_extractor(state)).to(memory_format=cl)), True),
        "f": lambda: FastInception(state, chunk=chunk),
    }
    unknown = sorted(set(options) - set(build))
    if unknown:
        raise ValueError(f"unknown options {unknown}; choose from {sorted(build)}")
    return {k: build[k]() for k in build if k in options}


def options_comparison(dataset: str = "mnist5k", n: int = 32, *, batch: int = 32,
                       repeats: int = 3, weights: str | None = None, options: str = "abcdf",
                       images: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Images/s (median over ``repeats``, interleaved) and the largest feature difference from
    option (a) of the options in ``options`` (keys of :data:`OPTIONS`; (a) is always timed, as
    the reference), on ``n`` eval + ``n`` train images of ``dataset`` (or the two uint8 sets
    ``images``). ``paired_speedup_vs_f`` is the median over repeats of the option's seconds over
    (f)'s in the same repeat (the two ran back to back, so under the same load)."""
    a_set, b_set = images if images is not None else _dataset_images(dataset, n)
    sets = _sets(a_set, b_set)
    total = sum(s.shape[0] for s in sets)
    info = resolve_weights(weights)
    state, _ = load_checked(info.path)
    paths = option_extractors(state, "a" + options.replace("a", ""))
    times, feats, warm = interleaved(paths, sets, batch, repeats)
    ref = torch.cat(feats["a"])
    scale = float(ref.abs().max())
    rate = {k: total / statistics.median(v) for k, v in times.items()}
    rows = [{"option": k, "what": OPTIONS[k], "images_per_s": rate[k],
             "speedup_vs_compat": rate[k] / rate["a"], "seconds": times[k],
             "warmup_seconds": warm[k],
             "max_abs_feature_diff": float((torch.cat(feats[k]) - ref).abs().max()),
             "fid": _fid(*feats[k]),
             "paired_speedup_vs_f": statistics.median(
                 t / f for f, t in zip(times["f"], times[k], strict=True)) if "f" in times
             else None} for k in paths]
    return {"dataset": dataset if images is None else "given", "n_images": total,
            "set_sizes": [int(s.shape[0]) for s in sets], "input_size": list(sets[0].shape[2:]),
            "batch": batch, "repeats": max(1, repeats), "threads": torch.get_num_threads(),
            "feature_scale": scale, "weights_sha256": info.weights_sha256,
            "weights_source": info.source, "rows": rows}


def options_markdown(res: dict, command: str, commit: str | None = None,
                     versions: dict[str, str] | None = None) -> str:
    """The Markdown table of :func:`options_comparison`."""
    lines = [
        "# Inception extractor options (CPU)", "",
        f"{res['n_images']} {res['dataset']} images ({' + '.join(map(str, res['set_sizes']))}, "
        f"uint8 {'x'.join(map(str, res['input_size']))} resized to 299 inside each extractor), "
        f"batch {res['batch']}, {res['threads']} threads, all options timed interleaved in one "
        f"process, median of {res['repeats']} repeats; weights {res['weights_source']} "
        f"(tensors sha256 {res['weights_sha256'][:12]})"
        + (f", commit `{commit[:12]}`" if commit else "")
        + (f", torch {versions.get('torch', '?')}, torch-fidelity "
           f"{versions.get('torch_fidelity', versions.get('torch-fidelity', '?'))}"
           if versions else "") + ".", "",
        f"Command: `{command}`", "",
        "| option | images/s (median) | speed-up vs compat | (f) vs this, paired median | "
        "max abs feature diff vs (a) | FID between the sets | warm-up s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        paired = r.get("paired_speedup_vs_f")
        lines.append(f"| ({r['option']}) {r['what']} | {r['images_per_s']:.3g} | "
                     f"{r['speedup_vs_compat']:.2f}x | "
                     + (f"{paired:.2f}x" if paired is not None else "-")
                     + f" | {r['max_abs_feature_diff']:.2e} | {r['fid']:.6g} | "
                     f"{r['warmup_seconds']:.1f} |")
    lines += ["", f"Largest feature magnitude of (a): {res['feature_scale']:.3g}.", ""]
    return "\n".join(lines)
