"""Metrics on 2-D (or any low-dimensional) point clouds.

- ``w2``: exact 2-Wasserstein distance (POT ``emd2``, squared Euclidean cost) between
  ``eval.w2_samples`` generated and held-out points; ``w2_sq`` is its square.
- ``mmd``: unbiased MMD^2 (Gretton et al., JMLR 2012) with a sum of Gaussian kernels at
  bandwidths 2, 1, 0.5, 0.25, 0.125 and 0.0625 (data scale is ~1), on all generated samples.
- ``precision`` / ``recall``: k-NN manifold estimates (Kynkäänniemi et al., NeurIPS 2019): a
  sample counts as precise when it falls inside the k-NN ball of some real point, a real point
  as recalled when it falls inside the k-NN ball of some sample. Blur lowers precision, dropped
  modes lower recall.
- ``var_ratio`` (best at 1; ~0 under mean collapse) and ``mean_dist``: total variance of the
  samples over that of the data, and the distance between their means.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.distances import sq_dists
from bench.metrics.base import MAX_QUADRATIC_SAMPLES, MetricContext, chunks, subsample
from bench.metrics.copying import copy_metric
from bench.registry import register_metric
from bench.vocab import BUILTIN_METRICS

#: Halving bandwidths = gammas growing 4x, so each kernel is the previous one squared twice:
#: one exp per pair instead of six.
BANDWIDTHS = (2.0, 1.0, 0.5, 0.25, 0.125, 0.0625)
CHUNK = 1024


@register_metric("w2", kinds=("points",), **BUILTIN_METRICS["w2"])
def w2(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext) -> dict[str, float]:
    """Exact W2 (POT emd2, squared Euclidean cost) on eval.w2_samples points per side."""
    import ot  # POT takes seconds to import: only where W2 is computed

    n = ctx.cfg.w2_samples
    a = subsample(x, n, ctx.gen).double().cpu()
    b = subsample(ref, n, ctx.gen).double().cpu()
    cost = sq_dists(a, b).numpy()
    w2_sq = float(ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cost,
                          numItermax=10_000_000))
    return {"w2": float(np.sqrt(max(w2_sq, 0.0))), "w2_sq": w2_sq}


def _kernel_sum(a: torch.Tensor, b: torch.Tensor, same: bool) -> float:
    """Sum of k(a_i, b_j) over all pairs (i != j when ``same``), k = sum of Gaussian kernels."""
    total = 0.0
    gamma0 = 1.0 / (2 * BANDWIDTHS[0] ** 2)
    for ia in chunks(a.shape[0], CHUNK):
        d = sq_dists(a[ia], b)
        if same:  # exp(-inf) = 0 removes the diagonal i == j
            d[torch.arange(d.shape[0]), torch.arange(ia.start, ia.stop)] = float("inf")
        k = d.mul_(-gamma0).exp_()
        acc = k.sum(1).double().sum()
        for _ in BANDWIDTHS[1:]:
            k.square_().square_()
            acc += k.sum(1).double().sum()
        total += float(acc)
    return total


@register_metric("mmd", kinds=("points",), **BUILTIN_METRICS["mmd"],
                 max_samples=MAX_QUADRATIC_SAMPLES)
def mmd(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext) -> dict[str, float]:
    """Unbiased MMD^2, sum of Gaussian kernels at bandwidths 2..0.0625, on all samples."""
    m, n = x.shape[0], ref.shape[0]
    x, ref = x.flatten(1).float(), ref.flatten(1).float()
    kxx = _kernel_sum(x, x, True) / (m * (m - 1))
    kyy = _kernel_sum(ref, ref, True) / (n * (n - 1))
    kxy = _kernel_sum(x, ref, False) / (m * n)
    return {"mmd": kxx + kyy - 2 * kxy}


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance of every row to its k-th nearest other row."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for sl in chunks(x.shape[0], CHUNK):
        d = sq_dists(x[sl], x)
        # k + 1: the point itself sits at distance 0
        out[sl] = d.topk(k + 1, dim=1, largest=False).values[:, -1]
    return out  # squared radii


def coverage_of(queries: torch.Tensor, centres: torch.Tensor, radii_sq: torch.Tensor) -> float:
    """Fraction of ``queries`` inside at least one ball (centre_j, squared radius_j)."""
    inside = 0
    for sl in chunks(queries.shape[0], CHUNK):
        d = sq_dists(queries[sl], centres)
        inside += int((d <= radii_sq[None, :]).any(1).sum())
    return inside / queries.shape[0]


@register_metric("prc", kinds=("points",), **BUILTIN_METRICS["prc"],
                 max_samples=MAX_QUADRATIC_SAMPLES)
def precision_recall(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext) -> dict[str, float]:
    """k-NN precision and recall (Kynkäänniemi et al., 2019), k = eval.pr_k."""
    x, ref = x.flatten(1).float(), ref.flatten(1).float()
    k = ctx.cfg.pr_k
    return {
        "precision": coverage_of(x, ref, knn_radii(ref, k)),
        "recall": coverage_of(ref, x, knn_radii(x, k)),
    }


@register_metric("collapse", kinds=("points", "images"), **BUILTIN_METRICS["collapse"])
def collapse(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext) -> dict[str, float]:
    """Mean-collapse diagnostics: total-variance ratio and distance of the means."""
    x, ref = x.flatten(1).double(), ref.flatten(1).double()
    var_ratio = float(x.var(0).sum() / ref.var(0).sum())
    return {"var_ratio": var_ratio, "mean_dist": float((x.mean(0) - ref.mean(0)).norm())}


# memorisation (bench.metrics.copying), for images too; registered last: the column order
register_metric("copy", kinds=("images", "points"), **BUILTIN_METRICS["copy"])(copy_metric)
