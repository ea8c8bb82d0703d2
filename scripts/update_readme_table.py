#!/usr/bin/env python
"""Copy tables of rendered reports into Markdown files between marker comments.

Run from the repository root after re-rendering reports (``bench report ...``):

    python scripts/update_readme_table.py --all     # every block of README.md, reports/README.md
    python scripts/update_readme_table.py --check   # exit 1 if a block differs from its report

Every block starts ``From `reports/<name>.md`.``: that is the report it is taken from, and
what ``--all`` renders it again from. One block at a time (also a new one):

    python scripts/update_readme_table.py reports/peers-mnist5k.md README.md headline
    python scripts/update_readme_table.py reports/quick.md reports/README.md quick-table
    python scripts/update_readme_table.py reports/ladder2d.md reports/README.md ladder2d-grid

The marker's name picks what is copied. ``headline``: the first dataset table's data floor,
one-step rows (NFE 1), peers (PEERS, at every step count) and reference (fm-euler100), with
NFE, the headline metric's mean and 95% interval, and the mean sampling time and training
FLOPs. A name ending in ``-grid``: the report's coupling x parametrisation grids with their
generated sentences; ``-across``: its "Across datasets" section; ``-gap``: its learning
curves' gap tables (each method's score over fm-euler100's at every curve step); any other:
every dataset table, with only the columns named in COLUMNS. Every number comes from the
report, which names the run it was built from. The reports rendered from committed records
(reports/data) are listed in RENDERS with their ``bench report`` arguments.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

COLUMNS = ("method", "seeds", "NFE", "w2 ↓", "mmd ↓", "precision ↑", "recall ↑",
           "fd_domain ↓", "kid_domain ↓", "prec_domain ↑", "rec_domain ↑", "class_entropy ↑",
           "class_coverage ↑", "fid ↓", "kid ↓", "var_ratio →1", "train s", "sample ms/1k")


def tables(report: str) -> list[tuple[str, list[list[str]]]]:
    out: list[tuple[str, list[list[str]]]] = []
    section = ""
    rows: list[list[str]] = []
    for line in report.splitlines() + [""]:
        if line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            if rows[0] and rows[0][:2] == ["method", "seeds"]:
                out.append((section, rows))
            rows = []
    return out


def compact(section: str, rows: list[list[str]]) -> str:
    header = rows[0]
    keep = [header.index(c) for c in COLUMNS if c in header]
    lines = [f"**{section}**", "", "| " + " | ".join(header[i] for i in keep) + " |",
             "|" + "---|" * len(keep)]
    for row in rows[2:]:
        lines.append("| " + " | ".join(row[i] for i in keep) + " |")
    return "\n".join(lines)


def grids(report: str) -> list[str]:
    """The report's "### Coupling × parametrisation (dataset)" sections, heading included."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in report.splitlines():
        if line.startswith("### Coupling × parametrisation"):
            current = ["**" + line[4:].strip() + "**"]
            blocks.append(current)
        elif line.startswith(("#", "![")):
            current = None
        elif current is not None:
            current.append(line)
    return ["\n".join(b).strip() for b in blocks]


def gaps(report: str) -> list[str]:
    """The report's "### Gap to ... during training" tables with their explanation, each headed
    by its dataset."""
    blocks: list[str] = []
    dataset = ""
    lines = report.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## "):
            dataset = line[3:].strip()
        if line.startswith("### Gap to "):
            end = next((j for j in range(i + 1, len(lines))
                        if lines[j].startswith(("#", "![", "Curve scoring"))), len(lines))
            blocks.append(f"**{dataset}: {line[4:].strip()}**\n\n"
                          + "\n".join(lines[i + 1:end]).strip())
    if not blocks:
        sys.exit("the report has no 'Gap to ... during training' table (its runs need curves)")
    return blocks


def across(report: str) -> str:
    """The report's "## Across datasets" section without its heading."""
    lines = report.splitlines()
    if "## Across datasets" not in lines:
        sys.exit("the report has no 'Across datasets' section (it needs grids on 2+ datasets)")
    start = lines.index("## Across datasets") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip()


#: the one-step peers: their rows stay in the headline table at every step count
PEERS = ("meanflow", "shortcut", "reflow")
#: a table's headline metric: the first of these it has
HEADLINE_METRICS = ("fid ↓", "fd_domain ↓", "w2 ↓")
#: the headline table's reference row (the multi-step baseline) and the data floor's row
REFERENCE, FLOOR = "fm-euler100", "data (floor)"


def headline(report: str) -> str:
    """The first dataset table of the report cut to the headline: the data floor, every
    one-step row (NFE 1), the peers at every step count and the reference, each with its
    seeds, NFE, the headline metric's mean and 95% interval, and the mean sampling time and
    training FLOPs over seeds."""
    found = tables(report)
    if not found:
        sys.exit("the report has no per-dataset table (method | seeds | ...) to take from")
    section, rows = found[0]
    header = rows[0]
    metric = next((c for c in HEADLINE_METRICS if c in header), None)
    missing = [c for c in ("NFE", "sample ms/1k", "train FLOPs") if c not in header]
    if metric is None or missing:
        lacks = ", ".join(missing) or " or ".join(HEADLINE_METRICS)
        sys.exit(f"the report's first table has no {lacks} column")
    lines = [f"**{section}**", "",
             f"| method | seeds | NFE | {metric} [95% interval] | sample ms/1k | train FLOPs |",
             "|---|---|---|---|---|---|"]
    for row in rows[2:]:
        cell = dict(zip(header, row, strict=True))
        method = cell["method"].removesuffix(" †")  # † : the row's seeds mix feature spaces
        mark = cell["method"][len(method):]
        if not (cell["NFE"] == "1" or method.split("-")[0] in PEERS
                or method in (REFERENCE, FLOOR)):
            continue
        name = (method if method == FLOOR else f"`{method}`") + mark
        lines.append(f"| {name} | {cell['seeds']} | {cell['NFE']} | {_interval(cell[metric])} | "
                     f"{_mean(cell['sample ms/1k'])} | {_mean(cell['train FLOPs'])} |")
    return "\n".join(lines)


def _interval(cell: str) -> str:
    """``55.4 ± 0.9 [53.1, 57.6]`` -> ``55.4 [53.1, 57.6]`` (a one-seed cell stays as it is)."""
    return re.sub(r" ± \S+ (?=\[)", " ", cell)


def _mean(cell: str) -> str:
    """``1.67e+03 ± 3.3e+02`` -> ``1.67e+03``."""
    return cell.split(" ± ")[0]


def render(report_path: str, marker: str) -> str:
    """The text that goes between the markers: where it comes from, then the tables."""
    report = Path(report_path).read_text()
    built = next((ln for ln in report.splitlines() if ln.startswith("Built from")), "")
    if marker == "headline" or marker.endswith("-headline"):
        body = headline(report)
        built = re.sub(r"; commits: [^;]*", "", built)  # the report lists them
    elif marker.endswith("-grid"):
        body = "\n\n".join(grids(report))
    elif marker.endswith("-across"):
        body = across(report)
    elif marker.endswith("-gap"):
        body = "\n\n".join(gaps(report))
    else:
        body = "\n\n".join(compact(s, r) for s, r in tables(report))
    return f"From `{report_path}`. {built}\n\n{body}\n"


#: the command of every report rendered from committed records (scripts/render_reports.sh
#: runs them): a line per report, its name, then the arguments of ``bench report``
RENDERS = "reports/render.txt"


def renders(path: str = RENDERS) -> dict[str, list[str]]:
    """``path`` (default RENDERS) as report name -> the arguments of ``bench report`` that
    make ``reports/<name>.md`` (``--out`` left out); ``#`` starts a comment."""
    out: dict[str, list[str]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:  # an unclosed quote
            sys.exit(f"{path}:{n}: {err}")
        if not words:
            continue
        name, *args = words
        if not args or name in out:
            sys.exit(f"{path}:{n}: {name!r} " + ("again" if args else "without arguments")
                     + ": expected one line per report, NAME then the arguments of bench report")
        out[name] = args
    return out


#: the Markdown files --all and --check go through (paths from the repository root)
TARGETS = ("README.md", "reports/README.md")
BLOCK = re.compile(r"<!-- ([\w.-]+):start -->\n(.*?)<!-- \1:end -->", re.S)
SOURCE = re.compile(r"From `([^`]+)`\. ")


def refresh(text: str) -> tuple[str, list[str]]:
    """``text`` with every marker block that names its report (``From `report.md`.``)
    rendered again from that report, and the markers whose block changed."""
    changed: list[str] = []

    def again(m: re.Match) -> str:
        marker, old = m.group(1), m.group(2)
        source = SOURCE.match(old)
        if source is None:
            return m.group(0)
        new = render(source.group(1), marker)
        if new != old:
            changed.append(marker)
        return f"<!-- {marker}:start -->\n{new}<!-- {marker}:end -->"

    return BLOCK.sub(again, text), changed


def update(report_path: str, readme_path: str, marker: str) -> None:
    block = render(report_path, marker)
    readme = Path(readme_path).read_text()
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(readme):
        sys.exit(f"markers <!-- {marker}:start/end --> not found in {readme_path}")
    Path(readme_path).write_text(pattern.sub(lambda m: m.group(1) + block + m.group(2), readme))


def main(argv: list[str]) -> int:
    """``REPORT FILE MARKER`` fills one block; ``--all [FILE ...]`` refreshes every block of
    the files (default: TARGETS) from the report each names; ``--check [FILE ...]`` writes
    nothing and exits 1 when a block differs from its report. Run from the repository
    root: the paths in the blocks are relative to it."""
    if argv and argv[0] in ("--all", "--check"):
        stale = []
        for name in argv[1:] or TARGETS:
            path = Path(name)
            text, changed = refresh(path.read_text())
            stale += [f"{name}: {marker}" for marker in changed]
            if argv[0] == "--all" and changed:
                path.write_text(text)
        verb = "refreshed" if argv[0] == "--all" else "out of date with its report"
        for line in stale:
            print(f"{verb}: {line}")
        return 1 if stale and argv[0] == "--check" else 0
    if len(argv) != 3:
        sys.exit("usage: update_readme_table.py REPORT FILE MARKER | --all [FILE ...] | "
                 "--check [FILE ...]")
    update(*argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
