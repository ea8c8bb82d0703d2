"""The words records, reports and the console share, defined once.

Statuses, the floor row, the data kinds, the noise sources, the exact solvers, the labels of
the coupling x parametrisation grid, the report's reference method, the EMA warm-up (the
trainer applies it, the record and the report state the decay it reached) and the metric
vocabulary (each output's direction, the headline and key outputs, the range of its values,
the feature space it is computed in) are spelled here and nowhere else, so the console
summary and the report can never headline different metrics for the same records.
Nothing here imports torch: the report renders records with this module alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from bench.registry import METRICS

#: a record is written ``running`` in memory, then ends ``ok``, ``failed`` (with its reason)
#: or ``interrupted`` (Ctrl-C; the training state was saved and the same command resumes)
Status = Literal["running", "ok", "failed", "interrupted"]
STATUSES: tuple[Status, ...] = get_args(Status)

def ema_decay(ema: float, n: int) -> float:
    """The decay the trainer's EMA applies at update ``n``: the usual (1 + n) / (10 + n)
    warm-up, capped at ``ema``."""
    return min(ema, (1 + n) / (10 + n))


#: the method name of the floor record: held-out data scored as if it were samples
FLOOR_METHOD = "data"
#: how the floor row is labelled in tables
FLOOR_LABEL = "data (floor)"

DataKind = Literal["points", "images"]
DATA_KINDS: tuple[DataKind, ...] = get_args(DataKind)

#: noise (source) distributions of 2-D data; images always use ``gaussian``
Source = Literal["gaussian", "8gmm"]
SOURCES: tuple[Source, ...] = get_args(Source)

#: exact assignment solvers: POT's network simplex and scipy's linear_sum_assignment
Solver = Literal["pot", "scipy"]
SOLVERS: tuple[Solver, ...] = get_args(Solver)
#: what ``coupling.solver`` accepts: a solver, or ``auto`` (timed once per process)
SOLVER_CHOICES: tuple[str, ...] = ("auto", *SOLVERS)


def choices(values: tuple[str, ...]) -> str:
    """``"a, b, c"``: how error messages list the allowed values."""
    return ", ".join(values)


#: The coupling x parametrisation grid of the report. A method registered with
#: ``grid=(row, coupling)`` is a cell of it: the parametrisation (row) trained on the pairs of
#: that coupling (column). At the optimum the first three rows give the same sample,
#: E[x1 | x0 = z], so differences between them come from optimisation, not the target.
GRID_ROWS = {"map": "map G(z)", "flow": "neural flow F(z, 1)",
             "fm1": "FM velocity, 1 Euler step", "fm100": "FM, 100 Euler steps"}
GRID_COLUMNS = {"independent": "independent", "minibatch-ot": "minibatch OT",
                "online-ot": "online OT", "global-ot": "global OT"}

#: the report's default reference method: every method is compared with it (paired
#: comparisons), and learning curves measure their gap to it (``bench report --reference``)
REFERENCE_METHOD = "fm-euler100"

#: The built-in metrics' vocabulary, declared once: metric -> ``outputs`` (output ->
#: direction ``min`` / ``max`` / ``one``), ``headline`` and ``key`` (output -> rank, lower
#: first), ``ranges`` (output -> the [low, high] its values can take, None: unbounded on that
#: side; an unbiased estimator such as MMD^2 or KID can read below 0, so it has no low bound)
#: and ``features`` (the learned feature space every output of the metric is computed in:
#: ``domain``, the dataset's domain classifier; ``inception``, the Inception network; records
#: scored in two different spaces are never compared). The metric modules register with this
#: metadata (``**BUILTIN_METRICS[name]``); the report reads it without importing them (nor
#: torch). The order is the report's column order (output order within a metric, metric order
#: here), the order ``bench.builtins`` registers them in.
BUILTIN_METRICS: dict[str, dict[str, dict[str, Any]]] = {
    # images (bench.metrics.images)
    "fd": {"outputs": {"fd_domain": "min", "kid_domain": "min", "prec_domain": "max",
                       "rec_domain": "max"},
           "headline": {"fd_domain": 30}, "key": {"fd_domain": 30},
           "ranges": {"fd_domain": (0, None), "prec_domain": (0, 1), "rec_domain": (0, 1)},
           "features": "domain"},
    "classes": {"outputs": {"class_entropy": "max", "class_coverage": "max"},
                "key": {"class_entropy": 50},
                "ranges": {"class_entropy": (0, 1), "class_coverage": (0, 1)},
                "features": "domain"},
    "fid": {"outputs": {"fid": "min", "kid": "min", "prec_inception": "max",
                        "rec_inception": "max"},
            "headline": {"fid": 20}, "key": {"fid": 40},
            "ranges": {"fid": (0, None), "prec_inception": (0, 1), "rec_inception": (0, 1)},
            "features": "inception"},
    # points, and the collapse diagnostic of both kinds (bench.metrics.points)
    "w2": {"outputs": {"w2": "min", "w2_sq": "min"}, "headline": {"w2": 10},
           "key": {"w2": 10}, "ranges": {"w2": (0, None), "w2_sq": (0, None)}},
    "mmd": {"outputs": {"mmd": "min"}, "key": {"mmd": 20}},
    "prc": {"outputs": {"precision": "max", "recall": "max"}, "key": {},
            "ranges": {"precision": (0, 1), "recall": (0, 1)}},
    "collapse": {"outputs": {"var_ratio": "one", "mean_dist": "min"}, "key": {"var_ratio": 60},
                 "ranges": {"var_ratio": (0, None), "mean_dist": (0, None)}},
    # memorisation, both kinds (bench.metrics.copying)
    "copy": {"outputs": {"copy_ratio": "one", "copy_share": "min"}, "key": {"copy_ratio": 70},
             "ranges": {"copy_ratio": (0, None), "copy_share": (0, 1)},
             "against_train": True},
}

#: what the report calls a metric's feature space (``features``) in its sentences
FEATURE_SPACES = {"domain": "domain classifier", "inception": "Inception network"}

#: rank of a metric output that registers no ``key`` ranks (plugins): after the built-ins
PLUGIN_KEY_RANK = 100


@dataclass(frozen=True)
class MetricVocabulary:
    """What the reports and the console know about metric outputs.

    ``directions``: output -> ``min`` / ``max`` / ``one``; ``headline``: the outputs that can
    headline a dataset, best first (the first present is its headline: the cost plots, the
    console summary); ``key``: the outputs shown in paired comparisons and sweep panels, in
    order; ``ranges``: output -> (low, high) its values can take (None: unbounded), for the
    outputs that declare one; ``features``: output -> the feature space it is computed in
    (``FEATURE_SPACES``), for the outputs of a learned feature space; ``against_train``: the
    outputs that measure samples against the training split (a floor made of training items
    is not scored on them: it would read as copies of itself)."""

    directions: dict[str, str]
    headline: tuple[str, ...]
    key: tuple[str, ...]
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)
    against_train: frozenset[str] = frozenset()

    def headline_of(self, present: Iterable[str]) -> str | None:
        have = set(present)
        return next((m for m in self.headline if m in have), None)


def metric_vocabulary() -> MetricVocabulary:
    """The built-in metrics' vocabulary (``BUILTIN_METRICS``), then that of every other metric
    registered now (plugins), from its ``outputs``, ``headline``, ``key``, ``ranges``,
    ``features`` and ``against_train`` metadata (``headline`` / ``key``: output -> rank, lower
    first; a metric that declares no ``key`` has all its outputs there, after the
    built-ins)."""
    metas = dict(BUILTIN_METRICS)
    metas.update({e.name: e.meta for e in METRICS.entries() if e.name not in metas})
    directions: dict[str, str] = {}
    headline: dict[str, int] = {}
    key: dict[str, int] = {}
    ranges: dict[str, tuple[float | None, float | None]] = {}
    features: dict[str, str] = {}
    against_train: set[str] = set()
    for meta in metas.values():
        outputs = meta.get("outputs", {})
        directions.update(outputs)
        headline.update(meta.get("headline", {}))
        key.update(meta.get("key", dict.fromkeys(outputs, PLUGIN_KEY_RANK)))
        ranges.update({k: (lo, hi) for k, (lo, hi) in meta.get("ranges", {}).items()})
        if meta.get("features"):
            features.update(dict.fromkeys(outputs, meta["features"]))
        if meta.get("against_train"):
            against_train.update(outputs)
    return MetricVocabulary(directions, tuple(sorted(headline, key=headline.__getitem__)),
                            tuple(sorted(key, key=key.__getitem__)), ranges, features,
                            frozenset(against_train))
