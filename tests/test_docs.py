"""The documentation: links that resolve, a README tour whose commands run, tables that are
what scripts/update_readme_table.py makes of their reports, a verdict that cites only its
table, and a records page that names every field of RunRecord."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import plugins
from bench.cli import app
from bench.records import RunRecord
from bench.registry import METHODS, SECTIONS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STUDY = ROOT / "reports" / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, STUDY, *DOCS]
SCRIPT = ROOT / "scripts" / "update_readme_table.py"
cli = CliRunner()


def _script():
    spec = importlib.util.spec_from_file_location("update_readme_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (no links live there)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes of ``path``'s Markdown headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", _prose(path.read_text()))


def test_the_pages_exist_and_the_readme_is_short():
    names = {p.name for p in DOCS}
    assert {"usage-and-configuration.md", "methods.md", "datasets-and-metrics.md", "records.md",
            "scale.md", "extending.md", "architecture.md", "testing.md",
            "files-and-faults.md"} <= names
    assert STUDY.exists()
    assert len(README.read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_heading_in_the_repository(page):
    links = [t for t in _links(page) if not re.match(r"[a-z]+:", t)]  # https:, mailto:
    assert links, f"{page} links nothing"
    for target in links:
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        assert dest.exists(), f"{page.name}: {target} does not exist"
        assert dest == ROOT or ROOT in dest.parents, f"{page.name}: {target} leaves the repo"
        if anchor:
            assert dest.suffix == ".md", f"{page.name}: {target}: an anchor into a non-page"
            assert anchor in _anchors(dest), f"{page.name}: {target}: no such heading"


def test_the_link_check_catches_a_broken_link_and_anchor(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A title: `x` (y)\n\n## A title: `x` (y)\n\n[a](#a-title-x-y-1) "
                    "[b](missing.md) `[c](in-code.md)`\n```\n[d](fenced.md)\n```\n")
    assert _anchors(page) == {"a-title-x-y", "a-title-x-y-1"}
    assert _links(page) == ["#a-title-x-y-1", "missing.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_wording_from_outside_the_product(page):
    text = page.read_text()
    for pattern in (r"\bissue\b", r"\bissues\b", r"product brief", r"\.\./shared",
                    r"\bthe lead\b"):
        assert not re.search(pattern, text, re.I), f"{page.name}: {pattern}"


def _tour() -> list[str]:
    block = README.read_text().split("<!-- tour:start -->")[1].split("<!-- tour:end -->")[0]
    code = block.split("```bash")[1].split("```")[0]
    return [line.strip() for line in code.splitlines() if line.strip()]


def test_the_tour_has_five_commands():
    tour = _tour()
    assert len(tour) == 5 and all(line.startswith("bench ") for line in tour)


@pytest.fixture
def clean_registry():
    """Undo what a tour command's --plugin registers (the registries are global)."""
    methods, sections, loaded = set(METHODS.names()), dict(SECTIONS), dict(plugins._loaded)
    yield
    for name in set(METHODS.names()) - methods:
        METHODS.unregister(name)
    SECTIONS.clear()
    SECTIONS.update(sections)
    plugins._loaded.clear()
    plugins._loaded.update(loaded)


def _flags(args: list[str]) -> list[str]:
    return [a for a in args if a.startswith("-")]


@pytest.mark.parametrize("command", _tour())
def test_each_tour_command_runs(command, tmp_path, monkeypatch, clean_registry):
    """Commands that train run with --dry-run (the plan and estimate, nothing written);
    `list` runs as it is; the others show their --help, which must know every flag used."""
    args = shlex.split(command)[1:]
    # files of the repository by absolute path: the command runs in an empty folder
    args = [str(ROOT / a) if (ROOT / a).is_file() else a for a in args]
    monkeypatch.chdir(tmp_path)
    sub = args[0]
    if sub in ("run", "sweep"):
        res = cli.invoke(app, [*args, "--dry-run"])
        assert res.exit_code == 0, res.output
        planned = [line for line in res.output.splitlines() if line.startswith("# run ")]
        methods = args[args.index("-m") + 1].split(",")
        seeds = args[args.index("--seeds") + 1].split(",") if "--seeds" in args else ["0"]
        assert len(planned) == len(methods) * len(seeds)
        for m in methods:
            for s in seeds:
                assert any(f" {m} seed {s} " in line for line in planned), (m, s, planned)
        assert "# estimate:" in res.output
        assert not any(tmp_path.iterdir())  # a dry run writes nothing
    elif sub == "list":
        res = cli.invoke(app, args)
        assert res.exit_code == 0, res.output
        for name in ("otnfm-online", "fm-euler100", "moons", "w2"):
            assert name in res.output
    else:
        res = cli.invoke(app, [sub, "--help"])
        assert res.exit_code == 0, res.output
        assert f" {sub} [OPTIONS]" in res.output
        for flag in _flags(args):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", res.output), flag


def test_the_marker_blocks_are_what_the_script_makes_of_their_reports():
    """After re-rendering a report, `python scripts/update_readme_table.py --all` brings the
    README and reports/README.md in line; this fails until then."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in (README, STUDY):
        assert "From `reports/" in page.read_text()
    assert "<!-- headline:start -->\nFrom `reports/peers-mnist5k.md`." in README.read_text()


def _numbers(text: str) -> set[float]:
    """Every number in ``text`` written with a decimal point or an exponent."""
    return {float(n) for n in re.findall(r"(?<![\w.])\d+\.\d+(?:e[+-]\d+)?|\d+e[+-]\d+", text)}


def test_the_verdict_cites_only_numbers_of_the_headline_table():
    """A refreshed table with other numbers fails this until the verdict is reread."""
    text = README.read_text()
    table = text.split("<!-- headline:start -->")[1].split("<!-- headline:end -->")[0]
    verdict = text.split("<!-- verdict:start -->")[1].split("<!-- verdict:end -->")[0]
    cited = _numbers(verdict)
    assert len(cited) >= 10
    assert cited <= _numbers(table), cited - _numbers(table)
    assert len(re.findall(r"[.!?](?:\s|$)", verdict.strip())) == 3  # three sentences


def test_the_records_page_names_every_field_of_run_record():
    text = (ROOT / "docs" / "records.md").read_text()
    for f in dataclasses.fields(RunRecord):
        assert re.search(rf"`{f.name}`", text), f.name


def test_the_extending_example_is_the_example_file():
    text = (ROOT / "docs" / "extending.md").read_text()
    block = text.split("```python")[1].split("```")[0]
    source = (ROOT / "examples" / "fm_rk4.py").read_text()
    assert block.strip() and block.strip() in source


BUILT = ("Built from 9 records (9 ok, 0 failed) in `r/records.jsonl`; configs: `c.yaml`; "
         "commits: `abc`, `def+dirty`; devices: cpu (1 torch threads).")
REPORT = f"""# report

{BUILT}

## mnist5k

| method | seeds | NFE | fd_domain ↓ | train s | train FLOPs | sample ms/1k |
|---|---|---|---|---|---|---|
| data (floor) | 3 | – | 0.224 ± 0.002 [0.219, 0.229] | – | – | – |
| otnfm-online | 3 | 1 | 55.4 ± 0.9 [53.1, 57.6] | 1e+03 ± 2 | 4.66e+13 ± 0 | 1.67e+03 ± 3 |
| otcfm-euler2 | 3 | 2 | 9.56 ± 0.4 [8.56, 10.6] | 869 ± 1 | 4.66e+13 ± 0 | 3.95e+03 ± 1 |
| fm-euler100 | 3 | 100 | 1.72 ± 0.096 [1.48, 1.95] | 1e+03 ± 2 | 4.65e+13 ± 0 | 2.94e+05 ± 1 |
| meanflow-2step | 3 | 2 | 4.18 ± 0.17 [3.76, 4.6] | 2e+03 ± 4 | 7.76e+13 ± 0 | 5.31e+03 ± 2 |
| reflow | 1 | 1 | 4.11 (1 seed) | 6e+03 (1 seed) | 4.50e+14 (1 seed) | 995 (1 seed) |

## moons

| method | seeds | NFE | w2 ↓ | train FLOPs | sample ms/1k |
|---|---|---|---|---|---|
| otnfm-online | 3 | 1 | 0.19 ± 0.01 [0.16, 0.22] | 5e+11 ± 0 | 3 ± 0.1 |
"""


def test_the_headline_mode_keeps_one_step_rows_peers_reference_and_floor():
    block = _script().headline(REPORT)
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == ("| method | seeds | NFE | fd_domain ↓ [95% interval] | sample ms/1k | "
                       "train FLOPs |")
    assert rows[1:] == [
        "| data (floor) | 3 | – | 0.224 [0.219, 0.229] | – | – |",
        "| `otnfm-online` | 3 | 1 | 55.4 [53.1, 57.6] | 1.67e+03 | 4.66e+13 |",
        "| `fm-euler100` | 3 | 100 | 1.72 [1.48, 1.95] | 2.94e+05 | 4.65e+13 |",
        "| `meanflow-2step` | 3 | 2 | 4.18 [3.76, 4.6] | 5.31e+03 | 7.76e+13 |",
        "| `reflow` | 1 | 1 | 4.11 (1 seed) | 995 (1 seed) | 4.50e+14 (1 seed) |"]
    assert block.startswith("**mnist5k**") and "moons" not in block  # the first dataset only


def test_the_headline_block_names_its_report_but_not_its_commits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("r.md").write_text(REPORT)
    block = _script().render("r.md", "headline")
    assert block.startswith("From `r.md`. Built from 9 records (9 ok, 0 failed) in "
                            "`r/records.jsonl`; configs: `c.yaml`; devices: cpu")
    assert "abc" not in block
    Path("bad.md").write_text(REPORT.replace("train FLOPs", "train flops"))
    with pytest.raises(SystemExit, match="has no train FLOPs column"):
        _script().render("bad.md", "headline")


def test_all_refreshes_every_block_from_its_report_and_check_says_which_are_stale(tmp_path):
    (tmp_path / "r.md").write_text(REPORT)
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- headline:start -->\nFrom `r.md`. old\n<!-- headline:end -->\n"
                    "<!-- mine:start -->\nhand-written, no report\n<!-- mine:end -->\nend\n")

    def run(*args):
        return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path,
                              capture_output=True, text=True)

    checked = run("--check", "page.md")
    assert checked.returncode == 1 and "page.md: headline" in checked.stdout
    assert "From `r.md`. old" in page.read_text()  # --check writes nothing
    assert run("--all", "page.md").returncode == 0
    text = page.read_text()
    assert "| `otnfm-online` | 3 | 1 | 55.4 [53.1, 57.6] |" in text and "old" not in text
    assert "hand-written, no report" in text and text.endswith("end\n")
    again = run("--check", "page.md")
    assert again.returncode == 0 and again.stdout == ""
    assert run("r.md", "page.md", "missing").returncode != 0  # no such markers: an error
