"""Does the ranking of methods move with a hyperparameter? (a sweep over settings, e.g. lr x EMA)

When a dataset's records hold two or more methods at each of two or more sweep points (the
sweep's settings other than method and seed), the section ranks the methods by the headline
metric's mean over seeds at every setting, says whether the order is the same everywhere, and
orders them again with each at its own best setting, the question a referee asks of a tuned
comparison: would tuning each method change the verdict?

A setting picked by these scores is a choice made on the split they were scored against: the
section says which (a validation split, ``data.validation``, or the eval split, and then that
choosing on it tunes on the evaluation data).
"""

from __future__ import annotations

from collections import defaultdict

from bench.records import RunRecord
from bench.report.model import DatasetView, sweep_key, sweep_label
from bench.report.pairing import spaces_of
from bench.report.stats import Summary, fmt_num, summarize
from bench.vocab import FLOOR_METHOD, MetricVocabulary


def badness(s: Summary, direction: str) -> float:
    """Lower is better: the mean itself, its negative, or its distance from 1."""
    return {"max": -s.mean, "one": abs(s.mean - 1.0)}.get(direction, s.mean)


def ordered(means: dict[str, Summary], direction: str) -> list[str]:
    """Methods best first (ties by name)."""
    return sorted(means, key=lambda m: (badness(means[m], direction), m))


def order_text(order: list[str]) -> str:
    return " > ".join(f"`{m}`" for m in order)


def settings_of(view: DatasetView) -> dict[str, dict[str, list[RunRecord]]]:
    """Sweep label -> method -> its records, for records with a sweep point (floor left out),
    the settings in sweep order."""
    found: dict[str, dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    keys: dict[str, tuple] = {}
    for r in view.records:
        if r.sweep and r.method != FLOOR_METHOD:
            found[sweep_label(r)][r.method].append(r)
            keys[sweep_label(r)] = sweep_key(r)
    return {k: dict(found[k]) for k in sorted(found, key=keys.__getitem__)}


def split_text(records: list[RunRecord]) -> str:
    refs = {(r.metric_info or {}).get("reference", "eval") for r in records}
    if refs == {"validation"}:
        return ("Scored on a validation split held back from training (`data.validation`): "
                "a setting chosen here was not chosen on the eval split.")
    return ("These scores are on the " + " and ".join(f"`{x}`" for x in sorted(refs))
            + " split: choosing a setting by them would tune on the data the methods are "
            "evaluated on; run the sweep with `data.validation` to choose.")


def ranking_section(view: DatasetView, vocab: MetricVocabulary) -> list[str]:
    """"### Ranking across settings": nothing unless two or more methods ran at each of two or
    more sweep points."""
    present = {k for r in view.records for k in r.metrics}
    metric = vocab.headline_of(present)
    settings = settings_of(view)
    if metric is None or len(settings) < 2:
        return []
    methods = [m for m in view.order if all(m in by for by in settings.values())]
    if len(methods) < 2:
        return []
    direction = vocab.directions.get(metric, "min")
    runs = [r for by in settings.values() for m in methods for r in by[m]]
    head = [f"### Ranking across settings ({view.dataset})", ""]
    spaces = spaces_of(runs, vocab.features.get(metric))
    if len(spaces) > 1:
        return head + [f"Not ranked: these records' `{metric}` was scored in {len(spaces)} "
                       "feature spaces (" + "; ".join(s.name for s in spaces) + "), so their "
                       "means are on different scales.", ""]
    means = {label: {m: summarize([r.metrics.get(metric) for r in by[m]]) for m in methods}
             for label, by in settings.items()}
    orders = {label: ordered(ms, direction) for label, ms in means.items()}
    better = {"max": "higher", "one": "nearer 1"}.get(direction, "lower")
    lines = head + [
        f"Each method's `{metric}` ({better} is better) at every setting: mean ± std over "
        "seeds, its rank at that setting in brackets. " + split_text(runs), "",
        "| setting | " + " | ".join(f"`{m}`" for m in methods) + " | order |",
        "|---" * (len(methods) + 2) + "|"]
    for label, ms in means.items():
        rank = {m: i + 1 for i, m in enumerate(orders[label])}
        lines.append(f"| {label} | " + " | ".join(f"{ms[m].fmt()} ({rank[m]})" for m in methods)
                     + f" | {order_text(orders[label])} |")
    lines.append("")
    distinct = list(dict.fromkeys(tuple(o) for o in orders.values()))
    if len(distinct) == 1:
        lines.append(f"The order is the same at all {len(settings)} settings: "
                     f"{order_text(list(distinct[0]))}.")
    else:
        firsts = sorted({o[0] for o in orders.values()})
        lines.append(f"The order moves: {len(distinct)} different orders over {len(settings)} "
                     "settings; first place goes to " + ", ".join(f"`{m}`" for m in firsts)
                     + ".")
    best = {m: min(means, key=lambda lab: (badness(means[lab][m], direction), lab))
            for m in methods}
    tuned = {m: means[best[m]][m] for m in methods}
    tuned_order = ordered(tuned, direction)
    lines += ["", "Each at its own best setting: " + "; ".join(
        f"`{m}` {fmt_num(tuned[m].mean, 3)} at {best[m]}" for m in tuned_order)
        + f". Order: {order_text(tuned_order)}"
        + (", as at every setting." if len(distinct) == 1 and tuned_order == list(distinct[0])
           else ".")]
    seeds = sorted({s.n for ms in means.values() for s in ms.values()})
    if seeds and seeds[0] < 3:
        lines += ["", (f"Means over {seeds[0]}–{seeds[-1]} seeds" if len(seeds) > 1 else
                       f"Means over {seeds[0]} seed{'s' if seeds[0] > 1 else ''}")
                  + ": an order between close means can flip with more seeds."]
    return lines + [""]
