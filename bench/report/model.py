"""The records a report is built from, grouped the way its tables and figures read them.

A *config group* is every seed of one (dataset, method, config hash): one table row. A
``DatasetView`` holds one dataset's groups in row order, with what the figures need to find
sample files (each record's results folder) and where to write.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.records import RunRecord
from bench.report import plots
from bench.vocab import FLOOR_LABEL, FLOOR_METHOD


class SkippedFile(UserWarning):
    """A file the report could not read (a torn or object-array sample file): left out, and
    said so by ``bench report``."""


#: (dataset, method, config hash, domain classifier id or ""): one row of a dataset's table
ConfigKey = tuple[str, str, str, str]


@dataclass
class Source:
    """Records read from one file."""

    path: str
    records: list[RunRecord]
    skipped: int = 0


def scored_by(r: RunRecord) -> str:
    """The id of the domain classifier that scored ``r`` ("" for none: a 2-D dataset, a failed
    run). Records of one dataset scored by different classifiers are in different feature
    spaces: a report gives each classifier its own section (``sections``). A legacy id (no
    weights hash, ``fd-mnist5k-cnn-04408539c0ec``) covered classifiers told apart only by
    held-out accuracy: it stays one section, whose pairings leave out the seeds of another
    accuracy and whose table marks the rows that mix them (``pairing.feature_space``)."""
    return (r.metric_info or {}).get("fd_extractor") or ""


#: statuses of a run that stopped before it finished (the same command resumes it)
IN_PROGRESS = ("interrupted", "running")


def latest_only(records: list[RunRecord],
                by_space: bool = True) -> tuple[list[RunRecord], int]:
    """One record per (dataset, method, config hash, seed): the last written (a rerun with
    --force supersedes the earlier one). With ``by_space`` one per domain classifier that
    scored the run: a rescoring in another feature space does not supersede the first, it
    is another measurement (a record scored by none, e.g. a failed run, supersedes every
    earlier one and is superseded by any later one). A run stopped before it finished
    (``interrupted``; ``running`` in a folder still being written) is resumed by the same
    command, so its record supersedes nothing: it stands only while its run has no other
    record. Returns the records and how many were dropped."""
    last: dict[tuple[str, str, str, int], dict[str, RunRecord]] = {}
    for r in records:
        slot = last.setdefault((r.dataset, r.method, r.config_hash, r.seed), {})
        if r.status in IN_PROGRESS:
            if all(o.status in IN_PROGRESS for o in slot.values()):
                slot.clear()
                slot[""] = r
            continue
        space = scored_by(r) if by_space else ""
        if not space:
            slot.clear()
        else:
            slot.pop("", None)
        slot[space] = r
    kept = {id(r) for slot in last.values() for r in slot.values()}
    return [r for r in records if id(r) in kept], len(records) - len(kept)


def stopped_left_out(read: list[RunRecord], kept: list[RunRecord]) -> int:
    """How many records of runs stopped before they finished ``latest_only`` left out of
    ``read`` because their run has a finished record in ``kept`` (a stop followed by another
    stop is an older record of a rerun, superseded by the later one)."""
    def run(r: RunRecord) -> tuple[str, str, str, int]:
        return (r.dataset, r.method, r.config_hash, r.seed)

    ids = {id(r) for r in kept}
    finished = {run(r) for r in kept if r.status not in IN_PROGRESS}
    return sum(r.status in IN_PROGRESS and id(r) not in ids and run(r) in finished
               for r in read)


def sections(ok: list[RunRecord], dataset: str) -> list[str | None]:
    """The report sections of ``dataset``: [None] (one, every record) when its ok records were
    scored by at most one domain classifier, else one per classifier id in the order the
    records first name it."""
    spaces = list(dict.fromkeys(scored_by(r) for r in ok if r.dataset == dataset))
    return [None] if len(spaces) < 2 else spaces


def sweep_label(r: RunRecord) -> str:
    return ", ".join(f"{k}={v}" for k, v in r.sweep.items())


def sweep_key(r: RunRecord) -> tuple:
    """Order grid points by their values, numbers numerically (32 before 128 before 1024)."""
    return tuple((k, plots.sort_key(v)) for k, v in sorted(r.sweep.items()))


def label(r: RunRecord) -> str:
    """Table label of a config group: the method, its sweep point, and what tells it apart
    from another config of the same method in the same report (``by_config``)."""
    if r.method == FLOOR_METHOD:
        return FLOOR_LABEL
    parts = [sweep_label(r)] if r.sweep else []
    if variant := getattr(r, VARIANT, None):
        parts.append(", ".join(f"{k}={v}" for k, v in variant.items()))
    return " · ".join([r.method, *parts])


#: the attribute ``by_config`` sets on a loaded record whose label needs telling apart; only
#: ``label`` reads it (it is not a sweep point, and it is never written to a records file)
VARIANT = "_report_variant"


def by_config(records: list[RunRecord]) -> dict[ConfigKey, list[RunRecord]]:
    """The records by config group. Groups that would share a label (one method on one dataset
    at one sweep point, under two configs, e.g. records of an ablation run with ``--set`` in
    the same folder) are labelled with the config keys they differ in ("meanflow ·
    meanflow.recipe=pixel-v1"); groups still alike after that (the same recorded config,
    other code) with their config hash too. Nothing else about them changes."""
    groups: dict[ConfigKey, list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[(r.dataset, r.method, r.config_hash, scored_by(r))].append(r)
    clashes: dict[tuple, list[ConfigKey]] = defaultdict(list)
    for key, runs in groups.items():
        if key[1] != FLOOR_METHOD:
            clashes[(key[0], key[3], key[1], sweep_label(runs[0]))].append(key)
    for keys in clashes.values():
        if len(keys) < 2:
            continue
        flat = {k: flatten_config(groups[k][0].config) for k in keys}
        differ = sorted({name for k in keys for name in flat[k]
                         if len({repr(flat[o].get(name)) for o in keys}) > 1})
        base = {k: {name: flat[k].get(name) for name in differ} for k in keys}
        for k in keys:
            variant = base[k] if sum(base[o] == base[k] for o in keys) == 1 else {
                **base[k], "config": k[2][:8]}
            for r in groups[k]:
                setattr(r, VARIANT, variant)
    return groups


def flatten_config(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def method_order(methods: list[str]) -> list[str]:
    """Floor first, then the order the records were written in."""
    return sorted(set(methods), key=lambda m: (m != FLOOR_METHOD, methods.index(m)))


@dataclass
class DatasetView:
    """One dataset's ok records as a report section reads them (those of one domain
    classifier, ``space``, when several scored the dataset: ``sections``)."""

    dataset: str
    records: list[RunRecord]
    #: method names, floor first, then in the order written
    order: list[str]
    #: the config groups of this dataset, in row order
    keys: list[ConfigKey]
    groups: dict[ConfigKey, list[RunRecord]]
    #: the folder each record's paths are relative to (its records file's folder)
    bases: dict[int, Path]
    #: where figures are written, and the folder their links are relative to
    fig_dir: Path
    root: Path
    #: the domain classifier id of this section; None: the dataset's only section
    space: str | None = None

    @classmethod
    def of(cls, dataset: str, ok: list[RunRecord], groups: dict[ConfigKey, list[RunRecord]],
           bases: dict[int, Path], fig_dir: Path, root: Path,
           space: str | None = None) -> DatasetView:
        records = [r for r in ok if r.dataset == dataset
                   and (space is None or scored_by(r) == space)]
        order = method_order([r.method for r in records])
        keys = [k for k in groups if k[0] == dataset and (space is None or k[3] == space)]
        keys.sort(key=lambda k: (order.index(k[1]), sweep_key(groups[k][0])))
        return cls(dataset, records, order, keys, groups, bases, fig_dir, root, space)

    @property
    def title(self) -> str:
        """The section's name in headings and figure titles."""
        return self.dataset if self.space is None else (
            f"{self.dataset}, scored by {self.space or 'no domain classifier'}")

    @property
    def slug(self) -> str:
        """The section's part of a figure's file name."""
        return self.dataset if self.space is None else (
            f"{self.dataset}-{self.space.rsplit('-', 1)[-1] or 'none'}")

    def rows(self) -> list[tuple[ConfigKey, list[RunRecord]]]:
        return [(k, self.groups[k]) for k in self.keys]
