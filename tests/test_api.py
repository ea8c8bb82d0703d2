"""The public API: a trained model back from its results folder."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.api import ModelNotFound, load
from bench.cli import app
from bench.results import read_records
from bench.sampling import generate
from bench.seeding import Streams
from tests.conftest import tiny_args


def test_load_samples_what_the_run_evaluated(tmp_path):
    out = tmp_path / "res"
    res = CliRunner().invoke(app, ["run", "-m", "otnfm-online,fm-euler1,fm-euler4", "-d",
                                   "moons", "--seeds", "0,1", "--out", str(out), *tiny_args()])
    assert res.exit_code == 0, res.output
    model = load(out, "fm-euler4", dataset="moons", seed=1, device="cpu")
    assert model.nfe == 4 and model.dataset == "moons" and model.seed == 1
    x = model.sample(100, generator=torch.Generator().manual_seed(0), batch_size=30)
    y = model.sample(100, generator=torch.Generator().manual_seed(0))
    assert x.shape == (100, 2) and torch.allclose(x, y, atol=1e-5)  # batching: rounding only
    # the same samples as the run's own evaluation: same weights, same eval noise stream
    rec = next(r for r in read_records(out / "records.jsonl").records
               if r.method == "fm-euler4" and r.seed == 1)
    saved = torch.from_numpy(np.load(out / rec.samples_path))
    noise = model.data.source(saved.shape[0], Streams(1, "cpu")["eval"])
    again, _ = generate(model.method, noise, 500)
    torch.testing.assert_close(again, saved)
    with pytest.raises(ModelNotFound, match="2 checkpoints"):
        load(out, "otnfm-online", device="cpu")
    with pytest.raises(ModelNotFound, match="0 checkpoints"):
        load(out, "meanflow", device="cpu")
