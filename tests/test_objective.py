"""The objective: two views -> loss and the z the diagnostics see (loss + whitening + EMA target), its state."""

import pytest
import torch

from spectral_ssl import SpectralSSL
from spectral_ssl.losses import InfoNCELoss
from spectral_ssl.momentum import cosine_momentum, update_momentum
from spectral_ssl.objective import Objective, create_objective
from spectral_ssl.whitening import BatchWhitening


def tiny_model():
    torch.manual_seed(0)
    return SpectralSSL("test_resnet", proj_hidden_dim=16, proj_dim=8)


def views(n=12):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randn(n, 3, 32, 32, generator=g)


def test_without_whitening_the_loss_sees_the_raw_projections():
    model = tiny_model()
    objective = create_objective(model, "infonce", dim=8, temperature=0.3)
    x1, x2 = views()
    out = objective(x1, x2, index=torch.arange(12))
    p1, p2 = model(x1), model(x2)
    torch.testing.assert_close(out.p1, p1, rtol=0, atol=0)
    torch.testing.assert_close(out.z2, p2, rtol=0, atol=0)
    torch.testing.assert_close(out.loss, InfoNCELoss(temperature=0.3)(p1, p2), rtol=0, atol=0)
    assert out.targets is None and out.keys is None and objective.negatives() is None
    assert objective.loss_space() is None and objective.whiten is None and objective.target is None


def test_whitening_is_applied_per_view_and_exposed_as_the_selection_space():
    model = tiny_model()
    objective = create_objective(model, "infonce", dim=8, whitening="zca")
    x1, x2 = views()
    out = objective(x1, x2)
    reference = BatchWhitening(8, kind="zca")
    torch.testing.assert_close(out.z1, reference(model(x1)))
    assert objective.loss_space() == objective.whiten.whiten_running
    assert any(k.startswith("whiten.running") for k in objective.state_dict())
    solver = create_objective(model, "infonce", dim=8, whitening="zca", whitening_solver="newton_schulz")
    assert solver.whiten.solver == "newton_schulz"
    torch.testing.assert_close(solver(x1, x2).z1, out.z1, atol=1e-4, rtol=1e-4)


def test_ema_target_follows_the_cosine_schedule_and_is_state():
    model = tiny_model()
    objective = create_objective(model, "byol", dim=8, hidden_dim=16, ema_momentum=0.5)
    assert objective.target is not None and objective.learnable_loss
    out = objective(*views())
    assert out.keys is out.targets[1] and out.keys.shape == (12, 8)
    expected = tiny_model()
    expected.load_state_dict(objective.target.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    objective.update_target(3, 10)
    update_momentum(target=expected, online=model, momentum=cosine_momentum(3, 10, 0.5, 1.0))
    for a, b in zip(objective.target.state_dict().values(), expected.state_dict().values()):
        torch.testing.assert_close(a, b)
    state = objective.state_dict()
    assert any(k.startswith("target.") for k in state) and any(k.startswith("loss.predictor") for k in state)
    assert not any(k.startswith("online") for k in state)  # the online model is held, not owned


def test_moco_negatives_are_the_queue_and_bad_arguments_are_one_line():
    objective = create_objective(tiny_model(), "moco", dim=8, queue_size=16)
    objective(*views())
    assert objective.negatives().shape == (16, 8)
    with pytest.raises(ValueError, match="whitening must be one of"):
        Objective(tiny_model(), InfoNCELoss(), whitening="pca", dim=8)
    with pytest.raises(ValueError, match="takes no argument 'gamma'"):
        create_objective(tiny_model(), "moco", dim=8, gamma=0.5)


@pytest.mark.parametrize("loss,kwargs", [("infonce", {}), ("simsiam", {}), ("isoloss", {"ema": False})])
@pytest.mark.parametrize("key", ["ema_momentum", "ema_momentum_final"])
def test_an_ema_momentum_without_an_ema_target_is_refused_not_ignored(loss, kwargs, key):
    with pytest.raises(ValueError, match=rf"^{key}=0.5 is set, but loss \w+ trains without an EMA target network"):
        create_objective(tiny_model(), loss, dim=8, **kwargs, **{key: 0.5})
    assert create_objective(tiny_model(), "isoloss", dim=8, ema=True, **{key: 0.5}).target is not None


def test_views_of_different_batch_sizes_are_one_line():
    objective = create_objective(tiny_model(), "infonce", dim=8)
    with pytest.raises(ValueError, match="the two views must hold the same images: x1 has 4 and x2 3 rows"):
        objective(torch.randn(4, 3, 16, 16), torch.randn(3, 3, 16, 16))
