"""The one squared-Euclidean distance helper, shared by the couplings' cost matrices and the
metrics' kernels and nearest-neighbour balls."""

from __future__ import annotations

import torch


def sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n, m] squared Euclidean distances between the rows of ``a`` [n, ...] and ``b`` [m, ...]
    (flattened), as ONE matrix product of augmented rows, in the inputs' dtype.

    [a, 1, |a|^2] @ [-2b, |b|^2, 1]^T = |a|^2 + |b|^2 - 2 a.b; in low dimension this is 3-4x
    faster than forming the three terms separately (measured on 2-D data, 2,048 x 10,000).
    Rounding can make a true 0 slightly negative, hence the clamp.
    """
    a, b = a.flatten(1), b.flatten(1)
    aa = torch.cat([a, torch.ones_like(a[:, :1]), a.pow(2).sum(1, keepdim=True)], 1)
    bb = torch.cat([-2.0 * b, b.pow(2).sum(1, keepdim=True), torch.ones_like(b[:, :1])], 1)
    return (aa @ bb.T).clamp_min_(0.0)
