import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from bench.couplings import (
    GlobalOT,
    Independent,
    MinibatchOT,
    OnlineOT,
    independent_cost,
    ot_permutation,
    pair_cost,
    pick_solver,
    solve_assignment,
)
from bench.distances import sq_dists


def gauss(n, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def source(n, gen):
    return torch.randn(n, 2, generator=gen)


@pytest.mark.parametrize("solver", ["pot", "scipy"])
@pytest.mark.parametrize("n,d", [(64, 2), (50, 10)])
def test_exact_assignment_matches_ot_emd_and_lsa(solver, n, d):
    x1, x0 = gauss(n, d, 1) * 2 + 1, gauss(n, d, 2)
    c = sq_dists(x1.double(), x0.double()).numpy()
    assert np.allclose(c, ot.dist(x1.double().numpy(), x0.double().numpy()), atol=1e-9)
    perm = solve_assignment(c, solver)
    assert sorted(perm.tolist()) == list(range(n))  # a permutation
    rows, cols = linear_sum_assignment(c)
    emd_cost = ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), c)
    ours = c[np.arange(n), perm].mean()
    assert ours == pytest.approx(c[rows, cols].mean(), rel=1e-10)
    assert ours == pytest.approx(emd_cost, rel=1e-10)


def test_minibatch_ot_pairs_are_a_permutation_with_lower_cost():
    x1 = gauss(128, seed=3) * 0.5 + torch.tensor([3.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    pairs = MinibatchOT(source, "auto").pair(x1, torch.arange(128), gen)
    noise = source(128, torch.Generator().manual_seed(0))
    # the same noise points, each used exactly once
    assert torch.equal(pairs.x0.sort(0).values, noise.sort(0).values)
    assert torch.equal(pairs.x1, x1)
    s = pairs.stats
    assert s["cost"] <= s["cost_independent"]
    assert s["cost"] == pytest.approx(pair_cost(pairs.x0, x1))
    assert s.get("solver_pot", 0) + s.get("solver_scipy", 0) == 1.0  # which one ran
    assert s["solver_seconds"] >= 0


def test_independent_cost_is_the_mean_of_the_sq_dists():
    x0, x1 = gauss(40, 3, 4), gauss(40, 3, 5) + 1
    assert independent_cost(x0, x1) == pytest.approx(float(sq_dists(x1, x0).mean()), rel=1e-5)
    pairs = Independent(source).pair(gauss(10, seed=6), torch.arange(10),
                                     torch.Generator().manual_seed(0))
    assert pairs.stats["solver_seconds"] == 0.0


def test_solver_choice_rule():
    assert pick_solver("auto", 2) in ("pot", "scipy")
    assert pick_solver("scipy", 2) == "scipy" and pick_solver("pot", 784) == "pot"
    with pytest.raises(ValueError, match="unknown OT solver"):
        pick_solver("sinkhorn", 2)


@pytest.mark.parametrize("caches", [1, 3])
def test_online_bank_cost_never_increases_and_state_roundtrips(caches):
    data = gauss(512, seed=7) * 0.3 + torch.tensor([2.0, -1.0])
    coupling = OnlineOT(source, n_train=512, solver="auto", caches=caches)
    gen = torch.Generator().manual_seed(0)
    coupling.init_bank(gen)
    initial = coupling.bank.bank.clone()
    costs = [coupling.bank_cost(data)]
    for _ in range(100):
        idx = torch.randperm(512, generator=gen)[:64]
        pairs = coupling.pair(data[idx], idx, gen)
        assert pairs.stats["cost"] <= pairs.stats["cost_before"] + 1e-6
        costs.append(coupling.bank_cost(data))
    assert all(b <= a + 1e-6 for a, b in zip(costs, costs[1:], strict=False))
    # no noise vector is lost or duplicated: the ids are a permutation, and every slot holds
    # the vector its id names
    ids = coupling.bank.ids.flatten()
    assert torch.equal(ids.sort().values, torch.arange(caches * 512))
    assert torch.equal(coupling.bank.bank.flatten(0, 1), initial.flatten(0, 1)[ids])
    if caches == 1:  # it approaches the exact OT cost of the whole set (one global assignment)
        c = sq_dists(data.double(), coupling.bank.bank[0].double()).numpy()
        rows, cols = linear_sum_assignment(c)
        optimum = c[rows, cols].mean()
        assert costs[-1] - optimum < 0.5 * (costs[0] - optimum)
    state = coupling.state_dict()
    other = OnlineOT(source, n_train=512, caches=caches)
    other.load_state_dict(state)
    assert torch.equal(other.bank.bank, coupling.bank.bank)
    assert torch.equal(other.bank.ids, coupling.bank.ids)
    with pytest.raises(ValueError, match="bank has 512 entries"):
        OnlineOT(source, n_train=100, caches=caches).load_state_dict(state)


def test_each_visit_writes_back_into_the_cache_it_used():
    data = gauss(64, seed=3) + 3
    coupling = OnlineOT(source, n_train=64, caches=4)
    gen = torch.Generator().manual_seed(1)
    coupling.init_bank(gen)
    before = coupling.bank.bank.clone()
    idx = torch.arange(16)
    pairs = coupling.pair(data[idx], idx, gen)
    changed = (coupling.bank.bank != before).any(-1)  # [K, n] slots that changed
    assert not changed[:, 16:].any()  # only the visited points' slots
    assert changed.sum(0).le(1).all()  # at most one cache per visited point
    # the pairs trained on are exactly what the visited slots now hold
    held = coupling.bank.bank.permute(1, 0, 2)[idx]  # [16, K, 2]
    assert all(any(torch.equal(pairs.x0[i], held[i, k]) for k in range(4)) for i in range(16))


def test_a_one_cache_bank_saved_before_caches_existed_loads():
    coupling = OnlineOT(source, n_train=10)
    coupling.load_state_dict({"bank": torch.randn(10, 2), "ids": torch.arange(10)})
    assert coupling.bank.bank.shape == (1, 10, 2) and coupling.bank.ids.shape == (1, 10)


def test_global_ot_is_the_exact_assignment_of_the_whole_set():
    data = gauss(80, seed=4) * 0.5 + 1
    coupling = GlobalOT(source, data, solver="scipy", caches=2)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(80)
    coupling.pair(data, idx, gen)
    for k in range(2):
        x0 = coupling.bank.bank[k]
        c = sq_dists(data.double(), x0.double()).numpy()
        plan = ot.emd(np.full(80, 1 / 80), np.full(80, 1 / 80), c)
        assert np.allclose(plan, np.eye(80) / 80)  # our pairing is POT's optimal plan
    first = coupling.pair(data[:8], idx[:8], gen).x0
    assert any(torch.equal(first[0], coupling.bank.bank[k, 0]) for k in range(2))
    with pytest.raises(ValueError, match="exceed coupling.global_max=50"):
        GlobalOT(source, data, max_points=50)


def test_auto_solver_is_measured_and_cached():
    from bench import couplings

    choice, timings = couplings.measured_choice(64, 2)
    assert set(timings) == {"pot", "scipy"} and all(t > 0 for t in timings.values())
    assert choice == min(timings, key=timings.get)
    assert couplings.measured_choice(50, 2)[1] is timings  # same bucket: measured once
    assert pick_solver("auto", 2, 64) == choice


def test_overlapped_minibatch_ot_gives_the_same_training(tiny_cfg, cpu):
    """Solving the next assignment in a worker thread changes nothing, bit for bit."""
    from bench.models import build_method
    from bench.registry import DATASETS
    from bench.seeding import Streams
    from bench.trainer import train

    outs = []
    for overlap in ("off", "on"):
        cfg = tiny_cfg(coupling={"overlap": overlap})
        data = DATASETS.get("moons")(cfg.data, 0, cpu)
        m = build_method("otnfm-minibatch", data, cfg, cpu, 0)
        res, _ = train(m, data, cfg.train, Streams(0, cpu), coupling_cfg=cfg.coupling)
        outs.append((m.state_dict(), res.history))
    (a, ha), (b, hb) = outs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["cost"] for h in ha] == [h["cost"] for h in hb]


def test_block_assignment_is_a_permutation_within_blocks():
    x1, x0 = torch.randn(96, 2), torch.randn(96, 2)
    perm, _ = ot_permutation(x1, x0, "pot", block=32)
    assert sorted(perm.tolist()) == list(range(96))
    assert all(i // 32 == int(p) // 32 for i, p in enumerate(perm))
    full, _ = ot_permutation(x1, x0, "pot")
    c = sq_dists(x1, x0)
    assert c[torch.arange(96), perm].sum() >= c[torch.arange(96), full].sum() - 1e-4


def test_online_probe_targets_follow_the_noise(cpu):
    data = torch.randn(200, 2) + 2
    c = OnlineOT(source, n_train=200, caches=2)
    gen = torch.Generator().manual_seed(0)
    c.init_bank(gen)
    initial = c.bank.bank.flatten(0, 1).clone()
    for _ in range(20):
        idx = torch.randperm(200, generator=gen)[:50]
        c.pair(data[idx], idx, gen)
    pos = torch.empty(400, dtype=torch.long)
    pos[c.bank.ids.flatten()] = torch.arange(400)
    torch.testing.assert_close(c.bank.bank.flatten(0, 1)[pos], initial)  # noise k at pos[k]
    torch.testing.assert_close(c.probe_targets(torch.zeros(10, 2), data, gen),
                               data[pos[:10] % 200])


def test_the_coupling_protocol_declares_every_optional_capability():
    """The trainer calls methods, never probes attributes: each optional capability has a
    default on ``Coupling`` and is overridden where a coupling has it."""
    data = gauss(64, seed=3)
    gen = torch.Generator().manual_seed(0)
    indep = Independent(source)
    assert not indep.can_prefetch and not indep.has_bank
    indep.prefetch(data[:8], torch.arange(8), gen)  # nothing to start
    indep.close()
    assert indep.stats(data) == {} and indep.state_dict() == {}
    assert MinibatchOT(source, "pot").can_prefetch
    online = OnlineOT(source, n_train=64, solver="pot")
    online.init_bank(gen)
    assert online.has_bank and online.stats(data) == {"bank_cost": online.bank_cost(data)}
    assert online.bank_noise(5, gen).shape == (5, 2)
