"""A dataset declares what is checked of it before any work where it registers
(``register_dataset(..., check=...)``): the built-in image datasets their files and package,
a plugin dataset its own; ``bench run --dry-run`` lists what the check finds."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.datasets import images
from bench.planner import Problem as PlannerProblem
from bench.problems import Problem
from bench.registry import DATASETS, RegistryError, register_dataset

cli = CliRunner()

#: a plugin dataset read from a file under data.root, with the check of that file
PLUGIN = '''
import numpy as np
import torch

from bench.datasets.base import DataBundle, data_root, gaussian_source
from bench.problems import Problem
from bench.registry import register_dataset

FILE = "blobs.npy"


def blobs_problems(key, cfg):
    """blobs.npy under data.root."""
    root = data_root(cfg)
    if (root / FILE).is_file():
        return []
    return [Problem(f"no {FILE} in {root}", f"dataset {key} is read from it",
                    f"put {FILE} there, or point --data-root at its folder")]


@register_dataset("test-blobs", kind="points", check=blobs_problems)
def blobs(cfg, seed, device):
    """2-D points from blobs.npy."""
    x = torch.as_tensor(np.load(data_root(cfg) / FILE), dtype=torch.float32, device=device)
    return DataBundle(name="test-blobs", kind="points", shape=(2,), train=x, eval=x, floor=x,
                      source=gaussian_source((2,), device))
'''


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "blobs_plugin.py"
    path.write_text(PLUGIN)
    yield path
    DATASETS.unregister("test-blobs")


def dry_run(plugin, root, out, *extra: str):
    res = cli.invoke(app, ["run", "--plugin", str(plugin), "-m", "naive-map", "-d",
                           "test-blobs", "--data-root", str(root), "--out", str(out),
                           "--dry-run", *extra])
    assert "Traceback" not in res.output, res.output
    return res


def test_a_plugin_datasets_check_is_listed_by_the_dry_run(plugin, tmp_path):
    empty = tmp_path / "empty"
    res = dry_run(plugin, empty, tmp_path / "res")
    assert res.exit_code == 2, res.output
    assert "Problems (1):" in res.output
    assert f"1. no blobs.npy in {empty}" in res.output
    assert "why: dataset test-blobs is read from it" in res.output
    assert "fix: put blobs.npy there, or point --data-root at its folder" in res.output
    assert "# run test-blobs naive-map seed 0" in res.output
    assert not (tmp_path / "res").exists()


def test_nothing_is_listed_when_the_check_finds_nothing(plugin, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "blobs.npy").write_bytes(b"")  # the check looks for the file, it loads nothing
    res = dry_run(plugin, root, tmp_path / "res", "--no-estimate")
    assert res.exit_code == 0, res.output
    assert "Problems" not in res.output and "# run test-blobs naive-map seed 0" in res.output


def test_the_check_is_kept_in_the_entry_and_must_be_callable():
    def check(key, cfg):
        return []

    try:
        register_dataset("test-checked", kind="points", check=check)(lambda cfg, s, d: None)
        assert DATASETS.entry("test-checked").meta == {"kind": "points", "check": check}
        register_dataset("test-unchecked", kind="points")(lambda cfg, s, d: None)
        assert "check" not in DATASETS.entry("test-unchecked").meta
        with pytest.raises(RegistryError, match="check must be a function"):
            register_dataset("test-bad-check", check="blobs.npy")
    finally:
        for name in ("test-checked", "test-unchecked", "test-bad-check"):
            DATASETS.unregister(name)


def test_the_image_datasets_declare_their_checks_next_to_their_loaders():
    assert DATASETS.entry("cifar10").meta["check"] is images.cifar10_problems
    assert DATASETS.entry("mnist").meta["check"] is images.mnist_problems
    assert DATASETS.entry("mnist5k").meta["check"] is images.mnist5k_problems
    assert "check" not in DATASETS.entry("digits").meta  # ships with scikit-learn
    assert "check" not in DATASETS.entry("moons").meta
    assert PlannerProblem is Problem  # the planner's name for it still works
