"""Memorisation: are generated samples closer to the training set than new data is?

``copy`` (images and points): for every generated sample, the Euclidean distance (pixels or
coordinates, in float64) to its nearest training item; the same for every held-out item (the
evaluation split, which the model never saw). Two outputs:

- ``copy_ratio``: the median generated distance over the median held-out distance. Held-out
  data reads 1 by construction and the training set itself 0; a model that reproduces
  training items reads well below 1. Best at 1: far above 1 means the samples are far from
  every training item, which is a quality problem, not copying. Pixel distance also rewards
  blur a little (a blurred average can sit closer to its neighbours than a sharp new digit),
  so read it with the quality metrics.
- ``copy_share``: the share of generated samples closer to a training item than *any* held-out
  item is (below the smallest held-out distance). Held-out data reads 0 by construction; a
  sample counted here is nearer to a training item than every one of the held-out items,
  i.e. a near copy.

The held-out distances are computed once per dataset and kept with the data. The metric is
registered by ``bench.metrics.points``, last, so that the report's columns keep their order.
"""

from __future__ import annotations

import torch

from bench.distances import sq_dists
from bench.metrics.base import MetricContext, chunks

CHUNK = 512


def nearest_distances(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """[n] distance from each row of ``x`` to its nearest row of ``train`` (float64)."""
    t = train.flatten(1).double()
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for i in chunks(x.shape[0], CHUNK):
        out[i] = sq_dists(x[i].flatten(1).double(), t).min(1).values.sqrt().cpu()
    return out


def _held_out(ctx: MetricContext) -> torch.Tensor:
    data = ctx.data
    if data is None:
        raise ValueError("the copy metric needs the dataset's training and held-out splits")
    if "copy_held_out" not in data.memo:
        data.memo["copy_held_out"] = nearest_distances(data.eval.cpu(), data.train.cpu())
    return data.memo["copy_held_out"]


def copy_metric(x: torch.Tensor, ref: torch.Tensor, ctx: MetricContext) -> dict[str, float]:
    """Nearest-training-item distances of the samples against those of held-out data."""
    held = _held_out(ctx)
    assert ctx.data is not None
    gen = nearest_distances(x.cpu(), ctx.data.train.cpu())
    ctx.info.update({"copy_n_train": int(ctx.data.train.shape[0]),
                     "copy_n_held_out": int(held.shape[0]), "copy_n_generated": int(len(gen))})
    return {"copy_ratio": float(gen.median() / held.median().clamp_min(1e-12)),
            "copy_share": float((gen < held.min()).double().mean())}
