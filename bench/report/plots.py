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


def _save(fig, path: Path) -> Path:
    """Lay out, write the PNG (creating its folder) and free the figure."""
    plt = _plt()
    if fig.get_layout_engine() is None:  # panel figures lay out themselves (suptitle)
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _panels(n: int, width: float, height: float):
    """A figure with ``n`` panels, at most 5 a row; the unused axes are hidden."""
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = _plt().subplots(rows, cols, figsize=(width * cols, height * rows),
                                squeeze=False, layout="constrained")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


def scatter_grid(panels: list[tuple[str, np.ndarray]], path: Path, title: str) -> Path:
    """One scatter panel per (label, [n, 2] points), sharing axis limits with the first panel."""
    fig, axes = _panels(len(panels), 2.6, 2.6)
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
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def tile(images: np.ndarray, cols: int = 8) -> np.ndarray:
    """[n, C, H, W] in [-1, 1] -> one [rows*(H+1)+1, cols*(W+1)+1, C] image in [0, 1] with
    1-pixel white borders (the first cols*cols images)."""
    x = np.clip((images[: cols * cols] + 1.0) / 2.0, 0.0, 1.0)
    n, c, h, w = x.shape
    rows = math.ceil(n / cols)
    out = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        out[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = \
            x[i].transpose(1, 2, 0)
    return out


def image_grids(panels: list[tuple[str, np.ndarray]], path: Path, title: str) -> Path:
    """One 8x8 sample grid per (label, [n, C, H, W] images in [-1, 1]); real data first."""
    fig, axes = _panels(len(panels), 2.8, 3.3)
    for ax, (label, imgs) in zip(axes.flat, panels, strict=False):
        grid = tile(imgs)
        ax.imshow(grid[..., 0] if grid.shape[2] == 1 else grid, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _xy_err(points: list[tuple[float, float, float]]):
    pts = sorted(points)
    return [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]


def spans_decades(values: list[float]) -> bool:
    """Whether positive values span a factor of 10 or more (then a log axis reads better)."""
    pos = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    return len(pos) > 1 and max(pos) / min(pos) >= 10


def quality_vs_cost(series: dict[str, list[tuple[str, float, float, float, float, float,
                                                 float]]],
                    metric: str, path: Path, title: str) -> Path:
    """Four panels: ``metric`` vs counted NFE, vs sampling ms/1k, vs training seconds and vs
    counted training FLOPs (everything a method's training used: teacher and pairs too).

    ``series``: recipe -> [(method, nfe, ms_per_1k, train_s, mean, std, train_flops)]. Every
    method is a point of its own, labelled with its name, with ± std error bars; the methods
    of one recipe (fm-euler1 ... fm-euler100 read one checkpoint) share a colour and a legend
    entry, never a line: they share one training, so a line through them would zig-zag on the
    training axes. ``metric`` is the y axis label (the metric and which way is better). An
    axis is logarithmic when its values span a decade or more (FD, NFE, sampling time).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    log_y = spans_decades([r[4] for rows in series.values() for r in rows])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (col, label) in zip(axes, ((1, "counted NFE"), (2, "sampling ms / 1k samples"),
                                       (3, "training s"), (6, "training FLOPs (counted)")),
                                strict=True):
        for i, (recipe, rows) in enumerate(series.items()):
            colour = colours[i % len(colours)]
            for j, row in enumerate(sorted(rows, key=lambda r: r[1])):
                x, y = row[col], row[4]
                ax.errorbar([x], [y], yerr=[row[5]], fmt="o", ms=4, capsize=2, color=colour,
                            label=recipe if j == 0 else None)
                if x is not None and np.isfinite(x) and np.isfinite(y):
                    ax.annotate(row[0], (x, y), fontsize=6, xytext=(3, 3),
                                textcoords="offset points")
        if col in (1, 2, 6) and spans_decades([r[col] for rows in series.values()
                                               for r in rows]):
            ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, title="recipe", title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def sweep_lines(panels: list[tuple[str, dict[str, list[tuple[object, float, float, int]]]]],
                key: str, path: Path, title: str) -> Path:
    """One panel per metric: value vs swept ``key``, a line per method, band = 95% CI
    (or ± std when a point has fewer than two seeds). Series: method -> [(x, mean, half, n)]."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
    for ax, (metric, series) in zip(axes.flat, panels, strict=True):
        xs_all = sorted({p[0] for rows in series.values() for p in rows}, key=sort_key)
        categorical = not all(isinstance(x, int | float) for x in xs_all)
        for method, rows in series.items():
            rows = sorted(rows, key=lambda r: sort_key(r[0]))
            xs = [xs_all.index(r[0]) if categorical else r[0] for r in rows]
            ys = np.array([r[1] for r in rows])
            half = np.array([r[2] for r in rows])
            ax.plot(xs, ys, "-o", ms=4, label=method)
            ax.fill_between(xs, ys - half, ys + half, alpha=0.2)
        if categorical:
            ax.set_xticks(range(len(xs_all)), [str(x) for x in xs_all])
        elif len(xs_all) > 2 and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def sort_key(x: object):
    return (0, float(x), "") if isinstance(x, int | float) else (1, 0.0, str(x))


def consistency_scatter(points: dict[str, list[tuple[float, float]]], path: Path,
                        title: str) -> Path:
    """Coupling target-variance ratio (x) vs the samples' variance ratio (y), per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for method, pts in points.items():
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, label=method)
    ax.set_xlabel("coupling target variance / data variance (0 = consistent)")
    ax.set_ylabel("sample var_ratio (1 = no collapse)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def training_curves(curves: dict[str, list[tuple[float, dict[str, float]]]], keys: list[str],
                    path: Path, title: str) -> Path:
    """One panel per history key (e.g. cost / cost_independent, bank_cost, reassigned)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=True):
        for method, rows in curves.items():
            pts = [(step, row[key]) for step, row in rows if key in row]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=method)
        ax.set_xlabel("training step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def learning_curves(series: dict[str, list[tuple[float, float, float, float, int]]],
                    metric: str, path: Path, title: str,
                    floor: tuple[str, float] | None = None) -> Path:
    """``metric`` against training steps, training seconds and training FLOPs, one line per
    method with its 95% band over seeds (± std for one seed: no band). ``series``: method ->
    [(step, seconds, flops, mean, half)] in step order, seconds and flops averaged over seeds.
    ``floor``: (label, value) of held-out data scored like a curve point, a dashed line.
    Logarithmic axes where values span a decade or more."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(17, 3.8))
    log_y = spans_decades([p[3] for rows in series.values() for p in rows]
                          + ([floor[1]] if floor else []))
    for ax, (col, label) in zip(axes, ((0, "training step"), (1, "training s"),
                                       (2, "training FLOPs (counted)")), strict=True):
        for method, rows in series.items():
            xs = np.array([r[col] for r in rows], dtype=float)
            ys = np.array([r[3] for r in rows])
            half = np.array([r[4] for r in rows])
            ax.plot(xs, ys, "-o", ms=3, label=method)
            ax.fill_between(xs, ys - half, ys + half, alpha=0.2)
        if floor is not None:
            ax.axhline(floor[1], color="black", ls="--", lw=1, label=floor[0])
        if col == 2:
            ax.set_xscale("log")
            # within about a decade matplotlib labels the minor ticks too, and they overlap
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    # beside the panels: inside one, ten methods' legend hides the lowest curves
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
