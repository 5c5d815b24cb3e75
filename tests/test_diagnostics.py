import json

import pytest
import torch
import torch.nn.functional as F

from spectral_ssl import diagnostics, effective_rank
from spectral_ssl.band import gradient_band
from spectral_ssl.diagnostics import batch_diagnostics
from spectral_ssl.losses import InfoNCELoss


def test_monitors_equal_their_definitions_and_ignore_scale():
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    d = batch_diagnostics(z1, z2, 0.2, monitor_temperature=0.5)
    n1, n2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    assert d["cos_views"] == pytest.approx(float((n1 * n2).sum(1).mean()), abs=1e-6)
    assert d["ntxent"] == pytest.approx(float(InfoNCELoss(0.5)(z1, z2)), rel=1e-6)
    assert d["reff_cov"] == pytest.approx(float(effective_rank(torch.cat([n1, n2]))), rel=1e-6)
    assert d["reff_rankme"] == pytest.approx(float(effective_rank(torch.cat([n1, n2]), "rankme", eps=1e-7)), rel=1e-6)
    assert d["band_containment"] == 1.0
    assert batch_diagnostics(3 * z1, 3 * z2, 0.2, monitor_temperature=0.5) == pytest.approx(d)


def test_queue_negatives_give_the_moco_band_and_their_rank():
    q, k, queue = torch.randn(8, 6), torch.randn(8, 6), torch.randn(50, 6)
    d = batch_diagnostics(q, torch.randn(8, 6), 0.2, negatives=queue, keys=k)
    ref = gradient_band(F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1), 0.2).summary()
    assert d["band_measured_mean"] == pytest.approx(ref["measured_mean"], rel=1e-6)
    assert d["reff_negatives"] == pytest.approx(float(effective_rank(F.normalize(queue, dim=1))), rel=1e-6)
    with pytest.raises(ValueError, match="keys"):
        batch_diagnostics(q, k, 0.2, negatives=queue)


def test_training_plot_from_metrics_and_none_without_rows(tmp_path):
    rows = [{"step": s, "reff_cov": 10.0 + s, "reff_rankme": 20.0, "band_measured_mean": 2.0, "band_lower_mean": 1.0,
             "band_upper_mean": 5.0, "band_containment": 1.0} for s in (10, 20, 30)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    png = diagnostics.write_training_plot(tmp_path / "metrics.jsonl", tmp_path / "plot.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    (tmp_path / "empty.jsonl").write_text('{"step": 1}\n')
    assert diagnostics.write_training_plot(tmp_path / "empty.jsonl", tmp_path / "none.png") is None
    assert diagnostics.write_training_plot(tmp_path / "missing.jsonl", tmp_path / "none.png") is None
