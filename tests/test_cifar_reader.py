"""CIFAR-10's batch files are pickles: the loader reads them with a restricted unpickler that
builds only what the real archive holds (dicts, lists, strings, ints and uint8 numpy arrays),
so a planted file cannot run code, not even with ``data.checksum=false`` or under
``bench run --dry-run`` (whose estimate loads the data)."""

from __future__ import annotations

import codecs
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import ConfigError, DataConfig
from bench.datasets.images import DatasetUnavailable
from bench.registry import DATASETS
from tests.imagedata import dump_python2, write_cifar

CPU = torch.device("cpu")
BATCHES = "cifar-10-batches-py"


def load(root, **kw):
    return DATASETS.get("cifar10")(DataConfig(name="cifar10", root=str(root), **kw), 0, CPU)


def torchvision_reading(root):
    """torchvision's CIFAR10 on ``root`` (md5 off), as the loader's uint8 CHW arrays."""
    from torchvision.datasets import CIFAR10

    class Unverified(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    tr, te = Unverified(str(root), train=True), Unverified(str(root), train=False)
    return (tr.data.transpose(0, 3, 1, 2), np.asarray(tr.targets),
            te.data.transpose(0, 3, 1, 2), np.asarray(te.targets))


def scaled(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a)).float().div_(127.5).sub_(1.0)


def assert_same_as(d, reference):
    tr, tr_y, te, te_y = reference
    assert d.train.dtype == torch.float32 and d.train.shape == (len(tr), 3, 32, 32)
    assert torch.equal(d.train, scaled(tr)) and torch.equal(d.eval, scaled(te))
    assert torch.equal(d.floor, scaled(tr[:len(te)]))
    assert d.train_labels.tolist() == tr_y.tolist() and d.eval_labels.tolist() == te_y.tolist()
    assert d.train_labels.dtype == torch.long


class Touch:
    """Unpickling this creates ``path``: what a planted batch file could do."""

    def __init__(self, path, how: str):
        self.path, self.how = str(path), how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch '{self.path}'",)
        return open, (self.path, "w")


# -- a planted pickle runs nothing ------------------------------------------------------------

@pytest.mark.parametrize("how", ["system", "open"])
@pytest.mark.parametrize("name", ["data_batch_1", "test_batch", "batches.meta"])
def test_a_planted_pickle_is_refused_and_runs_nothing(tmp_path, name, how):
    write_cifar(tmp_path, n_per_batch=10, n_test=10)
    marker = tmp_path / "pwned"
    (tmp_path / BATCHES / name).write_bytes(pickle.dumps(Touch(marker, how), protocol=2))
    with pytest.raises(DatasetUnavailable) as err:
        load(tmp_path, checksum=False)
    assert not marker.exists()
    msg = str(err.value)
    assert "refused" in msg and name in msg and "not a CIFAR-10 batch" in msg
    assert ("system" if how == "system" else "open") in msg
    assert isinstance(err.value, ConfigError)


def test_a_payload_nested_in_a_batch_dict_is_refused(tmp_path):
    write_cifar(tmp_path, n_per_batch=10, n_test=10)
    marker = tmp_path / "pwned"
    dump_python2({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10,
                  b"batch_label": Touch(marker, "open")}, tmp_path / BATCHES / "data_batch_4")
    with pytest.raises(DatasetUnavailable, match="data_batch_4"):
        load(tmp_path, checksum=False)
    assert not marker.exists()


def test_dry_run_does_not_run_a_planted_pickle(tmp_path):
    """``bench run --dry-run`` prints an estimate, which loads the data."""
    write_cifar(tmp_path / "data", n_per_batch=10, n_test=10)
    marker = tmp_path / "pwned"
    (tmp_path / "data" / BATCHES / "data_batch_1").write_bytes(
        pickle.dumps(Touch(marker, "system"), protocol=2))
    res = CliRunner().invoke(app, ["run", "-d", "cifar10", "--data-root", str(tmp_path / "data"),
                                   "--set", "data.checksum=false", "--dry-run",
                                   "--out", str(tmp_path / "res")])
    assert not marker.exists(), res.output
    assert "refused" in res.output, res.output


def test_codecs_encode_is_allowed_only_as_latin1(tmp_path):
    """Python 3's protocol-2 pickles of bytes call ``_codecs.encode(text, "latin1")``; any
    other codec is refused."""
    write_cifar(tmp_path, n_per_batch=10, n_test=10)

    class Rot13:
        def __reduce__(self):
            return codecs.encode, ("data", "rot13")

    (tmp_path / BATCHES / "data_batch_2").write_bytes(
        pickle.dumps({Rot13(): 1}, protocol=2))
    with pytest.raises(DatasetUnavailable, match="data_batch_2.*rot13"):
        load(tmp_path, checksum=False)


# -- the real format, bytes or str keys, read exactly as torchvision reads it -----------------

@pytest.mark.parametrize("style,protocol", [("python2", 2), ("bytes", 2), ("bytes", 3),
                                            ("bytes", 4), ("str", 2), ("str", 4)])
def test_bytes_and_str_keys_read_as_torchvision_reads_them(tmp_path, style, protocol):
    write_cifar(tmp_path / "ref", n_per_batch=12, n_test=20, seed=3, style="str", protocol=4)
    reference = torchvision_reading(tmp_path / "ref")
    assert reference[0].shape == (60, 3, 32, 32) and reference[0].dtype == np.uint8
    write_cifar(tmp_path / "x", n_per_batch=12, n_test=20, seed=3, style=style,
                protocol=protocol)
    d = load(tmp_path / "x", checksum=False)
    assert_same_as(d, reference)
    assert d.num_classes == 10 and "md5 check off" in d.info["description"]
    if style != "bytes":  # torchvision itself reads str keys only
        mine = torchvision_reading(tmp_path / "x")
        assert all(np.array_equal(a, b) for a, b in zip(mine, reference, strict=True))


def test_the_python2_format_has_bytes_keys_and_numpys_old_global(tmp_path):
    """The generator writes what the real archive holds: Python 2 byte strings (bytes keys
    under encoding="bytes") and ``numpy.core.multiarray._reconstruct``."""
    write_cifar(tmp_path, n_per_batch=5, n_test=5)
    raw = (tmp_path / BATCHES / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02" and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"_codecs" not in raw
    with open(tmp_path / BATCHES / "data_batch_1", "rb") as f:  # our own file: trusted
        entry = pickle.load(f, encoding="bytes")
    assert set(entry) == {b"data", b"labels", b"batch_label", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (5, 3072)


def test_caps_take_the_first_images_in_batch_order(tmp_path):
    write_cifar(tmp_path, n_per_batch=12, n_test=20, seed=1)
    tr, tr_y, te, te_y = torchvision_reading(tmp_path)
    d = load(tmp_path, checksum=False, n_train=30, n_eval=7)
    assert torch.equal(d.train, scaled(tr[:30])) and torch.equal(d.eval, scaled(te[:7]))
    assert d.train_labels.tolist() == tr_y[:30].tolist()


@pytest.mark.parametrize("as_", ["ndarray", "numpy scalars"])
def test_numpy_integer_labels_are_ints(tmp_path, as_):
    """Labels pickled as an int64 array, or as a list of numpy scalars (numpy's ``scalar``
    global), read as the same ints."""
    write_cifar(tmp_path, n_per_batch=10, n_test=10)
    before = load(tmp_path, checksum=False)
    y = np.arange(10) % 10
    dump_python2({b"data": np.zeros((10, 3072), np.uint8), b"batch_label": b"x",
                  b"labels": y if as_ == "ndarray" else [np.int64(v) for v in y]},
                 tmp_path / BATCHES / "data_batch_1")
    d = load(tmp_path, checksum=False)
    assert d.train_labels[:10].tolist() == y.tolist()
    assert torch.equal(d.train_labels[10:], before.train_labels[10:])
    assert (d.train[:10] == -1).all()


# -- malformed batches: a clear error naming the file ---------------------------------------

@pytest.mark.parametrize("key", [b"data", b"labels"])
def test_a_batch_without_data_or_labels_names_the_file_and_its_keys(tmp_path, key):
    write_cifar(tmp_path, n_per_batch=10, n_test=10)
    entry = {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10,
             b"batch_label": b"x"}
    del entry[key]
    dump_python2(entry, tmp_path / BATCHES / "data_batch_3")
    with pytest.raises(DatasetUnavailable) as err:
        load(tmp_path, checksum=False)
    msg = str(err.value)
    assert "data_batch_3" in msg and key.decode() in msg and "batch_label" in msg


def test_a_batch_that_is_not_a_dict_names_the_file(tmp_path):
    write_cifar(tmp_path, n_per_batch=10, n_test=10)
    dump_python2([1, 2, 3], tmp_path / BATCHES / "test_batch")
    with pytest.raises(DatasetUnavailable, match="test_batch.*list"):
        load(tmp_path, checksum=False)


def test_a_truncated_batch_names_the_file(tmp_path):
    write_cifar(tmp_path, n_per_batch=10, n_test=10)
    path = tmp_path / BATCHES / "data_batch_5"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetUnavailable, match="data_batch_5"):
        load(tmp_path, checksum=False)


BAD = {
    "float data": ({b"data": np.zeros((10, 3072), np.float32)}, "uint8"),
    "int64 data": ({b"data": np.zeros((10, 3072), np.int64)}, "uint8"),
    "object data": ({b"data": np.array([[0] * 3072] * 10, dtype=object)}, "uint8"),
    "list data": ({b"data": [[0] * 3072] * 10}, "ndarray"),
    "image-shaped data": ({b"data": np.zeros((10, 3, 32, 32), np.uint8)}, "3072"),
    "short rows": ({b"data": np.zeros((10, 1024), np.uint8)}, "3072"),
    "1-d data": ({b"data": np.zeros(30720, np.uint8)}, "3072"),
    "label out of range": ({b"labels": [0] * 9 + [10]}, "0..9"),
    "negative label": ({b"labels": [-1] + [0] * 9}, "0..9"),
    "float labels": ({b"labels": [0.0] * 10}, "int"),
    "bool labels": ({b"labels": [True] * 10}, "int"),
    "too few labels": ({b"labels": [0] * 9}, "9 labels"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_batch_of_the_wrong_dtype_or_shape_is_refused(tmp_path, case):
    write_cifar(tmp_path, n_per_batch=10, n_test=10)
    change, hint = BAD[case]
    entry = {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10,
             b"batch_label": b"x", **change}
    dump_python2(entry, tmp_path / BATCHES / "data_batch_2")
    with pytest.raises(DatasetUnavailable) as err:
        load(tmp_path, checksum=False)
    assert "data_batch_2" in str(err.value) and hint in str(err.value), str(err.value)


def test_meta_without_label_names_is_refused(tmp_path):
    write_cifar(tmp_path, n_per_batch=10, n_test=10)
    dump_python2({b"num_vis": 3072}, tmp_path / BATCHES / "batches.meta")
    with pytest.raises(DatasetUnavailable, match="batches.meta.*label_names"):
        load(tmp_path, checksum=False)


# -- the md5 check ---------------------------------------------------------------------------

def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def generated_md5s(tmp_path, monkeypatch):
    """A generated folder, and torchvision's md5 table pointed at its files."""
    from torchvision.datasets import CIFAR10

    write_cifar(tmp_path, n_per_batch=10, n_test=10)
    folder = tmp_path / BATCHES
    monkeypatch.setattr(CIFAR10, "train_list",
                        [[n, _md5(folder / n)] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list",
                        [[n, _md5(folder / n)] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta,
                                          "md5": _md5(folder / "batches.meta")})
    return tmp_path


def test_checksum_on_accepts_matching_files_and_refuses_a_changed_one(generated_md5s):
    root = generated_md5s
    d = load(root)
    assert d.train.shape == (50, 3, 32, 32) and "md5 check off" not in d.info["description"]
    marker = root / "pwned"
    (root / BATCHES / "data_batch_2").write_bytes(pickle.dumps(Touch(marker, "open"), 2))
    with pytest.raises(DatasetUnavailable, match="cifar-10-python.tar.gz") as err:
        load(root)
    assert "data_batch_2" in str(err.value) and "--data-root" in str(err.value)
    assert not marker.exists()


def test_a_missing_batch_is_named_with_the_instructions(tmp_path):
    write_cifar(tmp_path, n_per_batch=10, n_test=10)
    (tmp_path / BATCHES / "data_batch_4").unlink()
    for checksum in (False, True):
        with pytest.raises(DatasetUnavailable, match="cifar-10-python.tar.gz") as err:
            load(tmp_path, checksum=checksum)
        assert "data_batch_4" in str(err.value) and "data.download=true" in str(err.value)
