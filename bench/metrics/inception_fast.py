"""The ``fid`` metric's Inception-v3 pool3 extractor, registered with torch-fidelity as
``inception-v3-fast``.

:class:`FastInception` is torch-fidelity's own ``inception-v3-compat`` module (its TF1-style
resize, its network) loaded with the checked weights, built for inference the library's ways:
BatchNorm folded into every convolution with ``torch.nn.utils.fusion.fuse_conv_bn_eval``,
channels-last module and input, ``chunk`` images per pass. The features match the unmodified
module's to ~1e-5 (folding changes the float arithmetic, nothing else). A hand-written copy of the
graph was measured against it (reports/perf-inception-options.md: ~1.2x faster than this, no
faster than this plus torch.compile) and removed: not worth a private re-implementation.
FID / KID / precision-recall come from torch-fidelity's own functions (bench.metrics.images).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from bench.metrics.inception_weights import COMPAT_NAME, FEATURES, load_checked

FAST_NAME = "inception-v3-fast"
SIZE = 299
#: images per forward pass inside the fast extractor: torch-fidelity hands it up to 500 at a
#: time, whose 147x147x64 activations alone would take ~2.8 GB; on the project's 2-core machine
#: 16 and 32 were equally fast, 8 and 64 slower
CHUNK = 32


def compat_extractor(state: dict[str, torch.Tensor]) -> nn.Module:
    """torch-fidelity's own ``inception-v3-compat`` module with a checked state dict: it only
    loads from a path (with ``weights_only=False``), so it gets a private file the harness writes
    from ``state`` just before and deletes right after."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with tempfile.TemporaryDirectory(prefix="bench-inception-") as tmp:
        path = Path(tmp) / "checked.pt"
        torch.save(dict(state), path)
        return FeatureExtractorInceptionV3(COMPAT_NAME, [FEATURES],
                                           feature_extractor_weights_path=str(path)).eval()


def fuse_compat(module: nn.Module) -> nn.Module:
    """BatchNorm folded into the preceding convolution of every ``BasicConv2d`` of a compat
    module in eval mode, with torch's ``fuse_conv_bn_eval`` (in place; returns the module)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for unit in module.modules():
        if isinstance(getattr(unit, "bn", None), nn.BatchNorm2d) and isinstance(
                getattr(unit, "conv", None), nn.Conv2d):
            unit.conv = fuse_conv_bn_eval(unit.conv.eval(), unit.bn.eval())
            unit.bn = nn.Identity()
    return module


class FastInception(nn.Module):
    """pool3 features of uint8 images [N, 3, H, W]: torch-fidelity's ``inception-v3-compat``
    with the checked state dict, BatchNorm fused, channels-last, ``chunk`` images per pass.
    fp32 throughout."""

    def __init__(self, state: dict[str, torch.Tensor], chunk: int = CHUNK) -> None:
        super().__init__()
        net = fuse_compat(compat_extractor(state))
        self.net = net.requires_grad_(False).to(memory_format=torch.channels_last)
        self.chunk = chunk

    def forward(self, u8: torch.Tensor) -> torch.Tensor:
        if u8.dtype != torch.uint8 or u8.dim() != 4 or u8.shape[1] != 3:
            raise ValueError(f"expected uint8 [N, 3, H, W] images, got {u8.dtype} "
                             f"{tuple(u8.shape)}")
        cl = torch.channels_last
        with torch.inference_mode():
            out = [self.net(u8[i:i + self.chunk].contiguous(memory_format=cl))[0]
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
