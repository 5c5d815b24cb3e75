import pytest
import torch
import torch.nn.functional as F

from spectral_ssl.losses import DCLLoss, InfoNCELoss


def reference_dcl(z1, z2, tau, sigma=None, constant_weight=False):
    """Loop over anchors: −w·s(a, a⁺)/τ + log Σ_{k ≠ a, a⁺} exp(s(a, k)/τ) (w a constant: ``constant_weight``)."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = len(z1)
    total = 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        negs = [k for k in range(2 * n) if k not in (a, pos)]
        w = 1.0
        if sigma is not None:
            y1, y2 = (z1.detach(), z2.detach()) if constant_weight else (z1, z2)
            s = (F.normalize(y1.double(), dim=1) * F.normalize(y2.double(), dim=1)).sum(1) / sigma
            w = 2 - n * torch.softmax(s, 0)[a % n]
        total = total - w * z[a] @ z[pos] / tau + torch.logsumexp(torch.stack([z[a] @ z[k] / tau for k in negs]), 0)
    return total / (2 * n)


@pytest.mark.parametrize("sigma", [None, 0.5])
def test_matches_slow_reference_and_is_symmetric(sigma):
    z1, z2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    loss = DCLLoss(0.3, weight_sigma=sigma)
    torch.testing.assert_close(loss(z1, z2), reference_dcl(z1, z2, 0.3, sigma))
    torch.testing.assert_close(loss(z1, z2), loss(z2, z1))


def test_equals_infonce_minus_the_positive_share():
    # InfoNCE_a = DCL_a + log(1 + exp(s⁺/τ)/Σ_neg exp(s/τ)) > DCL_a: DCL is InfoNCE without the positive below
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    assert DCLLoss(0.2)(z1, z2) < InfoNCELoss(0.2)(z1, z2)


def test_dclw_weight_is_a_constant_in_the_gradient():
    # DCLW's von Mises–Fisher weight is detached in forward: the gradient is that of the loss with w held fixed
    z1, z2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    a1, a2, r1, r2 = (z.clone().requires_grad_(True) for z in (z1, z2, z1, z2))
    DCLLoss(0.3, weight_sigma=0.5)(a1, a2).backward()
    reference_dcl(r1, r2, 0.3, 0.5, constant_weight=True).backward()
    torch.testing.assert_close(a1.grad, r1.grad)
    torch.testing.assert_close(a2.grad, r2.grad)



def test_a_single_pair_has_no_negatives_and_is_refused():
    with pytest.raises(ValueError, match="needs negatives: a global batch of at least 2"):
        DCLLoss(0.2)(torch.randn(1, 4), torch.randn(1, 4))
