import pytest
import torch

from spectral_ssl import BatchWhitening


def anisotropic(n=1024, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) * torch.logspace(0, -1.5, d)) @ torch.randn(d, d, generator=g) + 3.0


@pytest.mark.parametrize("kind, solver", [("zca", "eigh"), ("zca", "newton_schulz"), ("cholesky", "eigh")])
def test_output_covariance_is_identity(kind, solver):
    out = BatchWhitening(16, kind=kind, eps=1e-9, solver=solver)(anisotropic().double())
    cov = torch.cov(out.T)
    torch.testing.assert_close(cov, torch.eye(16, dtype=torch.float64), atol=1e-4, rtol=0)
    assert out.mean(0).abs().max() < 1e-8


def test_zca_is_rotation_equivariant_and_cholesky_is_not():
    h = anisotropic(d=8).double()
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    zca = BatchWhitening(8, eps=1e-6)
    torch.testing.assert_close(zca(h @ q), zca(h) @ q, atol=1e-8, rtol=1e-6)
    chol = BatchWhitening(8, kind="cholesky", eps=1e-6)
    assert not torch.allclose(chol(h @ q), chol(h) @ q, atol=1e-3)


def test_gradients_flow_through_statistics():
    h = anisotropic(n=24, d=3).double().requires_grad_(True)
    layer = BatchWhitening(3, eps=1e-3, shrinkage=0.1)
    assert torch.autograd.gradcheck(lambda x: layer(x).pow(3).sum(), (h,))


def test_bf16_autocast_gives_finite_gradients_and_fp32_maths():
    proj = torch.nn.Linear(8, 16)
    layer = BatchWhitening(16)
    x = torch.randn(64, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(proj(x))
    out.float().pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in proj.parameters())


def test_small_batch_error_names_size_and_fix():
    with pytest.raises(ValueError, match=r"batch size 16 <= dim 32.*sub-batches.*shrinkage"):
        BatchWhitening(32)(torch.randn(16, 32))


def test_running_statistics_are_buffers_and_used_in_eval():
    layer = BatchWhitening(4, momentum=1.0)
    h = anisotropic(n=256, d=4)
    train_out = layer(h)
    assert {"running_mean", "running_cov"} <= set(layer.state_dict())
    layer.eval()
    torch.testing.assert_close(layer(h), train_out, atol=1e-4, rtol=1e-4)  # momentum 1: running = this batch
    assert layer(h[:2]).shape == (2, 4)  # eval accepts any batch size


def test_whiten_running_is_eval_whitening_in_any_mode_and_leaves_the_statistics():
    layer = BatchWhitening(4, momentum=0.5)
    layer(anisotropic(n=256, d=4))
    saved = {k: v.clone() for k, v in layer.state_dict().items()}
    h = anisotropic(n=3, d=4)  # fewer rows than dims: fine with running statistics
    out = layer.whiten_running(h)
    assert layer.training and not out.requires_grad
    for k, v in layer.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)
    torch.testing.assert_close(out, layer.eval()(h))


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        BatchWhitening(4, kind="pca")
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        BatchWhitening(4)(torch.randn(10, 5))


def test_zca_gradient_is_finite_and_correct_with_repeated_eigenvalues():
    # eigh's backward divides by λ_i − λ_j and returns NaN here; the divided-difference backward does not
    from spectral_ssl.whitening import _InverseSqrt

    cov = torch.eye(5, dtype=torch.float64) * 0.5
    cov[0, 0] = 2.0
    c = cov.clone().requires_grad_(True)
    weights = torch.randn(5, 5, dtype=torch.float64)
    (_InverseSqrt.apply(c) * weights).sum().backward()
    assert torch.isfinite(c.grad).all()

    def f(m):
        lam, vec = torch.linalg.eigh(m)
        return ((vec * lam.rsqrt()) @ vec.T * weights).sum()

    step = 1e-6
    for i, j in [(0, 0), (1, 2), (3, 3), (0, 4)]:
        d = torch.zeros(5, 5, dtype=torch.float64)
        d[i, j] += step / 2
        d[j, i] += step / 2
        numeric = (f(cov + d) - f(cov - d)) / (2 * step)
        analytic = (c.grad[i, j] + c.grad[j, i]) / 2 if i != j else c.grad[i, i]
        assert abs(float(numeric - analytic)) < 1e-6


def projections(rank, n=512, d=128, seed=0):
    """Low-rank projections plus a little noise: the covariance's condition number reaches ~1e5-1e6 with the ridge."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g) + 0.01 * torch.randn(n, d, generator=g)


@pytest.mark.parametrize("rank", [128, 40, 8, 1])
def test_newton_schulz_is_as_accurate_as_float32_eigh(rank):
    # against float64 eigh as the truth: the default step count reaches float32 eigh's accuracy on covariances
    # conditioned up to the ridge's limit (rank 1 of 128 dims: ~1e6)
    from spectral_ssl.whitening import _InverseSqrt, newton_schulz_inverse_sqrt, newton_schulz_steps

    layer = BatchWhitening(128)
    h = projections(rank)
    centred = h - h.mean(0)
    cov = centred.T @ centred / (centred.shape[0] - 1)
    scale = cov.diagonal().mean()
    ridged = cov + 1e-4 * scale * torch.eye(128)
    truth = _InverseSqrt.apply(ridged.double())
    error = {name: float((w.double() - truth).norm() / truth.norm()) for name, w in
             (("eigh", _InverseSqrt.apply(ridged)),
              ("newton_schulz", newton_schulz_inverse_sqrt(ridged, newton_schulz_steps(128, 1e-4))))}
    assert error["newton_schulz"] <= max(2 * error["eigh"], 1e-3), error
    assert newton_schulz_steps(128, 1e-4) == layer.steps == 24


def test_newton_schulz_step_count_converges_for_every_dimension_and_floor():
    # the matrix iteration in Σ's eigenbasis is the scalar z <- z (3 - λ z²) / 2 from z = 1; its slowest eigenvalue
    # is the smallest, λ = floor / D after the trace scaling
    from spectral_ssl.whitening import newton_schulz_steps

    for dim in (2, 8, 16, 128, 512, 2048, 8192):
        for floor in (1e-8, 1e-6, 1e-4, 1e-2, 0.1, 0.5, 0.99, 1.0):
            lam, z = floor / dim, 1.0
            for _ in range(newton_schulz_steps(dim, floor)):
                z = z * (3 - lam * z * z) / 2
            assert abs(lam * z * z - 1) < 1e-12, (dim, floor)
    # a large ridge: the floor is (s + ε) / (1 + ε) of the mean eigenvalue, not s + ε (which would exceed 1)
    assert BatchWhitening(8, eps=1e4).steps == newton_schulz_steps(8, 1e4 / (1 + 1e4)) >= 6
    layer, h = BatchWhitening(8, eps=100.0, solver="newton_schulz"), anisotropic(d=8).double()
    torch.testing.assert_close(layer(h), BatchWhitening(8, eps=100.0, solver="eigh")(h), atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="floor"):
        newton_schulz_steps(8, 1.5)


def test_newton_schulz_zca_whitens_and_matches_eigh_forward_and_backward():
    # in float64 the default steps converge fully: the same outputs and gradients as eigh's closed-form backward
    h = anisotropic(n=512, d=16).double().requires_grad_(True)
    out = {}
    for solver in ("eigh", "newton_schulz"):
        layer = BatchWhitening(16, eps=1e-4, solver=solver)
        y = layer(h)
        (grad,) = torch.autograd.grad((y * torch.linspace(-1, 1, 16, dtype=torch.float64)).pow(2).sum(), h)
        out[solver] = y.detach(), grad
    torch.testing.assert_close(out["newton_schulz"][0], out["eigh"][0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out["newton_schulz"][1], out["eigh"][1], atol=1e-10, rtol=1e-8)


def test_newton_schulz_is_rotation_equivariant_and_runs_in_fp32_under_autocast():
    h = anisotropic(d=8).double()
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    layer = BatchWhitening(8, eps=1e-6, solver="newton_schulz")
    torch.testing.assert_close(layer(h @ q), layer(h) @ q, atol=1e-8, rtol=1e-6)
    proj = torch.nn.Linear(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = BatchWhitening(16, solver="newton_schulz")(proj(torch.randn(64, 8)))
    out.float().pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in proj.parameters())


def test_auto_solver_iterates_on_cuda_only_and_is_eigh_on_the_cpu():
    layer = BatchWhitening(16)
    assert layer.solver == "auto" and layer.solver_for(torch.device("cuda", 0)) == "newton_schulz"
    assert layer.solver_for("cpu") == "eigh" and BatchWhitening(16, solver="eigh").solver_for("cuda") == "eigh"
    assert BatchWhitening(1024).solver_for("cuda") == "eigh"  # O(D³) float64 products and their memory: eigh
    h = anisotropic(n=64, d=16)
    torch.testing.assert_close(layer(h), BatchWhitening(16, solver="eigh")(h), rtol=0, atol=0)


def test_bad_solver_arguments():
    with pytest.raises(ValueError, match="solver must be one of"):
        BatchWhitening(4, solver="svd")
    with pytest.raises(ValueError, match="kind 'cholesky' takes none"):
        BatchWhitening(4, kind="cholesky", solver="newton_schulz")
    with pytest.raises(ValueError, match="steps"):
        BatchWhitening(4, solver="newton_schulz", steps=0)
    assert "steps=24" in repr(BatchWhitening(128))


@pytest.mark.parametrize("kind, solver", [("zca", "eigh"), ("zca", "newton_schulz"), ("cholesky", "auto")])
def test_a_stack_of_views_is_the_same_as_one_call_per_view(kind, solver):
    # outputs, gradients wrt every view and the running statistics, in training and in eval
    views = [anisotropic(n=200, d=16, seed=s).double().requires_grad_(True) for s in (1, 2, 3)]
    weights = torch.randn(3, 200, 16, dtype=torch.float64)
    one, stacked = (BatchWhitening(16, kind=kind, solver=solver, momentum=0.3).double() for _ in range(2))
    per_view = torch.stack([one(h) for h in views])
    grads = torch.autograd.grad((per_view * weights).sum(), views)
    together = stacked(torch.stack(views))
    stacked_grads = torch.autograd.grad((together * weights).sum(), views)
    torch.testing.assert_close(together, per_view, atol=1e-12, rtol=1e-10)
    for a, b in zip(stacked_grads, grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    for name, buffer in one.state_dict().items():  # lerped view by view, in order
        torch.testing.assert_close(stacked.state_dict()[name], buffer, atol=1e-14, rtol=0)
    one.eval(), stacked.eval()
    h = torch.stack(views).detach()
    torch.testing.assert_close(stacked(h), torch.stack([one(v) for v in h]), atol=1e-12, rtol=1e-10)


def test_stack_shapes_are_checked():
    layer = BatchWhitening(4)
    for shape in ((0, 10, 4), (2, 10, 5), (2, 2, 10, 4), (4,)):
        with pytest.raises(ValueError, match=r"\(B, 4\) projections or a \(V, B, 4\) stack"):
            layer(torch.randn(shape))
    with pytest.raises(ValueError, match="batch size 3 <= dim 4"):
        layer(torch.randn(2, 3, 4))


@pytest.mark.parametrize("kind, solver", [("zca", "eigh"), ("zca", "newton_schulz"), ("cholesky", "auto")])
def test_a_non_finite_batch_gives_nan_and_leaves_the_running_statistics(kind, solver):
    layer = BatchWhitening(4, kind=kind, solver=solver)
    layer(anisotropic(n=64, d=4))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    bad = anisotropic(n=64, d=4, seed=1)
    bad[5, 1] = float("nan")
    out = layer(torch.stack([anisotropic(n=64, d=4, seed=2), bad]))
    assert torch.isnan(out[1]).all() and torch.isfinite(out[0]).all()  # no error: NaN out, view by view
    for key, value in layer.state_dict().items():  # all or nothing: the good view did not move them either
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_shrinkage_allows_batches_no_larger_than_the_dimension_and_momentum_is_checked():
    out = BatchWhitening(8, shrinkage=0.5)(torch.randn(6, 8))
    assert out.shape == (6, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="batch size 1 <= dim 8"):
        BatchWhitening(8, shrinkage=0.5)(torch.randn(1, 8))
    for momentum in (-1, 5, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="momentum"):
            BatchWhitening(8, momentum=momentum)


def test_integer_projections_are_refused_not_truncated():
    white = BatchWhitening(4)
    with pytest.raises(ValueError, match=r"expected floating-point projections, got torch.int64 .*pass h.float\(\)"):
        white(torch.randint(-5, 5, (32, 4)))


WB, WD = 12, 4


def _rank_batches(rank):
    g = torch.Generator().manual_seed(100 + rank)
    return [torch.randn(2, WB, WD, generator=g, dtype=torch.float64) * (1 + rank) for _ in range(2)]


def _whitening_worker(out_dir):
    from accelerate import Accelerator

    from tests.launch import save_rank_result

    acc = Accelerator(cpu=True)
    white = BatchWhitening(WD).double().train()
    outs = [white(h) for h in _rank_batches(acc.process_index)]
    save_rank_result({"outs": outs, "mean": white.running_mean, "cov": white.running_cov}, out_dir)


@pytest.mark.slow
def test_two_processes_whiten_their_own_batch_and_keep_the_same_running_statistics(tmp_path):
    # per-GPU batch statistics for the output; the running statistics (selection space, checkpoint of rank 0)
    # updated with the processes' average, so every rank holds the same
    from tests.launch import load_rank_results, spawn_launcher

    spawn_launcher(_whitening_worker, args=(str(tmp_path),), num_processes=2)
    ranks = load_rank_results(tmp_path)
    solo = [BatchWhitening(WD).double().train() for _ in range(2)]
    expected_mean, expected_cov = torch.zeros(WD, dtype=torch.float64), torch.eye(WD, dtype=torch.float64)
    for step in range(2):
        for r in range(2):  # each rank's output: its own batch whitened by its own statistics
            torch.testing.assert_close(ranks[r]["outs"][step], solo[r](_rank_batches(r)[step]))
        for view in range(2):
            hs = [_rank_batches(r)[step][view] for r in range(2)]
            mean = sum(h.mean(0) for h in hs) / 2
            cov = sum(torch.cov(h.T) for h in hs) / 2
            expected_mean, expected_cov = expected_mean.lerp(mean, 0.1), expected_cov.lerp(cov, 0.1)
    for r in range(2):
        torch.testing.assert_close(ranks[r]["mean"], expected_mean)
        torch.testing.assert_close(ranks[r]["cov"], expected_cov)
    assert torch.equal(ranks[0]["cov"], ranks[1]["cov"]) and torch.equal(ranks[0]["mean"], ranks[1]["mean"])


SB, SD = 6, 8  # a process's batch is smaller than D; the global batch (2 x 6 = 12) is larger


def _sync_rank_input(rank, step):
    g = torch.Generator().manual_seed(10 * step + rank)
    return torch.randn(2, SB, SD, generator=g, dtype=torch.float64) * (1 + rank) + rank  # other means per rank


def _sync_weights(step):
    return torch.randn(2, 2 * SB, SD, generator=torch.Generator().manual_seed(50 + step), dtype=torch.float64)


def _sync_whitening_worker(out_dir, kind):
    from accelerate import Accelerator

    from tests.launch import save_rank_result

    acc = Accelerator(cpu=True)
    r = acc.process_index
    white = BatchWhitening(SD, kind=kind, sync=True).double().train()
    outs, grads = [], []
    for step in range(2):
        h = _sync_rank_input(r, step).requires_grad_(True)
        out = white(h)
        (out * _sync_weights(step)[:, r * SB:(r + 1) * SB]).sum().backward()  # this rank's share of the loss
        outs.append(out.detach())
        grads.append(h.grad)
    save_rank_result({"outs": outs, "grads": grads, "mean": white.running_mean, "cov": white.running_cov}, out_dir)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zca", "cholesky"])
def test_synced_whitening_of_two_processes_equals_one_process_whitening_the_whole_batch(tmp_path, kind):
    # outputs, running statistics and the gradient of the sum of the ranks' losses w.r.t. each rank's rows equal
    # one process whitening the concatenated batch, although each process's own batch (6) is smaller than D (8)
    from tests.launch import load_rank_results, spawn_launcher

    spawn_launcher(_sync_whitening_worker, args=(str(tmp_path), kind), num_processes=2)
    ranks = load_rank_results(tmp_path)
    solo = BatchWhitening(SD, kind=kind).double().train()
    for step in range(2):
        h = torch.cat([_sync_rank_input(r, step) for r in range(2)], 1).requires_grad_(True)
        out = solo(h)
        (out * _sync_weights(step)).sum().backward()
        for r in range(2):
            rows = slice(r * SB, (r + 1) * SB)
            torch.testing.assert_close(ranks[r]["outs"][step], out.detach()[:, rows])
            torch.testing.assert_close(ranks[r]["grads"][step], h.grad[:, rows])
    for r in range(2):
        torch.testing.assert_close(ranks[r]["mean"], solo.running_mean)
        torch.testing.assert_close(ranks[r]["cov"], solo.running_cov)


def test_sync_is_plain_whitening_without_a_process_group_and_is_checked():
    h = torch.randn(2, 32, 4, generator=torch.Generator().manual_seed(0))
    synced, plain = BatchWhitening(4, sync=True), BatchWhitening(4)
    assert torch.equal(synced(h), plain(h)) and torch.equal(synced.running_cov, plain.running_cov)
    assert "sync=True" in repr(synced)
    with pytest.raises(ValueError, match="sync must be True or False, got 'yes'"):
        BatchWhitening(4, sync="yes")


@pytest.mark.parametrize("kind, solver", [("zca", "eigh"), ("zca", "newton_schulz"), ("cholesky", "eigh")])
def test_matrix_equals_the_shrunk_ridged_covariance_formula(kind, solver):
    # Σ_ε = (1 − s)Σ + (s + eps)(tr Σ / D) I, then W = Σ_ε^{-1/2} (ZCA, by eigh in float64) or L⁻ᵀ (Cholesky)
    h = anisotropic(n=256, d=6).double()
    for shrinkage, eps in ((0.0, 0.05), (0.3, 1e-4), (0.5, 0.2)):
        layer = BatchWhitening(6, kind=kind, eps=eps, shrinkage=shrinkage, solver=solver)
        centred = h - h.mean(0)
        cov = centred.T @ centred / 255
        ridged = (1 - shrinkage) * cov + (shrinkage + eps) * (cov.trace() / 6) * torch.eye(6, dtype=torch.float64)
        if kind == "zca":
            lam, vec = torch.linalg.eigh(ridged)
            w = vec @ torch.diag(lam.rsqrt()) @ vec.T
        else:
            w = torch.linalg.inv(torch.linalg.cholesky(ridged)).T
        torch.testing.assert_close(layer(h), centred @ w, rtol=1e-7, atol=1e-9)


def test_a_batch_equal_to_the_dimension_is_refused_without_shrinkage():
    with pytest.raises(ValueError, match="more samples than dimensions"):
        BatchWhitening(8)(torch.randn(8, 8))
    assert BatchWhitening(8)(torch.randn(9, 8)).shape == (9, 8)


@pytest.mark.parametrize("kind, solver", [("zca", "eigh"), ("zca", "newton_schulz"), ("cholesky", "eigh")])
def test_a_covariance_that_overflows_gives_nan_even_with_finite_projections(kind, solver):
    # float32 rows ~1e25: the centred rows are finite but their covariance (~1e50) is inf; that view's output is
    # NaN (not a finite result of a substituted matrix), the other view of the stack is whitened as usual
    layer = BatchWhitening(4, kind=kind, solver=solver)
    huge = anisotropic(n=64, d=4, seed=1) * 1e25
    out = layer(torch.stack([anisotropic(n=64, d=4, seed=2), huge]))
    assert torch.isfinite(huge).all() and torch.isfinite(out[0]).all()
    non_finite = ~torch.isfinite(out[1])
    assert non_finite.all() if kind == "zca" else non_finite.any()  # Cholesky's L⁻ᵀ of an inf matrix: some NaN


def test_newton_schulz_runs_exactly_the_given_number_of_steps():
    # in the eigenbasis of a diagonal Σ the iteration is the scalar z ← z (3 − λ z²) / 2 from z = 1, λ = Σ_ii / tr Σ,
    # and the result is z / √tr Σ: a closed form for any step count, converged or not
    from spectral_ssl.whitening import newton_schulz_inverse_sqrt
    diag = torch.tensor([4.0, 1.0, 0.25, 0.01], dtype=torch.float64)
    for steps in (1, 2, 3, 7):
        z = torch.ones(4, dtype=torch.float64)
        lam = diag / diag.sum()
        for _ in range(steps):
            z = z * (3 - lam * z * z) / 2
        torch.testing.assert_close(newton_schulz_inverse_sqrt(torch.diag(diag), steps),
                                   torch.diag(z / diag.sum().sqrt()), rtol=1e-12, atol=1e-14)
