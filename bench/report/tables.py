"""The Markdown tables and the explanatory lines of one dataset's section."""

from __future__ import annotations

import math
from collections.abc import Callable

from bench.records import RunRecord
from bench.report.model import DatasetView, label
from bench.report.pairing import left_out_notes, mixed_note, pair_seeds, spaces_of
from bench.report.stats import fmt_num, summarize
from bench.vocab import FLOOR_METHOD, REFERENCE_METHOD, MetricVocabulary

ARROWS = {"min": "↓", "max": "↑", "one": "→1"}
#: how a figure's axis or a sentence says which way a metric is better
BETTER = {"min": "lower is better", "max": "higher is better", "one": "best at 1"}

#: the line under a table of means over seeds: what its ± and [ ] are
ERROR_BARS = ("± is the sample standard deviation over seeds, [ ] the 95% confidence interval "
              "of the mean (Student t, n − 1 degrees of freedom); one seed has neither.")


def train_flops(r: RunRecord) -> float | None:
    """Everything a record's training counted (a teacher's and its pairs' included); None for
    records written before compute was counted."""
    c = r.train_compute
    return c.get("total_flops", c.get("flops")) if c else None


#: Columns about cost, shown after the metrics: (name, header, value of a record)
COST_COLUMNS: tuple[tuple[str, str, Callable[[RunRecord], float | None]], ...] = (
    ("train_seconds", "train s", lambda r: r.train_seconds),
    ("train_flops", "train FLOPs", train_flops),
    ("coupling_seconds", "coupling s", lambda r: r.coupling_seconds),
    ("sample_ms_per_1k", "sample ms/1k", lambda r: r.sample_ms_per_1k),
)


def metric_order(records: list[RunRecord], directions: dict[str, str]) -> list[str]:
    """Metric outputs present in ``records``: registry order, then unknown ones sorted."""
    present = {k for r in records for k in r.metrics}
    ordered = [k for k in directions if k in present]
    return ordered + sorted(present - set(ordered))


def header_name(metric: str, directions: dict[str, str]) -> str:
    arrow = ARROWS.get(directions.get(metric, ""), "")
    return f"{metric} {arrow}".strip()


def nfe_cell(runs: list[RunRecord]) -> str:
    """Counted NFE: fixed-step methods' integers; an adaptive solver's mean over seeds."""
    nfes = sorted({r.nfe for r in runs if r.nfe is not None})
    if not nfes:
        return "–"
    if all(float(n).is_integer() for n in nfes):
        return "/".join(str(int(n)) for n in nfes)
    return f"{fmt_num(sum(nfes) / len(nfes), 3)} (adaptive)"


def data_line(r: RunRecord) -> str:
    info = r.data_info
    held = "validation" if info.get("validation") else "held-out"
    if info.get("kind") == "points":
        return (f"2-D {r.dataset} ({info.get('description', '')}); source "
                f"`{info.get('source')}`; {info.get('n_train')} training points from each run's "
                "seed, " + (f"{info.get('n_eval')} validation points held back from them."
                            if info.get("validation") else
                            f"{info.get('n_eval')} held-out points from a fixed seed."))
    if info.get("kind") == "images":
        return (f"{r.dataset}: {info.get('description', '')}. Resolution "
                f"{info.get('resolution')}, {info.get('channels')} channel(s), scaled to "
                f"{info.get('range')}; {info.get('n_train')} training / {info.get('n_eval')} "
                f"{held} images; floor = {info.get('floor')}.")
    shape = "×".join(str(s) for s in info.get("shape", []))
    return f"{r.dataset}: {shape} {info.get('description', '')}".strip()


def metric_line(ds_records: list[RunRecord]) -> str:
    mi = next((r.metric_info for r in ds_records if r.metric_info and r.method != FLOOR_METHOD),
              next((r.metric_info for r in ds_records if r.metric_info), {}))
    if not mi:
        return ""
    against = {"train": "training", "validation": "validation (held back from training; the "
               "eval split unused)"}.get(mi.get("reference"), "held-out")
    if "w2_samples" in mi:
        return (f"Metrics on {mi.get('n_samples')} samples against {mi.get('n_reference')} "
                f"{against} points ({mi.get('features')}); W2 on {mi.get('w2_samples')} per "
                "side.")
    parts = [f"Metrics on {mi.get('n_samples')} generated samples against "
             f"{mi.get('n_reference')} {against} images, computed by torch-fidelity on uint8 "
             "images."]
    if "fd_extractor" in mi:
        classifiers = list(dict.fromkeys(
            (r.metric_info["fd_extractor"], r.metric_info.get("fd_extractor_eval_accuracy"))
            for r in ds_records if r.metric_info.get("fd_extractor")))
        accs = [fmt_num(acc, 3) if acc is not None else "?" for _, acc in classifiers]
        named = "; ".join(f"`{cid}`, held-out accuracy {acc}"
                          for (cid, _), acc in zip(classifiers, accs, strict=True))
        which = (f"the domain classifier `{classifiers[0][0]}` (a small CNN trained on the "
                 f"training split; held-out accuracy {accs[0]})" if len(classifiers) == 1 else
                 f"a domain classifier (small CNNs trained on the training split; these records "
                 f"were scored by {len(classifiers)}: {named}; records scored by two different "
                 "ones are never paired)")
        parts.append(
            f"`fd_domain`, `kid_domain`, `prec_domain`, `rec_domain` use the features of {which}:"
            " a Fréchet distance in those features, **not Inception FID**. `class_entropy` is the"
            " entropy of its class histogram of the samples over log 10 (0 = one class), "
            "`class_coverage` the share of classes holding at least half their uniform share.")
    if "fid_extractor" in mi:
        parts.append(f"`fid`, `kid`, `prec_inception`, `rec_inception`: torch-fidelity "
                     f"`{mi['fid_extractor']}` (Inception FID).")
        n = mi.get("fid_n_generated")
        if isinstance(n, int) and n < 50_000:
            parts.append(f"FID on {n:,} samples is biased upward against the 50,000-sample FID "
                         "papers report: it ranks the methods here, it is not comparable with "
                         "published figures; KID is unbiased at any sample count.")
    return " ".join(parts)


def main_table(view: DatasetView, metrics: list[str], vocab: MetricVocabulary) -> list[str]:
    """One row per config group: mean ± std [95% interval] over seeds of every metric, the
    counted NFE and the costs; under it what ± and [ ] are, the groups whose seeds were scored
    in different feature spaces (marked †) and the intervals that reach past a metric's
    range."""
    header = (["method", "seeds", "NFE"] + [header_name(m, vocab.directions) for m in metrics]
              + [h for _, h, _ in COST_COLUMNS])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    kinds: dict[str, list[str]] = {}
    for m in metrics:
        if m in vocab.features:
            kinds.setdefault(vocab.features[m], []).append(m)
    mixed: dict[str, list[tuple[str, dict]]] = {}
    for key, group in view.rows():
        runs = sorted(group, key=lambda r: r.seed)
        lab = label(runs[0])
        spaces = {kind: found for kind in kinds if len(found := spaces_of(runs, kind)) > 1}
        for kind, found in spaces.items():
            mixed.setdefault(kind, []).append((lab, found))
        if spaces:
            lab += " †"
        row = [lab, str(len(runs)), nfe_cell(runs)]
        hide = (set(vocab.against_train) if key[1] == FLOOR_METHOD
                and any(floor_is_train(r) for r in runs) else set())
        row += [summarize([None if m in hide else r.metrics.get(m) for r in runs]).fmt(ci=True)
                for m in metrics]
        if key[1] == FLOOR_METHOD:
            row += ["–"] * len(COST_COLUMNS)
        else:
            row += [summarize([get(r) for r in runs]).fmt() for _, _, get in COST_COLUMNS]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", ERROR_BARS]
    unscored = [m for m in metrics if m in vocab.against_train]
    if unscored and any(floor_is_train(r) for r in view.records if r.method == FLOOR_METHOD):
        lines += ["", "The floor has no " + ", ".join(f"`{m}`" for m in unscored) + ": it is "
                  "made of training items, which would read as copies of themselves."]
    notes = [mixed_note(kind, kinds[kind], rows) for kind, rows in mixed.items()]
    for note in [*notes, *range_notes(view, metrics, vocab), *collapse_notes(view, metrics)]:
        lines += ["", note]
    return lines


def floor_is_train(r: RunRecord) -> bool:
    """A floor record whose items are training items (images: the first of the training
    split; older records say so only in their data description)."""
    return bool((r.metric_info or {}).get("floor_not_scored")) or "training" in str(
        (r.data_info or {}).get("floor", ""))


def range_text(lo: float | None, hi: float | None) -> str:
    """"≥ 0", "≤ 1", "0 to 1": the values a metric can take."""
    if lo is not None and hi is not None:
        return f"{fmt_num(lo)} to {fmt_num(hi)}"
    return f"≥ {fmt_num(lo)}" if lo is not None else f"≤ {fmt_num(hi)}"


def past_range(lo: float, hi: float, bounds: tuple[float | None, float | None]) -> str:
    """"below 0" / "above 1" when the interval [lo, hi] reaches past ``bounds``, else ""."""
    low, high = bounds
    parts = ([f"below {fmt_num(low)}"] if low is not None and lo < low else []) + (
        [f"above {fmt_num(high)}"] if high is not None and hi > high else [])
    return " and ".join(parts)


def range_notes(view: DatasetView, metrics: list[str], vocab: MetricVocabulary) -> list[str]:
    """The main table's 95% intervals that reach past the range their metric can take (below 0
    for a distance, above 1 for a precision), in one sentence."""
    found = []
    for m in metrics:
        bounds = vocab.ranges.get(m)
        if bounds is None:
            continue
        rows = []
        for _, runs in view.rows():
            s = summarize([r.metrics.get(m) for r in runs])
            if s.n > 1 and math.isfinite(s.ci95) and (where := past_range(s.lo, s.hi, bounds)):
                rows.append(f"{label(runs[0])} ({where})")
        if rows:
            found.append(f"`{m}` ({range_text(*bounds)}): {', '.join(rows)}")
    if not found:
        return []
    return ["Intervals reaching past the values a metric can take (a t-interval is symmetric "
            "about the mean and knows no bound; on few or spread seeds it spills over): "
            + "; ".join(found) + "."]


#: mean ``var_ratio`` below which a row has collapsed (its samples spread less than a tenth as
#: much as the data): its ``copy_ratio`` reads where the collapse point lies, not copying
COLLAPSED_VAR_RATIO = 0.1


def collapse_notes(view: DatasetView, metrics: list[str]) -> list[str]:
    """Rows whose mean ``copy_ratio`` is below 1 while their mean ``var_ratio`` is below
    ``COLLAPSED_VAR_RATIO`` (over the runs that have both) and fewer than half their samples
    are near copies (``copy_share``; a collapse onto one training item is copying): one
    sentence saying that there the low ratio is a collapse onto a point inside the data, not
    copies of training items."""
    if "copy_ratio" not in metrics or "var_ratio" not in metrics:
        return []
    rows = []
    for _, runs in view.rows():
        both = [r for r in runs if r.metrics.get("copy_ratio") is not None
                and r.metrics.get("var_ratio") is not None]
        ratio = summarize([r.metrics["copy_ratio"] for r in both])
        spread = summarize([r.metrics["var_ratio"] for r in both])
        share = summarize([r.metrics.get("copy_share") for r in both])
        if (ratio.n and spread.n and ratio.mean < 1 and spread.mean < COLLAPSED_VAR_RATIO
                and not share.mean >= 0.5):
            rows.append(f"{label(runs[0])} (`copy_ratio` {fmt_num(ratio.mean)}, `var_ratio` "
                        f"{fmt_num(spread.mean)})")
    if not rows:
        return []
    return [f"Collapsed, not copying: {', '.join(rows)}. Their samples spread less than "
            f"{fmt_num(COLLAPSED_VAR_RATIO)} of the data's variance, so `copy_ratio` below 1 "
            "says where the collapse point lies (inside the data), not that training items "
            "are reproduced; `copy_ratio` reads copying only beside a `var_ratio` near 1."]


def labelled_groups(view: DatasetView) -> dict[str, list[RunRecord]]:
    """Config groups by table label; a label two configs share (e.g. records from two code
    versions) names neither, so nothing compares them."""
    by_label: dict[str, list[RunRecord] | None] = {}
    for _, group in view.rows():
        lab = label(group[0])
        by_label[lab] = None if lab in by_label else group
    return {lab: group for lab, group in by_label.items() if group is not None}


def pairs_table(view: DatasetView, metrics: list[str], vocab: MetricVocabulary,
                compare: list[tuple[str, str]]) -> list[str]:
    """Paired differences A − B over the seeds both have (in one feature space), with 95%
    t-intervals; pairs with no seed in common are left out, and so are seeds scored in
    different feature spaces, each said under the table."""
    groups = labelled_groups(view)
    pairs = [(a, b) for a, b in compare if a in groups and b in groups]
    metrics = [m for m in vocab.key if m in metrics]
    rows, found = [], []
    for a, b in pairs:
        ra, rb = groups[a], groups[b]
        common = len({r.seed for r in ra} & {r.seed for r in rb})
        cells = []
        for m in metrics:
            pairing = pair_seeds(ra, rb, m, vocab.features.get(m))
            found.append((a, b, pairing))
            s = pairing.diff()
            cell = s.fmt(ci=True)
            if s.n > 1 and (s.lo > 0 or s.hi < 0):
                cell = f"**{cell}**"
            if 1 < s.n < common:
                cell += f" ({s.n} seeds)"
            cells.append(cell)
        if any(c != "–" for c in cells):
            rows.append(f"| {a} | {b} | {common} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    lines = ["Paired over common seeds: mean difference A − B ± its std over seeds [95% "
             "interval]; **bold** where the interval excludes 0; a cell over fewer seeds than "
             "the pair has in common says how many.", "",
             "| A | B | seeds | " + " | ".join(f"Δ {m}" for m in metrics) + " |",
             "|" + "---|" * (3 + len(metrics)), *rows]
    for note in left_out_notes(found):
        lines += ["", note]
    return lines


def default_compare(view: DatasetView,
                    reference: str = REFERENCE_METHOD) -> list[tuple[str, str]]:
    """The default paired comparisons: every method against ``reference``, when it ran."""
    labels = [label(group[0]) for key, group in view.rows() if key[1] != FLOOR_METHOD]
    if reference not in labels:
        return []
    return [(lab, reference) for lab in labels if lab != reference]


def diagnostics_table(view: DatasetView) -> list[str]:
    """Coupling consistency next to the collapse diagnostic, for runs that measured it."""
    rows = []
    for _, runs in view.rows():
        tv = summarize([r.coupling_diagnostics.get("target_var_ratio") for r in runs])
        if tv.n == 0:
            continue
        hist = [r.train_history for r in runs if r.train_history]
        ratio = summarize([h[-1]["cost"] / h[-1]["cost_independent"] for h in hist
                           if h[-1].get("cost_independent")])
        reassigned = summarize([h[-1].get("reassigned") for h in hist])
        vr = summarize([r.metrics.get("var_ratio") for r in runs])
        rows.append(f"| {label(runs[0])} | {tv.fmt(ci=True)} | {ratio.fmt()} | "
                    f"{reassigned.fmt()} | {vr.fmt()} |")
    if not rows:
        return []
    return ["### Coupling diagnostics", "",
            "Target variance, one procedure for every coupling: probe noise points are "
            "followed through training (a bank's own first noise vectors; for minibatch OT, "
            "fixed points placed in a fresh OT batch; for independent pairs, a random partner), "
            "and at several moments spread over the second half of training each probe's data "
            "partner is recorded once; the variance of a probe's partners across those moments, "
            "averaged over probes, over the data's variance. 0: the pairing no longer changes "
            "(a deterministic map, whichever coupling holds it); about 1: as random as "
            "independent pairs. Cost ratio: pair cost / independent-pair cost in the last logged "
            "window. Reassigned: share of the visited online-bank slots re-paired per visit at "
            "the end.", "",
            "| method | target variance ↓ | cost ratio ↓ | reassigned per visit "
            "| sample var_ratio →1 |",
            "|---|---|---|---|---|", *rows, ""]


def bank_gap_table(view: DatasetView) -> list[str]:
    """The headline metric on fresh noise against noise from the method's own bank (the noise
    it was trained on), paired over seeds: a large gap means the bank was memorised."""
    rows = []
    for _, runs in view.rows():
        gaps = [r.bank_gap for r in runs if r.bank_gap and "bank" in r.bank_gap]
        if not gaps:
            continue
        fresh = summarize([g["fresh"] for g in gaps])
        bank = summarize([g["bank"] for g in gaps])
        gap = summarize([g["fresh"] - g["bank"] for g in gaps])
        rows.append(f"| {label(runs[0])} | `{gaps[0]['metric']}` | {gaps[0]['n']} | "
                    f"{fresh.fmt()} | {bank.fmt()} | {gap.fmt(ci=True)} |")
    if not rows:
        return []
    return ["### Bank noise vs fresh noise", "",
            "Methods trained on a noise bank (online or global OT, reflow's pairs) sampled once "
            "from fresh noise (the table above) and once from noise drawn from their own bank; "
            "gap = fresh − bank, mean ± std [95% interval] over seeds. Near 0: the model treats "
            "the noise it was trained on like any other; far from 0: it memorised the bank.", "",
            "| method | metric | samples | fresh noise | bank noise | gap |",
            "|---|---|---|---|---|---|", *rows, ""]


#: notes that explain a swept key, shown under its section
SWEEP_NOTES = {
    "path.kind": (
        "For a flow conditioned on x0 alone (the neural flows and the maps) every path has the "
        "same t = 1 target, x1, so the same optimum F*(z, 1) = E[x1 | x0 = z]: sweeping "
        "`path.kind` changes how the loss weights and shapes the intermediate times, not the "
        "trajectory the one-step sample follows. For flow matching the path does change the "
        "velocity field and the ODE that is integrated."),
}


def sweep_notes(view: DatasetView) -> list[str]:
    keys = sorted({k for r in view.records for k in r.sweep if k in SWEEP_NOTES})
    return [line for k in keys for line in (f"Note on `{k}`: {SWEEP_NOTES[k]}", "")]


def flops_cell(v: float | None) -> str:
    """FLOPs as counted; "–" where they were not (under torch.compile)."""
    return "–" if v is None else fmt_num(v)


def compute_table(view: DatasetView) -> list[str]:
    """What each recipe's training cost, counted: network calls per step (forwards, JVPs, a
    frozen teacher's forwards), FLOPs per step, and in all (a teacher's training and the
    pairs it generated included)."""
    rows, seen = [], set()
    for _, runs in view.rows():
        r = runs[0]
        c, recipe = r.train_compute, r.recipe or r.method
        if not c or recipe in seen:
            continue
        seen.add(recipe)
        steps = max(1, c.get("steps", 0))
        parts = []
        if c.get("teacher"):
            parts.append(f"teacher {flops_cell(c['teacher'].get('total_flops'))}")
        if c.get("pairs"):
            p = c["pairs"]
            parts.append(f"{int(p['pairs'])} pairs × {fmt_num(p['pairs_nfe'], 3)} NFE = "
                         f"{fmt_num(p['pairs_flops'])}")
        rows.append(
            f"| {recipe} | {c.get('steps')} | {fmt_num(c.get('forwards', 0) / steps, 3)} | "
            f"{fmt_num(c.get('jvps', 0) / steps, 3)} | "
            f"{fmt_num(c.get('teacher_forwards', 0) / steps, 3)} | "
            f"{flops_cell(c.get('flops_per_step'))} | {flops_cell(c.get('flops'))} | "
            f"{'; '.join(parts) or '–'} | {flops_cell(train_flops(r))} |")
    if not rows:
        return []
    return ["### Training compute", "",
            "Counted, not declared (first seed of each recipe): network calls per step from "
            "hooks on the network (forwards; calls under `torch.func.jvp`; forwards of a frozen "
            "EMA teacher), FLOPs of one whole step (forward, JVP, backward) from PyTorch's "
            "FLOP counter, times the steps; a method built on a teacher adds the teacher's "
            "training and its pair generation (counted NFE × pairs × FLOPs per forward).", "",
            "| recipe | steps | forwards/step | JVPs/step | teacher forwards/step | "
            "FLOPs/step | training FLOPs | built on | total FLOPs |",
            "|---|---|---|---|---|---|---|---|---|", *rows, ""]
