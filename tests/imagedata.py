"""Tiny dataset folders in the real on-disk formats (for the real torchvision loaders)."""

from __future__ import annotations

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


def write_cifar(root: Path, n_per_batch: int = 40, n_test: int = 60, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with data_batch_1..5, test_batch and batches.meta as
    pickled dicts (``data``: N x 3072 uint8, ``labels``), like the real archive."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        x, y = _blobs(n, 32, 3, rng)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x.reshape(n, -1), "labels": y.tolist(),
                         "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch":
                     n_per_batch, "num_vis": 3072}, f)
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
