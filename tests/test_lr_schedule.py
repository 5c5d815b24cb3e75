import pytest

from spectral_ssl.lr_schedule import warmup_cosine


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [warmup_cosine(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01


def test_without_warm_up_it_starts_at_the_base_and_ends_at_zero():
    assert warmup_cosine(0, 10, 0, 0.5) == 0.5
    assert warmup_cosine(10, 10, 0, 0.5) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(50, 10, 0, 0.5) == warmup_cosine(10, 10, 0, 0.5)  # past the end: stays at 0
