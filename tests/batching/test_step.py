"""Selection in training: pool bookkeeping (once per epoch), cache, decisions, and the 2-process decision."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spectral_ssl import dist
from spectral_ssl.batching import (
    BatchSelector,
    CandidatePool,
    GreedySelector,
    PoolSelector,
    RandomSelector,
    create_selector,
    greedy_select,
    resolve_until,
    step_seed,
)
from tests.launch import load_rank_results, save_rank_result, spawn_launcher

B, D = 8, 6


def batches(rows=64, batch=B, offset=0, seed=0):
    """A loader stand-in: collated two-view batches of clustered 'images' (3x2x2) with idx offset..offset+rows-1."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 12, generator=g)
    which = torch.cat([torch.zeros(rows // 2, dtype=torch.long), torch.randint(0, 4, (rows - rows // 2,),
                                                                               generator=g)])
    images = (centres[which] + 0.05 * torch.randn(rows, 12, generator=g)).view(rows, 3, 2, 2)
    idx = torch.arange(offset, offset + rows)
    return [{"views": (images[i:i + batch], images[i:i + batch] + 0.01), "idx": idx[i:i + batch], "label": None}
            for i in range(0, rows - batch + 1, batch)]


def embed_in_batches(model, images):
    """What the selector's no-grad pass computes: train-mode projections, batch statistics per chunk of B."""
    with torch.no_grad():
        return F.normalize(torch.cat([model(chunk) for chunk in images.split(B)]), dim=1)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, D)).train()


def run_epoch(selector, model, loader, step=0, observe=True):
    pool, trained = CandidatePool(loader, selector.pool_size), []
    while (batch := selector.select(model, pool, step, measure=True)[0]) is not None:
        trained.append(batch["idx"])
        if observe:
            selector.observe(batch["idx"], model(batch["views"][0]), step)
        step += 1
    return trained, pool


@pytest.mark.parametrize("selection,source", [("random", "cache"), ("pool", "online"), ("greedy", "online"),
                                              ("greedy", "cache")])
def test_every_sample_is_trained_once_per_epoch(selection, source):
    loader = batches()
    selector = BatchSelector(selection, B, D, dataset_size=64, pool_factor=3, pool_candidates=3, source=source)
    trained, pool = run_epoch(selector, tiny_model(), loader)
    assert len(trained) == len(loader) and all(len(t) == B for t in trained)  # as many steps as random batching
    assert sorted(torch.cat(trained).tolist()) == list(range(64)) and len(pool) == 0


@pytest.mark.parametrize("selection", ["random", "pool", "greedy"])
def test_tail_drop_ends_the_epoch_at_the_last_full_pool_and_trains_no_sample_twice(selection):
    loader = batches()  # 64 rows: 8 loader batches of B
    selector = BatchSelector(selection, B, D, dataset_size=64, pool_factor=3, pool_candidates=3, source="online",
                             tail="drop")
    trained, pool = run_epoch(selector, tiny_model(), loader)
    factor = selector.pool_size // B
    assert len(trained) == selector.steps_per_epoch(64) == 8 - (factor - 1)  # random batches: all 8
    seen = torch.cat(trained).tolist()
    assert len(set(seen)) == len(seen) == B * len(trained)
    # the pool's leftovers (the candidates passed over) wait, untrained, until next_epoch drops them
    assert len(pool) == (factor - 1) * B and sorted(pool.carried_idx() + seen) == list(range(64))
    pool.next_epoch()
    assert len(pool) == 0 and pool.fill() == selector.pool_size
    keep = BatchSelector(selection, B, D, dataset_size=64, pool_factor=3, pool_candidates=3, source="online")
    assert keep.tail == "train" and keep.steps_per_epoch(64) == 8 and keep.steps_per_epoch(63) == 7
    assert selector.steps_per_epoch(2 * B) == max(0, 2 - (factor - 1))  # a pool larger than the epoch: 0


def test_greedy_picks_what_greedy_select_picks_on_the_pool_and_beats_random():
    model, loader = tiny_model(), batches(rows=64)
    selector = BatchSelector("greedy", B, D, source="online", pool_factor=8)
    pool = CandidatePool(loader, selector.pool_size)
    pool.fill()
    candidates = pool.samples
    expected = greedy_select(embed_in_batches(model, candidates["views"][0]), B)
    batch, stats = selector.select(model, pool, step=0, measure=True)
    assert sorted(batch["idx"].tolist()) == sorted(candidates["idx"][expected].tolist())
    assert stats["reff_chosen"] > stats["reff_random"]  # clustered pool: half in one cluster
    assert stats["select_ms"] > 0 and stats["pool_size"] == 64


@pytest.mark.parametrize("selection", ["greedy", "random"])
def test_select_ms_leaves_the_measurement_out(selection, monkeypatch):
    # logging steps also measure R_eff (chosen vs random): that is not the selection's cost (GPU check's share)
    import time

    from spectral_ssl.batching import step as step_module

    slow = step_module.effective_rank

    def sleepy(*args, **kwargs):
        time.sleep(0.15)
        return slow(*args, **kwargs)

    monkeypatch.setattr(step_module, "effective_rank", sleepy)
    selector = BatchSelector(selection, B, D, source="online", pool_factor=4)
    _, stats = selector.select(tiny_model(), CandidatePool(batches(), selector.pool_size), step=0, measure=True)
    assert stats["measure_ms"] >= 300 and 0 < stats["select_ms"] < 150
    _, quiet = selector.select(tiny_model(), CandidatePool(batches(), selector.pool_size), step=0)
    assert "measure_ms" not in quiet and quiet["select_ms"] > 0


@pytest.mark.parametrize("selection", ["pool", "greedy"])
def test_until_chooses_by_the_spectrum_first_then_random_batches_of_the_pool_with_no_forward(selection):
    until, seen = 3, []
    model = tiny_model()
    model.register_forward_hook(lambda *args: seen.append(1))  # counts the selection's no-grad passes
    kwargs = dict(dataset_size=64, pool_factor=3, pool_candidates=3, source="online", seed=5)
    scheduled, always = BatchSelector(selection, B, D, until=until, **kwargs), BatchSelector(selection, B, D, **kwargs)
    pools = [CandidatePool(batches(), scheduled.pool_size) for _ in range(2)]
    for step in range(until):  # the same decisions as the selector without a schedule
        a, stats = scheduled.select(model, pools[0], step, measure=True)
        b, _ = always.select(model, pools[1], step)
        assert torch.equal(a["idx"], b["idx"]) and "reff_chosen" in stats
    for step in range(until, until + 2):
        seen.clear()
        per_rank = pools[0].fill()
        expected = pools[0].samples["idx"][torch.randperm(per_rank, generator=torch.Generator().manual_seed(
            step_seed(5, step)))[:B].sort().values]
        batch, stats = scheduled.select(model, pools[0], step, measure=True)
        assert torch.equal(batch["idx"], expected)  # a random B of the pool, as random selection draws them
        assert not seen and "reff_chosen" not in stats and "pool_choice" not in stats  # nothing embedded or measured
    assert "until=3" in repr(scheduled)


def test_until_in_steps_or_as_a_fraction_of_the_run():
    assert resolve_until(None, 100) is None and resolve_until(40, 100) == 40 and resolve_until(40.0, 100) == 40
    assert resolve_until(0.25, 936) == 234 and resolve_until(0.001, 100) == 1  # at least one spectral step
    for bad in (0, -1, 1.5, float("nan"), "40", True):
        with pytest.raises(ValueError, match="until"):
            resolve_until(bad, 100)
    selector = BatchSelector("greedy", B, D, source="online")
    selector.until = 7  # set once the run's length is known (the recipe)
    assert selector.until == 7 and selector.spectral(6) and not selector.spectral(7)
    with pytest.raises(ValueError, match=r"until must be a positive integer \(the step from which batches are random"):
        selector.until = 0.5


def test_until_stops_writing_the_cache_once_no_decision_reads_it():
    selector = BatchSelector("greedy", B, D, dataset_size=64, pool_factor=3, until=2)
    z = torch.randn(B, D)
    selector.observe(torch.arange(B), z, step=0)  # step 1 still decides by greedy: cached
    selector.observe(torch.arange(B, 2 * B), z, step=1)  # steps 2.. are random: not cached
    assert (selector.cache_step[:B] == 0).all() and (selector.cache_step[B:] == -1).all()


@pytest.mark.parametrize("selection", ["pool", "greedy"])
def test_until_keeps_every_sample_trained_once_per_epoch(selection):
    selector = BatchSelector(selection, B, D, dataset_size=64, pool_factor=3, pool_candidates=3, until=2)
    trained, pool = run_epoch(selector, tiny_model(), batches())
    assert len(trained) == 8 and sorted(torch.cat(trained).tolist()) == list(range(64)) and len(pool) == 0


def test_pool_with_one_candidate_is_the_random_batch():
    model = tiny_model()
    picks = []
    for selection in ("random", "pool"):
        selector = BatchSelector(selection, B, D, pool_candidates=1, seed=3)
        pool = CandidatePool(batches(), selector.pool_size)
        picks.append(selector.select(model, pool, step=5)[0]["idx"])
    assert torch.equal(*picks)


def test_cache_serves_the_next_epoch_with_staleness_and_no_forward_pass(monkeypatch):
    model = tiny_model()
    selector = BatchSelector("greedy", B, D, dataset_size=64, pool_factor=2, source="cache")
    run_epoch(selector, model, batches())
    assert bool((selector.cache_step >= 0).all())
    stored = selector.cache.float()
    assert torch.allclose(stored.norm(dim=1), torch.ones(64), atol=1e-2)  # unit rows, float16 storage
    monkeypatch.setattr(selector, "_embed_online", lambda *a: pytest.fail("cache hit must not run the model"))
    pool = CandidatePool(batches(seed=1), selector.pool_size)
    _, stats = selector.select(model, pool, step=100)
    assert stats["cache_hit"] == 1.0 and stats["staleness"] > 90
    state = selector.state_dict()  # the cache is checkpointed
    fresh = BatchSelector("greedy", B, D, dataset_size=64, pool_factor=2, source="cache")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.cache, selector.cache) and torch.equal(fresh.cache_step, selector.cache_step)


def test_cache_follows_the_model_to_its_device_and_its_steps_stay_on_the_cpu():
    # which candidates miss the cache is decided on the CPU (the pool's idx live there): on a GPU, reading it from
    # the device would wait for the queue every step
    selector = BatchSelector("greedy", B, D, dataset_size=64, pool_factor=2, source="cache").to("meta")
    assert selector.cache.device.type == "meta" and selector.cache_step.device.type == "cpu"
    assert selector.state_dict()["cache_step"].device.type == "cpu"


def test_a_resume_whose_waiting_candidates_are_gone_is_a_resume_error():
    from spectral_ssl.batching import ResumeError

    pool = CandidatePool(batches(rows=32), size=16)
    pool.fill()
    pool.take(torch.tensor([0, 15]))
    resumed = CandidatePool(batches(rows=32, offset=100), size=16)  # the dataset changed: other rows
    resumed.load_state_dict(pool.state_dict())
    with pytest.raises(ResumeError, match=r"could not re-read the 14 samples .* dataset changed"):
        resumed.fill()


def test_online_pass_leaves_norm_statistics_and_mode_alone():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    selector = BatchSelector("greedy", B, D, source="online")
    selector.select(model, CandidatePool(batches(), selector.pool_size), step=0, measure=True)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_pool_position_round_trips_through_its_state_dict():
    loader = batches(rows=32)
    pool = CandidatePool(loader, size=16)
    assert pool.fill() == 16 and pool.drawn == 2
    taken = pool.take(torch.tensor([0, 15]))
    assert taken["idx"].tolist() == [0, 15] and len(pool) == 14 and pool.carried_idx() == list(range(1, 15))
    state = pool.state_dict()
    assert state["drawn"] == [2] and state["carried"] == [list(range(1, 15))] and state["chosen"] == 1
    resumed = CandidatePool(loader, size=16)
    resumed.load_state_dict(state)
    assert resumed.fill() == 22 and resumed.drawn == 3  # the 14 waiting candidates re-read, then one new batch
    assert resumed.carried_idx() == list(range(1, 15)) + list(range(16, 24))
    for view, original in zip(resumed.samples["views"], pool.samples["views"]):
        assert torch.equal(view[:14], original)


def test_taking_the_whole_pool_in_order_hands_it_over_uncopied():
    # random selection with pool = batch takes every candidate in order: the batch goes out as it is (no two copies
    # of the views per step), the same rows as a take by positions, and the pool is empty for the next fill
    loader = batches(rows=32, batch=8)
    pool, copied = CandidatePool(loader, size=8), CandidatePool(loader, size=8)
    pool.fill(), copied.fill()
    held = pool.samples["views"]
    whole = pool.take(torch.arange(8))
    part = copied.take(torch.arange(7))  # not the whole pool: copied, as before
    assert all(v is h for v, h in zip(whole["views"], held)) and sorted(whole) == ["idx", "label", "views"]
    assert whole["idx"].tolist() == list(range(8)) and part["idx"].tolist() == list(range(7))
    assert torch.equal(whole["views"][0][:7], part["views"][0])
    assert len(pool) == 0 and pool.carried_idx() == [] and pool.chosen == 1
    assert pool.state_dict()["carried"] == [[]] and pool.fill() == 8
    assert pool.samples["idx"].tolist() == list(range(8, 16))


def test_pool_ends_the_epoch_and_counts_skipped_rows():
    loader = [dict(b, skipped=1) for b in batches(rows=24)]
    pool = CandidatePool(loader, size=8)
    while pool.fill() >= 8:
        pool.take(torch.arange(8))
    assert pool.chosen == 3 and pool.skipped == 3 and pool.epoch == 0
    pool.next_epoch()
    assert pool.epoch == 1 and pool.chosen == 0 and pool.fill() == 8  # the next epoch starts from the top


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="selection must be one of"):
        BatchSelector("best", B, D)
    with pytest.raises(ValueError, match="needs dataset_size"):
        BatchSelector("greedy", B, D, source="cache")
    with pytest.raises(ValueError, match="greedy_m must be None"):
        BatchSelector("greedy", B, D, dataset_size=10, greedy_m=0)
    for args, kwargs, message in (((-3, D), {}, "batch_size must be a positive integer, got -3"),
                                  ((B, 0), {}, r"dim must be a positive integer \(the projection dimension\), got 0"),
                                  ((B, D), {"dataset_size": -5}, "dataset_size must be a positive integer"),
                                  ((B, D), {"seed": "a"}, "seed must be an integer"),
                                  ((B, D), {"cache_dtype": torch.int64}, "cache_dtype must be a floating-point")):
        with pytest.raises(ValueError, match=message):
            BatchSelector("random", *args, **kwargs)
    selector = BatchSelector("greedy", B, D, dataset_size=10)
    with pytest.raises(ValueError, match="idx column must number rows 0..N-1"):
        selector.observe(torch.arange(20, 28), torch.randn(8, D), step=0)


def test_create_selector_builds_each_selector_with_its_own_defaults():
    assert isinstance(create_selector("random", batch_size=B, dim=D), RandomSelector)
    pool = create_selector("pool", batch_size=B, dim=D)
    assert isinstance(pool, PoolSelector) and pool.pool_size == 3 * B and pool.source == "online"
    greedy = create_selector("greedy", batch_size=B, dim=D, dataset_size=64, m=8, window=5.0)
    assert isinstance(greedy, GreedySelector) and greedy.pool_size == 4 * B and greedy.greedy_m == 8
    assert greedy.source == "cache" and greedy.cache.shape == (64, D)
    # the same decisions as the generic class with the same arguments
    legacy = BatchSelector("greedy", B, D, dataset_size=64, greedy_m=8, window=5.0)
    assert legacy.pool_size == greedy.pool_size and legacy.window == greedy.window
    transform = torch.nn.Identity()
    assert create_selector("greedy", batch_size=B, dim=D, source="online", transform=transform).transform is transform
    assert create_selector("greedy", batch_size=B, dim=D, source="online", space="projections",
                           transform=transform).transform is None


@pytest.mark.parametrize("name,kwargs,message", [
    ("random", {"m": 4}, r"selection 'random' takes no argument 'm'; its arguments are \[\]"),
    ("pool", {"pool_factor": 4}, r"selection 'pool' takes no argument 'pool_factor'; its arguments are .*candidates"),
    ("pool", {"candidates": 0}, "candidates must be a positive integer, got 0"),
    ("pool", {"target": -1}, "target must be a finite number > 0 or None, got -1"),
    ("greedy", {"m": 0, "source": "online"}, r"m must be a positive integer \(None = exact greedy\), got 0"),
    ("greedy", {"eps": 0, "source": "online"}, "eps must be a finite number > 0, got 0"),
    ("greedy", {"space": "raw", "source": "online"}, "space must be one of"),
    ("greedy", {"tail": "carry", "source": "online"}, r"tail must be one of \('train', 'drop'\)"),
    ("pool", {"tail": None}, r"tail must be one of \('train', 'drop'\)"),
    ("random", {"tail": "drop"}, r"selection 'random' takes no argument 'tail'"),
    ("greedy", {"until": 0, "source": "online"}, r"until must be a positive integer \(the step from which batches "
     r"are random\) or None, got 0"),
    ("pool", {"until": 2.5}, r"until must be a positive integer"),
    ("best", {}, "unknown selection 'best'"),
])
def test_create_selector_rejects_bad_arguments_in_one_line(name, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        create_selector(name, batch_size=B, dim=D, **kwargs)
    assert "\n" not in str(info.value)


def _two_process_worker(out_dir):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    r = acc.process_index
    model = tiny_model(seed=0)  # same weights on both ranks, as under DDP
    selector = BatchSelector("greedy", B, D, pool_factor=4, greedy_m=5, source="online", seed=1)
    pool = CandidatePool(batches(rows=32, offset=32 * r, seed=r), selector.pool_size)
    pool.fill()
    z = dist.gather(embed_in_batches(model, pool.samples["views"][0]), differentiable=False)
    idx = dist.gather(pool.samples["idx"], differentiable=False)
    batch, _ = selector.select(model, pool, step=7)
    save_rank_result({"batch": batch["idx"], "pool_z": z, "pool_idx": idx}, out_dir)


@pytest.mark.slow
def test_two_processes_make_one_decision_and_each_trains_on_its_own_share(tmp_path):
    spawn_launcher(_two_process_worker, args=(str(tmp_path),), num_processes=2)
    ranks = load_rank_results(tmp_path)
    assert torch.equal(ranks[0]["pool_z"], ranks[1]["pool_z"])
    z, idx = ranks[0]["pool_z"], ranks[0]["pool_idx"]
    # the same stochastic greedy on the gathered pool, each rank contributing exactly B (partition quota)
    gen = torch.Generator().manual_seed(step_seed(1, 7))
    expected = greedy_select(z, 2 * B, m=5, generator=gen, groups=torch.arange(2).repeat_interleave(32), quota=B)
    expected_idx = set(idx[expected].tolist())
    for r, res in enumerate(ranks):
        mine = res["batch"].tolist()
        assert len(mine) == B and all(32 * r <= i < 32 * (r + 1) for i in mine)  # its own samples
        assert set(mine) <= expected_idx


def test_candidates_embedded_online_are_cached_so_carried_ones_are_not_embedded_twice():
    model = tiny_model()
    selector = BatchSelector("greedy", B, D, dataset_size=64, pool_factor=3, source="cache")
    pool = CandidatePool(batches(), selector.pool_size)
    _, stats = selector.select(model, pool, step=0)
    assert stats["cache_hit"] == 0.0 and int((selector.cache_step == 0).sum()) == 3 * B
    _, stats = selector.select(model, pool, step=1)  # 2B carried (cached at step 0) + B new
    assert stats["cache_hit"] == pytest.approx(2 / 3) and stats["staleness"] == 1.0


def test_a_single_cache_miss_is_embedded_with_running_statistics():
    model = tiny_model()
    selector = BatchSelector("greedy", B, D, dataset_size=64, pool_factor=2, source="cache")
    run_epoch(selector, model, batches())
    selector.cache_step[5] = -1  # one sample without a cached embedding
    pool = CandidatePool(batches(), selector.pool_size)
    _, stats = selector.select(model, pool, step=10)  # a batch of 1 in train mode would fail in BatchNorm
    assert stats["cache_hit"] == pytest.approx(15 / 16) and model.training


@pytest.mark.parametrize("source", ["online", "cache"])
def test_a_transform_puts_candidates_in_the_space_the_loss_sees(source):
    """With whitening, candidates are scored after ``transform`` (e.g. whitened with running statistics): the online
    pass and the cache both hold normalize(transform(projections)), and greedy decides on exactly those."""
    model = tiny_model()
    mix = torch.randn(D, D, generator=torch.Generator().manual_seed(3))
    selector = BatchSelector("greedy", B, D, dataset_size=64, pool_factor=4, source=source,
                             transform=lambda p: p @ mix)  # any linear map: scores must follow it
    pool = CandidatePool(batches(), selector.pool_size)
    pool.fill()
    with torch.no_grad():
        raw = torch.cat([model(c) for c in pool.samples["views"][0].split(B)])
    expected = F.normalize(raw @ mix, dim=1)
    z, _ = selector.embed(model, pool.samples["views"][0], pool.samples["idx"], step=5)
    torch.testing.assert_close(z, expected, atol=1e-6, rtol=0)
    if source == "online":  # (the cache path embeds in another order: exact ties, e.g. the first pick, may differ)
        batch, _ = selector.select(model, pool, step=5)
        assert sorted(batch["idx"].tolist()) == sorted(greedy_select(expected, B).tolist())
    else:
        selector.observe(torch.arange(8), raw[:8], step=5)
        torch.testing.assert_close(selector.cache[:8].float(), expected[:8], atol=2e-3, rtol=0)


def test_a_non_finite_observe_does_not_poison_the_cache_on_the_cpu():
    model = tiny_model()
    selector = BatchSelector("greedy", B, D, dataset_size=64, pool_factor=2, source="cache")
    run_epoch(selector, model, batches())
    before = selector.cache.clone()
    bad = torch.randn(B, D)
    bad[2, 1] = float("nan")
    selector.observe(torch.arange(B), bad, step=50)  # a diverged step, then the model recovers
    assert torch.equal(selector.cache[2], before[2]) and int(selector.cache_step[2]) < 50  # its last finite one
    assert torch.isfinite(selector.cache.float()).all() and int(selector.cache_step[0]) == 50
    trained, _ = run_epoch(selector, model, batches(), step=60)  # no "non-finite" refusal on later pools
    assert sorted(torch.cat(trained).tolist()) == list(range(64))


def test_misuse_of_the_selector_is_one_line_naming_the_argument():
    model = tiny_model()
    selector = BatchSelector("greedy", B, D, dataset_size=64, pool_factor=2, source="cache")
    small = CandidatePool(batches(), B - 1)
    with pytest.raises(ValueError, match=r"the CandidatePool holds 7 candidates, fewer than batch_size=8; build it "
                                         r"with CandidatePool\(loaders, selector.pool_size\) \(16\)"):
        selector.select(model, small, 0)
    for size in (0, -5, 2.5):
        with pytest.raises(ValueError, match="size must be a positive integer"):
            CandidatePool(batches(), size)
    pool = CandidatePool(batches(), selector.pool_size)
    with pytest.raises(ValueError, match="step must be an integer"):
        selector.select(model, pool, 1.0)
    with pytest.raises(ValueError, match=r"dataset idx -3 is outside the selection cache of 64 rows"):
        selector.observe(torch.tensor([-3, 5]), torch.randn(2, D), step=0)
    with pytest.raises(ValueError, match=r"idx must be a 1-D integer tensor of dataset row numbers, got torch.float32"):
        selector.observe(torch.arange(8.0), torch.randn(8, D), step=0)
    with pytest.raises(ValueError, match=r"projections must be \(len\(idx\), dim\) = \(8, 6\), got \(7, 6\)"):
        selector.observe(torch.arange(8), torch.randn(7, D), step=0)
    wide = BatchSelector("greedy", B, D + 2, dataset_size=64, pool_factor=2, source="online")
    with pytest.raises(ValueError, match=r"projections have shape \(16, 6\), but the selector was built with dim=8"):
        wide.select(model, CandidatePool(batches(), wide.pool_size), 0)


@pytest.mark.parametrize("kwargs,message", [
    ({"eps": float("inf")}, "eps must be a finite number > 0, got inf"),
    ({"window": 0.0}, "window must be a finite number > 0 or None, got 0.0"),
    ({"window": float("nan")}, "window must be a finite number > 0 or None, got nan"),
])
def test_degenerate_numbers_are_refused_by_the_selectors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GreedySelector(B, D, source="online", **kwargs)
    with pytest.raises(ValueError, match=message):
        greedy_select(torch.randn(16, D), 4, **kwargs)


def test_a_non_finite_pool_target_is_refused():
    from spectral_ssl.batching import pool_select, resolve_target

    for target in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="target must be a finite number > 0"):
            PoolSelector(B, D, target=target)
        with pytest.raises(ValueError, match="target must be a finite number > 0"):
            pool_select(torch.randn(3, B, D), target=target)
        with pytest.raises(ValueError, match="target must be a finite number > 0"):
            resolve_target(target, dim=D, batch=B)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 16\]"):
        greedy_select(torch.randn(16, D), True)


@pytest.mark.parametrize("edit", [lambda b: b.pop("idx"), lambda b: b.update(views=b["views"][0]),
                                  lambda b: b.update(idx=b["idx"][:3])])
def test_a_malformed_pool_batch_is_one_line(edit):
    loader = batches()
    for batch in loader:
        edit(batch)
    with pytest.raises(ValueError, match=r"a pool batch must be a dict with 'views', a tuple of \(N, \.\.\.\) tensors"):
        CandidatePool(loader, B).fill()


@pytest.mark.parametrize("selection", ["greedy", "random"])
def test_fill_ms_is_the_refill_share_of_select_ms(selection, monkeypatch):
    """``fill_ms``: the pool's refill (the loading a random batch's step pays too), inside ``select_ms``."""
    import time

    real = CandidatePool.fill

    def slow_fill(self):
        time.sleep(0.1)
        return real(self)

    monkeypatch.setattr(CandidatePool, "fill", slow_fill)
    selector = BatchSelector(selection, B, D, source="online", pool_factor=4)
    _, stats = selector.select(tiny_model(), CandidatePool(batches(), selector.pool_size), step=0)
    assert 100 <= stats["fill_ms"] < 150 and stats["fill_ms"] <= stats["select_ms"] < stats["fill_ms"] + 100


@pytest.mark.parametrize("selection", ["pool", "greedy"])
def test_embed_size_embeds_candidates_at_that_side_and_trains_the_full_views(selection):
    """``embed_size``: the no-grad pass sees the candidates' first views resized to that side (bilinear,
    antialiased); the decision is made on those embeddings, and the batch trains its full-size views."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, D)).train()
    sides = []
    model[0].register_forward_hook(lambda module, inputs, output: sides.append(tuple(inputs[0].shape[-2:])))
    images = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    loader = [{"views": (images[i:i + B], images[i:i + B] + 0.01), "idx": torch.arange(i, i + B), "label": None}
              for i in range(0, 64, B)]
    own = {"source": "online"} if selection == "greedy" else {}
    selector = create_selector(selection, batch_size=B, dim=D, dataset_size=64, embed_size=8, **own)
    pool = CandidatePool(loader, selector.pool_size)
    pool.fill()
    head, candidates = pool.samples["views"][0], pool.samples["idx"].clone()
    expected = embed_in_batches(model, F.interpolate(head, size=(8, 8), mode="bilinear", antialias=True,
                                                     align_corners=False))
    z, _ = selector.embed(model, head, candidates, step=0)
    torch.testing.assert_close(z, expected, atol=1e-6, rtol=0)
    assert set(sides) == {(8, 8)}
    batch, _ = selector.select(model, pool, step=0)
    assert batch["views"][0].shape[-2:] == (16, 16) and set(sides) == {(8, 8)}
    if selection == "greedy":
        assert sorted(batch["idx"].tolist()) == sorted(candidates[greedy_select(expected, B)].tolist())
    full = create_selector(selection, batch_size=B, dim=D, dataset_size=64, **own)  # None: the views' own side
    full.embed(model, head, candidates, step=0)
    assert sides[-1] == (16, 16)


def test_embed_size_is_a_positive_number_of_pixels():
    with pytest.raises(ValueError, match=r"embed_size must be a positive integer \(pixels\) or None, got 0"):
        GreedySelector(B, D, embed_size=0)
    with pytest.raises(ValueError, match="embed_size must be a positive integer"):
        PoolSelector(B, D, embed_size=16.0)
