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

    # a rescoring in another feature space is another measurement, not a rerun: both stay;
    # a record scored by no classifier (a failed rerun) supersedes both, and a later scored
    # one supersedes it
    def scored(run_id, space, status="ok"):
        info = {"fd_extractor": space} if space else {}
        return RunRecord(method="m", dataset="d", seed=0, status=status, config_hash="h",
                         run_id=run_id, metric_info=info)

    x, y, z = scored("x", "fd-d-cnn-w1"), scored("y", "fd-d-cnn-w2"), scored("z", "fd-d-cnn-w1")
    assert [r.run_id for r in latest_only([x, y, z])[0]] == ["y", "z"]
    failed = scored("f", "", status="failed")
    assert [r.run_id for r in latest_only([x, y, failed])[0]] == ["f"]
    assert [r.run_id for r in latest_only([x, failed, y])[0]] == ["y"]
    assert [r.run_id for r in latest_only([x, y], by_space=False)[0]] == ["y"]


def test_a_run_stopped_before_it_finished_supersedes_no_record():
    """A stop (Ctrl-C, a scheduler's SIGTERM) of a rerun writes an ``interrupted`` record; the
    same command resumes the run, so the report keeps the earlier finished record, shows the
    stopped one only while its run has nothing else, and drops it once the run finishes."""
    from bench.report.model import latest_only

    def rec(run_id, status, seed=0, space="fd-d-cnn-w1"):
        info = {"fd_extractor": space} if status == "ok" else {}
        return RunRecord(method="m", dataset="d", seed=seed, status=status, config_hash="h",
                         run_id=run_id, metric_info=info)

    done, stop, again = rec("ok", "ok"), rec("stop", "interrupted"), rec("ok2", "ok")
    alone = rec("alone", "interrupted", seed=1)
    kept, dropped = latest_only([done, stop, alone])
    assert [r.run_id for r in kept] == ["ok", "alone"] and dropped == 1
    assert [r.run_id for r in latest_only([stop, again])[0]] == ["ok2"]
    assert [r.run_id for r in latest_only([stop, rec("f", "failed")])[0]] == ["f"]
    assert [r.run_id for r in latest_only([stop, rec("run", "running")])[0]] == ["run"]
    # a failed run, then a stopped retry: the failure stands (with its reason) until it finishes
    assert [r.run_id for r in latest_only([rec("f", "failed"), stop])[0]] == ["f"]

    # the report counts a stopped record apart only where a finished record stands for its
    # run; a stop followed by another stop is an older record superseded by the later one
    from bench.report.model import stopped_left_out
    for read, apart in (([done, stop, alone], 1), ([stop, again], 1),
                        ([stop, rec("stop2", "interrupted")], 0)):
        kept, dropped = latest_only(read)
        assert stopped_left_out(read, kept) == apart and dropped == 1


def test_the_report_counts_stopped_runs_apart_and_leaves_out_those_that_have_a_record(tmp_path):
    from bench.report.markdown import counts, header

    def rec(run_id, status, seed):
        return RunRecord(method="m", dataset="d", seed=seed, status=status, config_hash="h",
                         run_id=run_id)

    ok, stopped, failed = rec("a", "ok", 0), rec("b", "interrupted", 1), rec("c", "failed", 2)
    assert counts([ok], [stopped, failed]) == "1 ok, 1 failed, 1 stopped before finishing"
    assert counts([ok], [failed]) == "1 ok, 1 failed"
    text = "\n".join(header([], [ok], [ok], [], 0, None, stopped=2))
    assert "2 record(s) of a run stopped before it finished were left out" in text
    assert "superseded" not in text


def test_the_header_states_the_ema_decay_reached_where_the_warm_up_caps_it():
    from bench.report.markdown import ema_lines

    def rec(ema, steps, reached=None, method="m"):
        return RunRecord(method=method, dataset="d", seed=0, status="ok", train_steps=steps,
                         config={"train": {"ema": ema, "steps": steps}}, ema_reached=reached)

    # a record older than ema_reached has it worked out from its config: 1,201 / 1,210
    old = [rec(0.995, 1200), rec(0.995, 1200)]
    assert ema_lines(old) == [
        "\nEMA: `train.ema` 0.995 is set, but the warm-up (1 + n) / (10 + n) holds the decay at "
        "0.9926 at the last of 1,200 steps, so the 2 run(s) here averaged their weights at "
        "0.9926 at most (any setting above it trains them alike)."]
    # the stored value wins; a decay reached, EMA off and the floor row say nothing
    assert "0.5000" in ema_lines([rec(0.999, 100, reached=0.5)])[0]
    assert ema_lines([rec(0.99, 20000), rec(0.0, 10), rec(0.999, 10, method="data")]) == []


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
        ("moons", "meanflow", "aaaa1111", "")]] == ["meanflow"]


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


VERDICT_GOLDEN = Path(__file__).parent / "golden" / "report-verdict.md"
LEGACY_ID = "fd-mnist5k-cnn-04408539c0ec"


def _image_record(method, seed, fd, accuracy, extractor=LEGACY_ID, nfe=1, ms=2.0):
    """An mnist5k record scored by the domain classifier ``extractor`` of held-out accuracy
    ``accuracy`` (legacy ids carry no weights hash: the accuracy tells classifiers apart)."""
    floor = method == "data"
    return RunRecord(
        method=method, dataset="mnist5k", seed=seed, status="ok",
        run_id=f"mnist5k.{method}.s{seed}", suite="verdict", config_hash=f"{method[:6]}-h",
        device="cpu", threads=1, nfe=None if floor else nfe,
        sample_ms_per_1k=None if floor else ms + 0.1 * seed,
        train_seconds=0.0 if floor else 100.0, train_steps=0 if floor else 100,
        metrics={"fd_domain": fd, "prec_domain": 0.8 + 0.01 * seed},
        metric_info={"n_samples": 1000, "n_reference": 1000, "fd_extractor": extractor,
                     "fd_extractor_eval_accuracy": accuracy},
        data_info={"kind": "images", "resolution": 28, "channels": 1, "range": "[-1, 1]",
                   "n_train": 5000, "n_eval": 1000, "floor": "held-out images",
                   "description": "5000 MNIST digits"})


def _verdict_records(path: Path) -> None:
    """Two datasets the golden verdict report reads.

    moons, two seeds: otnfm-online against fm-euler100 differs by noise alone (not significant,
    an interval on two seeds), a precision interval spills above 1 and the floor's w2_sq below
    0; the two methods sit on no common grid row or column, so no grid, no grid sentences, no
    learning-curve section. mnist5k, three seeds: reflow's seed 0 was scored by a domain
    classifier of another held-out accuracy than fm-euler100's seed 0 under one legacy id, so
    that seed is left out of their pair, and fm-euler100's own seeds mix two classifiers."""
    w2 = {"fm-euler100": (0.26, 0.30), "otnfm-online": (0.25, 0.22)}
    for seed in (0, 1):
        append_record(path, RunRecord(
            method="data", dataset="moons", seed=seed, status="ok", run_id=f"moons.data.s{seed}",
            suite="verdict", config_hash="data-h", device="cpu", threads=1,
            metrics={"w2": 0.1 + 0.02 * seed, "w2_sq": 0.01 + 0.02 * seed, "precision": 0.98},
            data_info={"kind": "points", "source": "gaussian", "n_train": 1000, "n_eval": 1000,
                       "description": "Two moons."}))
        for method, nfe, ms in (("otnfm-online", 1, 3.0), ("fm-euler100", 100, 300.0)):
            append_record(path, RunRecord(
                method=method, dataset="moons", seed=seed, status="ok",
                run_id=f"moons.{method}.s{seed}", suite="verdict", config_hash=f"{method[:6]}-h",
                device="cpu", threads=1, nfe=nfe, sample_ms_per_1k=ms + seed,
                train_seconds=10.0, train_steps=100,
                metrics={"w2": w2[method][seed], "precision": (0.99, 0.95)[seed]
                         if method == "otnfm-online" else 0.9},
                data_info={"kind": "points", "source": "gaussian", "n_train": 1000,
                           "n_eval": 1000, "description": "Two moons."}))
    for seed in (0, 1, 2):
        acc = 0.96 if seed == 0 else 0.952
        append_record(path, _image_record("data", seed, 0.2, acc))
        append_record(path, _image_record("fm-euler100", seed, 1.7 + 0.1 * seed, acc, nfe=100,
                                          ms=300.0))
        append_record(path, _image_record("reflow", seed, (9.0, 4.2, 4.0)[seed], 0.952))


def test_verdict_report_matches_golden(tmp_path, monkeypatch):
    """The verdict sentences, their warnings and the sections left out, as rendered."""
    monkeypatch.chdir(tmp_path)
    _verdict_records(Path("res/records.jsonl"))
    text = render_report([Source("res/records.jsonl", read_records("res/records.jsonl").records)],
                         Path("out/report.md"), metric_vocabulary(), grid=grid_cells(),
                         plots_on=False)
    if os.environ.get("UPDATE_GOLDEN"):
        VERDICT_GOLDEN.write_text(text)
    assert text == VERDICT_GOLDEN.read_text()


def test_a_two_seed_comparison_says_not_significant_and_warns(tmp_path):
    _verdict_records(tmp_path / "records.jsonl")
    text = render_report([Source("r", read_records(tmp_path / "records.jsonl").records)],
                         tmp_path / "r.md", metric_vocabulary(), grid=grid_cells(),
                         plots_on=False)
    moons = text[text.index("## moons"):text.index("## Runs")]
    verdict = moons[moons.index("### Verdict"):moons.index("| method |")]
    d = summarize([0.25 - 0.26, 0.22 - 0.30])  # seed by seed; t(1) = 12.7 makes it wide
    assert d.lo < 0 < d.hi
    speed = ((300.0 + 301.0) / 2) / ((3.0 + 4.0) / 2)  # mean sample ms/1k, B over A
    assert (f"- `otnfm-online` is not significantly different from `fm-euler100` on `w2` "
            f"(Δ {fmt_num(d.mean)} [{fmt_num(d.lo)}, {fmt_num(d.hi)}] over 2 paired seeds: the "
            f"interval includes 0) and samples {round(speed)}× faster (NFE 1 vs 100).") in verdict
    assert "The interval on `w2` rests on 2 paired seeds: it is wide and unreliable." in verdict
    # the intervals that spill past the metric's range are named under the table
    assert ("`w2_sq` (≥ 0): data (floor) (below 0); `precision` (0 to 1): otnfm-online "
            "(above 1)") in moons
    assert "± is the sample standard deviation over seeds, [ ] the 95% confidence" in moons
    # no grid applies (no two cells share a row or a column), so neither it nor its sentences
    assert "Coupling × parametrisation" not in moons and "Paired differences" not in moons
    assert "### Learning curves" not in moons


def test_seeds_scored_in_different_feature_spaces_are_not_paired(tmp_path):
    """reflow's seed 0 and fm-euler100's seed 0 were scored by classifiers of different
    held-out accuracy under one id: the pair rests on seeds 1 and 2 alone, and says so."""
    from bench.report.pairing import feature_space, pair_seeds

    _verdict_records(tmp_path / "records.jsonl")
    recs = read_records(tmp_path / "records.jsonl").records
    text = render_report([Source("r", recs)], tmp_path / "r.md", metric_vocabulary(),
                         plots_on=False)
    images = text[text.index("## mnist5k"):text.index("## moons")]
    # seeds 1 and 2 alone: 4.2 - 1.8 and 4.0 - 1.9 (seed 0, 9.0 - 1.7, would triple the mean)
    d = summarize([4.2 - 1.8, 4.0 - 1.9])
    interval = f"{fmt_num(d.mean)} [{fmt_num(d.lo)}, {fmt_num(d.hi)}]"
    assert (f"`reflow` is worse than `fm-euler100` on `fd_domain` (Δ {interval} over 2 paired "
            "seeds)") in images
    note = ("Seed 0 left out of `reflow` − `fm-euler100` (`fd_domain`): scored by different "
            f"domain classifiers (`{LEGACY_ID}`, held-out accuracy 0.952 vs 0.96).")
    assert note in images
    assert (f"| reflow | fm-euler100 | 3 | **{fmt_num(d.mean)} ± {fmt_num(d.std, 2)} "
            f"[{fmt_num(d.lo)}, {fmt_num(d.hi)}]** (2 seeds) |") in images
    # fm-euler100's (and the floor's) own seeds mix two classifiers: marked in the table
    assert "| fm-euler100 † | 3 | 100 |" in images and "| reflow | 3 | 1 |" in images
    assert "fm-euler100 (seed 0: 0.96 / seeds 1, 2: 0.952)" in images
    # ids with a weights hash tell classifiers apart by the id alone (the accuracy is no part)
    fm = [r for r in recs if r.method == "fm-euler100" and r.dataset == "mnist5k"]

    def hashed(weights, accuracy):
        return [RunRecord(**{**r.__dict__, "metric_info": {
            **r.metric_info, "fd_extractor": f"{LEGACY_ID}-w{weights(r.seed)}",
            "fd_extractor_eval_accuracy": accuracy}}) for r in fm]

    a = hashed(lambda seed: "ab" * 6 if seed else "cd" * 6, 0.5)
    b = hashed(lambda seed: "ab" * 6, 0.9)
    pairing = pair_seeds(a, b, "fd_domain", "domain")
    assert pairing.seeds == [1, 2] and list(pairing.left_out) == [0]
    assert (f"(`{LEGACY_ID}-wcdcdcdcdcdcd` vs `{LEGACY_ID}-wabababababab`)"
            in pairing.left_out[0])
    pairing = pair_seeds(a, fm, "fd_domain", "domain")
    assert sorted(pairing.left_out) == [0, 1, 2]  # new ids against legacy ones: never one space
    # metrics outside a learned feature space pair every common seed
    assert pair_seeds(fm, a, "w2", None).seeds == [0, 1, 2]
    assert feature_space(fm[0], "inception") is None


def test_records_scored_by_two_classifiers_get_a_section_each(tmp_path):
    """One dataset scored by two domain classifiers (two weights hashes): two sections, each
    with its own floor and rows, and no pair, figure or row that crosses them."""
    a, b = f"{LEGACY_ID}-w{'ab' * 6}", f"{LEGACY_ID}-w{'cd' * 6}"
    path = tmp_path / "records.jsonl"
    for seed in (0, 1, 2):
        for method, extractor, fd in (("data", a, 0.2), ("fm-euler100", a, 1.7),
                                      ("reflow", a, 4.0), ("data", b, 0.3),
                                      ("fm-euler100", b, 2.5), ("ect", b, 4.5 + 0.1 * seed)):
            r = _image_record(method, seed, fd + 0.01 * seed, 0.96, extractor=extractor,
                              nfe=100 if method == "fm-euler100" else 1)
            r.run_id = f"{r.run_id}.{extractor[-2:]}"
            append_record(path, r)
    text = render_report([Source("r", read_records(path).records)], tmp_path / "r.md",
                         metric_vocabulary(), plots_on=False)
    first, second = f"## mnist5k, scored by {a}", f"## mnist5k, scored by {b}"
    assert text.count("## mnist5k") == 2 and first in text and second in text
    one, two = text[text.index(first):text.index(second)], text[text.index(second):]
    two = two[:two.index("## Runs")]
    for section in (one, two):
        assert "scored by 2 domain classifiers" in section
        assert section.count("| data (floor) | 3 |") == 1
    assert "| reflow | 3 |" in one and "`ect`" not in one and "| ect |" not in one
    assert "| ect | 3 |" in two and "reflow" not in two
    assert "| ect | fm-euler100 | 3 |" in two and "| reflow | fm-euler100 | 3 |" in one
    # a run measured in both spaces is listed once per space, each with its classifier
    assert f"| `mnist5k.fm-euler100.s0.ab` | `fm-eul-h` | 0 | ok | 100 s | `{a}` |" in text
    assert f"| `mnist5k.fm-euler100.s0.cd` | `fm-eul-h` | 0 | ok | 100 s | `{b}` |" in text


def test_the_committed_study_refuses_exactly_the_pairs_scored_in_different_spaces():
    """Over the committed mnist5k study records: every default comparison (each method vs
    fm-euler100) leaves out exactly the seeds whose two records' classifier fingerprints
    (id, and held-out accuracy for ids without a weights hash) differ, computed here from the
    records' metric_info."""
    from bench.report.model import DatasetView, by_config, latest_only
    from bench.report.pairing import pair_seeds
    from bench.report.tables import default_compare, labelled_groups

    path = Path(__file__).resolve().parents[1] / "reports/data/mnist5k-study/records.jsonl"
    records, _ = latest_only(read_records(path).records)
    ok = [r for r in records if r.status == "ok"]
    view = DatasetView.of("mnist5k", ok, by_config(ok), {}, Path("."), Path("."))
    groups = labelled_groups(view)

    def fingerprint(r):
        info = r.metric_info
        return (info["fd_extractor"], info["fd_extractor_eval_accuracy"])

    refused = 0
    for a, b in default_compare(view):
        pairing = pair_seeds(groups[a], groups[b], "fd_domain", "domain")
        by_b = {r.seed: r for r in groups[b]}
        expected = sorted(r.seed for r in groups[a]
                          if r.seed in by_b and fingerprint(r) != fingerprint(by_b[r.seed]))
        assert sorted(pairing.left_out) == expected, (a, b)
        assert sorted(pairing.seeds + expected) == sorted(
            {r.seed for r in groups[a]} & set(by_b)), (a, b)
        refused += len(expected)
    assert refused > 0  # the study does hold records of two classifiers under one id
    reflow = {r.seed: r for r in groups["reflow"]}
    fm = {r.seed: r for r in groups["fm-euler100"]}
    pairing = pair_seeds(groups["reflow"], groups["fm-euler100"], "fd_domain", "domain")
    assert (0 in pairing.left_out) == (fingerprint(reflow[0]) != fingerprint(fm[0]))


def test_every_pairing_over_seeds_goes_through_pair_seeds():
    """The report modules compare two groups over seeds only through
    bench.report.pairing.pair_seeds (stats.paired is its arithmetic)."""
    root = Path(__file__).resolve().parents[1] / "bench" / "report"
    for f in root.glob("*.py"):
        if f.name in ("pairing.py", "stats.py"):
            continue
        text = f.read_text()
        assert "paired(" not in text and "by_seed(" not in text, f.name


def test_a_grid_that_compares_nothing_has_no_sentences_heading(tmp_path):
    """A full grid without a neural-flow row is drawn, but with no 'Paired differences'
    heading over an empty list; cells on no common row or column draw no grid at all."""
    from bench.report.grid import grid_section, reading

    path = tmp_path / "records.jsonl"
    for seed in (0, 1, 2):
        for method, w in (("otmap-online", 0.2), ("loomcfm-euler1", 0.21),
                          ("otmap-minibatch", 0.3), ("otcfm-euler1", 0.31),
                          ("otnfm-global", 0.25), ("fm-euler100", 0.2)):
            append_record(path, RunRecord(
                method=method, dataset="spiral" if method in ("otnfm-global", "fm-euler100")
                else "checkerboard", seed=seed, status="ok", run_id=f"{method}.s{seed}",
                config_hash=f"{method}-h", metrics={"w2": w + 0.01 * seed}))
    text = render_report([Source(str(path), read_records(path).records)], tmp_path / "r.md",
                         metric_vocabulary(), grid=grid_cells(), plots_on=False)
    assert "### Coupling × parametrisation (checkerboard)" in text
    assert "Paired differences" not in text
    assert "Coupling × parametrisation (spiral)" not in text  # two cells, nothing in common
    assert grid_section(None) == []
    from bench.report.grid import Grid
    empty = Grid("d", "w2", "min", None, {}, 0, "linear", [], [])
    assert reading(empty) == []


def test_the_cost_figure_draws_each_sampler_as_a_labelled_point(tmp_path, monkeypatch):
    """fm-euler1 ... fm-euler100 share one recipe (and one training): separate points, each
    named, in one colour, with no line through them; the axis says which way is better."""
    from bench.report import plots

    kept = {}

    def keep(fig, path):
        kept["fig"] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    series = {"fm": [(f"fm-euler{n}", n, 3.0 * n, 10.0, 1.0 / n, 0.01, 2e11)
                     for n in (1, 10, 100)],
              "otnfm-online": [("otnfm-online", 1, 3.0, 12.0, 0.2, 0.01, 2e11)]}
    plots.quality_vs_cost(series, "w2 (lower is better)", tmp_path / "c.png", "t")
    for ax in kept["fig"].axes:
        assert all(len(line.get_xdata()) <= 1 for line in ax.lines)  # points, never a line
        names = {t.get_text() for t in ax.texts}
        assert {"fm-euler1", "fm-euler10", "fm-euler100", "otnfm-online"} <= names
        assert ax.get_ylabel() == "w2 (lower is better)"
    legend = kept["fig"].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["fm", "otnfm-online"]
    import matplotlib.pyplot as plt

    plt.close(kept["fig"])


def test_the_vocabulary_declares_ranges_and_feature_spaces():
    vocab = metric_vocabulary()
    assert vocab.ranges["w2"] == (0, None) and vocab.ranges["prec_domain"] == (0, 1)
    assert "mmd" not in vocab.ranges and "kid" not in vocab.ranges  # unbiased: can read < 0
    assert vocab.features["fd_domain"] == vocab.features["rec_domain"] == "domain"
    assert vocab.features["fid"] == "inception" and "w2" not in vocab.features


def test_a_verdict_at_equal_nfe_states_no_speed_ratio_as_a_cost():
    """Two one-step samplers of one network family: the measured time ratio is reported as a
    difference in measured times, not as one sampling faster."""
    from bench.report.verdict import speed

    a = [_image_record("a", s, 1.0, 0.95, ms=1.3) for s in (0, 1)]
    b = [_image_record("b", s, 1.0, 0.95, ms=1.0) for s in (0, 1)]
    assert speed(a, b) == "samples at the same NFE (1; measured times differ 1.3×)"
    c = [_image_record("c", s, 1.0, 0.95, nfe=100, ms=100.0) for s in (0, 1)]
    assert speed(a, c) == "samples 74× faster (NFE 1 vs 100)"


def test_the_sample_figure_draws_every_sweep_point_of_a_method(tmp_path, monkeypatch):
    """A sweep's rows share a method: each point gets its own panel (lowest seed), named by
    its point, and the floor one panel."""
    from bench.report import figures, plots
    from bench.report.model import DatasetView, by_config

    drawn = {}
    monkeypatch.setattr(plots, "scatter_grid",
                        lambda panels, path, title: drawn.update(panels=panels) or path)
    recs = []
    for seed in (1, 0):
        for method, sweep in (("data", {}), ("fm-euler100", {"path.kind": "linear"}),
                              ("fm-euler100", {"path.kind": "cosine"})):
            name = f"{method}.{sweep.get('path.kind', 'floor')}.s{seed}.npy"
            np.save(tmp_path / name, np.full((8, 2), seed, dtype=np.float32))
            recs.append(RunRecord(method=method, dataset="moons", seed=seed, status="ok",
                                  run_id=name, config_hash=f"{method}-{sweep}", sweep=sweep,
                                  nfe=None if method == "data" else 100, samples_path=name))
    view = DatasetView.of("moons", recs, by_config(recs), {id(r): tmp_path for r in recs},
                          tmp_path, tmp_path)
    assert figures.scatter(view) is not None
    assert all((pts == 0).all() for _, pts in drawn["panels"])  # seed 0 of each row
    assert [name for name, _ in drawn["panels"]] == [
        "data (floor)", "fm-euler100 (NFE 100)\npath.kind=cosine",
        "fm-euler100 (NFE 100)\npath.kind=linear"]


def test_a_dataset_scored_in_two_feature_spaces_is_one_dataset_across(tmp_path):
    """Two sections of one dataset are the same runs measured twice, not two datasets: the
    'Across datasets' table takes one (the latest space) and needs two datasets."""
    from bench.report.markdown import ReportError

    path = tmp_path / "records.jsonl"
    for space in (f"{LEGACY_ID}-w{'ab' * 6}", f"{LEGACY_ID}-w{'cd' * 6}"):
        for seed in (0, 1, 2):
            for method, fd in (("otmap-online", 2.0), ("otnfm-online", 2.5),
                               ("loomcfm-euler1", 2.1), ("otmap-minibatch", 3.0),
                               ("otnfm-minibatch", 3.5)):
                append_record(path, RunRecord(
                    method=method, dataset="mnist5k", seed=seed, status="ok",
                    run_id=f"{method}.s{seed}", config_hash=f"{method}-h",
                    metrics={"fd_domain": fd + 0.01 * seed},
                    metric_info={"fd_extractor": space}))
    recs = read_records(path).records
    text = render_report([Source("r", recs)], tmp_path / "r.md", metric_vocabulary(),
                         grid=grid_cells(), plots_on=False)
    assert text.count("### Coupling × parametrisation (mnist5k, scored by") == 2
    with pytest.raises(ReportError, match="1 dataset"):
        render_report([Source("r", recs)], tmp_path / "v.md", metric_vocabulary(),
                      grid=grid_cells(), across_only=True)


def test_a_collapsed_row_with_a_low_copy_ratio_is_named_collapsed_not_copying(tmp_path):
    """copy_ratio below 1 beside var_ratio near 0 is a collapse onto one point inside the data
    (the ratio says where that point lies): the report names such rows and says so."""
    path = tmp_path / "records.jsonl"
    rows = {"naive-map": (0.69, 0.003, 0.0), "otnfm-online": (0.8, 0.95, 0.0),
            "fm-euler1": (37.0, 0.002, 0.0), "otmap-online": (0.01, 0.001, 0.97)}
    for seed in (0, 1):
        for method, (ratio, spread, share) in rows.items():
            append_record(path, RunRecord(
                method=method, dataset="crescent", seed=seed, status="ok",
                run_id=f"crescent.{method}.s{seed}", config_hash=f"{method}-h",
                metrics={"w2": 1.0, "var_ratio": spread + 0.001 * seed,
                         "copy_ratio": ratio + 0.01 * seed, "copy_share": share}))
    # a run without var_ratio does not enter the means
    append_record(path, RunRecord(method="naive-map", dataset="crescent", seed=2, status="ok",
                                  run_id="crescent.naive-map.s2", config_hash="naive-map-h",
                                  metrics={"w2": 1.0, "copy_ratio": 5.0}))
    text = render_report([Source(str(path), read_records(path).records)], tmp_path / "r.md",
                         metric_vocabulary(), plots_on=False)
    (note,) = [line for line in text.splitlines() if line.startswith("Collapsed, not copying")]
    assert "naive-map (`copy_ratio` 0.695, `var_ratio` 0.0035)" in note
    # a healthy spread (otnfm-online), a far collapse point (fm-euler1) and a collapse onto a
    # training item (otmap-online: most samples are near copies) are not named
    assert "otnfm-online" not in note and "fm-euler1" not in note and "otmap" not in note
    # without copy_ratio in the records there is nothing to say
    path2 = tmp_path / "plain.jsonl"
    append_record(path2, RunRecord(method="naive-map", dataset="crescent", seed=0, status="ok",
                                   run_id="c.n.s0", config_hash="h",
                                   metrics={"w2": 1.0, "var_ratio": 0.001}))
    text = render_report([Source(str(path2), read_records(path2).records)], tmp_path / "p.md",
                         metric_vocabulary(), plots_on=False)
    assert "Collapsed, not copying" not in text
