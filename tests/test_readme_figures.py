"""Every figure README.md and reports/README.md copy from a report, recomputed from the
committed records: each marker block whose report is rendered from reports/data (the reports
and arguments of reports/render.txt) must be what scripts/update_readme_table.py makes of that
report rendered again here (Markdown only, no figures); a block whose report has no committed
records must be listed, with why, in NO_RECORDS. Every pairing over seeds those renders form
stays inside one feature space."""

from __future__ import annotations

import importlib
import pkgutil
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bench.report
from bench.cli import app
from bench.report import pairing
from tests.test_docs import README, ROOT, STUDY, _numbers, _script

script = _script()
#: report name -> the arguments of `bench report` that make reports/<name>.md
RENDERS = script.renders(str(ROOT / script.RENDERS))
#: "page: marker" of the blocks whose report was built from records that were never committed,
#: with why; such a block is checked against its report only (tests/test_docs.py)
NO_RECORDS = {
    "reports/README.md: mnist5k-table": "reports/mnist5k.md was rendered from results/mnist5k "
                                        "(configs/mnist5k.yaml), whose records were not kept",
}
cli = CliRunner()


def _blocks() -> dict[str, tuple[str, str, str, int]]:
    """"page: marker" -> (marker, the block's text, its report's path, the page line where the
    block's text starts), for every block that names its report."""
    out = {}
    for page in (README, STUDY):
        text = page.read_text()
        for m in script.BLOCK.finditer(text):
            source = script.SOURCE.match(m.group(2))
            if source is not None:
                line = text.count("\n", 0, m.start(2)) + 1
                out[f"{page.relative_to(ROOT)}: {m.group(1)}"] = (
                    m.group(1), m.group(2), source.group(1), line)
    return out


BLOCKS = _blocks()


def _name(report: str) -> str | None:
    """``reports/<name>.md`` -> name, when reports/render.txt renders it from records."""
    m = re.fullmatch(r"reports/(.+)\.md", report)
    return m.group(1) if m and m.group(1) in RENDERS else None


class Rendered:
    """A report rendered again from its records: its Markdown and every pairing over seeds it
    formed, as (A's records, B's records, metric, feature-space kind, the pairing)."""

    def __init__(self, path: Path, pairings: list[tuple]):
        self.path, self.text, self.pairings = path, path.read_text(), pairings


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """``render(args, out)``: ``bench report ARGS --no-figures --out <tmp>/OUT`` run from the
    repository root (the records' paths in the report are as the committed one names them),
    once per arguments, every call of pairing.pair_seeds recorded."""
    root = tmp_path_factory.mktemp("fresh")
    done: dict[tuple, Rendered] = {}
    users = [m for m in (importlib.import_module(f"bench.report.{i.name}")
                         for i in pkgutil.iter_modules(bench.report.__path__))
             if getattr(m, "pair_seeds", None) is pairing.pair_seeds and m is not pairing]
    assert users, "no report module pairs through bench.report.pairing.pair_seeds"

    def make(args: list[str], out: str) -> Rendered:
        key, path = tuple(args), root / out
        if key in done and done[key].path != path:  # rendered already, for another use
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(done[key].text)
            return Rendered(path, done[key].pairings)
        if key not in done:
            calls: list[tuple] = []

            def recorded(a, b, metric, kind):
                found = pairing.pair_seeds(a, b, metric, kind)
                calls.append((a, b, metric, kind, found))
                return found

            path.parent.mkdir(parents=True, exist_ok=True)
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(ROOT)
                for m in users:
                    mp.setattr(m, "pair_seeds", recorded)
                res = cli.invoke(app, ["report", *args, "--no-figures", "--out", str(path)])
            assert res.exit_code == 0, f"bench report {shlex.join(args)}:\n{res.output}"
            done[key] = Rendered(path, calls)
        return done[key]

    return make


def _fresh_block(render, marker: str, report: str) -> str:
    """The block update_readme_table makes of ``report`` rendered again from its records."""
    fresh = render(RENDERS[_name(report)], report)
    root = fresh.path.parents[len(Path(report).parts) - 1]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the block names the report by the path the page gives
        return script.render(report, marker)


def _mismatch(key: str, old: str, new: str, first_line: int, report: str) -> str:
    """Which block, which line of its page differs and how, and the commands that refresh it."""
    a, b = old.splitlines(), new.splitlines()
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
             min(len(a), len(b)))
    page, marker = key.split(": ")
    where = (f"line {first_line + i} of {page}:\n  committed: "
             + (a[i] if i < len(a) else "(no line: the records give more)")
             + "\n  records:   " + (b[i] if i < len(b) else "(no line: the records give fewer)"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        try:
            committed = script.render(report, marker)
        except SystemExit:  # the committed report lacks what the block takes
            committed = None
    why = (f"{report} is out of date with its records" if committed == old else
           "the block is out of date with its report (and maybe the report with its records)")
    name = _name(report)
    return (f"{key} is not what the committed records give: {why}; first difference at {where}\n"
            f"refresh: scripts/render_reports.sh {name} (re-renders {report}), then "
            "python scripts/update_readme_table.py --all (the script's last step), and reread "
            "any prose that cites the block")


WITH_RECORDS = sorted(k for k, (_, _, report, _) in BLOCKS.items() if _name(report))


@pytest.mark.parametrize("key", WITH_RECORDS)
def test_each_block_is_what_its_committed_records_give(key, render):
    marker, old, report, line = BLOCKS[key]
    new = _fresh_block(render, marker, report)
    assert new == old, _mismatch(key, old, new, line, report)


def test_the_blocks_without_committed_records_are_the_listed_ones():
    """A new block whose report is not rendered from reports/data, or a listed one whose
    records are now committed (or that is gone), fails here until NO_RECORDS says so."""
    without = {k: report for k, (_, _, report, _) in BLOCKS.items() if not _name(report)}
    unlisted = sorted(set(without) - set(NO_RECORDS))
    assert not unlisted, (
        f"blocks whose report is not rendered from committed records: {unlisted}; commit their "
        "records (scripts/snapshot_records.sh) and add the report to reports/render.txt, or list "
        "the block in NO_RECORDS in tests/test_readme_figures.py with why")
    stale = sorted(set(NO_RECORDS) - set(without))
    assert not stale, (f"NO_RECORDS lists {stale}, which have no such block or whose report "
                       "reports/render.txt now renders from records: drop them from NO_RECORDS")
    for key, report in without.items():
        built = next(ln for ln in (ROOT / report).read_text().splitlines()
                     if ln.startswith("Built from"))
        assert "reports/data/" not in built, (
            f"{key}: {report} was built from committed records ({built[:200]}): add its "
            "command to reports/render.txt and drop the block from NO_RECORDS")


def test_the_verdict_cites_numbers_the_committed_records_give(render):
    """The verdict's numbers are in the headline block (tests/test_docs.py); here in the
    headline block as the records give it today."""
    marker, _, report, _ = BLOCKS["README.md: headline"]
    assert _name(report), f"the headline's {report} is not rendered from committed records"
    text = README.read_text()
    verdict = text.split("<!-- verdict:start -->")[1].split("<!-- verdict:end -->")[0]
    fresh = _numbers(_fresh_block(render, marker, report))
    assert _numbers(verdict) <= fresh, sorted(_numbers(verdict) - fresh)


def test_render_txt_names_only_committed_records_and_existing_reports():
    for name, args in RENDERS.items():
        assert (ROOT / "reports" / f"{name}.md").is_file(), f"reports/{name}.md is not committed"
        folders = [a for a in args if a.startswith("reports/data/")]
        assert folders, f"reports/render.txt: {name} reads no records under reports/data"
        for folder in folders:
            assert (ROOT / folder).is_dir() and any((ROOT / folder).rglob("records.jsonl")), folder
        assert "--out" not in args and "-o" not in args, f"{name}: --out is added by the script"
    read = {a.rstrip("/") for args in RENDERS.values() for a in args
            if a.startswith("reports/data/")}
    committed = {str(p.parent.relative_to(ROOT))
                 for p in (ROOT / "reports" / "data").glob("*/records.jsonl")}
    assert committed <= read, f"committed records no report renders: {sorted(committed - read)}"


def test_render_reports_sh_runs_the_commands_of_render_txt(tmp_path):
    """The shell script reads reports/render.txt as the test does (shell words, the title's
    quotes) and adds --out; NAME picks the reports whose name contains it."""
    log = tmp_path / "calls"
    fake = tmp_path / "bench"
    fake.write_text(f"#!/usr/bin/env bash\nprintf '%s\\0' \"$@\" >> {log}\nprintf '\\n' >> {log}\n")
    fake.chmod(0o755)

    def run(*only: str) -> list[list[str]]:
        log.write_text("")
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "render_reports.sh"), *only],
                              env={"PATH": "/usr/bin:/bin", "BENCH": str(fake), "PY": "true"},
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return [c.split("\0") for c in log.read_text().split("\0\n")[:-1]]

    assert run() == [["report", *args, "--out", f"reports/{name}.md"]
                     for name, args in RENDERS.items()]
    assert run("mnist5k") == [["report", *args, "--out", f"reports/{name}.md"]
                              for name, args in RENDERS.items() if "mnist5k" in name]


def test_renders_refuses_a_malformed_list(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("# comment\n\na reports/data/x -c c.yaml --title 'two words'  # note\n")
    assert script.renders(str(good)) == {"a": ["reports/data/x", "-c", "c.yaml", "--title",
                                              "two words"]}
    for text, why in (("a reports/data/x\na reports/data/y\n", "'a' again"),
                      ("a\n", "'a' without arguments"), ("a 'open\n", "No closing quotation")):
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(SystemExit, match=why):
            script.renders(str(bad))


def test_a_mismatch_names_the_block_the_line_and_the_refresh_commands():
    key = "reports/README.md: ladder-across"
    _, old, report, line = BLOCKS[key]
    lines = old.splitlines()
    changed = "\n".join(lines[:3] + ["| changed |"] + lines[4:]) + "\n"
    message = _mismatch(key, old, changed, line, report)
    assert message.startswith(f"{key} is not what the committed records give: ")
    assert f"line {line + 3} of reports/README.md:\n  committed: {lines[3]}\n" in message
    assert "  records:   | changed |\n" in message
    assert ("refresh: scripts/render_reports.sh ladder-across (re-renders reports/ladder-across"
            ".md), then python scripts/update_readme_table.py --all") in message
    shorter = _mismatch(key, old, "\n".join(lines[:2]) + "\n", line, report)
    assert f"line {line + 2} of reports/README.md" in shorter
    assert "(no line: the records give fewer)" in shorter


def _fingerprint(r, kind: str) -> tuple | None:
    """The network that scored ``r`` in a learned feature space of kind ``kind``, from its
    metric_info as written: a domain classifier's id, with its held-out accuracy when the id
    carries no weights hash; Inception's id and weights. None: the record names none."""
    info = r.metric_info or {}
    if kind == "domain":
        ext = info.get("fd_extractor")
        if not ext:
            return None
        legacy = not re.search(r"-w[0-9a-f]{12}$", ext)
        return (ext, info.get("fd_extractor_eval_accuracy") if legacy else None)
    if kind == "inception":
        ext = info.get("fid_extractor")
        return (ext, info.get("fid_weights")) if ext else None
    raise AssertionError(f"a feature space this test does not know: {kind!r}")


PAIRED = ([(f"records:{p.parent.name}", [str(p.parent.relative_to(ROOT))])
           for p in sorted((ROOT / "reports" / "data").glob("*/records.jsonl"))]
          + [(f"render.txt:{name}", args) for name, args in RENDERS.items()])


@pytest.mark.parametrize("args", [a for _, a in PAIRED], ids=[i for i, _ in PAIRED])
def test_every_pairing_of_the_committed_reports_stays_in_one_feature_space(args, render):
    """Each committed records folder as a whole (its default comparisons against fm-euler100
    and its grid's) and each report of reports/render.txt: every pairing over seeds goes
    through pairing.pair_seeds, which pairs only seeds whose two records one network scored
    (and that name it), and leaves out exactly those two networks scored."""
    name = "-".join(Path(a).name for a in args if a.startswith("reports/data/"))
    fresh = render(args, f"pairings/{name}-{len(args)}.md")
    left = 0
    for a, b, metric, kind, found in fresh.pairings:
        if kind is None:  # a metric outside any learned space pairs every common seed
            assert found.seeds == sorted({r.seed for r in a} & {r.seed for r in b})
            continue
        fa = {r.seed: _fingerprint(r, kind) for r in a}
        fb = {r.seed: _fingerprint(r, kind) for r in b}
        common = set(fa) & set(fb)
        differ = {s for s in common if fa[s] and fb[s] and fa[s] != fb[s]}
        what = f"{a[0].method} vs {b[0].method} on {a[0].dataset}, {metric}"
        assert set(found.left_out) == differ, what
        assert sorted(found.seeds) == sorted(common - differ), what
        for _, ra, rb in found.pairs:
            for r in (ra, rb):
                assert metric not in r.metrics or _fingerprint(r, kind), (
                    f"{what}: {r.run_id} has {metric} but names no {kind} network")
        left += len(differ)
    if "reports/data/mnist5k-study" in args:
        # the study holds seeds scored by two classifiers under one id: some pairs are refused
        # (and the pairings were recorded: they all went through pair_seeds)
        assert left > 0, "no seed left out of the mnist5k study's pairings"


def test_no_figures_leaves_out_the_figures_and_nothing_else(tmp_path, monkeypatch):
    """What the blocks are checked against: the report without its figure links (each with
    the blank line after it) is the --no-figures report, and --no-figures draws no PNG."""
    monkeypatch.chdir(ROOT)
    args = ["report", "reports/data/curves-digits", "-c", "configs/curves-digits.yaml"]
    drawn = cli.invoke(app, [*args, "--out", str(tmp_path / "with.md")])
    bare = cli.invoke(app, [*args, "--no-figures", "--out", str(tmp_path / "bare.md")])
    assert drawn.exit_code == 0 and bare.exit_code == 0, drawn.output + bare.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.md", "with", "with.md"]
    links = re.compile(r"^!\[[^\]]*\]\([^)]*\)\n\n", re.M)
    text = (tmp_path / "with.md").read_text()
    assert len(links.findall(text)) >= 2 and any((tmp_path / "with").glob("*.png"))
    assert links.sub("", text) == (tmp_path / "bare.md").read_text()
