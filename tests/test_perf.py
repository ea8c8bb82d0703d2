"""`bench perf` end to end on tiny settings (its numbers are timings: only their presence,
consistency and the counted NFE are checked, never a speed)."""

import json

from typer.testing import CliRunner

from bench.cli import app
from bench.perf import Stat

cli = CliRunner()


def test_perf_end_to_end_writes_a_json_line_and_markdown(tmp_path):
    md = tmp_path / "perf.md"
    res = cli.invoke(app, ["perf", "-d", "moons", "-m", "otnfm-minibatch,otnfm-online,fm-euler10",
                           "--repeats", "2", "--warmup", "1", "--train-steps", "3",
                           "--sample-batch", "64", "--ot-sizes", "32,64", "--banks", "100,400",
                           "--set", "train.batch_size=32", "--set", "net.hidden=16",
                           "--out", str(tmp_path), "--md", str(md)])
    assert res.exit_code == 0, res.output
    (line,) = (tmp_path / "perf.jsonl").read_text().splitlines()
    rec = json.loads(line)
    assert set(rec["training"]) == {"otnfm-minibatch", "otnfm-online", "fm"}
    step = rec["training"]["otnfm-minibatch"]
    parts = sum(step[k]["median"] for k in ("data", "coupling", "forward", "backward",
                                            "optimizer"))
    assert step["coupling"]["median"] > 0 and step["step"]["median"] > 0
    assert parts > 0.5 * step["step"]["median"]  # the parts make up the step
    assert rec["training"]["fm"]["coupling"]["median"] == 0
    assert set(rec["train_loop"]["otnfm-minibatch"]) == {"overlap", "sequential"}
    assert rec["sampling"]["fm-euler10"]["nfe"] == 10  # counted by the hook
    assert rec["sampling"]["otnfm-online"]["nfe"] == 1
    assert [r["n"] for r in rec["solvers"]] == [32, 64]
    assert all(r["auto"] in ("pot", "scipy") for r in rec["solvers"])
    assert set(rec["bank"]) == {"100", "400"}
    text = md.read_text()
    assert "Training step" in text and "× fm-euler100" not in text.split("## Sampling")[0]
    assert "Ratio 400 / 100" in text


def test_unknown_dataset_names_the_choices(tmp_path):
    res = cli.invoke(app, ["perf", "-d", "moonz", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "moons" in res.output


def test_stat_median_and_iqr():
    s = Stat.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median == 3.0 and s.iqr == 2.0 and s.n == 5
