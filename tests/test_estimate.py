"""The wall-clock estimate (``bench.estimate``): what it measures and what it charges. Its
numbers are timings, so these tests check its structure (the batch it trains at, which
scorings it charges, a range around the centre), never a speed."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from bench import estimate as est_mod
from bench.config import resolve
from bench.estimate import Estimate, MetricProbe, Span, estimate, human_range
from bench.planner import Plan
from bench.trainer import Trainer
from tests.conftest import TINY_SETS

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _plan(*sets: str, methods=("fm-euler1",), datasets=("moons",), seeds=(0,)) -> Plan:
    return Plan.of(resolve(raw={"methods": list(methods), "datasets": list(datasets),
                                "seeds": list(seeds)}, sets=[*TINY_SETS, *sets]))


@pytest.fixture(autouse=True)
def _short_probes(monkeypatch):
    """Shorter probes (fewer timed steps and calls), the same procedure: fast tests."""
    monkeypatch.setattr(est_mod, "PROBE_SECONDS", 0.1)
    monkeypatch.setattr(est_mod, "METRIC_SECONDS", 0.02)
    monkeypatch.setattr(est_mod, "METRIC_BUDGET", 0.5)
    monkeypatch.setattr(est_mod, "FORWARD_REPEATS", 1)


@pytest.fixture
def steps_seen(monkeypatch):
    """The batch size of every ``Trainer.step`` call."""
    seen: list[int] = []
    real = Trainer.step

    def spy(self, batch, *args, **kwargs):
        seen.append(int(batch.x1.shape[0]))
        return real(self, batch, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", spy)
    return seen


@pytest.fixture
def probed(monkeypatch):
    """Every metric probe: (metric, samples, the scoring's metrics)."""
    seen: list[tuple[str, int, tuple[str, ...]]] = []
    real = MetricProbe.cost

    def spy(self, name, n, cfg):
        seen.append((name, n, cfg.metrics))
        return real(self, name, n, cfg)

    monkeypatch.setattr(MetricProbe, "cost", spy)
    return seen


def _counts(est: Estimate) -> dict[str, int]:
    """``{"run": 2, "floor": 1, ...}`` from the metrics line."""
    (line,) = [ln for ln in est.eval_lines if " · metrics: " in ln]
    return {what: int(k) for k, what in re.findall(r"(\d+) × ([a-z ]+?) \(", line)}


def test_the_probe_trains_several_steps_at_the_configured_batch(steps_seen):
    est = estimate(_plan("train.batch_size=48"), CPU)
    assert steps_seen and set(steps_seen) == {48}  # not a small batch scaled up
    timed = int(re.search(r"(\d+) steps timed", est.lines[0])[1])
    assert 1 <= timed <= est_mod.MAX_TIMED_STEPS
    assert 1 <= len(steps_seen) - timed <= est_mod.WARMUP_STEPS  # the untimed warm-up
    assert est.train_seconds > 0


def test_the_estimate_is_a_range_around_its_centre():
    est = estimate(_plan(methods=("otnfm-online", "fm-euler1")), CPU)
    for span in (est.train, est.sample, est.metric, est.span):
        assert 0 < span.low <= span.mid <= span.high
    assert est.low <= est.total <= est.high
    assert est.total == pytest.approx(est.train_seconds + est.sample_seconds
                                      + est.metric_seconds)
    # the statistic: the median, from the lower quartile to the upper one (or the mean)
    assert Span.of([1.0, 2.0, 3.0, 4.0, 30.0]) == Span(2.0, 3.0, 8.0)
    assert Span.of([2.0]) == Span(2.0, 2.0, 2.0)
    assert Span(1, 2, 3) + 2 * Span(1, 1, 1) == Span(3, 4, 5)
    assert human_range(400, 700) == "7–12 min" and human_range(50, 700) == "50 s – 12 min"
    assert human_range(5, 5.2) == "5 s"


def test_the_cli_prints_the_range(tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    res = CliRunner().invoke(app, ["run", "-m", "fm-euler1", "-d", "moons", "--seeds", "0",
                                   *[a for s in TINY_SETS for a in ("--set", s)],
                                   "--dry-run", "--out", str(tmp_path / "res")])
    assert res.exit_code == 0, res.output
    assert re.search(r"# estimate: about \d+ s on cpu \(range [^;]+; training", res.output)
    assert "#   moons · metrics: " in res.output and "#   moons · sampling: " in res.output


def test_every_scoring_of_the_runs_is_charged(probed):
    """Each run's score, a bank method's bank-gap score, the floor and every learning-curve
    point (bank noise too for a bank method), with the metrics each of them uses."""
    plan = _plan("eval.curve=[0.5,1.0]", methods=("otnfm-online", "fm-euler1"))
    est = estimate(plan, CPU)
    assert est.metric_seconds > 0
    # curve points: 2 per trained method, twice for the bank method, and the floor's one
    assert _counts(est) == {"run": 2, "floor": 1, "bank gap": 1, "curve point": 2 * 2 + 2 + 1}
    names = {"w2", "mmd", "prc", "collapse", "copy"}
    assert {name for name, n, _ in probed if n == 600} == names
    assert {(name, n) for name, n, metrics in probed if metrics == ("w2",)} >= {
        ("w2", 600)}  # the bank gap and the curve (eval.curve_samples=2000 capped at 600)

    off = estimate(_plan("eval.floor=false", "eval.bank_gap=false",
                         methods=("otnfm-online", "fm-euler1")), CPU)
    assert _counts(off) == {"run": 2}


def test_only_the_configured_metrics_are_probed(probed):
    est = estimate(_plan("eval.metrics=[collapse]"), CPU)
    assert {name for name, _, _ in probed} == {"collapse"}
    assert est.metric.high >= est.metric.mid >= est.metric.low >= 0
    assert est.sample_seconds > 0


def test_recorded_runs_and_trained_steps_are_not_charged(steps_seen):
    plan = _plan("eval.curve=[0.25,1.0]", methods=("fm-euler1", "fm-euler4"))
    keys = {s.key for s in plan.runs()}
    assert estimate(plan, CPU, keys).span == Span()  # everything recorded: nothing left
    assert steps_seen == []
    # a finished checkpoint: no training, no curve, but both methods are still scored
    trained = estimate(plan, CPU, steps_done=lambda spec, steps: steps)
    assert steps_seen == [] and trained.train == Span()
    assert _counts(trained) == {"run": 2, "floor": 1, "curve point": 1}  # the floor's point
    # a partial state at step 15 of 30: the curve point at step 8 is behind it
    half = estimate(plan, CPU, steps_done=lambda spec, steps: steps // 2)
    assert half.train_seconds > 0 and "15 of 30 left to train" in half.lines[0]
    assert _counts(half)["curve point"] == 2 + 1  # step 30 for both methods, the floor's one


def _images_plan(*sets: str) -> Plan:
    return _plan("eval.metrics=[classes]", "eval.n_samples=64", "eval.batch_size=64",
                 "eval.timing_batch=16", "eval.floor=false", *sets, datasets=("digits",))


def test_the_domain_classifier_is_charged_only_until_it_is_cached(monkeypatch, tmp_path):
    """The probes never train the classifier nor write to the cache; its training is charged
    while its file is missing, and no longer once ``domain_extractor`` has written it."""
    from bench.datasets.base import load_dataset
    from bench.metrics import extractors

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    trained: list[int] = []

    def fake_training(x, y, classes, **kw):  # an untrained network, at once
        trained.append(1)
        return extractors.DomainCNN(x.shape[1], classes).eval()

    monkeypatch.setattr(extractors, "train_domain_classifier", fake_training)
    plan = _images_plan()
    done = lambda spec, steps: steps  # noqa: E731  (trained: only the evaluation is timed)
    missing = estimate(plan, CPU, steps_done=done)
    assert trained == [] and not (tmp_path / "cache").exists()
    (line,) = [ln for ln in missing.eval_lines if "domain classifier" in ln]
    assert "not cached yet" in line and missing.metric_seconds > 0

    data = load_dataset(plan.cfg, "digits", 0, CPU)
    path, _ = extractors.domain_extractor("digits", data.train, data.train_labels,
                                          data.num_classes)
    assert trained == [1] and path == extractors.domain_path("digits", data.train,
                                                             data.train_labels)
    cached = estimate(plan, CPU, steps_done=done)
    assert not [ln for ln in cached.eval_lines if "domain classifier" in ln]
    assert trained == [1]


def test_a_metric_that_fails_in_the_probe_is_named(monkeypatch):
    from bench.registry import METRICS

    def broken(x, ref, ctx):
        raise ValueError("needs something")

    monkeypatch.setattr(METRICS.entry("collapse"), "obj", broken)
    est = estimate(_plan("eval.metrics=[collapse]"), CPU)
    assert "moons · metric collapse: not estimated (ValueError: needs something)" in \
        est.eval_lines


def _script():
    spec = importlib.util.spec_from_file_location("check_estimate",
                                                  ROOT / "scripts" / "check_estimate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_estimate_writes_estimate_against_measured(tmp_path):
    script = _script()
    table = tmp_path / "check.md"
    rows = script.main(["-m", "fm-euler1", "-d", "moons", "--seeds", "0",
                        *[a for s in TINY_SETS for a in ("--set", s)],
                        "--out", str(tmp_path / "out"), "--table", str(table)])
    text = table.read_text()
    assert text.startswith("# Wall-clock estimate against a real run")
    assert "| total |" in text and "| training |" in text
    total = rows["total"]
    assert total["measured"] > 0 and total["estimate"].low <= total["estimate"].mid
    assert total["ratio"] == pytest.approx(total["measured"] / total["estimate"].mid)
    assert (tmp_path / "out" / "records.jsonl").exists()


def test_the_metric_probe_scales_every_size_together_up_to_the_full_one(monkeypatch, tmp_path):
    """Samples, reference, the data splits and eval.w2_samples shrink and grow together; a
    cheap metric is timed at its full size (exactly, no range), in a temporary cache."""
    import os

    from bench.registry import METRICS

    sizes: list[tuple[int, int, int, int, str]] = []

    def recorder(x, ref, ctx):
        sizes.append((x.shape[0], ref.shape[0], ctx.data.train.shape[0], ctx.cfg.w2_samples,
                      os.environ["BENCH_CACHE"]))
        return {}

    monkeypatch.setattr(METRICS.entry("collapse"), "obj", recorder)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "real-cache"))
    plan = _plan("eval.metrics=[collapse]", "eval.floor=false", "eval.n_samples=2400",
                 "data.n_eval=1200", "data.n_train=4800", "eval.w2_samples=600")
    est = estimate(plan, CPU)
    assert os.environ["BENCH_CACHE"] == str(tmp_path / "real-cache")
    assert not (tmp_path / "real-cache").exists()
    assert all(s[4] != str(tmp_path / "real-cache") for s in sizes)  # a temporary one
    first, last = sizes[0], sizes[-1]
    assert first[0] == est_mod.METRIC_POINTS  # the larger side starts at METRIC_POINTS
    assert last[:4] == (2400, 1200, 4800, 600)  # cheap: timed at the full size
    for n, m, train, w2, _ in sizes:  # every size by the same factor (at least 32 rows)
        assert m == max(32, round(n / 2)) or m == 1200
        assert train == max(32, 2 * n) or train == 4800
        assert w2 == max(32, round(n / 4)) or w2 == 600
    assert "moons · a run's metrics: collapse " in "\n".join(est.eval_lines)


def test_the_growth_exponents():
    """A known exponent is lowered to the measured growth (not below linear) and keeps its
    high end; an unknown one is the measured growth +- the margin, or 1 to 3 around 2."""
    from bench.estimate import _exponents, _growth

    assert _exponents((2.0, 2.0, 2.0), None) == (2.0, 2.0, 2.0)
    assert _exponents((2.0, 2.0, 2.0), 0.2) == (1.0, 1.0, 2.0)
    assert _exponents((2.0, 2.5, 3.0), 2.2) == (2.0, 2.2, 3.0)
    assert _exponents(None, None) == (1.0, 2.0, 3.0)
    assert _exponents(None, 1.5) == (1.25, 1.5, 1.75)
    # the time beyond the smallest size's (0.1 s), between the last two sizes: 0.4 -> 1.6 s
    assert _growth([(0.1, 0.1, 0), (0.2, 0.5, 0), (0.4, 1.7, 0)]) == pytest.approx(2.0)
    assert _growth([(0.1, 0.1, 0), (0.2, 0.5, 0)]) is None  # two sizes: no growth yet
