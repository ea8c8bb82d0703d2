"""A plugin's method with a config section of its own (examples/smooth_fm.py), end to end,
without a line of it in bench/: YAML and --set reach the section, the hashed key makes
another run and checkpoint, the unhashed one does not, other methods' hashes do not move."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import plugins
from bench.cli import app
from bench.config import ConfigError, resolve, to_dict
from bench.planner import Plan
from bench.registry import METHODS, SECTIONS
from bench.results import read_records
from tests.conftest import TINY, tiny_args

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "smooth_fm.py"
runner = CliRunner()


@pytest.fixture
def clean_registry():
    """The plugin's registrations are undone after the test (registries are global)."""
    methods, sections = set(METHODS.names()), dict(SECTIONS)
    yield
    for name in set(METHODS.names()) - methods:
        METHODS.unregister(name)
    SECTIONS.clear()
    SECTIONS.update(sections)
    plugins._loaded.pop(str(EXAMPLE), None)


def hashes(methods: list[str], **sets) -> dict[str, tuple[str, str]]:
    cfg = resolve(overrides={**TINY, "methods": methods}, sets=[f"{k}={v}" for k, v in
                                                                 sets.items()])
    return {s.method: (s.config_hash, s.recipe_hash) for s in Plan.of(cfg).runs()}


def test_the_section_needs_its_plugin(clean_registry):
    with pytest.raises(ConfigError, match="unknown key 'smoothfm'.*--plugin"):
        resolve(overrides=TINY, sets=["smoothfm.sigma=0.1"])


def test_a_plugin_section_is_hashed_as_declared_and_only_for_its_methods(clean_registry):
    builtin = hashes(["fm-euler1", "reflow", "meanflow"])
    plugins.load_plugin(EXAMPLE)
    assert hashes(["fm-euler1", "reflow", "meanflow"]) == builtin  # nothing else moves
    base = hashes(["smoothfm-euler1", "smoothfm-euler10"])
    assert base["smoothfm-euler1"][1] == base["smoothfm-euler10"][1]  # one shared recipe
    assert hashes(["smoothfm-euler1"], **{"smoothfm.log_noise": "true"}) == {
        "smoothfm-euler1": base["smoothfm-euler1"]}  # unhashed
    moved = hashes(["smoothfm-euler1"], **{"smoothfm.sigma": 0.1})["smoothfm-euler1"]
    assert moved[0] != base["smoothfm-euler1"][0] and moved[1] != base["smoothfm-euler1"][1]
    cfg = resolve(overrides=TINY, sets=["smoothfm.sigma=0.1"])
    assert cfg.section("smoothfm").sigma == 0.1 and to_dict(cfg)["smoothfm"]["sigma"] == 0.1
    with pytest.raises(ConfigError, match="smoothfm.sigma"):
        resolve(overrides=TINY, sets=["smoothfm.sigma=-1"])
    with pytest.raises(ConfigError, match="unknown key 'sigmaa'"):
        resolve(overrides=TINY, sets=["smoothfm.sigmaa=1"])


def test_a_plugin_section_end_to_end_from_the_cli(tmp_path, clean_registry):
    out = tmp_path / "res"
    suite = tmp_path / "suite.yaml"
    suite.write_text("methods: [smoothfm-euler1, fm-euler1]\ndatasets: [moons]\n"
                     "smoothfm:\n  sigma: 0.05\n")
    args = ["run", "--plugin", str(EXAMPLE), "--config", str(suite), "--out", str(out),
            *tiny_args()]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert recs["smoothfm-euler1"].status == "ok"
    assert recs["smoothfm-euler1"].config["smoothfm"] == {"sigma": 0.05}  # log_noise unhashed
    assert "smoothfm" not in recs["fm-euler1"].config
    # the unhashed key reuses everything; the hashed one trains a new checkpoint
    res = runner.invoke(app, [*args, "--set", "smoothfm.log_noise=true"])
    assert res.exit_code == 0 and "Nothing to do" in res.output, res.output
    res = runner.invoke(app, [*args, "--set", "smoothfm.sigma=0.2"])
    assert res.exit_code == 0, res.output
    smooth = [r for r in read_records(out / "records.jsonl").records
              if r.method == "smoothfm-euler1"]
    assert [r.config["smoothfm"]["sigma"] for r in smooth] == [0.05, 0.2]
    assert smooth[0].checkpoint != smooth[1].checkpoint
    # the checkpoint carries the section: the public loader rebuilds the method from it
    from bench.api import load

    model = load(out, "smoothfm-euler1", recipe_hash=smooth[1].recipe_hash)
    assert model.config.section("smoothfm").sigma == 0.2 and model.sample(5).shape == (5, 2)

