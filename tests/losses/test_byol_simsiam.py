import torch
import torch.nn.functional as F

from spectral_ssl.losses import BYOLLoss, SimSiamLoss


def test_byol_is_the_symmetrised_normalised_mse_to_the_targets():
    torch.manual_seed(0)
    loss_fn = BYOLLoss(dim=4, hidden_dim=8)
    z1, z2, t1, t2 = (torch.randn(5, 4) for _ in range(4))
    p1, p2 = loss_fn.predictor(z1), loss_fn.predictor(z2)
    mse = lambda p, t: (F.normalize(p, dim=1) - F.normalize(t, dim=1)).pow(2).sum(1).mean()  # noqa: E731
    torch.testing.assert_close(loss_fn(z1, z2, targets=(t1, t2)), mse(p1, t2) + mse(p2, t1))


def test_byol_is_four_plus_four_times_lightlys_example_loss_with_four_times_its_gradients():
    # lightly's BYOL example: 0.5 * (NegativeCosineSimilarity(p0, z1) + NegativeCosineSimilarity(p1, z0))
    torch.manual_seed(0)
    loss_fn = BYOLLoss(dim=4, hidden_dim=8)
    z1, z2, t1, t2 = (torch.randn(5, 4, dtype=torch.float64) for _ in range(4))
    loss_fn = loss_fn.double()

    def grads(loss_of):
        a1, a2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        value = loss_of(a1, a2)
        value.backward()
        return value, a1.grad, a2.grad

    def lightly(a1, a2):
        cos = lambda p, t: F.cosine_similarity(p, t.detach(), dim=1).mean()  # noqa: E731
        return 0.5 * (-cos(loss_fn.predictor(a1), t2) - cos(loss_fn.predictor(a2), t1))

    ours, g1, g2 = grads(lambda a1, a2: loss_fn(a1, a2, targets=(t1, t2)))
    theirs, h1, h2 = grads(lightly)
    torch.testing.assert_close(ours, 4 + 4 * theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g1, 4 * h1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g2, 4 * h2, rtol=1e-12, atol=1e-12)


def test_targets_get_no_gradient_and_the_predictor_learns():
    loss_fn = BYOLLoss(dim=4, hidden_dim=8)
    z1, z2 = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    t1, t2 = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    loss_fn(z1, z2, targets=(t1, t2)).backward()
    assert t1.grad is None and t2.grad is None and z1.grad is not None
    assert all(p.grad is not None for p in loss_fn.predictor.parameters())


def test_simsiam_value_is_minus_the_mean_cosine_and_stop_gradient_holds():
    torch.manual_seed(0)
    loss_fn = SimSiamLoss(dim=4, hidden_dim=3)
    assert loss_fn.predictor[0].bias is None
    z1, z2 = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    p1, p2 = loss_fn.predictor(z1), loss_fn.predictor(z2)
    expected = -0.5 * (F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean())
    loss = loss_fn(z1, z2)
    torch.testing.assert_close(loss, expected)
    # swapping views is a symmetry
    torch.testing.assert_close(loss_fn(z2, z1), loss)
