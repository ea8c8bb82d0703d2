"""Does the ranking of methods move with a hyperparameter? (a sweep over settings, e.g. lr x EMA)

A dataset's sweep records fall into families: the same swept keys over one base config (the
config with the swept keys and the method left out; records of another budget or another
sweep form another family, never pooled). For each family with two or more methods over two or
more settings the section ranks the methods by the headline metric's mean over seeds at every
setting, says whether their order is the same everywhere, and orders them again with each at
its own best setting: the question a referee asks of a tuned comparison, would tuning each
method change the verdict? A method without a finished run at a setting (failed, diverged or
not run) is shown there as missing and named, never silently dropped.

A setting picked by these scores is a choice made on the split they were scored against: the
section says which (a validation split, ``data.validation``, or the eval split, and then that
choosing on it tunes on the evaluation data).
"""

from __future__ import annotations

import json
from collections import defaultdict

from bench.records import RunRecord
from bench.report.model import DatasetView, flatten_config, sweep_key, sweep_label
from bench.report.pairing import spaces_of
from bench.report.stats import Summary, fmt_num, summarize
from bench.vocab import FLOOR_METHOD, MetricVocabulary

#: the config sections a family's base config is read from (a method's own section, its
#: recipe and teacher belong to the method, which is what is compared)
BASE_SECTIONS = ("data", "net", "train", "coupling", "path", "eval")


def badness(s: Summary, direction: str) -> float:
    """Lower is better: the mean itself, its negative, or its distance from 1."""
    return {"max": -s.mean, "one": abs(s.mean - 1.0)}.get(direction, s.mean)


def ordered(means: dict[str, Summary], direction: str) -> list[str]:
    """Methods best first (ties by name)."""
    return sorted(means, key=lambda m: (badness(means[m], direction), m))


def order_text(order: list[str]) -> str:
    """Best first."""
    return ", ".join(f"`{m}`" for m in order)


def swaps(orders: list[list[str]]) -> list[tuple[str, str]]:
    """The pairs of methods whose relative order differs between two of ``orders``."""
    pos = [{m: i for i, m in enumerate(o)} for o in orders]
    methods = orders[0]
    return [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]
            if len({p[a] < p[b] for p in pos}) > 1]


def overlap(a: Summary, b: Summary) -> bool:
    """Whether two means lie within the sum of their spreads (std over seeds)."""
    return abs(a.mean - b.mean) <= (a.std or 0.0) + (b.std or 0.0)


def family_key(r: RunRecord) -> tuple[tuple[str, ...], str]:
    """The swept keys, and the record's config without them and without the method."""
    base = flatten_config({k: (r.config or {}).get(k) for k in BASE_SECTIONS})
    kept = {k: v for k, v in base.items() if k not in r.sweep}
    return tuple(sorted(r.sweep)), json.dumps(kept, sort_keys=True, default=str)


def families(view: DatasetView) -> list[dict[str, dict[str, list[RunRecord]]]]:
    """The view's sweep families, each: sweep label -> method -> its records, settings in sweep
    order (floor records left out)."""
    found: dict[tuple, dict[str, dict[str, list[RunRecord]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    keys: dict[str, tuple] = {}
    for r in view.records:
        if r.sweep and r.method != FLOOR_METHOD:
            found[family_key(r)][sweep_label(r)][r.method].append(r)
            keys[sweep_label(r)] = sweep_key(r)
    return [{lab: dict(fam[lab]) for lab in sorted(fam, key=keys.__getitem__)}
            for fam in found.values()]


def family_runs(fam: dict[str, dict[str, list[RunRecord]]]) -> list[RunRecord]:
    """Every record of a family (one sweep label -> method -> records mapping)."""
    return [r for by in fam.values() for rs in by.values() for r in rs]


def split_text(records: list[RunRecord]) -> str:
    refs = {(r.metric_info or {}).get("reference", "eval") for r in records}
    if refs == {"validation"}:
        return ("Scored on a validation split held back from training (`data.validation`): "
                "a setting chosen here was not chosen on the eval split.")
    return ("These scores are on the " + " and ".join(f"`{x}`" for x in sorted(refs))
            + " split: choosing a setting by them would tune on the data the methods are "
            "evaluated on; run the sweep with `data.validation` to choose.")


def compared_orders(orders: dict[str, list[str]], methods: list[str],
                    missing: dict[str, list[str]]) -> tuple[dict[str, list[str]], str]:
    """The orders to compare across settings, and how they were chosen: every setting's
    when every method is scored everywhere; else those of the settings where every method is
    scored, when two or more are; else every setting's, restricted to the methods scored at
    all of them (at least two); else none. A partial grid thus compares whole orders, not
    the two methods that happen to be at one extra setting."""
    if not missing:
        return orders, ""
    complete = {lab: o for lab, o in orders.items() if len(o) == len(methods)}
    if len(complete) >= 2:
        return complete, (f" (at the {len(complete)} of {len(orders)} settings where every "
                          "method is scored)")
    common = [m for m in methods if m not in missing]
    if len(common) < 2:
        return {}, ""
    return ({lab: [m for m in o if m in common] for lab, o in orders.items()},
            " (among the methods scored at every setting)")


def ranking_section(view: DatasetView, vocab: MetricVocabulary) -> list[str]:
    """"### Ranking across settings" for each sweep family with two or more methods over two
    or more settings; nothing without one."""
    fams = [f for f in families(view)
            if len(f) >= 2 and len({m for by in f.values() for m in by}) >= 2]
    lines: list[str] = []
    for fam in fams:
        swept = " × ".join(sorted(family_runs(fam)[0].sweep))
        title = view.title + (f", {swept}" if len(fams) > 1 else "")
        lines += family_section(view, vocab, fam, title)
    return lines


def family_section(view: DatasetView, vocab: MetricVocabulary,
                   fam: dict[str, dict[str, list[RunRecord]]], title: str) -> list[str]:
    runs = family_runs(fam)
    metric = vocab.headline_of({k for r in runs for k in r.metrics})
    head = [f"### Ranking across settings ({title})", ""]
    if metric is None:
        return []
    spaces = spaces_of(runs, vocab.features.get(metric))
    if len(spaces) > 1:
        return head + [f"Not ranked: these records' `{metric}` was scored in {len(spaces)} "
                       "feature spaces (" + "; ".join(s.name for s in spaces) + "), so their "
                       "means are on different scales.", ""]
    direction = vocab.directions.get(metric, "min")
    methods = [m for m in view.order if any(m in by for by in fam.values())]
    means: dict[str, dict[str, Summary]] = {}
    missing: dict[str, list[str]] = defaultdict(list)
    for label, by in fam.items():
        means[label] = {}
        for m in methods:
            s = summarize([r.metrics.get(metric) for r in by.get(m, [])])
            if s.n:
                means[label][m] = s
            else:
                missing[m].append(label)
    orders = {label: ordered(ms, direction) for label, ms in means.items()}
    better = {"max": "higher", "one": "nearer 1"}.get(direction, "lower")
    lines = head + [
        f"Each method's `{metric}` ({better} is better) at every setting: mean ± std over "
        "seeds and, after #, its rank among the methods scored at that setting. "
        + split_text(runs), "",
        "| setting | " + " | ".join(f"`{m}`" for m in methods) + " | order, best first |",
        "|---" * (len(methods) + 2) + "|"]
    for label, ms in means.items():
        rank = {m: i + 1 for i, m in enumerate(orders[label])}
        cells = [f"{ms[m].fmt()} · #{rank[m]}" if m in ms else "–" for m in methods]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {order_text(orders[label])} |")
    lines.append("")
    if missing:
        lines += ["No finished run (failed, diverged or not run; the Runs table lists the "
                  "failures): " + "; ".join(f"`{m}` at {', '.join(labs)}"
                                            for m, labs in missing.items()) + ".", ""]
    kept, among = compared_orders(orders, methods, missing)
    if kept:
        distinct = list(dict.fromkeys(tuple(o) for o in kept.values()))
        if len(distinct) == 1:
            lines.append(f"The order{among} is the same at all {len(kept)} settings: "
                         f"{order_text(list(distinct[0]))}.")
        else:
            firsts = sorted({o[0] for o in kept.values()})
            moved = swaps([list(o) for o in distinct])
            noise = [(a, b) for a, b in moved
                     if all(overlap(means[lab][a], means[lab][b]) for lab in kept)]
            lines.append(f"The order{among} moves: {len(distinct)} different orders over "
                         f"{len(kept)} settings; first place goes to "
                         + ", ".join(f"`{m}`" for m in firsts) + "; "
                         + ", ".join(f"`{a}` and `{b}`" for a, b in moved)
                         + " swap places"
                         + ("; these are within the spread over seeds at every setting: "
                            + ", ".join(f"`{a}` and `{b}`" for a, b in noise)
                            if noise else "") + ".")
        lines.append("")
    best = {m: min((lab for lab in means if m in means[lab]),
                   key=lambda lab, m=m: (badness(means[lab][m], direction), lab))
            for m in methods if len(missing[m]) < len(fam)}
    tuned = {m: means[best[m]][m] for m in best}
    tuned_order = ordered(tuned, direction)
    lines += ["Each at its own best setting: " + "; ".join(
        f"`{m}` {fmt_num(tuned[m].mean, 3)} at {best[m]}" for m in tuned_order)
        + f". Order: {order_text(tuned_order)}.", ""]
    seeds = sorted({s.n for ms in means.values() for s in ms.values()})
    over = (f"{seeds[0]}–{seeds[-1]} seeds" if len(seeds) > 1 else
            f"{seeds[0]} seed{'s' if seeds[0] > 1 else ''}")
    single = " (one seed: no spread to judge by)" if seeds[-1] == 1 else ""
    return lines + [f"Means over {over}{single}: an order between means whose spread overlaps "
                    "can flip with more seeds; paired comparisons (`--compare A:B`) say which "
                    "differences exceed the noise.", ""]
