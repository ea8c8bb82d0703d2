"""Paired comparisons over seeds, each inside one feature space.

A metric computed in a learned feature space (``MetricVocabulary.features``: the domain
classifier's features for ``fd_domain``, ``kid_domain``, ``prec_domain``, ``rec_domain`` and the
class histogram; Inception's for ``fid``, ``kid``, ``prec_inception``, ``rec_inception``) puts two
records on one scale only when one network scored both. The feature space of a record for such
a metric is read from its ``metric_info``:

- ``domain``: the classifier's id, ``fd_extractor``. An id without a weights part (``-w`` and 12
  hex digits: ids written before the weights' hash was part of them) names the training data
  only, so its held-out accuracy ``fd_extractor_eval_accuracy`` is part of the space too: a
  different accuracy proves different weights under one id;
- ``inception``: ``fid_extractor`` and ``fid_weights``.

Every pairing of two config groups over seeds in a report (the paired-difference table, the
verdict sentences, the grid's comparisons, the learning curves' gap ratios) goes through
``pair_seeds``: it leaves out the seeds whose two records were scored in different spaces and
says which and why. A record that names no space (a metric outside any, a record written
without ``metric_info``) pairs with any other.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from bench.records import RunRecord
from bench.report.stats import Summary, fmt_num, paired
from bench.vocab import FEATURE_SPACES

#: the weights part of a domain classifier's id (``fd-<data>-cnn-<datahash>-w<weights hash>``)
WEIGHTS_PART = re.compile(r"-w[0-9a-f]{12}$")


@dataclass(frozen=True)
class Space:
    """The feature space a record was scored in: ``key`` tells two apart, ``name`` says which
    network (an extractor id, with what else tells legacy ids apart: ``accuracy``)."""

    kind: str
    key: tuple
    name: str
    #: a legacy domain classifier id's held-out accuracy, as the report prints it
    accuracy: str = ""


def feature_space(r: RunRecord, kind: str | None) -> Space | None:
    """The space of kind ``kind`` (``MetricVocabulary.features`` of a metric) ``r`` was scored
    in; None when the metric has no learned space or the record does not name it."""
    mi = r.metric_info or {}
    if kind == "domain":
        ext = mi.get("fd_extractor")
        if not ext:
            return None
        if WEIGHTS_PART.search(ext):
            return Space(kind, (ext,), f"`{ext}`")
        acc = mi.get("fd_extractor_eval_accuracy")
        number = isinstance(acc, int | float)
        text = fmt_num(acc, 4) if number else "?"
        return Space(kind, (ext, round(acc, 6) if number else None),
                     f"`{ext}` with held-out accuracy {text}", text)
    if kind == "inception":
        ext = mi.get("fid_extractor")
        if not ext:
            return None
        weights = mi.get("fid_weights")
        return Space(kind, (ext, weights), f"`{ext}` ({weights or 'weights not recorded'})")
    return None


def differ(a: Space, b: Space) -> str:
    """Why two records of one seed are not compared: which networks scored them."""
    what = FEATURE_SPACES.get(a.kind, f"{a.kind} feature extractor")
    if a.accuracy and b.accuracy and a.key[0] == b.key[0]:  # one legacy id, two classifiers
        return (f"scored by different {what}s (`{a.key[0]}`, held-out accuracy {a.accuracy} "
                f"vs {b.accuracy})")
    return f"scored by different {what}s ({a.name} vs {b.name})"


@dataclass
class Pairing:
    """Two config groups paired over seeds for one metric."""

    metric: str
    #: (seed, A's record, B's record) for each common seed, both scored in one feature space
    pairs: list[tuple[int, RunRecord, RunRecord]]
    #: seed -> why it was left out (its two records were scored in different feature spaces)
    left_out: dict[int, str]

    @property
    def seeds(self) -> list[int]:
        return [s for s, _, _ in self.pairs]

    def diff(self) -> Summary:
        """A − B of the metric over the paired seeds that scored it, with its 95% interval."""
        m = self.metric
        return paired({s: a.metrics[m] for s, a, _ in self.pairs if m in a.metrics},
                      {s: b.metrics[m] for s, _, b in self.pairs if m in b.metrics})


def left_out_notes(found: list[tuple[str, str, Pairing]]) -> list[str]:
    """The seeds these pairings (A's label, B's label, pairing) left out, one sentence per pair
    and reason naming the metrics: "Seed 0 left out of `A` − `B` (`fd_domain`, `kid_domain`):
    scored by different domain classifiers (...)"."""
    metrics: dict[tuple[str, str, str, tuple[int, ...]], list[str]] = {}
    for a, b, p in found:
        seeds: dict[str, list[int]] = defaultdict(list)
        for seed, why in p.left_out.items():
            seeds[why].append(seed)
        for why, ss in seeds.items():
            metrics.setdefault((a, b, why, tuple(ss)), []).append(p.metric)
    out = []
    for (a, b, why, ss), ms in metrics.items():
        which = seed_list(list(ss))
        names = ", ".join(f"`{m}`" for m in dict.fromkeys(ms))
        out.append(f"{which[0].upper()}{which[1:]} left out of `{a}` − `{b}` ({names}): {why}.")
    return out


def seed_list(seeds: list[int]) -> str:
    """"seed 0" / "seeds 0, 2"."""
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))}"


def pair_seeds(a: list[RunRecord], b: list[RunRecord], metric: str,
               kind: str | None) -> Pairing:
    """``a`` and ``b`` (config groups: one record per seed) paired over their common seeds for
    ``metric`` of feature-space kind ``kind``, leaving out the seeds whose two records were
    scored in different spaces. The one place the report pairs records over seeds."""
    by_a = {r.seed: r for r in a}
    by_b = {r.seed: r for r in b}
    pairs, left_out = [], {}
    for seed in sorted(set(by_a) & set(by_b)):
        ra, rb = by_a[seed], by_b[seed]
        sa, sb = feature_space(ra, kind), feature_space(rb, kind)
        if sa is not None and sb is not None and sa.key != sb.key:
            left_out[seed] = differ(sa, sb)
        else:
            pairs.append((seed, ra, rb))
    return Pairing(metric, pairs, left_out)


def spaces_of(runs: list[RunRecord], kind: str | None) -> dict[Space, list[int]]:
    """The feature spaces of kind ``kind`` the seeds of one config group were scored in:
    space -> its seeds (records that name none left out)."""
    seeds: dict[Space, list[int]] = defaultdict(list)
    for r in runs:
        space = feature_space(r, kind)
        if space is not None:
            seeds[space].append(r.seed)
    return dict(seeds)


def mixed_note(kind: str, metrics: list[str],
               rows: list[tuple[str, dict[Space, list[int]]]]) -> str:
    """One sentence on the table rows (label, space -> seeds) whose seeds were scored in more
    than one feature space of kind ``kind``: which seeds in which."""
    spaces = {s for _, found in rows for s in found}
    legacy = all(s.accuracy for s in spaces) and len({s.key[0] for s in spaces}) == 1
    what = FEATURE_SPACES.get(kind, f"{kind} feature extractor")

    def where(found: dict[Space, list[int]]) -> str:
        return " / ".join(f"{seed_list(ss)}: {s.accuracy if legacy else s.name}"
                          for s, ss in found.items())

    lead = (f" (one id, `{next(iter(spaces)).key[0]}`, over classifiers of different held-out "
            "accuracy)" if legacy else "")
    return (f"† Seeds scored by different {what}s{lead}, so that these rows' "
            + ", ".join(f"`{m}`" for m in metrics) + " average over more than one feature "
            "space: " + "; ".join(f"{lab} ({where(found)})" for lab, found in rows) + ".")
