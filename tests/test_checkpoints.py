"""Checkpoints: hash-checked, never unpickling code."""

import pytest

from tests.conftest import TINY


def test_pickled_code_is_refused_as_checkpoint_and_cache(tmp_path, cpu):
    """A file that would run code when unpickled is refused (weights_only loading)."""
    import pickle

    import torch

    from bench.metrics.extractors import load_domain

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"state": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(bad, map_location="cpu", weights_only=True)
    with pytest.raises(pickle.UnpicklingError):
        load_domain(bad)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_of_another_config_is_refused(tmp_path, cpu):
    import torch

    from bench.checkpoints import CheckpointStore
    from bench.config import resolve
    from bench.runner import Runner

    cfg = resolve(overrides={**TINY, "methods": ["otnfm-online"]})
    runner = Runner(cfg, tmp_path, cpu)
    path = CheckpointStore(tmp_path / "checkpoints").path(runner.plan.runs()[0])
    path.parent.mkdir(parents=True)
    torch.save({"recipe_hash": "someone-else"}, path)
    (rec,) = [r for r in runner.run() if r.method == "otnfm-online"]
    assert rec.status == "failed" and "belongs to another config" in rec.error


def test_steps_done_reads_the_finished_checkpoint_and_the_partial_state(tmp_path):
    """What the estimate leaves out: all steps of a finished checkpoint, the saved step of a
    partial state of the same config, nothing for another config's partial state."""
    import torch

    from bench.checkpoints import CheckpointStore
    from bench.config import resolve
    from bench.planner import Plan

    spec = Plan.of(resolve(overrides={**TINY, "methods": ["otnfm-online"]})).runs()[0]
    store = CheckpointStore(tmp_path)
    assert store.steps_done(spec, 30) == 0
    torch.save({"step": 12, "meta": {"recipe_hash": "someone-else"}}, store.partial_path(spec))
    assert store.steps_done(spec, 30) == 0
    torch.save({"step": 12, "meta": {"recipe_hash": spec.recipe_hash}}, store.partial_path(spec))
    assert store.steps_done(spec, 30) == 12
    torch.save({"recipe_hash": spec.recipe_hash}, store.path(spec))
    assert store.steps_done(spec, 30) == 30
