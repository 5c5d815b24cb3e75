"""What every loss in LOSSES promises the training loop: signature, attributes, learning, state, autocast."""

import pytest
import torch

from spectral_ssl.losses import LOSSES

D, B, N = 8, 12, 40


def build(name):
    cls = LOSSES[name]
    kwargs = {"moco": {"dim": D, "queue_size": 32}, "sogclr": {"dataset_size": N}, "isoloss": {"dim": D},
              "byol": {"dim": D, "hidden_dim": 16}, "simsiam": {"dim": D, "hidden_dim": 16}}.get(name, {})
    torch.manual_seed(0)
    return cls(**kwargs)


def batch(seed=0, b=B):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, D, generator=g)
    return base + 0.3 * torch.randn(b, D, generator=g), base + 0.3 * torch.randn(b, D, generator=g)


INDEX = torch.arange(B) * 3


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_contract_attributes_and_a_finite_scalar(name):
    loss_fn = build(name)
    assert isinstance(loss_fn.uses_target, bool) and isinstance(LOSSES[name].uses_target, bool)
    assert not hasattr(loss_fn, "needs_index")  # dropped: the recipe always passes index=batch["idx"]
    if loss_fn.uses_target:  # the EMA schedule of the target network: (base, final), cosine from one to the other
        base, final = loss_fn.default_momentum
        assert 0 < base <= final <= 1
    z1, z2 = batch()
    targets = batch(seed=1) if loss_fn.uses_target else None
    value = loss_fn(z1, z2, index=INDEX, targets=targets)
    assert value.ndim == 0 and torch.isfinite(value)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_twenty_sgd_steps_on_free_embeddings_lower_the_loss(name):
    loss_fn = build(name)
    z1, z2 = (torch.nn.Parameter(z) for z in batch())
    opt = torch.optim.SGD([z1, z2, *loss_fn.parameters()], lr=0.05 if name != "isoloss" else 0.02)
    # a fixed target pair for the target-network methods (the EMA target moves slowly)
    targets = tuple(t.clone() for t in batch(seed=0)) if loss_fn.uses_target else None
    if name == "moco":
        loss_fn.eval()  # a fixed queue: with fixed targets, enqueuing would fill it with copies of the positives
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn(z1, z2, index=INDEX, targets=targets)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    with torch.no_grad():
        last = loss_fn(z1, z2, index=INDEX, targets=targets).item()
    assert last < first, (first, last)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_state_round_trips_and_the_reloaded_loss_continues_identically(name):
    a = build(name)
    for seed in range(3):  # fill queues / u / C
        z1, z2 = batch(seed)
        a(z1, z2, index=INDEX, targets=batch(seed + 10) if a.uses_target else None)
    b = build(name)
    b.load_state_dict(a.state_dict())
    z1, z2 = batch(7)
    targets = batch(8) if a.uses_target else None
    assert torch.equal(a(z1, z2, index=INDEX, targets=targets), b(z1, z2, index=INDEX, targets=targets))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_autocast_gives_finite_loss_and_gradients(name):
    loss_fn = build(name)
    z1, z2 = (z.clone().requires_grad_(True) for z in batch())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(z1.bfloat16(), z2.bfloat16(), index=INDEX, targets=batch(1) if loss_fn.uses_target else None)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mismatched_views_are_rejected(name):
    with pytest.raises(ValueError, match="same shape"):
        build(name)(torch.randn(4, D), torch.randn(5, D), index=torch.arange(4))


@pytest.mark.parametrize("cls,kwargs,fragment", [
    ("dcl", {"temperature": 0}, "temperature must be a positive number"),
    ("dcl", {"weight_sigma": -1}, "DCLW uses 0.5"),
    ("moco", {"dim": 8, "queue_size": 0}, "queue_size must be a positive integer"),
    ("moco", {"dim": 0}, "dim must be a positive integer"),
    ("sogclr", {"dataset_size": 0}, "number of training rows"),
    ("sogclr", {"dataset_size": 10, "gamma": 0}, "never updates u"),
    ("sogclr", {"dataset_size": 10, "gamma": 1.5}, r"in \[0, 1\]"),
    ("isoloss", {"dim": 8, "metric": "l1"}, "metric must be one of"),
    ("isoloss", {"dim": 8, "alpha": 0}, "IsoLoss uses 0.5"),
    ("byol", {"dim": 8, "hidden_dim": -3}, "hidden_dim must be a positive integer"),
    ("simsiam", {"dim": 8, "hidden_dim": 0}, "SimSiam uses 512"),
    ("simsiam", {}, "missing 1 required positional argument: 'dim'"),
    ("infonce", {"temperature": -0.1}, "SimCLR uses 0.1-0.5"),
    ("infonce", {"gather_distributed": "yes"}, "gather_distributed must be True or False"),
    ("dcl", {"gather_distributed": 1}, "gather_distributed must be True or False"),
    ("moco", {"dim": 8, "gather_distributed": None}, "gather_distributed must be True or False"),
    ("sogclr", {"dataset_size": 10, "gather_distributed": "no"}, "gather_distributed must be True or False"),
    ("isoloss", {"dim": 8, "ema": "true"}, "ema must be True or False"),
    ("isoloss", {"dim": 8, "gather_distributed": 0}, "gather_distributed must be True or False"),
])
def test_bad_constructor_arguments_name_the_fix(cls, kwargs, fragment):
    with pytest.raises((ValueError, TypeError), match=fragment):
        LOSSES[cls](**kwargs)


def test_wrong_projection_dim_names_proj_dim():
    with pytest.raises(ValueError, match="pass dim=6"):
        build("moco")(torch.randn(4, 6), torch.randn(4, 6))


def test_each_class_owns_its_official_defaults():
    # only the projection width (the model's) and the dataset size (the data's) have to be passed
    assert build_default("byol").predictor[0].out_features == 4096
    assert build_default("simsiam").predictor[0].out_features == 512
    moco = build_default("moco")
    assert moco.queue.shape[0] == 65536 and moco.temperature == 0.2 and moco.default_momentum == (0.99, 0.999)
    assert build_default("infonce").temperature == 0.2 and build_default("dcl").temperature == 0.1
    sogclr = LOSSES["sogclr"](dataset_size=N)
    assert (sogclr.temperature, sogclr.gamma) == (0.1, 0.9)
    iso = build_default("isoloss")
    assert (iso.alpha, iso.eps, iso.corr_momentum, iso.metric, iso.uses_target) == (0.5, 0.0, 0.5, "cos", False)
    assert LOSSES["isoloss"](dim=D, ema=True).corr_momentum == 0.998


def build_default(name):
    cls = LOSSES[name]
    return cls(dim=D) if name in ("byol", "simsiam", "moco", "isoloss") else cls()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_non_finite_batch_leaves_the_training_state_as_it_was(name):
    # a caller that skips a bad batch (AMP practice) must go on with intact state: MoCo's queue, SogCLR's u,
    # IsoLoss's correlation; the bad batch's own loss is still non-finite, so it is not hidden
    loss_fn = build(name)
    z1, z2 = batch()
    targets = batch(seed=1) if loss_fn.uses_target else None
    loss_fn(z1, z2, index=INDEX, targets=targets)  # some state to keep
    before = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    bad = z1.clone()
    bad[3, 2] = float("nan")
    bad_targets = (bad, targets[1]) if targets is not None else None  # the same bad input reaches the target net
    assert not torch.isfinite(loss_fn(bad, z2, index=INDEX, targets=bad_targets))
    for key, value in loss_fn.state_dict().items():
        if not key.startswith("predictor."):  # BatchNorm running statistics are torch's own
            torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=False, msg=key)
    assert torch.isfinite(loss_fn(z1, z2, index=INDEX, targets=targets))


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtypes", [(torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16),
                                    (torch.float64, torch.float64), (torch.float32, torch.float64)])
def test_any_float_dtypes_give_a_finite_loss(name, dtypes):
    loss_fn = build(name)
    z1, z2 = (z.to(dtype) for z, dtype in zip(batch(), dtypes, strict=True))
    targets = tuple(t.to(dtypes[1]) for t in batch(seed=1)) if loss_fn.uses_target else None
    assert torch.isfinite(loss_fn(z1, z2, index=INDEX, targets=targets))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_non_float_projections_are_refused_in_one_line(name):
    loss_fn = build(name)
    z1, z2 = batch()
    with pytest.raises(ValueError, match="z1 must be a floating-point torch.Tensor of projections, got a ndarray"):
        loss_fn(z1.numpy(), z2, index=INDEX)
    with pytest.raises(ValueError, match="z2 must be a floating-point torch.Tensor .* got a torch.int64 tensor"):
        loss_fn(z1, z2.long(), index=INDEX)


def test_numpy_scalars_are_numbers():
    import numpy as np

    from spectral_ssl.losses import create_loss

    loss_fn = create_loss("moco", dim=np.int64(D), temperature=np.float32(0.2), queue_size=np.int64(32))
    assert loss_fn.temperature == pytest.approx(0.2) and loss_fn.queue.shape == (32, D)
