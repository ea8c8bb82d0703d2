"""Where trained weights live: one file per (dataset, recipe, seed, recipe hash) under
``<results>/checkpoints/``, written atomically and checked against the recipe hash on load;
``*.partial.pt`` beside it holds the whole training state of an unfinished run.

A checkpoint carries what is needed to rebuild its model without the records file: the
method, recipe, dataset, seed and the resolved run config. Everything loads with
``weights_only=True``: a checkpoint can never run code.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.claims import is_held
from bench.io import atomic_torch_save
from bench.planner import RunSpec

CHECKPOINT_DIR = "checkpoints"
STATS_DIR = "stats"


class CheckpointMismatch(ValueError):
    """A checkpoint at the expected path was written for another config."""


@dataclass
class Trained:
    """A trained recipe: its checkpoint path, the saved state, and whether it was loaded or
    trained in this session rather than trained for this run."""

    path: Path
    state: dict[str, Any]
    reused: bool


class CheckpointStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, spec: RunSpec) -> Path:
        return self.root / f"{spec.dataset}.{spec.recipe}.s{spec.seed}.{spec.recipe_hash}.pt"

    def partial_path(self, spec: RunSpec) -> Path:
        return self.path(spec).with_suffix(".partial.pt")

    def stats_path(self, spec: RunSpec) -> Path:
        """The live training log of the recipe: one JSON line per logged window (step, loss,
        learning rate, gradient norm, coupling statistics, seconds), appended as it trains."""
        return self.root.parent / STATS_DIR / f"{self.path(spec).stem}.jsonl"

    def load(self, spec: RunSpec) -> Trained | None:
        """The finished checkpoint of ``spec``'s recipe, None if there is none; a file of
        another config raises ``CheckpointMismatch``."""
        path = self.path(spec)
        if not path.exists():
            return None
        state = load_state(path)
        if state.get("recipe_hash") != spec.recipe_hash:
            raise CheckpointMismatch(f"checkpoint {path} belongs to another config")
        return Trained(path, state, reused=True)

    def save(self, spec: RunSpec, state: dict[str, Any]) -> Trained:
        """Write the finished checkpoint (write-then-rename) and drop the partial state."""
        path = self.path(spec)
        atomic_torch_save(path, state)
        self.partial_path(spec).unlink(missing_ok=True)
        return Trained(path, state, reused=False)

    def steps_done(self, spec: RunSpec, steps: int) -> int:
        """How many of the recipe's ``steps`` are already trained: all of them where its
        finished checkpoint exists, the saved step where a partial state of this config
        would resume, else 0 (what ``bench.estimate`` leaves out)."""
        if self.path(spec).exists():
            return steps
        saved, _ = self.load_partial(spec)
        return min(int(saved["step"]), steps) if saved is not None else 0

    def pairs_path(self, spec: RunSpec) -> Path:
        """Where a distilled method keeps the pairs generated so far (resumable generation)."""
        return self.path(spec).with_suffix(".pairs.partial.pt")

    def load_partial(self, spec: RunSpec, net: dict[str, Any] | None = None,
                     ) -> tuple[dict[str, Any] | None, str]:
        """The saved training state of an unfinished run of this recipe, if it was saved by
        the same config and (where both are known) for the same network construction ``net``
        (``bench.models.net_signature``), and a message saying what was found."""
        path = self.partial_path(spec)
        if not path.exists():
            return None, ""
        saved = load_state(path)
        meta = saved.get("meta", {})
        if meta.get("recipe_hash") != spec.recipe_hash:
            return None, f"ignoring {path}: saved by another config"
        if net is not None and meta.get("net") not in (None, net):
            return None, (f"ignoring {path}: trained with network {meta['net']}, the code "
                          f"builds {net}")
        return saved, f"resuming from step {saved['step']} ({path})"


class CheckpointUnreadable(ValueError):
    """A checkpoint or partial training state that cannot be read (torn, zeroed, not a
    checkpoint, or holding objects a checkpoint never holds). The message names the file and
    the way out."""


def load_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint or training state as saved (tensors on the CPU; never unpickles code).
    A file that cannot be read raises ``CheckpointUnreadable`` naming it and how to recover."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a global: never retried unsafely
        why = "it holds objects other than tensors and plain containers, which the harness refuses"
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        why = f"{type(err).__name__}: {first}"[:160]
    else:
        if isinstance(state, dict):
            return state
        why = f"it holds a {type(state).__name__}, not a dict"
    partial = path.name.endswith(".partial.pt")
    what = "partial training state" if partial else "checkpoint"
    way = ("delete it to train the recipe from step 0, or rerun with --force" if partial else
           "delete it, or rerun with --force, to train the recipe again")
    raise CheckpointUnreadable(f"unreadable {what} {path} ({why}); {way}")


def last_object(log: Path) -> tuple[dict[str, Any], int]:
    """The last line of a live log that is a JSON object with numeric ``step``, and how many
    lines after it were skipped (one being written, a torn tail, or lines that are no
    object)."""
    lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()
             if ln.strip()]
    for back, line in enumerate(reversed(lines)):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("step"), int):
            return obj, back
    return {}, len(lines)


def in_training(out: str | Path) -> list[dict[str, Any]]:
    """Recipes of a results folder that have a live log but no finished checkpoint: the last
    logged line of each (step, steps, loss, seconds, time) and whether a process is training
    it now (``training``: its claim is held) or it stopped (``stopped``: resumable from its
    partial state), newest first."""
    out = Path(out)
    rows = []
    for log in sorted((out / STATS_DIR).glob("*.jsonl")):
        if (out / CHECKPOINT_DIR / f"{log.stem}.pt").exists():
            continue
        last, skipped = last_object(log)
        rows.append({"run": log.stem, **last, "skipped_lines": skipped,
                     "state": "training" if is_held(out, log.stem) else "stopped"})
    return sorted(rows, key=lambda r: r.get("time", ""), reverse=True)
