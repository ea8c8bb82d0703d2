"""The plan: what runs, keyed how."""

import pytest

from bench.config import ConfigError, resolve, stable_hash
from bench.planner import Plan, by_recipe, expand_datasets, run_config
from bench.registry import RegistryError
from bench.vocab import FLOOR_METHOD


def test_runs_are_methods_x_datasets_x_seeds_and_keyed_by_their_config():
    cfg = resolve(overrides={"methods": ["otnfm-online", "fm-euler1", "fm-euler10"],
                             "datasets": ["moons", "checkerboard"], "seeds": [0, 1]})
    plan = Plan.of(cfg)
    runs = plan.runs()
    assert len(runs) == 3 * 2 * 2 and len(plan.units()) == 4
    spec = plan.spec("fm-euler10", "moons", 1)
    assert spec.config_hash == stable_hash(run_config(cfg, "fm-euler10", "moons"))
    assert spec.run_id == f"moons.fm-euler10.s1.{spec.config_hash[:8]}"
    # the Euler family shares one recipe, hence one checkpoint; the runs keep their own keys
    euler = [s for s in plan.runs("moons", 0) if s.recipe == "fm"]
    assert len({s.recipe_hash for s in euler}) == 1 and len({s.config_hash for s in euler}) == 2
    assert [len(g) for g in by_recipe(plan.runs("moons", 0))] == [1, 2]


def test_settings_that_change_no_number_are_not_hashed():
    base = Plan.of(resolve(overrides={"methods": ["otnfm-minibatch"]})).runs()[0]
    other = Plan.of(resolve(overrides={"methods": ["otnfm-minibatch"], "seeds": [0],
                                       "checkpoint_every": 7, "device": "cpu",
                                       "coupling": {"overlap": "on"}})).runs()[0]
    assert base.config_hash == other.config_hash and base.recipe_hash == other.recipe_hash
    steps = Plan.of(resolve(overrides={"methods": ["otnfm-minibatch"],
                                       "train": {"steps": 7}})).runs()[0]
    assert steps.recipe_hash != base.recipe_hash
    evals = Plan.of(resolve(overrides={"methods": ["otnfm-minibatch"],
                                       "eval": {"n_samples": 7}})).runs()[0]
    assert evals.recipe_hash == base.recipe_hash and evals.config_hash != base.config_hash


def test_floor_and_teacher():
    plan = Plan.of(resolve(overrides={"methods": ["reflow"]}))
    floor = plan.floor("moons", 0)
    assert floor.method == FLOOR_METHOD and floor.recipe_hash == ""
    assert set(floor.config) == {"method", "recipe", "data", "eval"}
    assert plan.runs()[0].teacher == "fm-dopri5"


def test_dataset_keys_and_bad_names():
    assert expand_datasets(["moons@8gmm", "moons", "moons"]) == ["moons@8gmm", "moons"]
    with pytest.raises(ConfigError, match="unknown source 'uniform'"):
        expand_datasets(["moons@uniform"])
    with pytest.raises(RegistryError, match="Did you mean: moons"):
        Plan.of(resolve(overrides={"datasets": ["moon"]}))
    with pytest.raises(RegistryError, match="unknown metric 'mdd'"):
        Plan.of(resolve(overrides={"eval": {"metrics": ["mdd"]}}))


def test_config_hashes_of_a_shipped_suite_are_pinned():
    """A schema change that would orphan recorded runs shows here first: these are the keys
    of results/ladder2d records written before later settings (eval.curve, eval.reference,
    method sections) were added."""
    from pathlib import Path

    plan = Plan.of(resolve(Path(__file__).resolve().parents[1] / "configs" / "ladder2d.yaml"))
    spec = plan.spec("naive-map", "checkerboard", 0)
    assert (spec.config_hash, spec.recipe_hash) == ("ffb5e323e69f", "159fc4ad0627")
    assert plan.floor("checkerboard", 0).config_hash == "e3b5a2813865"


def test_the_estimate_counts_only_runs_without_an_ok_record():
    import torch

    from bench.estimate import estimate
    from tests.conftest import TINY_SETS

    cfg = resolve(raw={"methods": ["otnfm-online", "fm-euler1", "fm-euler4"],
                       "datasets": ["moons"], "seeds": [0, 1]}, sets=TINY_SETS)
    plan, cpu = Plan.of(cfg), torch.device("cpu")
    full = estimate(plan, cpu)
    assert [ln.split(":")[0] for ln in full.lines] == ["moons · otnfm-online", "moons · fm"]
    assert all("× 2 seed(s)" in ln for ln in full.lines)
    # otnfm-online done on both seeds, the fm recipe on seed 0: only fm on seed 1 is left
    done = {s.key for s in plan.runs() if s.method == "otnfm-online" or s.seed == 0}
    part = estimate(plan, cpu, done)
    assert part.lines[0] == "4 run(s) already recorded are not counted"
    assert part.lines[1:] == ["moons · fm: 30 steps × 1 seed(s) at "
                              + part.lines[1].rsplit(" at ", 1)[1]]
    assert 0 < part.train_seconds and 0 < part.sample_seconds
    nothing = estimate(plan, cpu, {s.key for s in plan.runs()})
    assert nothing.total == 0 and nothing.lines == ["6 run(s) already recorded are not counted"]
    # trained steps are not charged again: fm's checkpoint exists on seed 1 (fm-euler4 still
    # to score there), otnfm-online's partial state is at step 20 of 30 on both seeds
    trained = {"fm": 30, "otnfm-online": 20}
    some = estimate(plan, cpu, {s.key for s in plan.runs() if s.method == "fm-euler1"},
                    lambda spec, steps: trained[spec.recipe])
    assert some.lines[1].startswith("moons · otnfm-online: 30 steps × 2 seed(s), 20 of 60 "
                                    "left to train at ")
    assert some.lines[2] == "moons · fm: 30 steps × 2 seed(s), 0 of 60 left to train"
    assert some.train_seconds > 0 and some.sample_seconds > 0
