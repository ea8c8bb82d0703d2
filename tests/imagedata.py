"""Tiny dataset folders in the real on-disk formats (for the real loaders)."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np


def _blobs(n: int, size: int, channels: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """Class c = a bright square at one of 10 positions (learnable, distinct classes)."""
    y = np.arange(n) % 10
    x = rng.integers(0, 40, (n, channels, size, size)).astype(np.uint8)
    s = size // 4
    for i, c in enumerate(y):
        r, q = divmod(int(c), 4)
        x[i, :, r * s:(r + 1) * s, q * s:(q + 1) * s] = 230
    return x, y.astype(np.int64)


class _Python2Pickler(pickle._Pickler):
    """Pickles like Python 2's cPickle wrote the real CIFAR-10 archive: byte strings as
    Python 2 ``str`` (SHORT_BINSTRING / BINSTRING opcodes), which load as ``str`` under
    ``encoding="latin1"`` (torchvision's) and as ``bytes`` under ``encoding="bytes"``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def dump_python2(obj, path: Path) -> None:
    """``obj`` pickled at protocol 2 as Python 2 with numpy 1.x did: byte strings as Python 2
    ``str`` and numpy's array reconstructor under its old name ``numpy.core.multiarray``."""
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue().replace(b"cnumpy._core.multiarray\n",
                                            b"cnumpy.core.multiarray\n"))


def write_cifar(root: Path, n_per_batch: int = 40, n_test: int = 60, seed: int = 0,
                style: str = "python2", protocol: int = 2) -> Path:
    """``root/cifar-10-batches-py`` with data_batch_1..5, test_batch and batches.meta as
    pickled dicts (``data``: N x 3072 uint8, ``labels``: list of int, ``batch_label``,
    ``filenames``), like the real archive.

    ``style``: "python2" (the real archive's format: Python 2 cPickle at protocol 2, keys and
    strings are byte strings), "bytes" (Python 3 pickle at ``protocol``, bytes keys) or "str"
    (Python 3 pickle at ``protocol``, str keys). The same ``seed`` gives the same images and
    labels in every style."""
    if style not in ("python2", "bytes", "str"):
        raise ValueError(f"style={style!r}")
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def s(text: str):
        return text if style == "str" else text.encode("latin1")

    def dump(obj, path: Path) -> None:
        if style == "python2":
            dump_python2(obj, path)
        else:
            path.write_bytes(pickle.dumps(obj, protocol=protocol))

    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        x, y = _blobs(n, 32, 3, rng)
        dump({s("batch_label"): s(f"{name} of 6"), s("labels"): y.tolist(),
              s("data"): x.reshape(n, -1), s("filenames"): [s(f"img_{i}.png") for i in range(n)]},
             folder / name)
    dump({s("label_names"): [s(f"class{i}") for i in range(10)],
          s("num_cases_per_batch"): n_per_batch, s("num_vis"): 3072}, folder / "batches.meta")
    return root


def write_mnist(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """``root/MNIST/raw`` with the four uncompressed IDX files torchvision reads."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = _blobs(n, 28, 1, rng)
        with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + x[:, 0].tobytes())
        with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + y.astype(np.uint8).tobytes())
    return root
