"""benchmarks/grad_variance.py: the §5.4 protocol's arithmetic and its control arm."""


import pytest
import torch

from spectral_ssl import SpectralSSL
from tests.conftest import BENCHMARKS, load_module

grad_variance = load_module(BENCHMARKS / "grad_variance.py")


def test_moments_trace_equals_sample_covariance_trace():
    x = torch.randn(7, 5, dtype=torch.float64)
    m = grad_variance._Moments()
    for row in x:
        m.add(row[None])
    assert m.trace_cov() == pytest.approx(torch.cov(x.T).trace().item(), rel=1e-10)
    assert m.relative() == pytest.approx(m.trace_cov() / x.pow(2).sum(1).mean().item(), rel=1e-10)
    same = grad_variance._Moments()
    for _ in range(3):
        same.add(3 * x[:1])
    assert same.relative() == pytest.approx(0.0, abs=1e-12)  # no noise, whatever the scale


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = SpectralSSL("test_resnet", proj_hidden_dim=32, proj_dim=8)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(24, 3, 16, 16, generator=g), torch.randn(24, 3, 16, 16, generator=g)) for _ in range(4)]
    return model, batches


def test_same_arm_twice_gives_ratio_one_and_parameters_are_untouched(setup):
    model, batches = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = grad_variance.gradient_variance(model, batches, "none")
    b = grad_variance.gradient_variance(model, batches, "none")
    assert a == b and all(v > 0 for v in a.values())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_whitening_changes_the_variance_and_factors_are_in_range(setup):
    model, batches = setup
    none = grad_variance.gradient_variance(model, batches, "none")
    zca = grad_variance.gradient_variance(model, batches, "zca")
    assert none["all"] != zca["all"]
    factors = grad_variance.predicted_factors(model, batches)
    assert 1 <= factors["D_over_reff"] <= factors["D_pmax"] <= 8 + 1e-6  # D/R_eff <= D p_max <= D
