"""Learning curves: a dataset's headline metric during training, and the training it took each
method to reach a target quality."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.report import plots
from bench.report.model import DatasetView, label
from bench.report.pairing import left_out_notes, pair_seeds
from bench.report.stats import Summary, fmt_num, summarize
from bench.report.tables import BETTER
from bench.vocab import FLOOR_LABEL, FLOOR_METHOD, REFERENCE_METHOD, MetricVocabulary

#: the methods whose final scores set time-to-quality targets after the report's reference
#: method (the first target, hardest first)
EXTRA_TARGETS = ("fm-euler4",)


@dataclass(frozen=True)
class Reached:
    """When a curve first reached a target: step, training seconds and FLOPs (None: never)."""

    step: int | None
    seconds: float | None = None
    flops: float | None = None


def first_reaching(curve: list[dict], metric: str, target: float, direction: str) -> Reached:
    """The first curve point whose ``metric`` is at least as good as ``target``."""
    for p in curve:
        v = p["metrics"].get(metric)
        if v is not None and (v >= target if direction == "max" else v <= target):
            return Reached(p["step"], p.get("train_seconds"), p.get("train_flops"))
    return Reached(None)


def final_point(runs: list, metric: str, samples: int | None) -> float | None:
    """The seed-mean of ``metric`` at the runs' last curve points, when every run has one at
    its last training step scored on ``samples`` samples (else None)."""
    ends = [r.curve[-1] for r in runs if r.curve]
    if len(ends) != len(runs) or any(
            p["step"] != r.train_steps or p.get("samples") != samples
            or p["metrics"].get(metric) is None for p, r in zip(ends, runs, strict=True)):
        return None
    return summarize([p["metrics"][metric] for p in ends]).mean


def curved_rows(view: DatasetView) -> list[tuple[str, list]]:
    """(label, the runs that have curve points) for each report row with at least one."""
    out = []
    for _, runs in view.rows():
        runs = [r for r in runs if r.curve]
        if runs:
            out.append((label(runs[0]), runs))
    return out


def by_step(runs: list) -> dict[int, list[tuple[int, dict]]]:
    """step -> [(seed, curve point)] over ``runs``."""
    out: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    for r in runs:
        for p in r.curve:
            out[p["step"]].append((r.seed, p))
    return out


def curve_samples(view: DatasetView) -> int | None:
    """The sample count of the view's first curve point (what the tables' headers state)."""
    return next((r.curve[0].get("samples") for r in view.records if r.curve), None)


def curve_floor(view: DatasetView, metric: str) -> Summary:
    """Over seeds, held-out data scored as a curve point is (the ``data`` records'
    ``curve_floor`` on ``curve_samples``): what a perfect generator reads at that count."""
    n = curve_samples(view)
    return summarize([r.curve_floor.get("metrics", {}).get(metric) for r in view.records
                      if r.method == FLOOR_METHOD and r.curve_floor
                      and r.curve_floor.get("samples") == n])


def curve_metric(view: DatasetView, vocab: MetricVocabulary) -> str | None:
    """The headline output among the curves' metrics."""
    return vocab.headline_of(k for r in view.records for p in r.curve for k in p["metrics"])


def curves_figure(view: DatasetView, vocab: MetricVocabulary) -> Path | None:
    metric = curve_metric(view, vocab)
    if metric is None:
        return None
    series = {}
    for lab, runs in curved_rows(view):
        steps = by_step(runs)
        rows = []
        for step in sorted(steps):
            pts = [p for _, p in steps[step]]
            s = summarize([p["metrics"].get(metric) for p in pts])
            if s.n:
                rows.append((step, summarize([p.get("train_seconds") for p in pts]).mean,
                             summarize([p.get("train_flops") for p in pts]).mean, s.mean,
                             s.ci95 if s.n > 1 else 0.0))
        if rows:
            series[lab] = rows
    if not series:
        return None
    floor = curve_floor(view, metric)
    better = BETTER.get(vocab.directions.get(metric, ""))
    axis = f"{metric} ({better})" if better else metric
    return plots.learning_curves(series, axis, view.fig_dir / f"{view.slug}_curves.png",
                                 f"{view.title}: {metric} during training (EMA weights; "
                                 "band: 95% CI over seeds)",
                                 floor=(f"{FLOOR_LABEL} at this sample count", floor.mean)
                                 if floor.n else None)


def curve_table(view: DatasetView, vocab: MetricVocabulary) -> list[str]:
    """The plotted numbers: each method's curve metric at every curve step, mean over seeds
    with its 95% interval from two seeds on."""
    metric = curve_metric(view, vocab)
    if metric is None:
        return []
    rows = []
    steps: set[int] = set()
    for lab, runs in curved_rows(view):
        values = {s: [p["metrics"].get(metric) for _, p in pts]
                  for s, pts in by_step(runs).items()}
        steps |= set(values)
        rows.append((lab, len(runs), values))
    if not rows:
        return []
    cols = sorted(steps)
    samples = curve_samples(view)
    floor = curve_floor(view, metric)
    lines = ["### Curve points", "",
             f"`{metric}` of the EMA weights on {samples} samples at each curve step: mean over "
             "seeds, with its 95% interval from two seeds on." + (
                 f" `{FLOOR_LABEL}` is held-out data scored the same way (the same sample count "
                 "and metric settings), the same at every step: what a perfect generator reads "
                 "here (for a biased distance such as W2 or FD, above the full sample's floor)."
                 if floor.n else ""), "",
             "| method | seeds | " + " | ".join(f"step {s}" for s in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    if floor.n:
        lines.append(f"| {FLOOR_LABEL} | {floor.n} | "
                     + " | ".join([ratio_cell(floor)] * len(cols)) + " |")
    for lab, n, values in rows:
        cells = [ratio_cell(summarize(values.get(s, []))) for s in cols]
        lines.append(f"| {lab} | {n} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def step_table(view: DatasetView, heading: str, intro: str, keep: Callable[[dict], bool],
               cell: Callable[[list[dict]], str]) -> list[str]:
    """A table with a row per curved report row and a column per curve step: ``cell`` of the
    row's curve points at that step that ``keep`` accepts (– where none); nothing when no
    row has such a point."""
    rows, steps = [], set()
    for lab, runs in curved_rows(view):
        pts = {s: [p for _, p in sp if keep(p)] for s, sp in by_step(runs).items()}
        pts = {s: v for s, v in pts.items() if v}
        if pts:
            steps |= set(pts)
            rows.append((lab, len(runs), pts))
    if not rows:
        return []
    cols = sorted(steps)
    lines = [f"### {heading}", "", intro, "",
             "| method | seeds | " + " | ".join(f"step {s}" for s in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for lab, n, pts in rows:
        cells = [cell(pts[s]) if s in pts else "–" for s in cols]
        lines.append(f"| {lab} | {n} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def bank_curve_table(view: DatasetView, vocab: MetricVocabulary) -> list[str]:
    """The bank gap along the curve: for the rows trained on a noise bank, the curve metric on
    fresh noise and on the bank's own noise at every curve step (mean over seeds), and the gap
    fresh - bank with its interval. Nothing when no curve point was scored on bank noise."""
    metric = curve_metric(view, vocab)
    if metric is None:
        return []
    better = "higher" if vocab.directions.get(metric) == "max" else "lower"

    def cell(got: list[dict]) -> str:
        fresh = summarize([p["metrics"][metric] for p in got])
        bank = summarize([p["bank"][metric] for p in got])
        gap = summarize([p["metrics"][metric] - p["bank"][metric] for p in got])
        return f"{fmt_num(fresh.mean)} / {fmt_num(bank.mean)} (gap {gap.fmt(ci=True)})"

    return step_table(
        view, "Bank gap during training",
        f"`{metric}` on fresh noise / on noise from the model's own bank (the noise it was "
        f"trained on), same sample count, then the gap fresh − bank with its 95% interval "
        f"over seeds. A bank score much {better}-is-better than the fresh one means the "
        "model answers its training noise with what it memorised for it.",
        lambda p: metric in p.get("bank", {}), cell)


def copy_curve_table(view: DatasetView, vocab: MetricVocabulary) -> list[str]:
    """Memorisation along the curve: the memorisation outputs (``copy_ratio`` / ``copy_share``)
    at every curve step, mean over seeds, on fresh noise and, for the rows trained on a noise
    bank, on the bank's own noise. Nothing when no curve point carries them."""
    present = {k for r in view.records for p in r.curve for k in p["metrics"]}
    outs = [o for o in vocab.directions if o in vocab.against_train and o in present]
    if not outs:
        return []

    def side(got: list[dict], key: str) -> str:
        return " / ".join(ratio_cell(summarize([p[key].get(o) for p in got])) for o in outs)

    def cell(got: list[dict]) -> str:
        banked = [p for p in got if outs[0] in p.get("bank", {})]
        return side(got, "metrics") + (f"; bank {side(banked, 'bank')}" if banked else "")

    names = " / ".join(f"`{o}` ({BETTER.get(vocab.directions.get(o, ''), '')})" for o in outs)
    return step_table(
        view, "Memorisation during training",
        f"{names} of the EMA weights on {curve_samples(view)} samples at each curve step, "
        "mean over seeds with its 95% interval from two seeds on; after \"bank\": the same on "
        "noise from the model's own bank (the noise it was trained on). `copy_ratio`: the "
        "median distance from a sample to its nearest training item over the same median for "
        "held-out items (1: like new data; well below 1: reproduces training items). "
        "`copy_share`: the share of samples nearer a training item than any held-out item "
        "is (near copies; 0 for new data).",
        lambda p: outs[0] in p["metrics"], cell)


def time_to_quality(view: DatasetView, vocab: MetricVocabulary,
                    reference: str = REFERENCE_METHOD) -> list[str]:
    """For each method with a curve: the first step, training seconds and FLOPs at which it
    reached each target (the final score of ``reference`` and ``EXTRA_TARGETS``: their last
    curve point where they have one at their last step, so that both sides are scored on the
    same samples), mean over the seeds that reached it."""
    metric = curve_metric(view, vocab)
    if metric is None:
        return []
    direction = vocab.directions.get(metric, "min")
    labels = [label(runs[0]) for _, runs in view.rows()]
    # a label held by two configs (records of two settings) is no target: which final?
    groups = {label(runs[0]): runs for _, runs in view.rows() if labels.count(label(runs[0])) == 1}
    curved = curved_rows(view)
    if not curved:
        return []
    samples = curve_samples(view)
    targets, finals = [], []
    for m in dict.fromkeys((reference, *EXTRA_TARGETS)):
        if m not in groups:
            continue
        final = summarize([r.metrics.get(metric) for r in groups[m]])
        same_n = final_point(groups[m], metric, samples)
        if same_n is not None:  # its final weights on the curve's samples: like for like
            targets.append((m, same_n))
            finals.append(f"{m} {fmt_num(same_n)} at its last curve point, on the same "
                          f"samples and noise as every curve point ({fmt_num(final.mean)} on "
                          "the full evaluation sample)")
        elif final.n:
            targets.append((m, final.mean))
            finals.append(f"{m} {fmt_num(final.mean)} on the full evaluation sample (it has "
                          "no curve point at its last step, so curve points, on fewer samples, "
                          "may reach it only late or never)")
    if not targets:
        return []
    lines = ["### Time to quality", "",
             f"The first curve point (EMA weights, `{metric}` on {samples} samples) at which a "
             "method is at least as good as the target, the seed-mean score of the target "
             "method's final weights. Targets: " + "; ".join(finals) + ". Mean over the seeds "
             "that reached it, with how many did.", "",
             "| method | " + " | ".join(
                 f"reaches {m} ({fmt_num(t)}): step / s / FLOPs" for m, t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    for lab, runs in curved:
        cells = []
        for _, t in targets:
            hits = [first_reaching(r.curve, metric, t, direction) for r in runs]
            got = [h for h in hits if h.step is not None]
            if not got:
                cells.append(f"never ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
                continue
            mean = lambda xs: summarize(xs).mean  # noqa: E731
            cells.append(f"{fmt_num(mean([h.step for h in got]), 3)} / "
                         f"{fmt_num(mean([h.seconds for h in got]), 3)} / "
                         f"{fmt_num(mean([h.flops for h in got]))} "
                         f"({len(got)}/{len(runs)} seeds)")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def curve_overhead(view: DatasetView) -> list[str]:
    """What scoring the curve cost, against the training it watched."""
    # the readings of one training (fm-euler4/10/100 from one checkpoint) count once
    runs = list({(r.checkpoint or r.run_id): r for r in view.records
                 if r.curve and r.train_seconds}.values())
    if not runs:
        return []
    shares = [r.curve_seconds / (r.train_seconds + r.curve_seconds) for r in runs]
    return [f"Curve scoring took {fmt_num(100 * summarize(shares).mean, 3)}% of the wall-clock "
            f"of the trainings it watched (mean over {len(shares)}; at most "
            f"{fmt_num(100 * max(shares), 3)}%), kept out of their training seconds.", ""]


def gap_table(view: DatasetView, vocab: MetricVocabulary,
              reference: str = REFERENCE_METHOD) -> list[str]:
    """Whether the gap to ``reference`` closes with training: at each curve step the reference
    also scored, every method's score divided by the reference's, seed by seed (the same
    samples and noise on both sides), as the mean ratio over the common seeds with its 95%
    interval; seeds whose two records were scored in different feature spaces are left out,
    and said so. Only for metrics where lower is better (a ratio of 1 is parity)."""
    metric = curve_metric(view, vocab)
    if metric is None or vocab.directions.get(metric, "min") != "min":
        return []
    rows = dict(curved_rows(view))
    ref = rows.get(reference)
    if not ref:
        return []

    def points(runs: list) -> dict[int, dict[int, float]]:
        """step -> seed -> score (steps with no score left out)"""
        out = {s: {seed: p["metrics"][metric] for seed, p in pts
                   if p["metrics"].get(metric) is not None} for s, pts in by_step(runs).items()}
        return {s: d for s, d in out.items() if d}

    ref_pts = points(ref)
    steps = sorted(ref_pts)
    lines = ["### Gap to " + reference + " during training", "",
             f"Each method's `{metric}` divided by {reference}'s at the same step and seed (both "
             "on the curve's samples and noise): mean over the common seeds, with its 95% "
             "interval where there are two or more; 1 is parity, a falling ratio a closing gap.",
             "", "| method | seeds | " + " | ".join(f"step {s}" for s in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    found = []
    for lab, runs in rows.items():
        if lab == reference:
            continue
        pairing = pair_seeds(runs, ref, metric, vocab.features.get(metric))
        paired = set(pairing.seeds)
        pts = points(runs)
        cells = []
        for s in steps:
            common = sorted(set(pts.get(s, {})) & set(ref_pts[s]) & paired)
            ratios = [pts[s][seed] / ref_pts[s][seed] for seed in common if ref_pts[s][seed] > 0]
            cells.append(ratio_cell(summarize(ratios)))
        if any(c != "–" for c in cells):
            found.append((lab, reference, pairing))
            lines.append(f"| {lab} | {len(paired)} | " + " | ".join(cells) + " |")
    if len(lines) == 5:
        return []
    for note in left_out_notes(found):
        lines += ["", note]
    return [*lines, ""]


def ratio_cell(s: Summary) -> str:
    """A mean, with its 95% interval from two seeds on (compact: these tables are wide)."""
    if s.n == 0:
        return "–"
    if s.n == 1:
        return fmt_num(s.mean)
    return f"{fmt_num(s.mean)} [{fmt_num(s.lo)}, {fmt_num(s.hi)}]"
