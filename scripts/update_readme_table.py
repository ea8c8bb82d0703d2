#!/usr/bin/env python
"""Copy the per-dataset tables of a rendered report into README.md between marker comments.

    python scripts/update_readme_table.py reports/quick.md README.md quick-table
    python scripts/update_readme_table.py reports/peers2d.md README.md peers-table
    python scripts/update_readme_table.py reports/mnist5k.md README.md mnist5k-table
    python scripts/update_readme_table.py reports/ladder2d.md README.md ladder2d-grid
    python scripts/update_readme_table.py reports/ladder-across.md README.md ladder-across
    python scripts/update_readme_table.py reports/curves-digits.md README.md curves-digits-gap

Only columns named in COLUMNS are kept; a marker ending in ``-grid`` copies the report's
coupling x parametrisation grids with their generated sentences instead, one ending in
``-across`` its "Across datasets" section, one ending in ``-gap`` its learning curves' gap
tables (each method's score over fm-euler100's at every curve step). Every number comes
from the report, which names the run it was built from.
"""

from __future__ import annotations

import re
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


def main(report_path: str, readme_path: str, marker: str) -> None:
    report = Path(report_path).read_text()
    if marker.endswith("-grid"):
        body = "\n\n".join(grids(report))
    elif marker.endswith("-across"):
        body = across(report)
    elif marker.endswith("-gap"):
        body = "\n\n".join(gaps(report))
    else:
        body = "\n\n".join(compact(s, r) for s, r in tables(report))
    built = next((ln for ln in report.splitlines() if ln.startswith("Built from")), "")
    block = f"From `{report_path}`. {built}\n\n{body}\n"
    readme = Path(readme_path).read_text()
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(readme):
        sys.exit(f"markers <!-- {marker}:start/end --> not found in {readme_path}")
    Path(readme_path).write_text(pattern.sub(lambda m: m.group(1) + block + m.group(2), readme))


if __name__ == "__main__":
    main(*sys.argv[1:4])
