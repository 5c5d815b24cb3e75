import math

import pytest
import torch
from torch import nn

from spectral_ssl.momentum import cosine_momentum, update_momentum


def test_update_is_an_ema_of_parameters_and_copies_buffers():
    torch.manual_seed(0)
    online, target = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), nn.Sequential(nn.Linear(3, 2),
                                                                                        nn.BatchNorm1d(2))
    online(torch.randn(8, 3))  # move the online BN statistics
    expected = [0.9 * t + 0.1 * o for t, o in zip(target.parameters(), online.parameters())]
    update_momentum(target=target, online=online, momentum=0.9)
    for got, want in zip(target.parameters(), expected):
        torch.testing.assert_close(got, want)
    for t, o in zip(target.buffers(), online.buffers()):
        assert torch.equal(t, o)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        update_momentum(target=target, online=online, momentum=1.5)


def test_positional_arguments_are_refused():
    # lightly's update_momentum(model, model_ema, m) takes the online network first: a positional call must fail
    # loudly instead of silently pulling the online network towards its EMA
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    with pytest.raises(TypeError, match="positional"):
        update_momentum(online, target, 0.99)
    before = [p.clone() for p in online.parameters()]
    update_momentum(target=target, online=online, momentum=0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, online.parameters()))  # only the target moves


def test_cosine_schedule_runs_from_base_to_final():
    assert cosine_momentum(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_momentum(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    values = [cosine_momentum(s, 10, 0.9, 0.999) for s in range(11)]
    assert all(a <= b for a, b in zip(values, values[1:])) and not math.isnan(values[-1])
