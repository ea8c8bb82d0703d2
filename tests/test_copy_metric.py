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
