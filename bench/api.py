"""The public way to get a trained model back: ``load(results, method, dataset, seed)``.

    from bench.api import load
    model = load("results/quick", "otnfm-online", dataset="moons", seed=0)
    x = model.sample(1000, generator=torch.Generator().manual_seed(0))
    print(model.nfe)  # network evaluations per sample, counted

The model is rebuilt from its checkpoint alone (checkpoints carry the method, recipe,
dataset, seed and resolved config). When one folder holds several configs of a recipe (a
sweep), ``recipe_hash`` (the records' ``recipe_hash``, or its start) picks one.
``bench sample`` and the tests use this module. Plugin methods must be registered
(``bench.plugins.load_plugin``) before loading their checkpoints.
To plan, run and collect suites from Python: ``bench.suite`` (``plan_suite``, ``run_suite``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import bench.builtins  # noqa: F401  (the built-in methods and datasets must be registered)
from bench.checkpoints import CHECKPOINT_DIR, CheckpointUnreadable, load_state
from bench.config import Config, config_sections, from_dict
from bench.datasets.base import DataBundle, load_dataset
from bench.env import pick_device
from bench.methods.base import Method
from bench.models import restore
from bench.planner import recipe_of
from bench.sampling import generate


class ModelNotFound(LookupError):
    """No checkpoint (or more than one) matches the request; the message lists what exists."""


@dataclass
class TrainedModel:
    """A trained method ready to sample, with where it came from."""

    name: str
    dataset: str
    seed: int
    method: Method
    data: DataBundle
    config: Config
    checkpoint: Path
    device: torch.device
    #: counted network evaluations per sample of the last ``sample`` call
    nfe: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               batch_size: int | None = None,
               on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
        """``n`` samples [n, *shape] from the dataset's noise drawn with ``generator`` (a
        fresh one seeded 0 if None), sampled in batches with counted NFE (``self.nfe``)."""
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(0)
        x0 = self.data.source(n, generator)
        x, self.nfe = generate(self.method, x0, batch_size or self.config.eval.batch_size,
                               on_batch=on_batch)
        return x


def checkpoints(results: str | Path, method: str, dataset: str | None = None,
                seed: int | None = None, recipe_hash: str | None = None) -> list[Path]:
    """The finished checkpoints of ``method``'s recipe under ``results``, optionally of one
    dataset, seed and recipe hash (file names: ``<dataset>.<recipe>.s<seed>.<hash>.pt``)."""
    folder = Path(results) / CHECKPOINT_DIR
    found = []
    for p in sorted(folder.glob(f"*.{recipe_of(method)}.s*.pt")):
        if p.name.endswith(".partial.pt") or p.name.startswith("."):
            continue
        ds, s, rhash = checkpoint_parts(p, method)
        if dataset in (None, ds) and seed in (None, s) and (
                recipe_hash is None or rhash.startswith(recipe_hash)):
            found.append(p)
    return found


def checkpoint_parts(path: str | Path, method: str) -> tuple[str, int, str]:
    """(dataset, seed, recipe hash) of a checkpoint file of ``method``'s recipe, named
    ``<dataset>.<recipe>.s<seed>.<hash>.pt``."""
    ds, rest = Path(path).name.split(f".{recipe_of(method)}.s", 1)
    seed, rhash = rest.removesuffix(".pt").split(".", 1)
    return ds, int(seed), rhash


def load(results: str | Path, method: str, dataset: str | None = None,
         seed: int | None = None, device: str | torch.device = "auto",
         recipe_hash: str | None = None) -> TrainedModel:
    """The trained ``method`` of a results folder, on ``device`` (``auto``: CUDA if present).

    ``dataset``, ``seed`` and ``recipe_hash`` may be left out when only one checkpoint of the
    method's recipe matches; otherwise ``ModelNotFound`` lists the candidates."""
    found = checkpoints(results, method, dataset, seed, recipe_hash)
    if len(found) != 1:
        what = f"{method} (recipe {recipe_of(method)})" + (
            f" on {dataset}" if dataset else "") + (f" seed {seed}" if seed is not None else "")
        listing = ", ".join(p.name for p in found) or "none"
        hint = ("pick one with dataset, seed and recipe_hash (the file name's last part)"
                if found else
                f"train it first, e.g. bench run -m {method} --out {results}")
        raise ModelNotFound(f"{len(found)} checkpoints of {what} under "
                            f"{Path(results) / CHECKPOINT_DIR}: {listing}; {hint}")
    path = found[0]
    state = load_state(path)  # CheckpointUnreadable names the file and the way out
    if "config" not in state or not isinstance(state["config"], dict):
        raise ModelNotFound(f"{path} was written before checkpoints carried their config; "
                            "rerun its suite with --force to rewrite it")
    run_cfg = state["config"]
    cfg = from_dict(Config, {k: run_cfg[k] for k in config_sections() if k in run_cfg},
                    f"{path} config")
    dev = pick_device(device) if isinstance(device, str) else device
    data = load_dataset(cfg, state["dataset"], state["seed"], dev)
    try:
        restored = restore(method, data, cfg, dev, state["seed"], state)
    except (KeyError, RuntimeError, TypeError) as err:  # weights of another shape or keys
        raise CheckpointUnreadable(
            f"unreadable checkpoint {path} (its weights do not fit {method}: "
            f"{type(err).__name__}: {str(err).splitlines()[0][:160]}); delete it, or rerun "
            "its suite with --force, to train it again") from None
    model = TrainedModel(method, state["dataset"], state["seed"], restored, data, cfg,
                         path, dev, info={"recipe": state.get("recipe"),
                                          "train": state.get("train")})
    model.sample(1)  # the counted NFE is known from the start
    return model
