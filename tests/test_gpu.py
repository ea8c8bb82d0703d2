"""On a CUDA device: bf16 training, channels-last images, sampling with counted NFE (skipped
without CUDA; run with ``pytest -m gpu``)."""

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.results import read_records
from tests.conftest import IMAGE_SETS

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_image_suite_trains_in_bf16_on_the_gpu(tmp_path):
    out = tmp_path / "res"
    sets = [a for s in (*IMAGE_SETS, "train.amp=bf16") for a in ("--set", s)]
    res = CliRunner().invoke(app, ["run", "-m", "otnfm-online,fm-euler10", "-d", "digits",
                                   "--device", "cuda", "--out", str(out), *sets])
    assert res.exit_code == 0, res.output
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert recs["otnfm-online"].device.startswith("cuda") and recs["fm-euler10"].nfe == 10
    assert all(r.status == "ok" for r in recs.values())
