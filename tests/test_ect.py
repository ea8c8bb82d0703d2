"""Easy consistency tuning (bench/methods/ect.py): its schedule, its boundary condition, its
start from the fm teacher, and its counted compute through the CLI."""

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import ConfigError
from bench.couplings import Independent
from bench.methods.base import Batch
from bench.methods.ect import ECT, ECTConfig
from bench.models import build_method
from bench.registry import DATASETS
from bench.results import read_records
from bench.seeding import Streams
from tests.conftest import tiny_args


class _Velocity(torch.nn.Module):
    """v(x, t) = w x + t (one learnable weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x, t):
        return self.w * x + t[:, None]


def _ect(total=80, **cfg):
    return ECT(_Velocity(), Independent(lambda n, g: torch.randn(n, 2, generator=g)), total,
               ECTConfig(**cfg))


def test_consistency_function_is_the_identity_at_the_data_end_and_one_euler_step_elsewhere():
    m = _ect()
    x = torch.randn(7, 2)
    torch.testing.assert_close(m.consistency(x, torch.ones(7)), x)
    t = torch.full((7,), 0.25)
    torch.testing.assert_close(m.consistency(x, t), x + 0.75 * (0.5 * x + 0.25))
    out = m.sample(x)
    assert out.nfe == 1
    torch.testing.assert_close(out.x, x + 0.5 * x)  # f(x0, 0): one step from pure noise


def test_stages_split_the_training_steps_and_shrink_sigma_t_minus_sigma_r():
    m = _ect(total=80, stages=8)
    gaps, zero_share = [], []
    for stage in range(8):
        m.calls = stage * 10
        assert m.stage() == stage
        st, sr = m.sigmas(20000, torch.Generator().manual_seed(0), torch.device("cpu"))
        assert (sr >= 0).all() and (sr < st).all()
        gaps.append(float(((st - sr) / st).mean()))
        zero_share.append(float((sr == 0).float().mean()))
    m.calls = 10_000
    assert m.stage() == 7  # never past the last stage
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))
    # the first stage is mostly pure denoising (r = 0: the target is the data itself)
    assert zero_share[0] > 0.5 and zero_share[-1] == 0.0


def test_loss_targets_the_data_where_sigma_r_is_zero_and_counts_its_steps():
    m = _ect(total=80, q=1.0001, k=8.0)  # stage 0, q ~ 1: sigma_r = 0 for every row
    x1 = torch.randn(16, 2)
    gens = Streams(0)
    loss, stats = m.loss(Batch(x1, torch.arange(16)), gens)
    assert m.calls == 1 and stats["ect_stage"] == 0.0
    gens = Streams(0)
    pairs = m.coupling.pair(x1, torch.arange(16), gens["noise"])
    st, _ = m.sigmas(16, gens["time"], x1.device)
    t = 1 / (1 + st)
    pred = m.consistency((1 - t)[:, None] * pairs.x0 + t[:, None] * x1, t)
    want = ((pred - x1).pow(2).sum(1).sqrt() / st).mean()
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert m.net.w.grad is not None and torch.isfinite(m.net.w.grad)


def test_the_step_count_survives_a_checkpoint():
    m = _ect()
    m.calls = 33
    other = _ect()
    other.load_extra_state_dict(m.extra_state_dict())
    assert other.calls == 33 and other.stage() == m.stage()


def test_bad_ect_settings_are_refused():
    with pytest.raises(ConfigError, match="ect"):
        ECTConfig(q=1.0).check()


def test_ect_starts_from_the_fm_teacher_and_counts_the_teacher_and_both_calls(tmp_path,
                                                                              tiny_cfg, cpu):
    cfg = tiny_cfg()
    data = DATASETS.get("moons")(cfg.data, 0, cpu)
    teacher = build_method("fm-dopri5", data, cfg, cpu, 0)
    student = build_method("ect", data, cfg, cpu, 1)
    student.prepare(teacher.eval(), 100, Streams(0))
    assert all(torch.equal(p, q) for p, q in zip(student.parameters(), teacher.parameters(),
                                                  strict=True))
    out = tmp_path / "res"
    res = CliRunner().invoke(app, ["run", "-m", "ect,fm-euler1", "--out", str(out),
                                   *tiny_args()])
    assert res.exit_code == 0, res.output
    recs = {r.method: r for r in read_records(out / "records.jsonl").records}
    assert recs["ect"].status == "ok" and recs["ect"].nfe == 1
    c, teacher_c = recs["ect"].train_compute, recs["fm-euler1"].train_compute
    assert c["teacher"]["steps"] == teacher_c["steps"] == c["steps"]
    # one call with gradient and (unless every row's sigma_r is 0) one without, per step
    assert c["steps"] < c["forwards"] <= 2 * c["steps"]
    assert c["total_flops"] == pytest.approx(c["flops"] + teacher_c["total_flops"])
    assert recs["ect"].train_breakdown["teacher_seconds"] == recs["fm-euler1"].train_seconds
    assert recs["ect"].config["ect"]["stages"] == 8
    assert "ect" not in recs["fm-euler1"].config
