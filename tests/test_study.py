"""Issue-4 pieces: intervals, sweeps, dataset@source, block OT and coupling diagnostics."""

import math

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import ConfigError, expand_sweep
from bench.couplings import Independent, MinibatchOT, OnlineOT, cost_matrix, ot_permutation
from bench.registry import DATASETS
from bench.report.stats import paired, summarize
from bench.results import read_records
from tests.test_cli import sets

runner = CliRunner()


def test_t_interval_and_paired_difference():
    s = summarize([1.0, 2.0, 3.0])
    assert s.ci95 == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert s.fmt(ci=True) == "2 ± 1 [-0.484, 4.48]"
    assert summarize([5.0]).fmt(ci=True) == "5 (1 seed)"
    d = paired({0: 1.0, 1: 2.0, 2: 3.0, 7: 9.0}, {0: 0.5, 1: 1.5, 2: 2.4})
    assert d.n == 3 and d.mean == pytest.approx(0.5333333) and d.lo > 0


def test_expand_sweep(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\ntrain: {steps: 3}\nsweep:\n  method: [nfm-random]\n  seed: [0, 1]\n"
                 "  coupling.batch_size: [32, 64]\n  path.kind: [linear, cosine]\n")
    points = expand_sweep(f)
    assert len(points) == 4
    assert {tuple(a.values()) for a, _ in points} == {(32, "linear"), (32, "cosine"),
                                                      (64, "linear"), (64, "cosine")}
    assert all(c.methods == ("nfm-random",) and c.seeds == (0, 1) for _, c in points)
    f.write_text("sweep:\n  path.kind: [wiggly]\n")
    with pytest.raises(ConfigError, match="unknown path 'wiggly'"):
        expand_sweep(f)


def test_sweep_cli_then_rerun_trains_nothing(tmp_path):
    f = tmp_path / "ab.yaml"
    f.write_text("name: ab\nsweep:\n  method: [otnfm-minibatch]\n  seed: [0, 1]\n"
                 "  coupling.batch_size: [32, 128]\n")
    out = tmp_path / "res"
    res = runner.invoke(app, ["sweep", "--config", str(f), "--out", str(out), *sets()])
    assert res.exit_code == 0, res.output
    recs = [r for r in read_records(out / "records.jsonl").records if r.method != "data"]
    assert sorted((r.sweep["coupling.batch_size"], r.seed) for r in recs) == [
        (32, 0), (32, 1), (128, 0), (128, 1)]
    assert all(r.coupling_diagnostics["target_var_ratio"] >= 0 for r in recs)
    res = runner.invoke(app, ["sweep", "--config", str(f), "--out", str(out), *sets()])
    assert res.exit_code == 0 and "nothing was trained" in res.output
    assert len(read_records(out / "records.jsonl").records) == len(recs) + 2
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    text = (out / "report.md").read_text()
    assert "otnfm-minibatch · coupling.batch_size=32" in text
    assert "moons_sweep_coupling_batch_size.png" in text and "Coupling diagnostics" in text


def test_dataset_with_its_own_source(tmp_path):
    out = tmp_path / "res"
    res = runner.invoke(app, ["run", "-m", "naive-map", "-d", "moons@8gmm", "--out", str(out),
                              *sets()])
    assert res.exit_code == 0, res.output
    rec = [r for r in read_records(out / "records.jsonl").records if r.method == "naive-map"][0]
    assert rec.dataset == "moons@8gmm" and rec.data_info["source"] == "8gmm"
    assert rec.config["data"]["source"] == "8gmm"
    res = runner.invoke(app, ["run", "-d", "moons@uniform", "--out", str(out)])
    assert res.exit_code == 2 and "unknown source 'uniform'" in res.output


def test_block_assignment_is_a_permutation_within_blocks():
    x1, x0 = torch.randn(96, 2), torch.randn(96, 2)
    perm, _ = ot_permutation(x1, x0, "pot", block=32)
    assert sorted(perm.tolist()) == list(range(96))
    assert all(i // 32 == int(p) // 32 for i, p in enumerate(perm))
    full, _ = ot_permutation(x1, x0, "pot")
    c = cost_matrix(x1, x0)
    assert c[torch.arange(96), perm].sum() >= c[torch.arange(96), full].sum() - 1e-4


def _consistency(coupling, data, n=32, draws=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    probes = torch.randn(n, 2, generator=gen)
    t = torch.stack([coupling.probe_targets(probes, data, gen) for _ in range(draws)])
    return float(t.var(0).sum(-1).mean() / data.var(0).sum())


def test_consistency_diagnostic_orders_the_couplings(cpu):
    from bench.config import DataConfig

    data = DATASETS.get("moons")(DataConfig(n_train=4000, n_eval=10), 0, cpu)
    src = data.source
    indep = _consistency(Independent(src), data.train)
    small = MinibatchOT(src, "pot", ot_batch=32)
    small.data_batch_size(32)
    big = MinibatchOT(src, "pot", ot_batch=512)
    big.data_batch_size(256)
    v_small, v_big = _consistency(small, data.train), _consistency(big, data.train)
    assert 0.8 < indep < 1.2
    assert v_big < v_small < indep


def test_online_probe_targets_follow_the_noise(cpu):
    data = torch.randn(200, 2) + 2
    src = lambda n, g: torch.randn(n, 2, generator=g)  # noqa: E731
    c = OnlineOT(src, n_train=200)
    gen = torch.Generator().manual_seed(0)
    c.init_bank(gen)
    initial = c.bank.clone()
    for _ in range(20):
        idx = torch.randperm(200, generator=gen)[:50]
        c.pair(data[idx], idx, gen)
    pos = torch.empty_like(c.ids)
    pos[c.ids] = torch.arange(200)
    torch.testing.assert_close(c.bank[pos], initial)  # noise k now sits at slot pos[k]
    torch.testing.assert_close(c.probe_targets(torch.zeros(10, 2), data, gen), data[pos[:10]])
