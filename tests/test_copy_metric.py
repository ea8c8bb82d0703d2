"""The memorisation metric (bench/metrics/copying.py): it reads 1 / 0 on held-out data, 0 / 1
on training items, catches near copies, and runs in every default evaluation."""

import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import DataConfig, EvalConfig
from bench.metrics.base import MetricContext
from bench.metrics.copying import nearest_distances
from bench.registry import DATASETS, METRICS
from bench.results import read_records
from tests.conftest import tiny_args


def _ctx(data):
    return MetricContext(EvalConfig(), torch.Generator().manual_seed(0), data.name, data)


def test_nearest_distances_are_exact():
    train = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    x = torch.tensor([[0.0, 1.0], [3.0, 4.0], [6.0, 8.0]])
    torch.testing.assert_close(nearest_distances(x, train),
                               torch.tensor([1.0, 0.0, 5.0], dtype=torch.float64))


def test_held_out_data_reads_one_and_training_items_read_pure_copying():
    data = DATASETS.get("moons")(DataConfig(name="moons", n_train=2000, n_eval=500), 0,
                                 torch.device("cpu"))
    copy = METRICS.get("copy")
    held = copy(data.eval, data.eval, _ctx(data))
    assert held["copy_ratio"] == 1.0 and held["copy_share"] == 0.0
    train = copy(data.train[:500], data.eval, _ctx(data))
    assert train["copy_ratio"] == 0.0 and train["copy_share"] == 1.0
    # a near-copy generator: training items moved by far less than the data's spacing
    g = torch.Generator().manual_seed(1)
    near = data.train[:500] + 1e-6 * torch.randn(500, 2, generator=g)
    assert copy(near, data.eval, _ctx(data))["copy_share"] > 0.9
    # samples off the data (a shifted cloud) are far from every training item: ratio >> 1
    far = data.eval + 5.0
    out = copy(far, data.eval, _ctx(data))
    assert out["copy_ratio"] > 10 and out["copy_share"] == 0.0


def test_every_default_run_records_the_copy_metric(tmp_path):
    out = tmp_path / "res"
    res = CliRunner().invoke(app, ["run", "-m", "naive-map,fm-euler10", "--out", str(out),
                                   *tiny_args()])
    assert res.exit_code == 0, res.output
    recs = read_records(out / "records.jsonl").records
    assert {r.method for r in recs} >= {"naive-map", "fm-euler10", "data"}
    for r in recs:
        assert 0.0 <= r.metrics["copy_share"] <= 1.0 and r.metrics["copy_ratio"] >= 0.0
        assert r.metric_info["copy_n_train"] > 0


def test_an_image_floor_of_training_items_is_not_scored_for_copying(tmp_path):
    """The image floor is the first training images: it would read as pure copying (0 / 1),
    so its record leaves the copy outputs out, says so, and the report shows – and why."""
    from tests.conftest import IMAGE_SETS

    out, md = tmp_path / "res", tmp_path / "r.md"
    sets = [a for s in (*IMAGE_SETS, "eval.metrics=[copy,collapse]") for a in ("--set", s)]
    res = CliRunner().invoke(app, ["run", "-m", "naive-map", "-d", "digits", "--out", str(out),
                                   "--no-estimate", *sets])
    assert res.exit_code == 0, res.output
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert "copy_ratio" not in recs["data"].metrics and "var_ratio" in recs["data"].metrics
    assert recs["data"].metric_info["floor_not_scored"] == ["copy_ratio", "copy_share"]
    assert recs["naive-map"].metrics["copy_ratio"] > 0
    res = CliRunner().invoke(app, ["report", str(out), "--out", str(md), "--no-figures"])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    floor_row = next(ln for ln in text.splitlines() if ln.startswith("| data (floor)"))
    assert floor_row.count("| – |") >= 2
    assert "The floor has no `copy_ratio`, `copy_share`: it is made of training items" in text
