"""The reference-feature cache of the image metrics (``$BENCH_CACHE/fidelity``).

torch-fidelity reads its own feature/statistics cache with ``torch.load(weights_only=False)``:
a pickle planted there under the expected name would run on the next image run. The harness
owns that cache instead (plain ``.npz`` arrays, ``allow_pickle=False``, keys checked), so these
tests plant payloads under every name either cache could use and check that nothing runs, that
the cache is still used, that its key follows the extractor's weights, that a damaged file is
recomputed and that the numbers are torch-fidelity's own.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config import DataConfig, resolve
from bench.metrics import images
from bench.metrics.base import MetricContext
from bench.metrics.extractors import DOMAIN_NAME
from bench.registry import DATASETS, METRICS

CPU = torch.device("cpu")
N_GEN = 200  # != the 360 reference images, so that a spy can tell the two inputs apart


class _Payload:
    """Unpickling this creates ``marker`` (what a hostile cache file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.fixture(scope="module")
def digits():
    """The digits data with its domain extractor trained once, in the session's cache (the
    path is memoised on the data, so tests can move ``BENCH_CACHE`` without retraining)."""
    data = DATASETS.get("digits")(DataConfig(name="digits"), 0, CPU)
    images._domain(_ctx(data))
    return data


def _ctx(data) -> MetricContext:
    cfg = resolve(overrides={"eval": {"kid_subset": 100}})
    return MetricContext(cfg.eval, torch.Generator().manual_seed(0), data.name, data, CPU, {})


def _fd(data) -> dict[str, float]:
    return METRICS.get("fd")(data.floor[:N_GEN], data.eval, _ctx(data))


def _cache(tmp: Path, monkeypatch, name: str) -> Path:
    root = tmp / name
    monkeypatch.setenv("BENCH_CACHE", str(root))
    return root / "fidelity"


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*")) if p.is_file()}


def _plant(path: Path, marker: Path, how: str) -> None:
    payload = _Payload(marker)
    if how == "object-array":  # a real .npz whose one array is a pickled object
        with open(path, "wb") as f:
            np.savez(f, features=np.array([payload], dtype=object))
    else:  # a bare pickle, which torch.load and np.load(allow_pickle=True) both unpickle
        torch.save(payload, path)


def _torch_fidelity_names(data) -> list[str]:
    """The names torch-fidelity 0.4 gave the reference entries when the harness let it cache
    (``input2_cache_name`` = dataset-split-count-extractor id)."""
    _, info = images._domain(_ctx(data))
    stem = f"{data.name.replace('@', '-')}-eval-{data.eval.shape[0]}-{info['id']}-{DOMAIN_NAME}"
    return [f"{stem}-features-feat.pt", f"{stem}-stat-fid-feat.pt"]


def test_planted_pickles_never_run(digits, tmp_path, monkeypatch):
    # the names this harness's cache writes, found by running once on an empty cache
    clean = _fd_in(digits, _cache(tmp_path, monkeypatch, "probe"))
    written = list(_files(tmp_path / "probe" / "fidelity"))
    assert written, "the reference features were not cached at all"
    names = set(written) | set(_torch_fidelity_names(digits))
    for name in list(names):
        stem = name[:-len(Path(name).suffix)] if Path(name).suffix else name
        names |= {stem + ".pt", stem + ".npz"}

    marker = tmp_path / "MARKER"
    folder = _cache(tmp_path, monkeypatch, "planted")
    folder.mkdir(parents=True)
    for i, name in enumerate(sorted(names)):
        _plant(folder / name, marker, "object-array" if name.endswith(".npz") and i % 2 else
               "pickle")
    # the control: the planted files are live, loading them as torch-fidelity did runs them
    probe = tmp_path / "PROBE"
    _plant(tmp_path / "probe.pt", probe, "pickle")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe.exists()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first, second = _fd(digits), _fd(digits)
    finally:
        assert not marker.exists(), "a planted pickle was unpickled"
    assert all(np.isfinite(v) for v in first.values())
    assert first == clean and second == clean
    for name in written:  # the entry the harness uses was recomputed over the planted file
        with np.load(folder / name, allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)


def _fd_in(data, folder: Path) -> dict[str, float]:
    assert not folder.exists()
    return _fd(data)


def _spy_extraction(monkeypatch) -> list[int]:
    """The sizes of the inputs torch-fidelity extracts features from, call by call."""
    import torch_fidelity.utils as tfu

    sizes: list[int] = []
    real = tfu.get_featuresdict_from_dataset

    def spy(input, *args, **kwargs):
        sizes.append(len(input))
        return real(input, *args, **kwargs)

    monkeypatch.setattr(tfu, "get_featuresdict_from_dataset", spy)
    return sizes


def test_the_cache_is_used(digits, tmp_path, monkeypatch):
    folder = _cache(tmp_path, monkeypatch, "cache")
    sizes = _spy_extraction(monkeypatch)
    first = _fd(digits)
    assert sorted(sizes) == [N_GEN, 360]
    files = _files(folder)
    assert len(files) == 1 and next(iter(files)).endswith(".npz")
    sizes.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid cache file is read without complaint
        second = _fd(digits)
    assert sizes == [N_GEN]  # only the generated images: the reference came from the cache
    assert second == first
    assert _files(folder) == files  # read, not rewritten
    with np.load(folder / next(iter(files)), allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_the_cache_key_includes_the_weights(digits, tmp_path, monkeypatch):
    """Same extractor id, different weights file: a different cache entry (and numbers)."""
    weights, info = images._domain(_ctx(digits))
    blob = torch.load(weights, weights_only=True)
    state = dict(blob["state"])
    state["head.bias"] = state["head.bias"] + 1.0  # other bytes, same features: still a new key
    other = tmp_path / "other.pt"
    torch.save({**blob, "state": state}, other)
    state = dict(blob["state"])
    state["body.11.weight"] = state["body.11.weight"] * 1.5  # the 128 -> 128 feature layer
    third = tmp_path / "third.pt"
    torch.save({**blob, "state": state}, third)

    folder = _cache(tmp_path, monkeypatch, "cache")
    x, ref, ctx = digits.floor[:N_GEN], digits.eval, _ctx(digits)
    a = images.fidelity(x, ref, ctx, DOMAIN_NAME, weights, info["id"])
    names = [set(_files(folder))]
    b = images.fidelity(x, ref, ctx, DOMAIN_NAME, str(other), info["id"])
    names.append(set(_files(folder)) - set().union(*names))
    c = images.fidelity(x, ref, ctx, DOMAIN_NAME, str(third), info["id"])
    names.append(set(_files(folder)) - set().union(*names))
    assert all(len(n) == 1 for n in names), names  # one new entry per weights file
    assert b == a  # the head's bias does not touch the features
    assert c["fd"] != a["fd"]  # the features' own layer does, and was not served from a's entry
    # and each entry is found again by its own weights
    again = images.fidelity(x, ref, ctx, DOMAIN_NAME, str(third), info["id"])
    assert again == c and len(_files(folder)) == 3


def _corrupt(path: Path, how: str) -> None:
    if how == "random-bytes":
        path.write_bytes(os.urandom(4096))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "object-array":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        key = next(k for k in arrays if arrays[k].ndim == 2)
        arrays[key] = arrays[key].astype(object)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    elif how in ("wrong-shape", "float64", "missing-key", "extra-key", "other-key"):
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        key = next(k for k in arrays if arrays[k].ndim == 2 and arrays[k].shape[0] == 360)
        if how == "wrong-shape":
            arrays[key] = arrays[key][:-1]
        elif how == "float64":
            arrays[key] = arrays[key].astype(np.float64)
        elif how == "missing-key":
            del arrays[key]
        elif how == "extra-key":
            arrays["extra"] = np.zeros(3)
        else:  # the stored keys say another dataset
            meta = next(k for k in arrays if arrays[k].dtype.kind == "U")
            arrays[meta] = np.array(str(arrays[meta]).replace("digits", "digitz"))
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["random-bytes", "empty", "object-array", "wrong-shape",
                                 "float64", "missing-key", "extra-key", "other-key"])
def test_a_damaged_cache_file_is_recomputed(digits, tmp_path, monkeypatch, how):
    folder = _cache(tmp_path, monkeypatch, "cache")
    want = _fd(digits)
    (name,) = _files(folder)
    _corrupt(folder / name, how)
    sizes = _spy_extraction(monkeypatch)
    with pytest.warns(RuntimeWarning, match="ignored"):
        got = _fd(digits)
    assert got == want
    assert sorted(sizes) == [N_GEN, 360]  # the reference was extracted again
    assert list(_files(folder)) == [name]  # ...and its entry rewritten, now valid
    sizes.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _fd(digits) == want
    assert sizes == [N_GEN]


def test_numbers_are_torch_fidelitys_own(digits, tmp_path, monkeypatch):
    """FD / KID / precision / recall, cold and warm cache, equal what ``calculate_metrics``
    gives on the same images with its cache off (the call the harness used to make)."""
    import torch_fidelity

    weights, info = images._domain(_ctx(digits))
    images.register_domain()
    x, ref, ctx = digits.floor[:N_GEN], digits.eval, _ctx(digits)
    n, m = x.shape[0], ref.shape[0]
    res = torch_fidelity.calculate_metrics(
        input1=images.Uint8Images(x), input2=images.Uint8Images(ref), fid=True, kid=True,
        prc=True, feature_extractor=DOMAIN_NAME, feature_extractor_weights_path=weights,
        kid_subset_size=min(ctx.cfg.kid_subset, n, m), kid_subsets=ctx.cfg.kid_subsets,
        prc_neighborhood=ctx.cfg.pr_k, cuda=False, batch_size=min(500, max(n, m)),
        cache=False, save_cpu_ram=True, verbose=False)
    want = {"fd": float(res["frechet_inception_distance"]),
            "kid": float(res["kernel_inception_distance_mean"]),
            "precision": float(res["precision"]), "recall": float(res["recall"])}
    _cache(tmp_path, monkeypatch, "cache")
    cold = images.fidelity(x, ref, ctx, DOMAIN_NAME, weights, info["id"])
    warm = images.fidelity(x, ref, ctx, DOMAIN_NAME, weights, info["id"])
    assert cold == want and warm == want
