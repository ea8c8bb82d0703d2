"""The scripts: the README result blocks copied from a report, the mnist5k study."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

REPORT = """# OT-NFM Bench report: t

Built from 4 records (4 ok, 0 failed) in `r/records.jsonl`; configs: `c.yaml`.

## moons

| method | seeds | NFE | w2 ↓ | train FLOPs |
|---|---|---|---|---|
| otnfm-online | 3 | 1 | 0.19 ± 0.01 [0.16, 0.22] | 5e+11 |

### Coupling × parametrisation (moons)

`w2` grid text.

| parametrisation | online OT |
|---|---|
| map G(z) | 0.18<br>`otmap-online` |

Paired differences of `w2`:
- online OT, neural flow vs map G(z): not significant.

### Training compute

| recipe | steps |
|---|---|
| otnfm-online | 2500 |

### Gap to fm-euler100 during training

Ratio text.

| method | seeds | step 50 | step 100 |
|---|---|---|---|
| otnfm-online | 3 | 0.912 [0.908, 0.916] | 0.844 [0.832, 0.856] |

Curve scoring took 3.53% of the wall-clock.

## Across datasets

The comparisons side by side.

| comparison (A vs B) | moons (`w2`, 3 seeds) | spiral (`w2`, 3 seeds) | A better / worse / n.s. |
|---|---|---|---|
| online OT, flow vs map | **0.01** [0.004, 0.016] worse | 0.005 [-0.002, 0.01] n.s. | 0 / 1 / 1 |

## Runs

| run | config hash |
"""


def _update(tmp_path, marker):
    report, readme = tmp_path / "r.md", tmp_path / "README.md"
    report.write_text(REPORT)
    readme.write_text(f"intro\n<!-- {marker}:start -->\nold\n<!-- {marker}:end -->\nend\n")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme_table.py"),
                    str(report), str(readme), marker], check=True)
    return readme.read_text()


def test_tables_keep_the_named_columns(tmp_path):
    text = _update(tmp_path, "t-table")
    assert "Built from 4 records" in text and "**moons**" in text and "old" not in text
    assert "| otnfm-online | 3 | 1 | 0.19 ± 0.01 [0.16, 0.22] |" in text
    assert "train FLOPs" not in text and "parametrisation" not in text


def test_grid_markers_copy_the_grid_and_its_sentences_only(tmp_path):
    text = _update(tmp_path, "t-grid")
    assert "**Coupling × parametrisation (moons)**" in text
    assert "| map G(z) | 0.18<br>`otmap-online` |" in text
    assert "neural flow vs map G(z): not significant." in text
    assert "Training compute" not in text and "| otnfm-online | 2500 |" not in text
    assert text.startswith("intro\n") and text.endswith("end\n")


def test_across_markers_copy_the_across_datasets_section_only(tmp_path):
    text = _update(tmp_path, "t-across")
    assert "The comparisons side by side." in text and "| 0 / 1 / 1 |" in text
    assert "Across datasets" not in text and "## Runs" not in text and "map G(z) | 0.18" not in text
    readme = tmp_path / "README.md"
    (tmp_path / "r.md").write_text(REPORT.split("## Across datasets")[0])
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme_table.py"),
                          str(tmp_path / "r.md"), str(readme), "t-across"],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "no 'Across datasets' section" in res.stderr


def test_gap_markers_copy_the_learning_curve_gap_tables_only(tmp_path):
    text = _update(tmp_path, "t-gap")
    assert "**moons: Gap to fm-euler100 during training**\n\nRatio text." in text
    assert "| otnfm-online | 3 | 0.912 [0.908, 0.916] | 0.844 [0.832, 0.856] |" in text
    assert "Curve scoring" not in text and "| otnfm-online | 2500 |" not in text
    assert "map G(z) | 0.18" not in text and text.endswith("end\n")


def test_mnist5k_study_runs_both_lanes_into_one_folder_then_the_three_reports(tmp_path):
    """scripts/mnist5k_study.sh with a recording stand-in for `bench`: the ladder, its K = 1
    sweep, the peers and the curves run, the ladder and the peers into one shared folder, and
    the three reports select their suites from it."""
    proc, log = _study(tmp_path, "")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    calls = log.read_text().splitlines()
    study, curves = str(tmp_path / "study"), str(tmp_path / "curves")
    runs = [c for c in calls if c.startswith(("run", "sweep"))]
    assert sorted(c.split(" --out ")[0] for c in runs) == [  # both lanes end with the curves
        "run --config configs/curves-mnist5k.yaml", "run --config configs/curves-mnist5k.yaml",
        "run --config configs/ladder-mnist5k.yaml",
        "run --config configs/ladder-mnist5k.yaml --seeds 0",
        "run --config configs/peers-mnist5k.yaml",
        "run --config configs/peers-mnist5k.yaml -m " + PEERS_BUT_REFLOW,
        "sweep --config configs/curves-mnist5k-k1.yaml",
        "sweep --config configs/ladder-mnist5k-k1.yaml",
        "sweep --config configs/ladder-mnist5k-k1.yaml --set seeds=[0]"]
    assert all(f"--out {curves if 'curves' in c else study} " in c for c in runs)
    lane1 = [c.split(" --out ")[0] for c in calls if "ladder" in c and not c.startswith("report")]
    assert lane1 == [  # seed 0 of the ladder and its K = 1 sweep, then every seed
        "run --config configs/ladder-mnist5k.yaml --seeds 0",
        "sweep --config configs/ladder-mnist5k-k1.yaml --set seeds=[0]",
        "run --config configs/ladder-mnist5k.yaml",
        "sweep --config configs/ladder-mnist5k-k1.yaml"]
    reports = [c for c in calls if c.startswith("report")]
    assert len(reports) == 3 and calls[-3:] == reports  # after both lanes
    assert "-c configs/ladder-mnist5k.yaml -c configs/ladder-mnist5k-k1.yaml" in reports[0]
    assert f"report {study} -c configs/peers-mnist5k.yaml" in reports[1]
    assert (tmp_path / "study" / "logs" / "lane1.log").exists()


#: the peers of configs/peers-mnist5k.yaml but reflow (lane 2 runs them on every seed first)
PEERS_BUT_REFLOW = ",".join(
    m for m in yaml.safe_load((ROOT / "configs" / "peers-mnist5k.yaml").read_text())["methods"]
    if not m.startswith("reflow"))


def _run_script(tmp_path, script, body, **folders):
    """scripts/<script> started with a stand-in `bench` whose body is ``body`` (each call's
    arguments appended to ``tmp_path/calls``); ``folders``: env name -> folder under tmp_path."""
    from tests.conftest import sigint_default

    log = tmp_path / "calls"
    fake = tmp_path / "bench"
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\n{body}\n")
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "BENCH": str(fake),
           **{k: str(tmp_path / v) for k, v in folders.items()}}
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / script)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=sigint_default)
    return proc, log


def _study(tmp_path, body):
    """scripts/mnist5k_study.sh started with a stand-in `bench` whose body is ``body``."""
    return _run_script(tmp_path, "mnist5k_study.sh", body, STUDY="study", CURVES="curves")


def test_mnist5k_study_goes_on_after_a_suite_with_failed_runs_and_says_so(tmp_path):
    """`bench run` exits 1 when a run failed: the lane still runs its next suite, the reports
    are still written, and the script's exit status is not 0."""
    proc, log = _study(tmp_path, 'case "$*" in *peers-mnist5k.yaml*) exit 1;; esac')
    out, _ = proc.communicate(timeout=60)
    calls = log.read_text()
    assert proc.returncode == 1, out
    assert "configs/curves-mnist5k.yaml" in calls and calls.count("report ") == 3


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_mnist5k_study_stops_both_lanes_on_ctrl_c_or_kill_without_their_next_suites(tmp_path,
                                                                                   sig):
    """Ctrl-C, or a kill of the script in the background: each lane's `bench` gets SIGTERM,
    saves (here: a second's work after the signal) and exits, the script waits for that, and
    no lane starts its next suite."""
    import signal
    import time

    log = tmp_path / "calls"
    proc, log = _study(tmp_path, 'case "$*" in run*|sweep*) '
                       f'trap \'sleep 1; echo saved >> {log}; exit 130\' TERM; '
                       'sleep 30 & wait;; esac')
    deadline = time.time() + 20
    while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 2):
        time.sleep(0.1)  # both lanes are in their first suite
    time.sleep(0.3)
    proc.send_signal(getattr(signal, sig))
    out, _ = proc.communicate(timeout=20)
    calls = log.read_text()
    assert proc.returncode == 130 and "run again to resume" in out
    assert calls.count("saved") == 2  # both benches saved before the script ended
    assert "ladder-mnist5k-k1" not in calls and "curves-mnist5k" not in calls
    assert "report " not in calls


def _tiny_fm(out: Path, method: str) -> None:
    """A real (tiny) fm-recipe checkpoint of 8x8 digits under ``out``, trained by the CLI."""
    from typer.testing import CliRunner

    from bench.cli import app
    from tests.conftest import IMAGE_SETS

    sets = [a for s in IMAGE_SETS for a in ("--set", s)]
    res = CliRunner().invoke(app, ["run", "-m", method, "-d", "digits", "--seeds", "0",
                                   "--metrics", "collapse", "--out", str(out), *sets])
    assert res.exit_code == 0, res.output


def _script(name: str):
    """scripts/<name>.py imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_reflow_pair_tolerance_script_measures_a_trained_teacher(tmp_path, capsys):
    """scripts/reflow_pair_tolerance.py on a real (tiny) fm checkpoint of 8x8 digits: the
    tightest tolerance is the reference (no change), a loose one costs fewer counted NFE and
    moves the pairs; a folder without a teacher is a clear error."""
    out = tmp_path / "res"
    _tiny_fm(out, "fm-euler1")
    script = _script("reflow_pair_tolerance")
    md = tmp_path / "tol.md"
    assert script.main([str(out), "--tols", "1e-2,1e-5", "--n", "40", "--out", str(md)]) == 0
    table = [line.strip("| ").split(" | ") for line in md.read_text().splitlines()
             if line.startswith("| ")]
    assert table[0][0] == "atol = rtol"
    tight, loose = table[1:]
    assert (float(tight[0]), float(loose[0])) == (1e-5, 1e-2)  # the tightest first
    assert float(loose[1]) < float(tight[1])  # NFE per pair
    assert float(tight[3]) == 0.0 and float(loose[3]) > 0.0  # RMS change vs the tightest
    assert float(loose[5]) <= float(loose[4])  # a pair's median RMS change <= the largest
    assert tight[6] == "0.0%" and tight[-1] == "0.00%"
    capsys.readouterr()
    assert script.main([str(tmp_path / "nothing")]) == 2
    assert "train it first" in capsys.readouterr().err


def test_heun_one_step_script_reproduces_the_sampler_and_checks_the_path(tmp_path, capsys):
    """scripts/heun_one_step.py on a real (tiny) fm checkpoint of 8x8 digits: its Heun point
    is the registered sampler's output (the sampler gap is ~0, while the midpoint sampler's
    output on the same noise differs), the cosines are cosines, and a folder without the
    method or a method off the straight path is a clear error."""
    import dataclasses

    from bench.api import load
    from bench.sampling import generate

    out = tmp_path / "res"
    _tiny_fm(out, "fm-heun1")
    script = _script("heun_one_step")
    (row,) = script.measure(out, "fm-heun1", None, None, 32)
    assert row["seed"] == 0 and row["n"] == 32
    assert row["sampler_gap"] < 1e-5
    for key in ("cos_guess_t1", "cos_guess_half", "cos_heun_change"):
        assert -1.0 <= row[key] <= 1.0
    assert row["rms_z"] > 0.5 and row["rms_heun_change"] > 0.0
    mid = load(out, "fm-midpoint1", device="cpu")
    z = mid.data.source(32, torch.Generator().manual_seed(0))
    heun = load(out, "fm-heun1", device="cpu")
    xm, _ = generate(mid.method, z, 32)
    xh, _ = generate(heun.method, z, 32)
    assert (xm - xh).abs().max().item() > 1e-3  # the gap above can tell samplers apart
    md = tmp_path / "heun.md"
    assert script.main([str(out), "-m", "fm-heun1", "--n", "16", "--out", str(md)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| 0 |")]
    assert len(rows) == 1
    capsys.readouterr()
    assert script.main([str(tmp_path / "nothing")]) == 2
    assert "train it first" in capsys.readouterr().err
    heun.method.path = dataclasses.replace(heun.method.path, kind="cosine")
    with pytest.raises(ValueError, match="straight"):
        script.decompose(heun, 8)


@pytest.mark.slow
def test_threads_vs_processes_script_times_three_setups():
    """scripts/threads_vs_processes.py runs its three set-ups (tiny: UNet xs, batch 2, one
    step) and prints one table row each with a positive time per process."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "threads_vs_processes.py"),
                           "--unet", "xs", "--batch", "2", "--steps", "1", "--cores", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.strip("| ").split(" | ") for line in proc.stdout.splitlines()
            if line.startswith("| ") and "set-up" not in line]
    assert [r[0] for r in rows] == ["1 process x 1 thread", "1 process x 2 threads",
                                    "2 processes x 1 thread"]
    assert len(rows[2][1].split(", ")) == 2
    assert all(float(ms) > 0 for r in rows for ms in r[1].split(", "))


def _referee(tmp_path, body):
    """scripts/referee_mnist5k.sh started with a stand-in `bench` whose body is ``body``."""
    return _run_script(tmp_path, "referee_mnist5k.sh", body, OUT="v3", SENS="sens",
                       CURVES="curves")


def test_referee_script_runs_the_issue_28_suites_most_useful_first(tmp_path):
    proc, log = _referee(tmp_path, "")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    calls = [c.split(" --out ")[0] for c in log.read_text().splitlines()]
    assert calls == [
        "run --config configs/peers-mnist5k.yaml -m ect,fm-euler100",
        "sweep --config configs/t-sampling-mnist5k.yaml",
        "sweep --config configs/sensitivity-mnist5k.yaml --set seeds=[0]",
        "run --config configs/peers-mnist5k.yaml -m " + PEERS_BUT_REFLOW,
        "run --config configs/ladder-mnist5k.yaml",
        "sweep --config configs/ladder-mnist5k-k1.yaml",
        "run --config configs/mnist5k.yaml",
        "run --config configs/peers-mnist5k.yaml",
        "sweep --config configs/sensitivity-mnist5k.yaml",
        "run --config configs/curves-mnist5k.yaml -m "
        "otnfm-online,otmap-online,loomcfm-euler1,fm-euler100 --seeds 0,1,2",
        "sweep --config configs/curves-mnist5k-k1.yaml --set seeds=[0,1,2]"]
    folder = {"curves": "curves", "sensitivity": "sens"}
    for c in log.read_text().splitlines():
        where = next((f for k, f in folder.items() if k in c), "v3")
        assert f"--out {tmp_path / where} " in c, c


def test_referee_script_goes_on_after_failed_runs_and_stops_on_a_kill(tmp_path):
    import signal
    import time

    proc, log = _referee(tmp_path, 'case "$*" in *t-sampling*) exit 1;; esac')
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "curves-mnist5k-k1" in log.read_text()

    (tmp_path / "calls").unlink()  # bad input (exit 2) stops it
    proc, log = _referee(tmp_path, 'case "$*" in *t-sampling*) exit 2;; esac')
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and log.read_text().count("--config") == 2, out

    (tmp_path / "calls").unlink()
    proc, log = _referee(tmp_path, f"trap 'sleep 1; echo saved >> {log}; exit 130' TERM; "
                                   "sleep 30 >/dev/null 2>&1 & wait")
    deadline = time.time() + 20
    while time.time() < deadline and not log.exists():
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    calls = log.read_text()
    assert proc.returncode == 130 and "run again to resume" in out
    assert calls.count("saved") == 1 and calls.count("--config") == 1
