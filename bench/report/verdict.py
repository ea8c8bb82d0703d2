"""The verdict of a dataset's section: one sentence per paired comparison, in words.

"`otnfm-online` is better than `fm-euler100` on `w2` (Δ -0.05 [-0.06, -0.04] over 3 paired
seeds) and samples 99× faster (NFE 1 vs 100)." The direction comes from the metric vocabulary
(lower or higher is better); a difference whose 95% interval includes 0 is "not significantly
different". A sentence warns when its interval rests on fewer than three seeds, when it reaches
past the values the difference can take, and when seeds were left out because the two methods'
records were scored in different feature spaces (``bench.report.pairing``).
"""

from __future__ import annotations

import math

from bench.records import RunRecord
from bench.report.model import DatasetView
from bench.report.pairing import left_out_notes, pair_seeds
from bench.report.stats import Summary, fmt_num, summarize
from bench.report.tables import labelled_groups, nfe_cell, past_range, range_text
from bench.vocab import MetricVocabulary

#: fewer paired seeds than this: the interval is flagged as wide and unreliable
FEW_SEEDS = 3
#: sampling-time ratios within this factor of 1 read "about as fast"
SAME_SPEED = 1.1


def verdict_section(view: DatasetView, vocab: MetricVocabulary,
                    compare: list[tuple[str, str]]) -> list[str]:
    """"### Verdict": a sentence for each comparison A vs B of ``compare`` whose groups are in
    the view, on every headline metric present; nothing without one."""
    present = {k for r in view.records for k in r.metrics}
    metrics = [m for m in vocab.headline if m in present]
    groups = labelled_groups(view)
    sentences = [sentence(a, b, groups[a], groups[b], metrics, vocab)
                 for a, b in compare if a in groups and b in groups] if metrics else []
    if not sentences:
        return []
    return ["### Verdict", "",
            "Each comparison A vs B in words: Δ = A − B of the headline metric, mean [95% "
            "interval] over the seeds both ran (paired); better or worse where the interval "
            "excludes 0. Sampling speed: the ratio of the mean sampling times (sample ms/1k).",
            "", *(f"- {s}" for s in sentences), ""]


def sentence(a: str, b: str, ra: list[RunRecord], rb: list[RunRecord], metrics: list[str],
             vocab: MetricVocabulary) -> str:
    """"`A` is better than `B` on `m` (Δ …) and samples 98× faster (NFE 1 vs 100).", then
    its warnings."""
    clauses, warnings, found = [], [], []
    for i, m in enumerate(metrics):
        pairing = pair_seeds(ra, rb, m, vocab.features.get(m))
        found.append((a, b, pairing))
        d = pairing.diff()
        clauses.append(clause(a, b, m, d, vocab.directions.get(m, "min"), first=i == 0))
        if 1 < d.n < FEW_SEEDS:
            warnings.append(f"The interval on `{m}` rests on {d.n} paired seeds: it is wide "
                            "and unreliable.")
        lo, hi = vocab.ranges.get(m, (None, None))
        if d.n > 1 and lo is not None and hi is not None:
            bounds = (lo - hi, hi - lo)  # what A − B can be
            if where := past_range(d.lo, d.hi, bounds):
                warnings.append(f"The interval on `{m}` reaches {where}, past the values a "
                                f"difference of `{m}` can take ({range_text(*bounds)}).")
    text = ", ".join(clauses) if len(clauses) < 3 else (", ".join(clauses[:-1]) + ", and "
                                                         + clauses[-1])
    pace = speed(ra, rb)
    if pace:
        text += (", and " if len(clauses) > 1 else " and ") + pace
    return " ".join([text + ".", *warnings, *left_out_notes(found)])


def clause(a: str, b: str, metric: str, d: Summary, direction: str, first: bool) -> str:
    """One metric's part of a sentence: the first names both methods."""
    if d.n < 2:
        what = ("no paired seed" if d.n == 0 else
                f"Δ {fmt_num(d.mean)} on 1 paired seed: no interval")
        return (f"`{a}` has no verdict against `{b}` on `{metric}` ({what})" if first else
                f"no verdict on `{metric}` ({what})")
    detail = f"Δ {fmt_num(d.mean)} [{fmt_num(d.lo)}, {fmt_num(d.hi)}] over {d.n} paired seeds"
    if d.lo <= 0 <= d.hi:
        word, detail = "not significantly different", f"{detail}: the interval includes 0"
    else:
        word = ("significantly different" if direction == "one" else
                "better" if (d.mean < 0) == (direction != "max") else "worse")
    if not first:
        return f"{word} on `{metric}` ({detail})"
    against = "from" if word.endswith("different") else "than"
    return f"`{a}` is {word} {against} `{b}` on `{metric}` ({detail})"


def speed(ra: list[RunRecord], rb: list[RunRecord]) -> str:
    """"samples 98× faster (NFE 1 vs 100)": the ratio of the mean sampling times of B and A;
    at equal NFE "samples at the same NFE (1; measured times differ 1.3×)", since every method
    uses the same network family and the times of equal work vary with the shared cores;
    "" when either has none."""
    ta = summarize([r.sample_ms_per_1k for r in ra]).mean
    tb = summarize([r.sample_ms_per_1k for r in rb]).mean
    if not (math.isfinite(ta) and math.isfinite(tb) and ta > 0 and tb > 0):
        return ""
    nfe = f"NFE {nfe_cell(ra)} vs {nfe_cell(rb)}"
    if {(r.device, r.threads) for r in ra} != {(r.device, r.threads) for r in rb}:
        nfe += "; timed on different devices or thread counts"
    ratio = tb / ta
    if nfe_cell(ra) == nfe_cell(rb):  # one network family: at one NFE a time ratio is no cost
        spread = max(ratio, 1 / ratio)
        return (f"samples at the same NFE ({nfe_cell(ra)}" + (
            f"; measured times differ {times(spread)}×" if spread >= SAME_SPEED else "") + ")")
    if ratio >= SAME_SPEED:
        return f"samples {times(ratio)}× faster ({nfe})"
    if ratio <= 1 / SAME_SPEED:
        return f"samples {times(1 / ratio)}× slower ({nfe})"
    return f"samples about as fast ({nfe})"


def times(ratio: float) -> str:
    """98, 2.5, 1.2: a speed ratio to two significant digits below 10, whole above."""
    return f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.2g}"
