"""What every dataset hands the harness: tensors, shapes and a source (noise) sampler."""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.config import Config, ConfigError, DataConfig
from bench.registry import DATASETS

#: Held-out evaluation data is drawn from this seed, never from the run seed, so every run of a
#: dataset is scored against the same points.
EVAL_SEED = 2_147_483_647


def eval_rng(name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([EVAL_SEED, zlib.crc32(name.encode())]))


@dataclass
class DataBundle:
    """A dataset resolved for one run.

    ``train``: [N, *shape] training points (x1 ~ data); ``eval``: [M, *shape] fixed held-out points;
    ``floor``: [K, *shape] more data, independent of ``eval``, scored as if it were samples
    (the best any method can do at this sample size); ``source(n, gen)``: [n, *shape] noise x0.
    """

    name: str
    kind: str  # "points" or "images"
    shape: tuple[int, ...]
    train: torch.Tensor
    eval: torch.Tensor
    floor: torch.Tensor | None
    source: Callable[[int, torch.Generator], torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    #: class labels of ``train`` / ``eval`` (labelled image datasets; used by the domain
    #: feature extractor and the class histogram, never by the generators)
    train_labels: torch.Tensor | None = None
    eval_labels: torch.Tensor | None = None
    num_classes: int = 0
    #: the floor is made of training items (images: the first of the training split), so
    #: metrics against the training split (``MetricVocabulary.against_train``) skip it
    floor_is_train: bool = False
    #: values derived from this data once per load and reused by every run scored on it
    #: (e.g. the domain feature extractor, whose cache key hashes the training split)
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))

    def scored_split(self, reference: str) -> str:
        """The split the metrics score against: ``validation`` when training items were held
        back (``data.validation``), else ``reference`` (the eval config's)."""
        return "validation" if self.info.get("validation") else reference


def gaussian_source(shape: tuple[int, ...], device: torch.device):
    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn((n, *shape), generator=gen, device=device)

    return sample


def split_key(key: str) -> tuple[str, str | None]:
    """``"moons@8gmm"`` -> ("moons", "8gmm"): a dataset with its own source distribution."""
    name, _, source = key.partition("@")
    return name, (source or None)


def dataset_config(cfg: Config, key: str) -> Config:
    """``cfg`` with ``data.name`` (and ``data.source`` for ``name@source`` keys) filled in."""
    source = split_key(key)[1]
    data = dataclasses.replace(cfg.data, name=key)
    if source:
        data = dataclasses.replace(data, source=source)
    return dataclasses.replace(cfg, data=data)


def load_dataset(cfg: Config, key: str, seed: int, device: torch.device) -> DataBundle:
    """The registered dataset ``key`` (``name`` or ``name@source``) for run seed ``seed``, its
    tensors on ``device``; named by its key."""
    data = DATASETS.get(split_key(key)[0])(dataset_config(cfg, key).data, seed, device)
    data.name = key
    return hold_out_validation(data, cfg.data.validation) if cfg.data.validation else data


def hold_out_validation(data: DataBundle, n: int) -> DataBundle:
    """``data`` with the last ``n`` training items as its evaluation split (``data.validation``):
    the model trains on the rest, every metric scores against these ``n``, and the dataset's
    own eval split is dropped, so nothing chosen on these scores has seen it. Labels follow
    their items. The floor: on images the first ``n`` remaining training items (as the eval
    floor is training images too); 2-D data keeps its own, drawn from the run seed apart from
    the training points (training points would read as copies on the copy metric)."""
    total = int(data.train.shape[0])
    if n >= total:
        raise ConfigError(f"data.validation={n} leaves no training data: {data.name}'s training "
                          f"split has {total} items (data.n_train caps it); hold back fewer")
    keep = total - n
    labels = data.train_labels
    images = data.kind == "images" or data.floor is None
    info = {**data.info, "n_train": keep, "n_eval": n, "validation": n}
    if images:
        info["floor"] = f"first {min(n, keep)} training items"
    info["description"] = (f"{data.info.get('description', data.name)}; validation: the last "
                           f"{n} of {total} training items held back and scored against (the "
                           "eval split is not used)")
    return dataclasses.replace(
        data, train=data.train[:keep], eval=data.train[keep:],
        floor=data.train[:min(n, keep)] if images else data.floor,
        train_labels=None if labels is None else labels[:keep],
        eval_labels=None if labels is None else labels[keep:], info=info,
        floor_is_train=data.floor_is_train or images,
        memo={})


def preset_of(keys: list[str] | tuple[str, ...]) -> tuple[str | None, dict[str, Any]]:
    """The default recipe (registered ``preset``) of the named datasets, with the dataset it
    came from; the same preset for all of them or none. 2-D datasets register none: the
    config defaults are theirs."""
    names = {split_key(k)[0] for k in keys}
    presets = {n: DATASETS.entry(n).meta.get("preset") for n in names if n in DATASETS}
    found = {n: p for n, p in presets.items() if p}
    if not found:
        return None, {}
    if len(found) != len(names) or len({repr(p) for p in found.values()}) > 1:
        raise ConfigError(f"datasets {', '.join(sorted(names))} have different default recipes; "
                          "run them separately, or give a --config that sets the recipe")
    name = sorted(found)[0]
    return name, found[name]


def data_root(cfg: DataConfig) -> Path:
    """The folder the file-backed datasets are read from: ``data.root``, else ``$BENCH_DATA``,
    else ``./data``."""
    return Path(cfg.root or os.environ.get("BENCH_DATA", "data")).expanduser()
