"""scripts/update_readme_table.py: the README's result blocks are copied from a report."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REPORT = """# OT-NFM Bench report: t

Built from 4 records (4 ok, 0 failed) in `r/records.jsonl`; configs: `c.yaml`.

## moons

| method | seeds | NFE | w2 ↓ | train FLOPs |
|---|---|---|---|---|
| otnfm-online | 3 | 1 | 0.19 ± 0.01 [0.16, 0.22] | 5e+11 |

### Coupling × parametrisation (moons)

`w2` grid text.

| parametrisation | online OT |
|---|---|
| map G(z) | 0.18<br>`otmap-online` |

Paired differences of `w2`:
- online OT, neural flow vs map G(z): not significant.

### Training compute

| recipe | steps |
|---|---|
| otnfm-online | 2500 |
"""


def _update(tmp_path, marker):
    report, readme = tmp_path / "r.md", tmp_path / "README.md"
    report.write_text(REPORT)
    readme.write_text(f"intro\n<!-- {marker}:start -->\nold\n<!-- {marker}:end -->\nend\n")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme_table.py"),
                    str(report), str(readme), marker], check=True)
    return readme.read_text()


def test_tables_keep_the_named_columns(tmp_path):
    text = _update(tmp_path, "t-table")
    assert "Built from 4 records" in text and "**moons**" in text and "old" not in text
    assert "| otnfm-online | 3 | 1 | 0.19 ± 0.01 [0.16, 0.22] |" in text
    assert "train FLOPs" not in text and "parametrisation" not in text


def test_grid_markers_copy_the_grid_and_its_sentences_only(tmp_path):
    text = _update(tmp_path, "t-grid")
    assert "**Coupling × parametrisation (moons)**" in text
    assert "| map G(z) | 0.18<br>`otmap-online` |" in text
    assert "neural flow vs map G(z): not significant." in text
    assert "Training compute" not in text and "| otnfm-online | 2500 |" not in text
    assert text.startswith("intro\n") and text.endswith("end\n")
