"""Evaluation: the metric vocabulary shared by the console and the report, scoring."""

import torch

from bench.config import EvalConfig
from bench.evaluate import draw_samples, metric_names, metric_vocabulary, score
from bench.models import build_method
from bench.registry import DATASETS, METRICS


def test_headline_and_key_metrics_come_from_the_registry():
    vocab = metric_vocabulary()
    assert vocab.headline_of(["mmd", "w2", "var_ratio"]) == "w2"
    assert vocab.headline_of(["fd_domain", "fid", "class_entropy"]) == "fid"
    assert vocab.headline_of(["fd_domain", "kid_domain"]) == "fd_domain"
    assert vocab.headline_of(["var_ratio"]) is None
    assert [m for m in vocab.key if m in {"w2", "mmd", "var_ratio", "precision"}] == \
        ["w2", "mmd", "var_ratio"]
    assert vocab.directions["w2"] == "min" and vocab.directions["var_ratio"] == "one"


def test_a_plugin_metric_is_a_key_metric_by_default():
    @METRICS.register("test-spread", kinds=("points",), outputs={"spread": "max"})
    def spread(x, ref, ctx):
        return {"spread": float(x.std())}

    try:
        assert metric_vocabulary().key[-1] == "spread"
        assert "test-spread" in metric_names("points", ())
    finally:
        METRICS.unregister("test-spread")


def test_scoring_held_out_data_beats_collapsed_samples(tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    ecfg = EvalConfig(n_samples=500, w2_samples=300)
    good, info = score(data.floor[:500], data, ecfg, 0, cpu)
    bad, _ = score(data.eval.mean(0, keepdim=True).expand(500, -1), data, ecfg, 0, cpu)
    assert info["n_samples"] == 500 and info["w2_samples"] == 300
    assert good["w2"] < 0.5 < bad["w2"] and bad["var_ratio"] < 1e-6 < good["var_ratio"]


def test_draw_samples_uses_the_seed_eval_noise(tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    method = build_method("fm-euler4", data, cfg, cpu, 0).eval()
    a = draw_samples(method, data, cfg.eval, 3, cpu)
    b = draw_samples(method, data, cfg.eval, 3, cpu)
    c = draw_samples(method, data, cfg.eval, 4, cpu)
    assert a.nfe == 4 and a.x.shape == (cfg.eval.n_samples, 2)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert a.timing.batch == cfg.eval.timing_batch and a.timing.ms_per_1k > 0
