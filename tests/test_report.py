"""Golden-file test of the Markdown report (set UPDATE_GOLDEN=1 to rewrite the golden file)."""

import math
import os
from pathlib import Path

import numpy as np
import pytest

from bench.evaluate import metric_vocabulary
from bench.methods.base import grid_cells
from bench.report.markdown import render_report
from bench.report.model import Source
from bench.report.stats import fmt_num, paired, summarize
from bench.results import RunRecord, append_record, read_records

GOLDEN = Path(__file__).parent / "golden" / "report.md"


def _records(base: Path) -> None:
    rng = np.random.default_rng(0)
    (base / "samples").mkdir(parents=True)
    rows = [("data", None, 0.11, 1.0), ("nfm-random", 1, 1.46, 0.001),
            ("otnfm-online", 1, 0.21, 0.97), ("fm-euler100", 100, 0.26, 0.99)]
    for seed in (0, 1, 2):
        for method, nfe, w, vr in rows:
            rid = f"moons.{method}.s{seed}.abcdef12"
            np.save(base / "samples" / f"{rid}.npy", rng.normal(size=(50, 2)).astype("float32"))
            append_record(base / "records.jsonl", RunRecord(
                method=method, dataset="moons", seed=seed, status="ok", run_id=rid,
                suite="golden", config_file="configs/golden.yaml",
                config_hash=f"{method[:4]}0000000000", git_commit="0123456789abcdef",
                device="cpu", nfe=nfe, train_seconds=0.0 if nfe is None else 10.0 + seed,
                train_steps=0 if nfe is None else 100,
                coupling_seconds=2.0 if method == "otnfm-online" else 0.0,
                sample_ms_per_1k=None if nfe is None else 1.5 * nfe + 0.01 * seed,
                metrics={"w2": w + 0.01 * seed, "var_ratio": vr, "mmd": w / 10},
                metric_info={"n_samples": 10000, "n_reference": 10000, "w2_samples": 2000,
                             "features": "raw coordinates"},
                samples_path=f"samples/{rid}.npy",
                train_compute={} if nfe is None else {
                    "steps": 100, "forwards": 100, "forward_samples": 25600, "jvps": 0,
                    "teacher_forwards": 0, "backwards": 100, "flops_per_step": 2.0e9,
                    "flops": 2.0e11, "total_flops": 2.0e11},
                curve=[] if nfe is None else [
                    {"step": st, "train_seconds": st / 10, "train_flops": st * 2.0e9,
                     "samples": 2000, "metrics": {"w2": w + 0.01 * seed + extra}}
                    for st, extra in ((50, 0.3), (100, 0.05))],
                curve_seconds=0.0 if nfe is None else 0.4,
                curve_floor={"samples": 2000, "metrics": {"w2": 0.15 + 0.01 * seed}}
                if nfe is None else None,
                bank_gap={"metric": "w2", "fresh": w + 0.01 * seed, "bank": w - 0.02,
                          "n": 10000} if method == "otnfm-online" else {},
                data_info={"kind": "points", "shape": [2], "source": "gaussian",
                           "n_train": 20000, "n_eval": 10000, "description": "Two moons."},
            ))
    append_record(base / "records.jsonl", RunRecord(
        method="otnfm-minibatch", dataset="moons", seed=0, status="failed",
        run_id="moons.otnfm-minibatch.s0.abcdef12", config_hash="otnf1111111111",
        error="TrainingDiverged: loss became nan at step 3"))


def test_report_matches_golden(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _records(Path("res"))
    text = render_report([Source("res/records.jsonl", read_records("res/records.jsonl").records)],
                         Path("out/report.md"), metric_vocabulary(), grid=grid_cells())
    assert Path("out/report/moons_samples.png").exists()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_summary_formatting():
    assert summarize([1.0, 2.0, 3.0]).fmt() == "2 ± 1"
    assert summarize([0.25]).fmt() == "0.25 (1 seed)"
    assert summarize([]).fmt() == "–"
    assert fmt_num(123456.0) == "1.23e+05" and fmt_num(0.0001234) == "1.23e-04"


def test_a_rerun_supersedes_the_earlier_record():
    from bench.report.model import latest_only

    a = RunRecord(method="m", dataset="d", seed=0, status="ok", config_hash="h", run_id="1")
    b = RunRecord(method="m", dataset="d", seed=0, status="ok", config_hash="h", run_id="2")
    c = RunRecord(method="m", dataset="d", seed=1, status="ok", config_hash="h", run_id="3")
    kept, dropped = latest_only([a, b, c])
    assert [r.run_id for r in kept] == ["2", "3"] and dropped == 1


def test_t_interval_and_paired_difference():
    s = summarize([1.0, 2.0, 3.0])
    assert s.ci95 == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert s.fmt(ci=True) == "2 ± 1 [-0.484, 4.48]"
    assert summarize([5.0]).fmt(ci=True) == "5 (1 seed)"
    d = paired({0: 1.0, 1: 2.0, 2: 3.0, 7: 9.0}, {0: 0.5, 1: 1.5, 2: 2.4})
    assert d.n == 3 and d.mean == pytest.approx(0.5333333) and d.lo > 0


@pytest.mark.parametrize("n,warned", [(360, True), (50_000, False)])
def test_inception_fid_below_50k_samples_is_flagged_as_biased(n, warned):
    from bench.report.tables import metric_line

    info = {"n_samples": n, "n_reference": n, "fid_extractor": "inception-v3-fast",
            "fid_n_generated": n}
    rec = RunRecord(method="otnfm-online", dataset="digits", seed=0, status="ok",
                    metric_info=info)
    line = metric_line([rec])
    assert "`inception-v3-fast` (Inception FID)" in line
    assert ("biased upward" in line) == warned and ("KID is unbiased" in line) == warned


def test_across_datasets_lines_up_the_grid_comparisons_and_counts_the_verdicts(tmp_path):
    """Datasets with a grid: one where the neural flow is behind the map by a clear margin
    (significant), one where they differ only by noise (not significant), one with a single
    seed (no interval), and one whose grid has no neural-flow row (nothing to compare: left
    out rather than a crash)."""
    from bench.report.grid import across_section

    noise = [0.002, -0.001, 0.003]
    path = tmp_path / "records.jsonl"
    flowless = (("otmap-online", 0.2), ("loomcfm-euler1", 0.21), ("otmap-minibatch", 0.3),
                ("otcfm-euler1", 0.31))

    def write(dataset, seed, method, w):
        append_record(path, RunRecord(
            method=method, dataset=dataset, seed=seed, status="ok",
            run_id=f"{dataset}.{method}.s{seed}", config_hash=f"{method}-h",
            metrics={"w2": w + 0.01 * seed}))

    for dataset, gap, seeds in (("moons", 0.05, (0, 1, 2)), ("spiral", 0.0, (0, 1, 2)),
                                ("crescent", 0.0, (0,))):
        for seed in seeds:
            for method, w in (("otmap-online", 0.2), ("otnfm-online", 0.2 + gap + noise[seed]),
                              ("loomcfm-euler1", 0.2 - noise[seed]),
                              ("otmap-minibatch", 0.3), ("otnfm-minibatch", 0.3 + gap)):
                write(dataset, seed, method, w)
    for seed in (0, 1, 2):
        for method, w in flowless:
            write("checkerboard", seed, method, w)
    text = render_report([Source(str(path), read_records(path).records)],
                         tmp_path / "r.md", metric_vocabulary(), grid=grid_cells())
    section = text[text.index("## Across datasets"):text.index("## Runs")]
    rows = {line.split("<br>")[0].strip("| "): line for line in section.splitlines()
            if line.startswith("| ") and "<br>" in line}
    online_map = rows["online OT, neural flow vs map G(z)"]
    assert "`otnfm-online` − `otmap-online`" in online_map
    assert "**0.0513** [" in online_map and "] worse" in online_map   # moons: 0.05 + mean noise
    assert "] n.s." in online_map and "(1 common seed, no interval)" in online_map
    assert online_map.endswith("| 0 / 1 / 1 / 1 |")
    # the flow against FM's one Euler step on the online coupling: worse on moons only
    assert rows["online OT, neural flow vs FM velocity, 1 Euler step"].endswith("| 0 / 1 / 1 / 1 |")
    # along the neural-flow row: online vs minibatch is better on both
    assert rows["neural flow, online OT vs minibatch OT"].endswith("| 2 / 0 / 0 / 1 |")
    assert list(rows)[:2] == ["minibatch OT, neural flow vs map G(z)",
                              "online OT, neural flow vs map G(z)"]
    assert "moons (`w2`, 3 seeds)" in section and "crescent (`w2`, 1 seed)" in section
    assert "checkerboard" not in section  # a grid with no neural-flow row compares nothing
    assert "### Coupling × parametrisation (checkerboard)" in text
    assert across_section([]) == []
    # the verdict page alone: the same table, no per-dataset sections, no figures
    only = render_report([Source(str(path), read_records(path).records)], tmp_path / "v.md",
                         metric_vocabulary(), grid=grid_cells(), across_only=True)
    assert only[only.index("## Across datasets"):only.index("## Runs")] == section
    assert "## moons" not in only and not (tmp_path / "v").exists()


def test_two_configs_of_one_method_get_labels_that_tell_them_apart():
    from bench.report.model import by_config, label

    def rec(h, recipe, seed=0, lr=1e-3):
        return RunRecord(method="meanflow", dataset="moons", seed=seed, status="ok",
                         config_hash=h, config={"train": {"lr": lr},
                                                "meanflow": {"recipe": recipe}})

    groups = by_config([rec("aaaa1111", "pixel"), rec("aaaa1111", "pixel", 1),
                        rec("bbbb2222", "pixel-v1"), rec("cccc3333", "pixel", lr=1e-3)])
    labels = {k[2]: {label(r) for r in runs} for k, runs in groups.items()}
    assert labels["bbbb2222"] == {"meanflow · meanflow.recipe=pixel-v1"}
    # the same recorded config under two hashes (other code): the hash tells them apart
    assert labels["aaaa1111"] == {"meanflow · meanflow.recipe=pixel, config=aaaa1111"}
    assert labels["cccc3333"] == {"meanflow · meanflow.recipe=pixel, config=cccc3333"}
    groups = by_config([rec("aaaa1111", "pixel"), rec("cccc3333", "pixel")])
    assert {label(runs[0]) for runs in groups.values()} == {"meanflow · config=aaaa1111",
                                                            "meanflow · config=cccc3333"}
    # one config per method: the plain name
    assert [label(r) for r in by_config([rec("aaaa1111", "pixel")])[
        ("moons", "meanflow", "aaaa1111")]] == ["meanflow"]


def test_a_report_with_two_configs_of_one_method_renders_whole(tmp_path, monkeypatch):
    """The golden records plus fm-euler100 again under other (list-valued) eval metrics: both
    rows are labelled apart, and the sections and figures of one config per method remain."""
    monkeypatch.chdir(tmp_path)
    _records(Path("res"))
    recs = read_records("res/records.jsonl").records
    for r in [r for r in recs if r.method == "fm-euler100"]:
        append_record(Path("res/records.jsonl"), RunRecord(
            **{**r.__dict__, "config_hash": "fm-e9999999999", "run_id": r.run_id + "b",
               "config": {"eval": {"metrics": ["w2", "mmd"]}}}))
    text = render_report([Source("res/records.jsonl", read_records("res/records.jsonl").records)],
                         Path("out/report.md"), metric_vocabulary(), grid=grid_cells())
    assert "| fm-euler100 · eval.metrics=None | 3 |" in text  # the golden ones record none
    assert "| fm-euler100 · eval.metrics=['w2', 'mmd'] | 3 |" in text
    assert "| nfm-random | 3 |" in text  # one config: its plain name
    assert Path("out/report/moons_cost.png").exists()
    assert not list(Path("out/report").glob("*sweep*"))  # a variant is not a sweep


def test_asked_comparisons_are_drawn_beside_the_default_ones(tmp_path):
    """--compare adds pairs to the default ones (every method vs fm-euler100); the default ones
    go only with default_pairs=False, and a pair asked twice is drawn once."""
    _records(tmp_path)
    path = tmp_path / "records.jsonl"
    src = [Source(str(path), read_records(path).records)]

    def rows(**kw):
        text = render_report(src, tmp_path / "r.md", metric_vocabulary(), plots_on=False, **kw)
        if "### Paired comparisons" not in text:
            return []
        table = text.split("### Paired comparisons")[1].split("\n\n")[2]
        return [ln.split(" | ")[:2] for ln in table.splitlines()[2:]]

    both = rows(compare=[("otnfm-online", "nfm-random"), ("otnfm-online", "fm-euler100")])
    assert both == [["| nfm-random", "fm-euler100"], ["| otnfm-online", "fm-euler100"],
                    ["| otnfm-online", "nfm-random"]]
    assert rows(compare=[("otnfm-online", "nfm-random")], default_pairs=False) == [
        ["| otnfm-online", "nfm-random"]]
    assert rows(compare=[], default_pairs=False) == []


def test_the_report_imports_neither_torch_nor_the_methods():
    """Rendering records needs the records, the vocabulary and the report modules alone."""
    import subprocess
    import sys

    code = ("import sys, bench.report.markdown, bench.report.tables, bench.report.curves, "
            "bench.report.figures, bench.report.grid, bench.report.export, bench.report.model; "
            "print('torch' in sys.modules, "
            "any(m.startswith(('bench.methods', 'bench.metrics')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "False False"


def test_the_reference_method_is_a_setting(tmp_path):
    """``--reference`` (or a suite file's ``report.reference``) replaces fm-euler100 as the
    method every other one is compared with by default."""
    from typer.testing import CliRunner

    from bench.cli import app
    from bench.cli.report import suite_configs, suite_reference
    from bench.vocab import REFERENCE_METHOD

    _records(tmp_path / "res")

    def pairs(*args: str) -> list[list[str]]:
        out = tmp_path / "r.md"
        res = CliRunner().invoke(app, ["report", str(tmp_path / "res"), "--out", str(out),
                                       *args])
        assert res.exit_code == 0, res.output
        table = out.read_text().split("### Paired comparisons")[1].split("\n\n")[2]
        return [ln.split(" | ")[:2] for ln in table.splitlines()[2:]]

    assert pairs() == [["| nfm-random", "fm-euler100"], ["| otnfm-online", "fm-euler100"]]
    assert pairs("--reference", "otnfm-online") == [["| nfm-random", "otnfm-online"],
                                                     ["| fm-euler100", "otnfm-online"]]
    suite = tmp_path / "suite.yaml"
    suite.write_text("methods: [otnfm-online, nfm-random]\nreport:\n  reference: nfm-random\n")
    assert suite_reference([suite_configs(suite)]) == "nfm-random"
    assert suite_reference([]) == REFERENCE_METHOD
