import logging
import math

import pytest
import torch
import torch.nn.functional as F

from spectral_ssl import effective_rank
from spectral_ssl.batching import greedy_select, log_det_objective, pool_select, resolve_target


def unit_pool(m=40, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(m, d, generator=g, dtype=torch.float64), dim=1)


def brute_force_greedy(x, k, eps):
    """Obviously correct greedy: recompute log det(εI + Σ zzᵀ) for every candidate at every step."""
    chosen, gains = [], []
    for _ in range(k):
        base = log_det_objective(x[chosen], eps) if chosen else x.shape[1] * torch.log(torch.tensor(eps,
                                                                                                  dtype=x.dtype))
        scores = {c: (log_det_objective(x[chosen + [c]], eps) - base).item() for c in range(len(x)) if c not in chosen}
        best = max(scores, key=scores.get)
        chosen.append(best)
        gains.append(scores[best])
    return chosen, gains


@pytest.mark.parametrize("eps", [1e-2, 0.5])
def test_exact_greedy_equals_brute_force_greedy_and_gains(eps):
    # distinct norms make every greedy step's maximum unique (unit vectors tie on the first pick)
    x = unit_pool() * torch.linspace(0.5, 1.5, 40, dtype=torch.float64)[torch.randperm(40)][:, None]
    picks = greedy_select(x, 12, eps=eps).tolist()
    ref, ref_gains = brute_force_greedy(x, 12, eps)
    assert picks == ref
    # the objective's increments along the picks are the brute-force maximal gains
    values = [log_det_objective(x[picks[:t]], eps).item() for t in range(1, 13)]
    first = values[0] - 6 * torch.log(torch.tensor(eps, dtype=torch.float64)).item()
    increments = [first] + [b - a for a, b in zip(values, values[1:])]
    assert increments == pytest.approx(ref_gains, rel=1e-9, abs=1e-9)


def test_objective_is_non_decreasing_along_picks():
    x = unit_pool(m=200, d=16, seed=1)
    picks = greedy_select(x, 64, m=16, generator=torch.Generator().manual_seed(0))
    values = torch.stack([log_det_objective(x[picks[:t]]) for t in range(1, 65)])
    assert bool((values[1:] >= values[:-1] - 1e-9).all())


def test_stochastic_with_m_equal_pool_is_exact_and_seeded_runs_repeat():
    x = unit_pool(m=50, d=8, seed=2)
    exact = greedy_select(x, 20)
    assert torch.equal(greedy_select(x, 20, m=50, generator=torch.Generator().manual_seed(5)), exact)
    a = greedy_select(x, 20, m=8, generator=torch.Generator().manual_seed(7))
    b = greedy_select(x, 20, m=8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.unique().numel() == 20


def clustered_pool(m=512, d=32, clusters=10, seed=0):
    """Unequal clusters (half the pool in one) around random centres: random batches over-sample the big one."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    probs = torch.tensor([0.5] + [0.5 / (clusters - 1)] * (clusters - 1))
    labels = torch.multinomial(probs, m, replacement=True, generator=g)
    return F.normalize(centres[labels] + 0.3 * torch.randn(m, d, generator=g), dim=1)


@pytest.mark.parametrize("m", [None, 64])
def test_greedy_raises_effective_rank_over_random(m):
    x = clustered_pool()
    g = torch.Generator().manual_seed(0)
    greedy = effective_rank(x[greedy_select(x, 64, m=m, generator=g)]).item()
    random_ranks = [effective_rank(x[torch.randperm(512, generator=g)[:64]]).item() for _ in range(10)]
    assert greedy > max(random_ranks)


def test_block_and_window_options_return_valid_batches():
    x = clustered_pool(m=256)
    blocked = greedy_select(x, 48, block=8)
    assert blocked.unique().numel() == 48
    windowed = greedy_select(x, 48, window=5.0, generator=torch.Generator().manual_seed(1))
    assert windowed.unique().numel() == 48


def test_bad_arguments_are_rejected():
    x = unit_pool()
    with pytest.raises(ValueError, match="pool size"):
        greedy_select(x, 41)
    with pytest.raises(ValueError, match="m must be"):
        greedy_select(x, 4, m=0)
    with pytest.raises(ValueError, match="eps"):
        greedy_select(x, 4, eps=0)
    with pytest.raises(ValueError, match="eps must be a finite number > 0, got None"):
        greedy_select(x, 4, eps=None)
    for groups in (torch.tensor([-1] * 20 + [1] * 20), torch.zeros(40)):
        with pytest.raises(ValueError, match="groups must be an integer tensor of"):
            greedy_select(x, 4, groups=groups, quota=2)
    with pytest.raises(ValueError, match="quota must be a positive integer"):
        greedy_select(x, 4, groups=torch.zeros(40, dtype=torch.long), quota=0)
    with pytest.raises(ValueError, match=r"\(M, D\)"):
        greedy_select(x[None], 4)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        greedy_select(bad, 4)
    # unchecked (a GPU training loop that stops on a non-finite loss): no host read, non-finite values zeroed, so
    # the picks stay distinct and in range (NaN gains would let taken candidates be picked again)
    bad[5] = float("inf")
    bad[7, 0] = -float("inf")
    for m in (None, 8):
        picks = greedy_select(bad, 16, m=m, generator=torch.Generator().manual_seed(0), check_finite=False)
        assert picks.unique().numel() == 16 and int(picks.min()) >= 0 and int(picks.max()) < len(bad)


def isotropic_batch(rank, d=16, n=32):
    eye = torch.eye(d, dtype=torch.float64)[:rank]
    return torch.cat([eye, -eye]).repeat(n // (2 * rank) + 1, 1)[:n]


def test_pool_picks_argmax_or_closest_to_target():
    candidates = torch.stack([isotropic_batch(1), isotropic_batch(8), isotropic_batch(4)])
    assert pool_select(candidates) == 1
    assert pool_select(candidates, target=4.2) == 2
    assert pool_select(candidates, target=1.0) == 0


def test_pool_with_one_candidate_is_that_batch():
    assert pool_select(unit_pool(m=32)[None]) == 0


def test_resolve_target_forms_and_clamping(caplog):
    assert resolve_target(None, 128, 256) is None
    assert resolve_target(40, 128, 256) == 40
    assert resolve_target(0.5, 128, 256) == 64
    assert resolve_target("0.96*C", 128, 256, num_classes=100) == pytest.approx(96)
    with caplog.at_level(logging.WARNING):
        assert resolve_target("0.96C", 128, 256, num_classes=1000) == pytest.approx(0.95 * 128)
    assert "clamped" in caplog.text
    with pytest.raises(ValueError, match="num_classes"):
        resolve_target("0.9*C", 128, 256)


def test_group_quota_gives_each_group_its_share_and_one_group_equals_plain_greedy():
    x = clustered_pool(m=120, d=8)
    groups = torch.arange(3).repeat_interleave(40)
    picks = greedy_select(x, 30, groups=groups, quota=10)
    assert torch.bincount(groups[picks], minlength=3).tolist() == [10, 10, 10] and picks.unique().numel() == 30
    assert torch.equal(greedy_select(x, 12, groups=torch.zeros(120, dtype=torch.long), quota=12),
                       greedy_select(x, 12))
    windowed = greedy_select(x, 30, groups=groups, quota=10, window=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.bincount(groups[windowed], minlength=3).tolist() == [10, 10, 10]
    with pytest.raises(ValueError, match="k must equal G \\* quota"):
        greedy_select(x, 31, groups=groups, quota=10)
    with pytest.raises(ValueError, match="together"):
        greedy_select(x, 30, groups=groups)


def low_rank_pool(m=512, d=64, rank=8, seed=0):
    """Unit vectors near an 8-dimensional subspace: many near-equal gains once the subspace is covered."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d, generator=g)
    return F.normalize(torch.randn(m, rank, generator=g) @ basis + 0.05 * torch.randn(m, d, generator=g), dim=1)


def random_unit_pool(m=512, d=64, seed=0):
    return F.normalize(torch.randn(m, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def distinct_norms(x, seed=0):
    """Scale each row by its own norm in [0.5, 1.5]: no exact tie between gains (unit rows all tie at pick 1)."""
    norms = torch.linspace(0.5, 1.5, len(x), dtype=torch.float64)[torch.randperm(len(x),
                                                                             generator=torch.Generator().manual_seed(seed))]
    return (x.double() * norms[:, None]).float()


def objective_gap(x, a, b, eps=1e-2):
    """|F(a) - F(b)| relative to F(b) - F(empty set) = F(b) - D log eps (F itself can be near 0 or negative)."""
    fa, fb = (log_det_objective(x[p].double(), eps).item() for p in (a, b))
    return abs(fa - fb) / (fb - x.shape[1] * math.log(eps))


@pytest.mark.parametrize("make", [random_unit_pool, low_rank_pool, lambda: clustered_pool(d=64)])
def test_float32_scoring_matches_float64_picks_or_objective(make):
    # without exact ties the float32 picks are the float64 ones (or reach its objective to 1e-4)
    x = distinct_norms(make())
    assert x.dtype == torch.float32
    fast, exact = greedy_select(x, 128), greedy_select(x, 128, dtype=torch.float64)
    assert fast.unique().numel() == 128
    assert torch.equal(fast, exact) or objective_gap(x, fast, exact) <= 1e-4
    # unit rows tie at the first pick, so the two runs break that tie differently and follow different (equally
    # greedy) paths: the objectives then differ as much as float64 runs on a permuted pool do (~1e-3)
    x = make()
    assert objective_gap(x, greedy_select(x, 128), greedy_select(x, 128, dtype=torch.float64)) <= 5e-3


def test_block_picks_update_gains_within_the_block():
    # block=k with exact in-block updates still reaches close to the greedy objective on a clustered pool, and
    # block picks of size 1 are plain greedy
    x = clustered_pool(m=256, d=16).double()
    assert torch.equal(greedy_select(x, 32, block=1), greedy_select(x, 32))
    top_only = torch.topk((x * x).sum(1), 32).indices  # what ignoring the in-block updates would give
    blocked = greedy_select(x, 32, block=8)
    assert log_det_objective(x[blocked]) > log_det_objective(x[top_only])


def test_dtype_and_backend_arguments():
    x = unit_pool()
    assert torch.equal(greedy_select(x.float(), 8, dtype=torch.float64), greedy_select(x.float().double(), 8))
    with pytest.raises(ValueError, match="dtype must be"):
        greedy_select(x, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match="backend must be"):
        greedy_select(x, 4, backend="numpy")


@pytest.mark.parametrize("options", [dict(), dict(m=8, seed=3), dict(block=4), dict(quota=10, m=6, seed=1)])
def test_device_loop_equals_the_host_loop(options):
    # the CPU reads each pick to the host; GPUs keep it on the device: the same picks either way
    from spectral_ssl.batching.selectors import _greedy_torch

    x = unit_pool(m=60, d=8, seed=4) * torch.linspace(0.5, 1.5, 60, dtype=torch.float64)[:, None]
    options = dict(options)
    seed, quota = options.pop("seed", None), options.pop("quota", None)
    groups = torch.arange(60) % 3 if quota else None
    runs = []
    for host in (True, False):
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        runs.append(_greedy_torch(x, (x * x).sum(1), x, 30, options.get("m"), 1e-2, generator,
                                  options.get("block", 1), None, groups, quota, host=host))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("m", [None, 8])
def test_autocast_does_not_reach_the_scores(m):
    # the recipe selects inside accelerator.autocast(): vecdot and mv are on autocast's bf16 list, so the gains
    # must be scored with autocast off (bf16 gains pick other candidates; the CPU loop could not even read them)
    x = unit_pool(m=300, d=32, seed=6).float()
    plain = greedy_select(x, 64, m=m, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = greedy_select(x, 64, m=m, generator=torch.Generator().manual_seed(2))
    assert torch.equal(plain, under)


@pytest.mark.parametrize("block", [1, 3])
def test_greedy_one_picks_distinct_candidates_independent_of_the_embeddings(block):
    # m=1 scores a single random remaining candidate (at least `block` of them for a block pick), so the picks are
    # a random draw whose sets do not depend on the embeddings: two unrelated pools give the same picks per seed
    x, y = unit_pool(m=10, d=4, seed=1), 5 * unit_pool(m=10, d=4, seed=2) * torch.linspace(0.1, 1, 10)[:, None]
    for seed in range(8):
        px = greedy_select(x, 9, m=1, block=block, generator=torch.Generator().manual_seed(seed))
        py = greedy_select(y, 9, m=1, block=block, generator=torch.Generator().manual_seed(seed))
        assert px.unique().numel() == 9 and py.unique().numel() == 9
        for start in range(0, 9, block):  # within a block the order follows the gains
            assert sorted(px[start:start + block].tolist()) == sorted(py[start:start + block].tolist())


def test_window_stops_greedy_picks_when_the_rank_reaches_it_inclusive():
    # two distinct rows have effective rank exactly 1: window=1.0 is reached at the second pick, after which the
    # rest is a uniform random fill, not greedy's own continuation
    x = clustered_pool(m=120)
    assert effective_rank(x[:2], "cov").item() == 1.0
    greedy = greedy_select(x, 12)
    differs, fills = 0, set()
    for seed in range(6):
        windowed = greedy_select(x, 12, window=1.0, generator=torch.Generator().manual_seed(seed))
        assert windowed[:2].tolist() == greedy[:2].tolist() and windowed.unique().numel() == 12
        differs += int(windowed[2]) != int(greedy[2])  # the third pick is already a random one
        fills.add(tuple(sorted(windowed[2:].tolist())))
    assert differs >= 4  # a random fill hits greedy's third pick with chance 1/118
    assert len(fills) >= 5  # and the fill is drawn afresh per generator seed


def test_resolve_target_clamps_at_095_of_batch_minus_one_and_one_is_absolute():
    assert resolve_target(1000, 128, 64) == pytest.approx(0.95 * 63)  # batch - 1 < dim: the centred rank's limit
    assert resolve_target(1000, 32, 64) == pytest.approx(0.95 * 32)
    assert resolve_target(1, 128, 256) == 1.0  # >= 1 is absolute, not a fraction of D
    assert resolve_target(1.0, 128, 256) == 1.0
    assert resolve_target(0.25, 128, 256) == 32.0


@pytest.mark.parametrize("target", [0, -3.0, float("nan"), float("inf"), True])
def test_pool_select_refuses_a_target_that_is_not_a_positive_number(target):
    with pytest.raises(ValueError, match="target must be a finite number > 0 or None"):
        pool_select(torch.randn(2, 8, 4), target=target)
