"""Samplers are an axis of a method family: ``fm@euler7`` asks for any sampler and step count;
the registered combinations keep their names (``fm@euler100`` is ``fm-euler100``)."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import bench.builtins  # noqa: F401  (the built-in methods must be registered)
from bench.cli import app
from bench.config import resolve
from bench.methods.base import FAMILIES, MAX_STEPS
from bench.planner import Plan, recipe_of
from bench.registry import METHODS, RegistryError
from bench.results import read_records
from tests.conftest import tiny_args

runner = CliRunner()


def _spec(method: str):
    cfg = resolve(overrides={"methods": [method], "datasets": ["moons"]})
    plan = Plan.of(cfg)
    (spec,) = plan.runs()
    return spec


@pytest.mark.parametrize(("alias", "name"), [
    ("fm@euler100", "fm-euler100"), ("otcfm@euler1", "otcfm-euler1"),
    ("loomcfm@heun2", "loomcfm-heun2"), ("otcfm-global@midpoint5", "otcfm-global-midpoint5"),
    ("loomcfm@dopri5", "loomcfm-dopri5"), ("meanflow@step2", "meanflow-2step"),
    ("meanflow@step1", "meanflow"), ("shortcut@step4", "shortcut-4step"),
    ("reflow@step2", "reflow-2step"),
])
def test_registered_combination_keeps_its_name_and_hash(alias, name):
    assert METHODS.match(alias) == [name] and METHODS.canonical(alias) == name
    assert METHODS.entry(alias) is METHODS.entry(name)
    new, old = _spec(alias), _spec(name)
    assert new.method == name and new.config_hash == old.config_hash
    assert new.recipe_hash == old.recipe_hash


def test_old_names_and_globs_unchanged():
    for name in ("fm-euler100", "otcfm-euler1", "loomcfm-heun2", "meanflow-2step", "reflow"):
        assert METHODS.match(name) == [name]
    assert len(METHODS.match("*")) == len(METHODS.names())
    fm = [n for n in METHODS.names() if n.startswith("fm-")]
    assert METHODS.match("fm-*") == fm and METHODS.match("fm@*") == fm
    assert METHODS.match("fm@euler*") == [f"fm-euler{n}" for n in (1, 2, 4, 10, 100)]


def test_any_step_count_on_demand():
    assert METHODS.match("fm@euler7,otcfm@heun3") == ["fm@euler7", "otcfm@heun3"]
    assert METHODS.canonical("fm@euler007") == "fm@euler7"
    e = METHODS.entry("fm@euler7")
    assert e.meta["recipe"] == "fm" and "grid" not in e.meta and "NFE 7" in e.help
    assert recipe_of("meanflow@step3") == "meanflow"
    assert METHODS.entry("reflow@step3").meta["teacher"] == "fm-dopri5"
    assert "meanflow" in METHODS.entry("meanflow@step3").meta["config"]
    # on-demand entries are not listed: globs and `bench list --json` stay as registered
    assert "fm@euler7" not in METHODS.names() and "fm@euler7" in METHODS
    assert "fm@euler7" not in METHODS.match("*") + METHODS.match("fm@*")
    assert FAMILIES["otcfm"].nfe("heun", 3) == 6 and FAMILIES["fm"].nfe("euler", 7) == 7
    assert FAMILIES["fm"].nfe("dopri5", 0) is None
    # shares the family's checkpoint: the recipe hash of fm-euler10
    assert _spec("fm@euler7").recipe_hash == _spec("fm-euler10").recipe_hash
    assert _spec("fm@euler7").config_hash != _spec("fm-euler10").config_hash


def test_on_demand_name_resolves_alike_in_a_fresh_process():
    """A worker or Slurm job re-resolves the config from its dict: the name alone decides."""
    code = ("import bench.builtins; from bench.planner import Plan; "
            "from bench.config import resolve; "
            "print(Plan.of(resolve(overrides={'methods': ['fm@euler7'], "
            "'datasets': ['moons']})).runs()[0].config_hash)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == _spec("fm@euler7").config_hash


@pytest.mark.parametrize(("name", "words"), [
    ("fm@euler0", f"from 1 to {MAX_STEPS:,}"),
    (f"fm@euler{MAX_STEPS + 1}", "from 1 to"),
    ("fm@euler", "takes a step count"),
    ("fm@euler-3", "from 1 to"),
    ("fm@dopri510", "adaptive"),
    ("fm@eulr3", "Did you mean: fm@euler{N}"),
    ("fmx@euler3", "Did you mean: fm@euler3"),
    ("otnfm-online@euler3", "has no sampler axis"),
    ("shortcut@step3", "power-of-two"),
    ("fm-euler7", "Did you mean: fm@euler7?"),
    ("otcfm-global-heun3", "Did you mean: otcfm-global@heun3?"),
])
def test_bad_sampler_is_refused_clearly(name, words):
    with pytest.raises(RegistryError) as err:
        METHODS.match(name)
    assert name in str(err.value) and words in str(err.value)
    assert name not in METHODS


def test_bad_sampler_from_the_cli(tmp_path):
    for bad, words in (("fm@heun0", "heun takes a step count"),
                       ("fm@rk4", "Samplers of 'fm': euler{N}, midpoint{N}, heun{N}, dopri5")):
        res = runner.invoke(app, ["run", "-m", bad, "-d", "moons", "--out", str(tmp_path)])
        assert res.exit_code == 2 and words in res.output, res.output
    assert not (tmp_path / "records.jsonl").exists()


def test_suite_file_lists_samplers(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\ndatasets: [moons]\nmethods: [fm@euler7, fm@euler100, 'otcfm@heun*']\n")
    plan = Plan.of(resolve(f))
    assert plan.methods == ("fm@euler7", "fm-euler100", "otcfm-heun1", "otcfm-heun2",
                            "otcfm-heun5")


def test_any_sampler_end_to_end(tmp_path):
    out = tmp_path / "res"
    res = runner.invoke(app, ["run", "-m", "fm@euler7,fm-euler10,otcfm@heun3", "-d", "moons",
                              "--seeds", "0", "--out", str(out), *tiny_args()])
    assert res.exit_code == 0, res.output
    by = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert set(by) == {"data", "fm@euler7", "fm-euler10", "otcfm@heun3"}
    assert by["fm@euler7"].status == "ok" and by["fm@euler7"].nfe == 7
    assert by["otcfm@heun3"].status == "ok" and by["otcfm@heun3"].nfe == 6
    assert by["fm@euler7"].recipe_hash == by["fm-euler10"].recipe_hash
    assert by["fm@euler7"].checkpoint == by["fm-euler10"].checkpoint
    assert by["fm@euler7"].config["method"] == "fm@euler7"
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    assert "fm@euler7" in (out / "report.md").read_text()
