"""The words records, reports and the console share, defined once.

Statuses, the floor row, the data kinds, the noise sources and the exact solvers are spelled
here and nowhere else; the headline metric of a data kind is metric-registry metadata (see
``bench.evaluate.MetricVocabulary``), so the console summary and the report can never
headline different metrics for the same records.
"""

from __future__ import annotations

from typing import Literal, get_args

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
