"""The report's "Ranking across settings" section (bench/report/ranking.py)."""

from __future__ import annotations

from bench.evaluate import metric_vocabulary
from bench.report.markdown import render_report
from bench.report.model import Source
from bench.results import RunRecord

EXTRACTOR = "fd-mnist5k-cnn-aaaaaaaaaaaa-wbbbbbbbbbbbb"


def _rec(method, seed, fd, lr, reference="validation", extractor=EXTRACTOR, steps=100, acc=0.9):
    return RunRecord(
        method=method, dataset="mnist5k", seed=seed, status="ok",
        run_id=f"mnist5k.{method}.s{seed}.{lr}.{steps}", suite="sens",
        config_hash=f"{method}-{lr}-{steps}",
        device="cpu", threads=1, nfe=1, sample_ms_per_1k=2.0, train_seconds=10.0,
        train_steps=steps, sweep={"train.lr": lr}, metrics={"fd_domain": fd},
        config={"train": {"lr": lr, "steps": steps}, "method": method},
        metric_info={"n_samples": 100, "n_reference": 100, "reference": reference,
                     "fd_extractor": extractor, "fd_extractor_eval_accuracy": acc},
        data_info={"kind": "images", "resolution": "28x28", "channels": 1, "range": "[-1, 1]",
                   "n_train": 300, "n_eval": 100, "floor": "first 100 training items",
                   "validation": 100, "description": "digits"})


def _render(tmp_path, records):
    out = tmp_path / "r.md"
    return render_report([Source("x/records.jsonl", records)], out, metric_vocabulary(),
                         plots_on=False)


def _section(text):
    return text.split("### Ranking across settings (mnist5k)")[1].split("\n## ")[0]


def test_an_order_that_holds_everywhere_is_said_so(tmp_path):
    recs = [_rec(m, s, base + lr * 1000 + s * 0.1, lr)
            for m, base in (("a", 1.0), ("b", 5.0)) for lr in (0.001, 0.003) for s in (0, 1, 2)]
    sec = _section(_render(tmp_path, recs))
    assert "The order is the same at all 2 settings: `a`, `b`." in sec
    assert "| train.lr=0.001 | 2.1 ± 0.1 · #1 | 6.1 ± 0.1 · #2 | `a`, `b` |" in sec
    assert "Each at its own best setting: `a` 2.1 at train.lr=0.001; `b` 6.1 at train.lr=0.001." \
           " Order: `a`, `b`." in sec
    assert "validation split held back from training" in sec
    assert "Means over 3 seeds: an order between means whose spread overlaps can flip" in sec


def test_an_order_that_moves_is_said_so_and_tuning_each_is_ranked(tmp_path):
    # a is best at lr 0.001, b only at lr 0.003, where it beats a's best
    fds = {("a", 0.001): 2.0, ("a", 0.003): 9.0, ("b", 0.001): 4.0, ("b", 0.003): 1.5}
    recs = [_rec(m, s, fd + 0.01 * s, lr) for (m, lr), fd in fds.items() for s in (0, 1)]
    sec = _section(_render(tmp_path, recs))
    assert "The order moves: 2 different orders over 2 settings; first place goes to `a`, `b`; " \
        "`a` and `b` swap places." in sec
    assert "Each at its own best setting: `b` 1.5 at train.lr=0.003; `a` 2 at train.lr=0.001." \
           " Order: `b`, `a`." in sec
    assert "Means over 2 seeds: an order between means whose spread overlaps can flip" in sec


def test_a_swap_within_the_spread_over_seeds_is_said_so(tmp_path):
    fds = {("a", 0.001): [1.0, 1.4], ("a", 0.003): [1.1, 1.5], ("b", 0.001): [1.1, 1.5],
           ("b", 0.003): [1.0, 1.4], ("c", 0.001): [5.0, 5.1], ("c", 0.003): [5.0, 5.1]}
    recs = [_rec(m, s, v, lr) for (m, lr), vs in fds.items() for s, v in enumerate(vs)]
    sec = _section(_render(tmp_path, recs))
    assert "`a` and `b` swap places; these are within the spread over seeds at every " \
           "setting: `a` and `b`." in sec


def test_scores_on_the_eval_split_warn_that_choosing_on_them_tunes_on_it(tmp_path):
    recs = [_rec(m, 0, fd, lr, reference="eval")
            for m, fd in (("a", 1.0), ("b", 2.0)) for lr in (0.001, 0.003)]
    assert "choosing a setting by them would tune on the data the methods are evaluated on" \
        in _section(_render(tmp_path, recs))


def test_records_of_two_feature_spaces_are_not_ranked(tmp_path):
    """One legacy id (no weights part) over two classifiers, told apart by their accuracy:
    one section, and the ranking refuses. (Two ids get two sections: never ranked together.)"""
    legacy = "fd-mnist5k-cnn-aaaaaaaaaaaa"
    recs = [_rec("a", 0, 1.0, 0.001, extractor=legacy), _rec("b", 0, 2.0, 0.001, extractor=legacy),
            _rec("a", 0, 1.0, 0.003, extractor=legacy),
            _rec("b", 0, 2.0, 0.003, extractor=legacy, acc=0.95)]
    sec = _section(_render(tmp_path, recs))
    assert "Not ranked: these records' `fd_domain` was scored in 2 feature spaces" in sec
    assert "|" not in sec
    two_ids = recs[:3] + [_rec("b", 0, 2.0, 0.003, extractor=EXTRACTOR.replace("wb", "wc"))]
    text = _render(tmp_path, two_ids)
    assert "\n## mnist5k, scored by fd-mnist5k-cnn-aaaaaaaaaaaa-wcbbbbbbbbbbb\n" in text
    assert "Ranking across settings" not in text.split("## mnist5k, scored by")[2]


def test_no_section_without_two_settings_and_two_methods(tmp_path):
    one_setting = [_rec(m, 0, 1.0, 0.001) for m in ("a", "b")]
    one_method = [_rec("a", 0, 1.0, lr) for lr in (0.001, 0.003)]
    for recs in (one_setting, one_method):
        assert "Ranking across settings" not in _render(tmp_path, recs)


def test_a_method_missing_at_a_setting_is_named_not_dropped(tmp_path):
    """c diverged at lr 0.003 (no ok record, or a nan score): its cell reads –, it is named,
    the order is compared among the methods scored everywhere, and it is never ranked first
    on a nan."""
    recs = [_rec(m, s, fd + 0.01 * s, lr) for m, fd in (("a", 1.0), ("b", 2.0))
            for lr in (0.001, 0.003) for s in (0, 1, 2)]
    recs += [_rec("c", s, 0.5, 0.001) for s in (0, 1, 2)]
    recs += [_rec("c", 0, float("nan"), 0.003)]
    sec = _section(_render(tmp_path, recs))
    assert "| train.lr=0.003 | 1.01 ± 0.01 · #1 | 2.01 ± 0.01 · #2 | – | `a`, `b` |" in sec
    assert "| train.lr=0.001 | 1.01 ± 0.01 · #2 | 2.01 ± 0.01 · #3 | 0.5 ± 0 · #1 |" in sec
    assert "No finished run (failed, diverged or not run; the Runs table lists the failures): " \
           "`c` at train.lr=0.003." in sec
    assert "The order (among the methods scored at every setting) is the same at all 2 " \
           "settings: `a`, `b`." in sec
    assert "Order: `c`, `a`, `b`." in sec and "nan" not in sec


def test_a_partial_grid_compares_the_settings_where_every_method_is_scored(tmp_path):
    """A grid in progress: c has run at two of three settings only, and one extra setting has
    only a and b. The orders compared are those of the two complete settings (all three
    methods), not a and b alone over every setting."""
    fds = {("a", 0.001): 3.0, ("b", 0.001): 2.0, ("c", 0.001): 1.0,
           ("a", 0.003): 3.0, ("b", 0.003): 1.0, ("c", 0.003): 2.0,
           ("a", 0.01): 5.0, ("b", 0.01): 6.0}
    recs = [_rec(m, 0, fd, lr) for (m, lr), fd in fds.items()]
    sec = _section(_render(tmp_path, recs))
    assert "`c` at train.lr=0.01." in sec
    assert "The order (at the 2 of 3 settings where every method is scored) moves: 2 " \
           "different orders over 2 settings; first place goes to `b`, `c`; `c` and `b` swap " \
           "places." in sec
    # with one complete setting only, the methods scored everywhere are compared instead
    fewer = [r for r in recs if not (r.method == "c" and r.sweep["train.lr"] == 0.003)]
    sec = _section(_render(tmp_path, fewer))
    assert "The order (among the methods scored at every setting) moves: 2 different orders " \
           "over 3 settings; first place goes to `a`, `b`" in sec


def test_sweeps_over_other_base_configs_are_ranked_apart_never_pooled(tmp_path):
    recs = [_rec(m, 0, fd + steps / 1000, lr, steps=steps)
            for m, fd in (("a", 1.0), ("b", 2.0)) for lr in (0.001, 0.003)
            for steps in (100, 600)]
    text = _render(tmp_path, recs)
    assert text.count("### Ranking across settings (mnist5k, train.lr)") == 2
    assert "(1 seed) · #1" in text and "2 seeds" not in text


def test_directions_order_best_first():
    from bench.report.ranking import ordered
    from bench.report.stats import summarize

    means = {"a": summarize([0.5]), "b": summarize([0.9]), "c": summarize([1.2])}
    assert ordered(means, "min") == ["a", "b", "c"]
    assert ordered(means, "max") == ["c", "b", "a"]
    assert ordered(means, "one") == ["b", "c", "a"]
