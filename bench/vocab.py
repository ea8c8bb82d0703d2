"""The words records, reports and the console share, defined once.

Statuses, the floor row, the data kinds, the noise sources, the exact solvers, the labels of
the coupling x parametrisation grid, the report's reference method and the metric vocabulary
(each output's direction, the headline and key outputs) are spelled here and nowhere else, so
the console summary and the report can never headline different metrics for the same records.
Nothing here imports torch: the report renders records with this module alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bench.registry import METRICS

#: a record is written ``running`` in memory, then ends ``ok``, ``failed`` (with its reason)
#: or ``interrupted`` (Ctrl-C; the training state was saved and the same command resumes)
Status = Literal["running", "ok", "failed", "interrupted"]
STATUSES: tuple[Status, ...] = get_args(Status)

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
#: first). The metric modules register with this metadata (``**BUILTIN_METRICS[name]``); the
#: report reads it without importing them (nor torch). The order is the report's column order
#: (output order within a metric, metric order here), the order ``bench.builtins`` registers
#: them in.
BUILTIN_METRICS: dict[str, dict[str, dict[str, Any]]] = {
    # images (bench.metrics.images)
    "fd": {"outputs": {"fd_domain": "min", "kid_domain": "min", "prec_domain": "max",
                       "rec_domain": "max"},
           "headline": {"fd_domain": 30}, "key": {"fd_domain": 30}},
    "classes": {"outputs": {"class_entropy": "max", "class_coverage": "max"},
                "key": {"class_entropy": 50}},
    "fid": {"outputs": {"fid": "min", "kid": "min", "prec_inception": "max",
                        "rec_inception": "max"},
            "headline": {"fid": 20}, "key": {"fid": 40}},
    # points, and the collapse diagnostic of both kinds (bench.metrics.points)
    "w2": {"outputs": {"w2": "min", "w2_sq": "min"}, "headline": {"w2": 10},
           "key": {"w2": 10}},
    "mmd": {"outputs": {"mmd": "min"}, "key": {"mmd": 20}},
    "prc": {"outputs": {"precision": "max", "recall": "max"}, "key": {}},
    "collapse": {"outputs": {"var_ratio": "one", "mean_dist": "min"}, "key": {"var_ratio": 60}},
}

#: rank of a metric output that registers no ``key`` ranks (plugins): after the built-ins
PLUGIN_KEY_RANK = 100


@dataclass(frozen=True)
class MetricVocabulary:
    """What the reports and the console know about metric outputs.

    ``directions``: output -> ``min`` / ``max`` / ``one``; ``headline``: the outputs that can
    headline a dataset, best first (the first present is its headline: the cost plots, the
    console summary); ``key``: the outputs shown in paired comparisons and sweep panels, in
    order."""

    directions: dict[str, str]
    headline: tuple[str, ...]
    key: tuple[str, ...]

    def headline_of(self, present: Iterable[str]) -> str | None:
        have = set(present)
        return next((m for m in self.headline if m in have), None)


def metric_vocabulary() -> MetricVocabulary:
    """The built-in metrics' vocabulary (``BUILTIN_METRICS``), then that of every other metric
    registered now (plugins), from its ``outputs``, ``headline`` and ``key`` metadata
    (``headline`` / ``key``: output -> rank, lower first; a metric that declares no ``key``
    has all its outputs there, after the built-ins)."""
    metas = dict(BUILTIN_METRICS)
    metas.update({e.name: e.meta for e in METRICS.entries() if e.name not in metas})
    directions: dict[str, str] = {}
    headline: dict[str, int] = {}
    key: dict[str, int] = {}
    for meta in metas.values():
        outputs = meta.get("outputs", {})
        directions.update(outputs)
        headline.update(meta.get("headline", {}))
        key.update(meta.get("key", dict.fromkeys(outputs, PLUGIN_KEY_RANK)))
    return MetricVocabulary(directions, tuple(sorted(headline, key=headline.__getitem__)),
                            tuple(sorted(key, key=key.__getitem__)))
