import pytest

from spectral_ssl import eta
from spectral_ssl.eta import EtaClock


def test_eta_clock_times_the_steps_after_warm_up_and_reports_once(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(eta.time, "perf_counter", lambda: now[0])
    calls = []
    clock = EtaClock(0, 100, lambda left, ips: calls.append((left, ips)), warmup=2, steps=4, seconds=60)
    for step in range(1, 100):
        now[0] += 5.0 if step <= 2 else 0.5  # slow warm-up steps are left out
        clock.stepped(step, 16)
    assert calls == [(pytest.approx(0.5 * 94), pytest.approx(32.0))]  # after step 6: 94 steps left, 16 img / 0.5 s
    short = []
    clock = EtaClock(10, 13, lambda *a: short.append(a))  # a resumed run with 3 steps to go: no estimate
    for step in (11, 12, 13):
        clock.stepped(step, 16)
    assert short == []


def test_without_a_callback_it_measures_nothing(monkeypatch):
    monkeypatch.setattr(eta.time, "perf_counter", lambda: pytest.fail("timed without on_eta"))
    clock = EtaClock(0, 100, None)
    for step in range(1, 20):
        clock.stepped(step, 16)
