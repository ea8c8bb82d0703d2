"""PNG figures for reports (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_grid(panels: list[tuple[str, np.ndarray]], path: Path, title: str) -> Path:
    """One scatter panel per (label, [n, 2] points), sharing axis limits with the first panel."""
    plt = _plt()
    cols = min(5, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    ref = panels[0][1]
    lo, hi = ref.min(0), ref.max(0)
    pad = 0.15 * (hi - lo)
    for ax, (label, pts) in zip(axes.flat, panels, strict=False):
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5, linewidths=0,
                   color="tab:gray" if ax is axes.flat[0] else "tab:blue")
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
