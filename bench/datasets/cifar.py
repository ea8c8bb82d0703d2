"""CIFAR-10's python archive (``cifar-10-batches-py/``), read without running code from it.

The batch files are pickles: Python 2 dicts with ``data`` (uint8 N x 3072, each row the red,
green then blue 32x32 planes), ``labels`` (ints 0-9), ``batch_label`` and ``filenames``;
``batches.meta`` holds ``label_names``. ``pickle.load`` would call whatever a file names, so
a planted file could run code wherever the data is loaded (``bench run --dry-run`` included,
whose estimate loads it) when the md5 check is off (``data.checksum=false``). This reader's
unpickler builds only the real archive's objects: its ``find_class`` hands out numpy's array
and scalar reconstruction (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``) and a
Latin-1-only ``_codecs.encode`` (Python 3 pickles bytes with it up to protocol 2), and
refuses every other name. What it builds is then checked: a dict with uint8 ``data`` of shape
[N, 3072] and N int ``labels`` in 0..9, keys as ``bytes`` or ``str``.

The arrays are torchvision's: ``CIFAR10`` stacks the batches in the order data_batch_1..5
(test_batch for the test split), reshapes to [N, 3, 32, 32] and transposes to HWC; this
returns the CHW arrays, uint8, with int64 labels. The md5 values are torchvision's
(``CIFAR10.train_list``, ``test_list``, ``meta``), and so is the download.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
FILES = (*TRAIN_FILES, TEST_FILE, META_FILE)
PIXELS = 3 * 32 * 32
NUM_CLASSES = 10


class CifarMissing(Exception):
    """Files of the archive are missing or fail their md5 check; the message names them."""


class CifarFormatError(Exception):
    """A file is not a CIFAR-10 batch (or would run code); the message names it."""


class _Refused(Exception):
    """What a pickle asked for that no CIFAR-10 batch needs."""


def _latin1_encode(text: Any, encoding: Any = None, *rest: Any) -> bytes:
    """``_codecs.encode`` as Python 3's pickler uses it for bytes (protocols 0-2): a str
    encoded as Latin-1, nothing else."""
    if (type(text) is not str or not isinstance(encoding, str) or rest
            or encoding.lower().replace("_", "-") not in ("latin1", "latin-1")):
        raise _Refused(f"would call _codecs.encode with {encoding!r} (only 'latin1' is allowed)")
    return text.encode("latin1")


_RECONSTRUCT = np.zeros(0, np.uint8).__reduce__()[0]  # numpy's _reconstruct, by any name
_SCALAR = np.uint8(0).__reduce__()[0]  # numpy's multiarray.scalar
#: every global the archive's pickles name (numpy 1.x wrote ``numpy.core``, 2.x writes
#: ``numpy._core``), mapped to the object itself: nothing is imported by a name from a file
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _Unpickler(pickle.Unpickler):
    """Builds only :data:`ALLOWED` globals; strings of Python 2 load as Latin-1 (as
    torchvision reads them, and as numpy's pickled array data needs)."""

    def __init__(self, file) -> None:
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"would import {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"would load the persistent object {pid!r}")


def unpickle(path: Path) -> Any:
    """The object pickled in ``path``, built from :data:`ALLOWED` globals only."""
    try:
        with open(path, "rb") as f:
            return _Unpickler(f).load()
    except _Refused as err:
        raise CifarFormatError(f"refused: {path} {err}; not a CIFAR-10 batch") from None
    except Exception as err:  # truncated or garbled; numpy refusing a reconstruction
        raise CifarFormatError(f"{path} is not a readable CIFAR-10 batch "
                               f"({type(err).__name__}: {err})") from None


def _entry(obj: Any, key: str, path: Path) -> Any:
    """``obj[key]`` with ``key`` as str or as bytes (the archive's Python 2 strings)."""
    for k in (key, key.encode("latin1")):
        if k in obj:
            return obj[k]
    keys = sorted(repr(k) for k in obj)
    found = ", ".join(keys[:20]) + (f", ... ({len(keys)} keys)" if len(keys) > 20 else "")
    raise CifarFormatError(f"{path} has no {key!r} entry (keys found: {found or 'none'}); "
                           "not a CIFAR-10 batch")


def _dict(obj: Any, path: Path) -> dict:
    if type(obj) is not dict:
        raise CifarFormatError(f"{path} holds a {type(obj).__name__}, not a dict; "
                               "not a CIFAR-10 batch")
    return obj


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: its images (uint8 [N, 3072]) and labels (int64 [N], 0..9)."""
    entry = _dict(unpickle(path), path)
    data, labels = _entry(entry, "data", path), _entry(entry, "labels", path)
    if type(data) is not np.ndarray:
        raise CifarFormatError(f"{path}: 'data' is a {type(data).__name__}, not a numpy "
                               "ndarray; not a CIFAR-10 batch")
    if data.dtype != np.uint8:
        raise CifarFormatError(f"{path}: 'data' is a {data.dtype} array, not uint8; "
                               "not a CIFAR-10 batch")
    if data.ndim != 2 or data.shape[1] != PIXELS:
        raise CifarFormatError(f"{path}: 'data' has shape {list(data.shape)}, not [N, {PIXELS}] "
                               "(N images of 3x32x32); not a CIFAR-10 batch")
    if type(labels) is np.ndarray and labels.ndim == 1:
        labels = list(labels)
    if type(labels) not in (list, tuple):
        raise CifarFormatError(f"{path}: 'labels' is a {type(labels).__name__}, not a list of "
                               "ints; not a CIFAR-10 batch")
    labels = [v.item() if isinstance(v, np.integer) else v for v in labels]
    bad = [v for v in labels if type(v) is not int or not 0 <= v < NUM_CLASSES]
    if bad:
        raise CifarFormatError(f"{path}: labels must be ints in 0..{NUM_CLASSES - 1}, found "
                               f"{bad[0]!r} ({type(bad[0]).__name__}); not a CIFAR-10 batch")
    if len(labels) != len(data):
        raise CifarFormatError(f"{path}: {len(data)} images but {len(labels)} labels; "
                               "not a CIFAR-10 batch")
    return data, np.array(labels, dtype=np.int64)


def read_meta(path: Path) -> list[str]:
    """``batches.meta``'s class names."""
    names = _entry(_dict(unpickle(path), path), "label_names", path)
    if type(names) not in (list, tuple) or any(type(n) not in (str, bytes) for n in names):
        raise CifarFormatError(f"{path}: 'label_names' is not a list of strings; "
                               "not a CIFAR-10 meta file")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def problems(folder: Path, checksum: bool) -> list[str]:
    """What is wrong with the archive's files in ``folder``: missing ones and, with
    ``checksum``, those whose md5 is not torchvision's value."""
    from torchvision.datasets import CIFAR10

    md5 = {name: value for name, value in (*CIFAR10.train_list, *CIFAR10.test_list)}
    md5[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    out = []
    for name in FILES:
        path = folder / name
        if not path.is_file():
            out.append(f"{name} is missing")
        elif checksum and _md5(path) != md5.get(name):
            out.append(f"{name} fails its md5 check")
    return out


def download(root: Path) -> None:
    """Fetch and extract the archive into ``root`` (torchvision's download, md5-checked)."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename,
                                 md5=CIFAR10.tgz_md5)


@dataclass
class Cifar10:
    """The two splits as uint8 [N, 3, 32, 32] images and int64 labels."""

    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


def read_split(folder: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    batches = [read_batch(folder / name) for name in names]
    data = np.concatenate([x for x, _ in batches]).reshape(-1, 3, 32, 32)
    return data, np.concatenate([y for _, y in batches])


def load_cifar10(root: Path, checksum: bool = True, download_missing: bool = False) -> Cifar10:
    """CIFAR-10 from ``root / FOLDER``: md5-checked unless ``checksum`` is false, downloaded
    first when files are missing or corrupt and ``download_missing``. Raises
    :class:`CifarMissing` or :class:`CifarFormatError`."""
    folder = root / FOLDER
    bad = problems(folder, checksum)
    if bad and download_missing:
        try:
            download(root)
        except (OSError, RuntimeError) as err:
            raise CifarMissing(f"the download failed: {type(err).__name__}: {err}") from None
        bad = problems(folder, checksum)
    if bad:
        raise CifarMissing("; ".join(bad))
    train, train_y = read_split(folder, TRAIN_FILES)
    test, test_y = read_split(folder, (TEST_FILE,))
    return Cifar10(train, train_y, test, test_y, read_meta(folder / META_FILE))
