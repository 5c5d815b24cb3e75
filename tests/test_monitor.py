"""SpectralMonitor against slow float64 references: record values, ring buffer, cadence, resume, alarm, watch()."""

import itertools
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spectral_ssl as ssl
from spectral_ssl.band import infonce_band
from spectral_ssl.diagnostics import batch_diagnostics
from spectral_ssl.monitor import (
    CollapseError,
    SpectralMonitor,
    collapse_message,
    is_collapsed,
    spectral_record,
    std_of_l2_normalized,
    uniformity,
)


def unit(z: torch.Tensor) -> np.ndarray:
    z = z.double().numpy()
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def entropy_rank(p: np.ndarray) -> float:
    return float(np.exp(-sum(x * np.log(x) for x in p if x > 0)))


def reference_record(z1: torch.Tensor, z2: torch.Tensor) -> dict[str, float]:
    """The definitions, written out in numpy float64 with loops where a loop is clearer."""
    u, v = unit(z1), unit(z2)
    z = np.concatenate([u, v])
    n, d = z.shape
    centred = z - z.mean(0)
    lam = np.clip(np.linalg.eigvalsh(centred.T @ centred / n), 0, None)
    sigma = np.linalg.svd(z, compute_uv=False)
    std = np.mean([np.std(z[:, j], ddof=1) for j in range(d)])  # lightly: torch.std(z_norm, dim=0).mean()

    def uniform(x):
        pairs = [np.exp(-2 * np.sum((x[i] - x[j]) ** 2)) for i, j in itertools.combinations(range(len(x)), 2)]
        return np.log(np.mean(pairs))

    return {"reff_cov": entropy_rank(lam[lam / lam.sum() > 1e-12] / lam.sum()),
            "reff_rankme": entropy_rank(sigma / sigma.sum() + 1e-7),
            "reff_pr": float(lam.sum() ** 2 / (lam**2).sum()),
            "std_of_l2_normalized": float(std),
            "alignment": float(np.mean([np.sum((u[i] - v[i]) ** 2) for i in range(len(u))])),
            "uniformity": float((uniform(u) + uniform(v)) / 2),
            "cos_views": float(np.mean(np.sum(u * v, 1)))}


def test_record_equals_the_float64_definitions():
    z1, z2 = 3 * torch.randn(24, 6), torch.randn(24, 6) + 0.5
    record = spectral_record(z1, z2, 0.2)
    for key, value in reference_record(z1, z2).items():
        assert record[key] == pytest.approx(value, rel=1e-5), key
    assert record["n_samples"] == 48 and record["dim"] == 6 and record["centered"] is True
    assert record["eps"] == 1e-7 and record["source"] == "z"


def pairwise_uniformity(z: torch.Tensor, t: float) -> float:
    """Wang & Isola's uniformity, straight from the definition in float64: every distinct pair's exp(−t‖x − y‖²)."""
    x = unit(z)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    i, j = np.triu_indices(len(x), k=1)
    return float(np.log(np.mean(np.exp(-t * d2[i, j]))))


@pytest.mark.parametrize("t", [0.5, 2.0, 50.0])
@pytest.mark.parametrize("chunk", [1, 64, 512])
def test_blocked_uniformity_equals_the_float64_definition(t, chunk):
    """Upper-triangle blocks (300 rows: a ragged last block), the −2t folded into the GEMM: no overflow at t = 50."""
    z = torch.randn(300, 4, generator=torch.Generator().manual_seed(3)) + 0.3
    assert float(uniformity(z, t, chunk=chunk)) == pytest.approx(pairwise_uniformity(z, t), rel=1e-6)


def test_uniformity_closed_forms_and_invariances():
    assert float(uniformity(torch.ones(5, 3) * 7)) == pytest.approx(0.0, abs=1e-6)  # one point: every term is 1
    assert float(uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))) == pytest.approx(-8.0, rel=1e-6)  # ‖x−y‖² = 4
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # 4 sides (‖·‖² = 2), 2 diagonals (4)
    closed = math.log((4 * math.exp(-2 * 2) + 2 * math.exp(-2 * 4)) / 6)
    assert float(uniformity(square, chunk=3)) == pytest.approx(closed, rel=1e-6)
    z = torch.randn(200, 8, generator=torch.Generator().manual_seed(4))
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(5)))
    base = float(uniformity(z, chunk=64))
    assert float(uniformity(z[torch.randperm(200)], chunk=64)) == pytest.approx(base, rel=1e-6)
    assert float(uniformity(3 * z @ rotation, chunk=64)) == pytest.approx(base, rel=1e-6)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="chunk"):
            uniformity(z, chunk=bad)


def test_record_spectra_equal_effective_rank_to_the_bit():
    """reff_cov and reff_pr share one eigen-solve; each still equals its effective_rank estimator exactly."""
    z1, z2 = torch.randn(40, 12), torch.randn(40, 12) + 1
    record = spectral_record(z1, z2, 0.2)
    z = torch.cat([F.normalize(z1, dim=1), F.normalize(z2, dim=1)])
    for estimator in ("cov", "rankme", "pr"):
        assert record[f"reff_{estimator}"] == float(ssl.effective_rank(z, estimator)), estimator


def test_std_of_l2_normalized_is_lightlys_definition():
    z = torch.randn(32, 16) * torch.linspace(0.1, 4, 16)
    zn = z / z.norm(dim=1, keepdim=True)
    mean = zn.mean(0)
    hand = (((zn - mean) ** 2).sum(0) / (z.shape[0] - 1)).sqrt().mean()  # std over the batch, averaged over D
    assert float(std_of_l2_normalized(z)) == pytest.approx(float(hand), rel=1e-6)
    assert float(std_of_l2_normalized(torch.ones(8, 4) * 5)) == 0.0  # a collapsed output
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        std_of_l2_normalized(torch.ones(3))


def test_band_measured_is_the_autograd_gradient_norm():
    z1, z2 = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1), F.normalize(torch.randn(5, 4), dim=1)
    record = spectral_record(z1, z2, 0.3)
    z = torch.cat([z1, z2.double()])
    norms = []
    for a in range(10):  # each anchor's own InfoNCE row loss, gradient w.r.t. the (normalised) anchor
        u = z[a].clone().requires_grad_(True)
        others = [c for c in range(10) if c != a]
        logits = torch.stack([u @ z[c] for c in others]) / 0.3
        loss = -torch.log_softmax(logits, 0)[others.index((a + 5) % 10)]
        (grad,) = torch.autograd.grad(loss, u)
        norms.append(float(grad.pow(2).sum()))
    assert record["band_measured_mean"] == pytest.approx(float(np.mean(norms)), rel=1e-5)
    assert record["band_containment"] == 1.0


def test_batch_diagnostics_and_the_monitor_give_equal_numbers():
    z1, z2 = torch.randn(32, 8), torch.randn(32, 8)
    diagnostics = batch_diagnostics(z1, z2, 0.2, monitor_temperature=0.5)
    record = SpectralMonitor(0.2, every=1, window=32, monitor_temperature=0.5).update(z1, z2, step=1)
    assert list(diagnostics) == ["reff_cov", "reff_rankme", *(f"band_{k}" for k in infonce_band(
        F.normalize(z1, dim=1), F.normalize(z2, dim=1), 0.2).summary()), "cos_views", "ntxent",
                                 "std_of_l2_normalized"]
    assert {k: record[k] for k in diagnostics} == diagnostics  # the same numbers, to the bit


def test_ring_buffer_keeps_the_last_window_pairs_and_the_band_sees_the_newest_batch():
    monitor = SpectralMonitor(every=100, window=10)
    batches = [(torch.randn(4, 5), torch.randn(4, 5)) for _ in range(3)]
    for step, (a, b) in enumerate(batches, start=1):
        assert monitor.update(a, b, step) is None  # between records: only the buffer
    z1, z2 = (torch.cat([batch[i] for batch in batches])[-10:] for i in range(2))
    state = monitor.state_dict()
    assert torch.equal(state["z1"], z1) and torch.equal(state["z2"], z2)
    record = monitor.compute(step=3)
    assert record["n_samples"] == 20 and record["reff_cov"] == pytest.approx(spectral_record(z1, z2, 0.2)["reff_cov"])
    newest = spectral_record(*batches[-1], 0.2)
    assert record["band_measured_mean"] == pytest.approx(newest["band_measured_mean"])
    big = torch.randn(25, 5)
    monitor.update(big, big, 4)  # a batch larger than the window keeps its last rows
    assert torch.equal(monitor.state_dict()["z1"], big[-10:])


def test_records_every_n_steps_and_counts_calls_without_a_step():
    logged = []
    monitor = SpectralMonitor(every=3, window=64, log=logged.append)
    steps = [s for s in range(1, 10) if monitor.update(torch.randn(4, 3), torch.randn(4, 3), s) is not None]
    assert steps == [3, 6, 9] and [r["step"] for r in logged] == [3, 6, 9]
    counted = SpectralMonitor(every=2, window=64)
    records = [counted.update(torch.randn(4, 3), torch.randn(4, 3)) for _ in range(4)]
    assert [r is not None for r in records] == [False, True, False, True] and records[3]["step"] == 4
    assert counted.take_record() is records[3] and counted.take_record() is None


def test_state_dict_round_trip_resumes_identically():
    data = [(torch.randn(6, 4), torch.randn(6, 4)) for _ in range(8)]
    kwargs = {"every": 2, "window": 16, "alarm": "stop", "patience": 2}
    full = SpectralMonitor(**kwargs)
    first = SpectralMonitor(**kwargs)
    for step, (a, b) in enumerate(data[:5], start=1):
        full.update(a, b, step)
        first.update(a, b, step)
    resumed = SpectralMonitor(**kwargs)
    resumed.load_state_dict(first.state_dict())
    for step, (a, b) in enumerate(data[5:], start=6):
        assert resumed.update(a, b, step) == full.update(a, b, step)
    empty = SpectralMonitor()
    empty.load_state_dict(SpectralMonitor().state_dict())
    assert empty.compute() is None



def test_a_smaller_window_keeps_the_newest_pairs_and_a_foreign_state_is_one_line():
    big = SpectralMonitor(every=100, window=8)
    batches = [(torch.randn(3, 5), torch.randn(3, 5)) for _ in range(2)]
    for step, (a, b) in enumerate(batches, start=1):
        big.update(a, b, step)
    small = SpectralMonitor(every=100, window=2)
    small.load_state_dict(big.state_dict())
    assert torch.equal(small.state_dict()["z1"], batches[-1][0][-2:])
    assert small.compute(3)["n_samples"] == 4  # was a crash: the newest batch (3 rows) longer than the window
    with pytest.raises(ValueError, match="not a SpectralMonitor.state_dict\\(\\): missing calls"):
        small.load_state_dict({})


def test_a_non_finite_batch_is_left_out_of_the_record_with_a_warning_never_raised(caplog):
    monitor = SpectralMonitor(every=5, window=64, alarm=None)
    good = [(torch.randn(8, 6), torch.randn(8, 6)) for _ in range(5)]
    bad = good[0][0].clone()
    bad[2, 3] = float("nan")
    with caplog.at_level(logging.WARNING, logger="spectral_ssl"):
        monitor.update(bad, good[0][1], 1)
        for step in range(2, 6):
            record = monitor.update(*good[step - 1], step)
    assert "step 5: 1 of 40 pairs in the window are not finite" in caplog.text
    assert record["non_finite_pairs"] == 1 and record["n_samples"] == 2 * 39
    keep = torch.ones(40, dtype=torch.bool)
    keep[2] = False
    z1, z2 = (torch.cat([g[i] for g in good]) for i in range(2))
    expected = spectral_record(z1[keep], z2[keep], 0.2, batch_size=8)
    assert record["reff_cov"] == pytest.approx(expected["reff_cov"])
    assert record["band_measured_mean"] == pytest.approx(expected["band_measured_mean"])


def collapsed_pairs(n=32, d=16):
    base = torch.randn(d)
    return base + 1e-4 * torch.randn(n, d), base + 1e-4 * torch.randn(n, d)


def test_alarm_fires_after_patience_on_collapse_and_not_on_healthy_z(caplog):
    caplog.set_level(logging.WARNING, logger="spectral_ssl.monitor")
    healthy = SpectralMonitor(every=1, window=64, alarm="warn", patience=1)
    for step in range(1, 6):
        assert not healthy.update(torch.randn(32, 16), torch.randn(32, 16), step)["collapsed"]
    assert not caplog.records
    warn = SpectralMonitor(every=1, window=32, alarm="warn", patience=3)
    for step in range(1, 4):
        warn.update(*collapsed_pairs(), step)
        assert len(caplog.records) == (step == 3)
    assert "collapsed for 3 consecutive records" in caplog.records[0].getMessage()
    stop = SpectralMonitor(every=1, window=32, alarm="stop", patience=2)
    stop.update(*collapsed_pairs(), 1)
    assert not stop.should_stop
    stop.update(*collapsed_pairs(), 2)
    assert stop.should_stop
    with pytest.raises(CollapseError, match="RankMe"):
        SpectralMonitor(every=1, window=32, alarm="raise", patience=1).update(*collapsed_pairs(), 1)


def test_is_collapsed_decides_the_recipe_metrics_row_as_the_monitor_decides_its_record():
    """The recipe tests its metrics row (batch_diagnostics plus the batch's n_samples and dim) with the monitor's
    own rule: the same decision on collapsed and on healthy pairs, and each threshold on its own."""
    for (z1, z2), collapsed in ((collapsed_pairs(), True), ((torch.randn(32, 16), torch.randn(32, 16)), False)):
        record = SpectralMonitor(every=1, window=32).update(z1, z2, step=1)
        row = {**batch_diagnostics(z1, z2, 0.2), "n_samples": 64, "dim": 16}
        assert is_collapsed(record) is is_collapsed(row) is collapsed
    healthy = {"reff_cov": 8.0, "reff_rankme": 8.0, "std_of_l2_normalized": 0.25, "n_samples": 64, "dim": 16}
    assert not is_collapsed(healthy)
    assert is_collapsed({**healthy, "reff_rankme": 0.79})  # below 0.05 x min(64, 16) = 0.8
    assert not is_collapsed({**healthy, "reff_rankme": 0.81})
    assert is_collapsed({**healthy, "std_of_l2_normalized": 0.024})  # 0.024 x sqrt(16) < 0.1
    assert not is_collapsed({**healthy, "reff_cov": 0.79}, min_rank_fraction=0.01)
    message = collapse_message({**healthy, "step": 40}, 3)
    assert message.startswith("the projections have collapsed for 3 consecutive records at step 40: R_eff 8.00")


def test_healthy_streak_resets_the_patience():
    monitor = SpectralMonitor(every=1, window=32, alarm="stop", patience=2)
    monitor.update(*collapsed_pairs(), 1)
    monitor.update(torch.randn(32, 16), torch.randn(32, 16), 2)  # window of 32 pairs: only the healthy batch
    monitor.update(*collapsed_pairs(), 3)
    assert not monitor.should_stop and monitor.last_record["collapse_streak"] == 1


def test_alarm_fires_on_simsiam_without_predictor_and_not_with_infonce():
    """A real collapse: SimSiam's symmetric cosine with stop-gradient but no predictor, on a small MLP."""
    def run(loss_name):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        infonce = ssl.losses.InfoNCELoss(0.2)
        monitor = SpectralMonitor(every=10, window=64, alarm="stop", patience=2)
        x = torch.randn(256, 8)
        for step in range(1, 81):
            batch = x[torch.randint(0, 256, (32,))]
            z1, z2 = model(batch + torch.randn_like(batch)), model(batch + torch.randn_like(batch))  # two noisy views
            if loss_name == "simsiam":
                loss = -(F.cosine_similarity(z1, z2.detach()).mean() + F.cosine_similarity(z2, z1.detach()).mean()) / 2
            else:
                loss = infonce(z1, z2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            monitor.update(z1, z2, step)
            if monitor.should_stop:
                break
        return monitor

    collapsed, healthy = run("simsiam"), run("infonce")
    assert collapsed.should_stop and collapsed.last_record["std_of_l2_normalized"] < 0.1 / 4
    assert not healthy.should_stop and healthy.last_record["step"] == 80 and healthy.last_record["collapse_streak"] == 0


class LightlyStyle(nn.Module):
    """lightly's model layout: a backbone and a projection head."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(10, 12), nn.ReLU())
        self.projection_head = nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 6))

    def forward(self, x):
        return self.projection_head(self.backbone(x))


@pytest.mark.parametrize("concatenated", [False, True])
def test_watch_pairs_two_calls_or_splits_one_concatenated_call(concatenated):
    model = LightlyStyle()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watched, direct = SpectralMonitor(every=2, window=64), SpectralMonitor(every=2, window=64)
    handle = watched.watch(model.projection_head)
    loss_fn = ssl.losses.InfoNCELoss(0.2)
    for _ in range(4):  # an unchanged plain loop
        x1, x2 = torch.randn(8, 10), torch.randn(8, 10)
        if concatenated:
            z1, z2 = model(torch.cat([x1, x2])).chunk(2)
        else:
            z1, z2 = model(x1), model(x2)
        loss = loss_fn(z1, z2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        direct.update(z1, z2)
    assert watched.last_record is not None and watched.last_record["source"] == "watch:Sequential"
    assert {k: v for k, v in watched.last_record.items() if k != "source"} == {
        k: v for k, v in direct.last_record.items() if k != "source"}
    model.eval()
    model(torch.randn(8, 10))  # evaluation forwards are not training views
    assert handle.pending == []
    handle.remove()
    model.train()
    model(torch.randn(8, 10))
    model(torch.randn(8, 10))
    assert watched.state_dict()["calls"] == 4


def test_arguments_are_validated():
    for kwargs, match in [({"every": 0}, "every"), ({"window": 1.5}, "window"), ({"alarm": "email"}, "alarm"),
                          ({"temperature": 0}, "temperature"), ({"min_rank_fraction": 2}, "min_rank_fraction"),
                          ({"log": 3}, "log")]:
        with pytest.raises(ValueError, match=match):
            SpectralMonitor(**kwargs)
    monitor = SpectralMonitor()
    with pytest.raises(ValueError, match="same shape"):
        monitor.update(torch.randn(4, 3), torch.randn(5, 3))
    monitor.update(torch.randn(4, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="dimension"):
        monitor.update(torch.randn(4, 5), torch.randn(4, 5))
    with pytest.raises(ValueError, match="views"):
        monitor.watch(nn.Linear(2, 2), views="three")


@pytest.mark.slow  # a fresh interpreter importing the package: ~7 s
def test_core_import_pulls_no_host_framework():
    import subprocess
    import sys

    code = ("import sys, spectral_ssl; spectral_ssl.SpectralMonitor();"
            "import spectral_ssl.integrations.trackers;"
            "assert not {'lightning', 'pytorch_lightning', 'transformers'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True)


def _two_process_worker(out_dir):
    from accelerate import Accelerator

    from tests.launch import save_rank_result

    acc = Accelerator(cpu=True)
    r = acc.process_index
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(2, 3, 8, 5, generator=g), torch.randn(2, 3, 8, 5, generator=g)  # (rank, step, B, D)
    monitor = SpectralMonitor(every=3, window=16, alarm="stop", patience=1, min_rank_fraction=1.0)
    records = [monitor.update(z1[r, s], z2[r, s], s + 1) for s in range(3)]
    save_rank_result({"records": records, "should_stop": monitor.should_stop}, out_dir)


@pytest.mark.slow
def test_two_processes_gather_their_windows_and_share_the_alarm(tmp_path):
    from tests.launch import load_rank_results, spawn_launcher

    spawn_launcher(_two_process_worker, args=(str(tmp_path),), num_processes=2)
    ranks = load_rank_results(tmp_path)
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(2, 3, 8, 5, generator=g), torch.randn(2, 3, 8, 5, generator=g)
    # each rank keeps its last 16 pairs (steps 2-3); the record is of both ranks' windows, in rank order
    window1, window2 = (torch.cat([z[r, 1:].reshape(16, 5) for r in range(2)]) for z in (z1, z2))
    reference = spectral_record(window1, window2, 0.2, batch_size=16)
    main = ranks[0]["records"]
    assert main[:2] == [None, None] and main[2]["n_samples"] == 64
    assert main[2]["reff_cov"] == pytest.approx(reference["reff_cov"], rel=1e-6)
    newest = spectral_record(torch.cat([z1[0, 2], z1[1, 2]]), torch.cat([z2[0, 2], z2[1, 2]]), 0.2)
    assert main[2]["band_measured_mean"] == pytest.approx(newest["band_measured_mean"], rel=1e-6)
    assert ranks[1]["records"] == [None, None, None]  # computed on the main process only
    assert ranks[0]["should_stop"] and ranks[1]["should_stop"]  # the main process's verdict reaches every rank


def test_between_records_update_only_copies_into_the_buffer(monkeypatch):
    """Meta tensors hold no data: any host synchronisation (.item(), a data-dependent branch) would raise."""
    monkeypatch.setattr("spectral_ssl.monitor.spectral_record", lambda *a, **k: pytest.fail("computed off-cadence"))
    monitor = SpectralMonitor(every=1000, window=50)
    for step in range(1, 5):
        assert monitor.update(torch.empty(32, 8, device="meta"), torch.empty(32, 8, device="meta"), step) is None
    assert monitor._buffers[0].device.type == "meta" and monitor._count == 50


def test_add_then_end_step_equals_update_and_counts_optimizer_steps():
    g = torch.Generator().manual_seed(5)
    micro = [(torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)) for _ in range(8)]
    one, split = SpectralMonitor(every=2, window=64), SpectralMonitor(every=2, window=64)
    for step in range(1, 5):  # 4 optimizer steps of 2 micro-batches
        a, b = micro[2 * step - 2], micro[2 * step - 1]
        one.update(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), step)
        split.add(*a)
        split.add(*b)
        assert split.end_step(step) is not None if step % 2 == 0 else split.end_step(step) is None
    assert split.last_record["step"] == 4 and split.last_record["n_samples"] == one.last_record["n_samples"] == 2 * 64
    assert split.last_record["reff_cov"] == pytest.approx(one.last_record["reff_cov"], rel=1e-6)
    assert split.state_dict()["calls"] == one.state_dict()["calls"] == 4
    with pytest.raises(ValueError, match=r"z1 and z2 must both be \(B, D\) tensors.*got \(8, 6\) and list"):
        split.add(micro[0][0], [1, 2])


def test_a_window_of_one_pair_or_zero_width_projections_are_one_line():
    with pytest.raises(ValueError, match=r"window must be an integer >= 2 \(a record needs at least 2 pairs\), got 1"):
        SpectralMonitor(window=1)  # was accepted, and then no record was ever computed
    with pytest.raises(ValueError, match=r"D >= 1, got \(4, 0\) and \(4, 0\)"):
        SpectralMonitor(every=1).update(torch.randn(4, 0), torch.randn(4, 0), 1)  # was a reshape error from torch


def _uneven_worker(out_dir):
    from accelerate import Accelerator

    from tests.launch import save_rank_result

    r = Accelerator(cpu=True).process_index
    g = torch.Generator().manual_seed(3)
    z = [[torch.randn(b, 5, generator=g) for _ in range(2)] for b in (8, 1, 8, 6)]  # rank 0: 8, 8; rank 1: 1, 6
    monitor = SpectralMonitor(every=1, window=64)
    records = [monitor.update(*z[2 * s + r], s + 1) for s in range(2)]
    save_rank_result({"records": records}, out_dir)


@pytest.mark.slow
def test_processes_with_uneven_windows_record_together(tmp_path):
    """Step 1: rank 1 holds 1 pair (< 2); step 2: the ranks hold 16 and 7 pairs. Was: rank 1 skipped the gather and
    rank 0 waited in it forever (a), or gloo aborted on the unequal shapes (b)."""
    from tests.launch import load_rank_results, spawn_launcher

    spawn_launcher(_uneven_worker, args=(str(tmp_path),), num_processes=2)
    ranks = load_rank_results(tmp_path)
    g = torch.Generator().manual_seed(3)
    z = [[torch.randn(b, 5, generator=g) for _ in range(2)] for b in (8, 1, 8, 6)]
    main = ranks[0]["records"]
    assert ranks[1]["records"] == [None, None] and main[0]["n_samples"] == 2 * 9 and main[1]["n_samples"] == 2 * 23
    # [older rows of each rank; newest batch of each rank]
    reference = spectral_record(*(torch.cat([z[0][v], z[1][v], z[2][v], z[3][v]]) for v in range(2)), 0.2,
                                batch_size=14)
    for key in ("reff_cov", "reff_rankme", "band_measured_mean", "uniformity"):
        assert main[1][key] == pytest.approx(reference[key], rel=1e-6)


def test_watch_says_once_why_outputs_it_cannot_pair_are_not_recorded(caplog):
    tokens = nn.Linear(4, 6)  # applied to (B, T, 4): a (B, T, 6) output, as a ViT head before pooling
    monitor = SpectralMonitor(every=1)
    monitor.watch(tokens, views="pairs")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            tokens(torch.randn(8, 5, 4))
    assert monitor.last_record is None
    assert caplog.text.count("outputs of shape (8, 5, 6) (not (B, D)) are not recorded") == 1
    head = nn.Linear(4, 6)
    monitor = SpectralMonitor(every=1)
    monitor.watch(head, views="pairs")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        head(torch.randn(8, 4)), head(torch.randn(4, 4))  # multi-crop: a global and a local view
    assert monitor.last_record is None and "pairs of calls with different shapes ((8, 6), (4, 6))" in caplog.text
    concat = SpectralMonitor(every=1)
    concat.watch(head, views="concat")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        head(torch.randn(7, 4))
    assert concat.last_record is None and "outputs of 7 rows (not two equal views)" in caplog.text


@pytest.mark.parametrize("step", ["a", 2.5, True, torch.tensor([1, 2])])
def test_a_step_that_is_not_an_integer_is_one_line_naming_step(step):
    monitor = SpectralMonitor(every=1)
    with pytest.raises(ValueError, match=r"^step must be an integer \(the training step\) or None, got"):
        monitor.update(torch.randn(8, 4), torch.randn(8, 4), step)
    assert monitor.update(torch.randn(8, 4), torch.randn(8, 4), torch.tensor(3))["step"] == 3  # a 0-d tensor is fine
    assert monitor.update(torch.randn(8, 4), torch.randn(8, 4), np.int64(4))["step"] == 4
    assert monitor.state_dict()["calls"] == 2 and monitor.state_dict()["z1"].shape[0] == 16  # refused: no change


def test_collapse_streak_counts_consecutive_collapsed_records_and_resets():
    from spectral_ssl.monitor import collapse_streak

    streak, seen = 0, []
    for collapsed in (True, True, False, True):
        streak = collapse_streak(streak, collapsed)
        seen.append(streak)
    assert seen == [1, 2, 0, 1]
