"""The fused Triton greedy kernel against greedy_select's torch loop, run by triton's CPU interpreter.

Triton picks its interpreter when it is imported (torch imports it already), so the kernel runs in one subprocess
started with TRITON_INTERPRET=1: this module writes the pools to a file, the subprocess writes the kernel's picks
back, and the tests compare them with the torch loop in this process.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from spectral_ssl.batching import greedy_select, greedy_triton, log_det_objective

KERNEL_RUNNER = r"""
import sys, torch
from spectral_ssl.batching import greedy_triton as module
out = {}
for name, case in torch.load(sys.argv[1]).items():
    kwargs = dict(case["kwargs"])
    if "seed" in kwargs:
        kwargs["generator"] = torch.Generator().manual_seed(kwargs.pop("seed"))
    module.SPIN_LIMIT = kwargs.pop("spin_limit", 1 << 22)
    try:
        out[name] = module.greedy_triton(case["x"], case["k"], **kwargs)
    except RuntimeError as e:
        out[name] = str(e)
torch.save(out, sys.argv[2])
"""


def pool(m, d, seed=0, dtype=torch.float64):
    """Unit vectors scaled by distinct norms, so every greedy maximum is unique (unit vectors tie on pick 1)."""
    g = torch.Generator().manual_seed(seed)
    norms = torch.linspace(0.5, 1.5, m, dtype=torch.float64)[torch.randperm(m, generator=g)]
    return (F.normalize(torch.randn(m, d, generator=g, dtype=torch.float64), dim=1) * norms[:, None]).to(dtype)


GROUPS = torch.arange(48) % 3
CASES = {
    # 72 candidates in blocks of 32 and 20 dims in chunks of 8: partial blocks and chunks on both axes
    "exact": dict(x=pool(72, 20), k=24, kwargs=dict(eps=0.05, block_m=32, block_d=8)),
    # the kernel draws the keys in one torch.rand call: on the CPU the stream the torch loop draws pick by pick
    "greedy_m_groups": dict(x=pool(48, 16, seed=1), k=12,
                            kwargs=dict(m=8, groups=GROUPS, quota=4, seed=3, block_m=32)),
    "float32": dict(x=pool(128, 16, seed=2, dtype=torch.float32), k=32, kwargs=dict(block_m=128)),
    # each program walks the sorted keys 8 at a time (five blocks): the threshold found across chunks
    "greedy_m_chunks": dict(x=pool(80, 10, seed=5), k=20, kwargs=dict(m=6, seed=7, block_m=16, block_s=8)),
    # small quotas fill groups early: the m-th remaining candidate lies far past the first m + t sorted keys
    "greedy_m_full_groups": dict(x=pool(96, 12, seed=4), k=16, kwargs=dict(m=5, groups=torch.arange(96) % 8, quota=2,
                                                                          seed=9, block_m=16, block_s=4)),
    # one launch for every pick (one program here: the interpreter runs programs one after the other, so a grid
    # barrier between two of them can never complete)
    "persistent_exact": dict(x=pool(72, 20), k=24, kwargs=dict(eps=0.05, block_m=128, block_d=8, persistent=True)),
    "persistent_m_groups": dict(x=pool(48, 16, seed=1), k=12, kwargs=dict(m=8, groups=GROUPS, quota=4, seed=3,
                                                                           block_m=64, persistent=True)),
    # two programs that cannot both run: the barrier's watchdog must end the launch with an error, not hang
    "persistent_stuck": dict(x=pool(40, 6), k=4, kwargs=dict(block_m=32, persistent=True, spin_limit=20)),
}


@pytest.fixture(scope="module")
def kernel_picks(tmp_path_factory):
    pytest.importorskip("triton")
    folder = tmp_path_factory.mktemp("greedy_triton")
    torch.save(CASES, folder / "cases.pt")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", KERNEL_RUNNER, str(folder / "cases.pt"), str(folder / "picks.pt")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(folder / "picks.pt")


def torch_picks(name, **overrides):
    case = CASES[name]
    kwargs = {key: value for key, value in case["kwargs"].items()
              if key not in ("block_m", "block_d", "block_s", "persistent", "spin_limit")}
    if "seed" in kwargs:
        kwargs["generator"] = torch.Generator().manual_seed(kwargs.pop("seed"))
    return greedy_select(case["x"], case["k"], backend="torch", **{**kwargs, **overrides})


@pytest.mark.parametrize("name", ["exact", "greedy_m_groups", "greedy_m_chunks", "greedy_m_full_groups",
                                  "persistent_exact", "persistent_m_groups"])
def test_kernel_picks_equal_the_torch_loop_in_float64(kernel_picks, name):
    assert torch.equal(kernel_picks[name], torch_picks(name))


def test_persistent_kernel_that_cannot_meet_at_its_barrier_raises_instead_of_hanging(kernel_picks):
    assert isinstance(kernel_picks["persistent_stuck"], str) and "timed out" in kernel_picks["persistent_stuck"]


def test_kernel_keeps_the_group_quotas(kernel_picks):
    assert torch.bincount(GROUPS[kernel_picks["greedy_m_groups"]], minlength=3).tolist() == [4, 4, 4]


def test_float32_kernel_reaches_the_float64_objective(kernel_picks):
    x, ours = CASES["float32"]["x"].double(), kernel_picks["float32"]
    exact = torch_picks("float32", dtype=torch.float64)
    assert ours.unique().numel() == 32
    assert log_det_objective(x[ours]).item() == pytest.approx(log_det_objective(x[exact]).item(), rel=1e-4)


def test_backend_is_chosen_or_refused_plainly(monkeypatch):
    x = pool(40, 6)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not greedy_triton.usable(x.device)  # CPU tensors without the interpreter: the torch loop
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        greedy_select(x, 4, backend="triton")
    with pytest.raises(ValueError, match="block=1 and window=None"):
        greedy_select(x, 4, block=2, backend="triton")
    with pytest.raises(ValueError, match="backend must be"):
        greedy_select(x, 4, backend="cuda")
    monkeypatch.setattr(greedy_triton, "_triton_imports", lambda: False)  # as without triton installed
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not greedy_triton.usable(x.device)
    assert torch.equal(greedy_select(x, 4), greedy_select(x, 4, backend="torch"))
    with pytest.raises(ValueError, match="power of two"):
        greedy_triton.greedy_triton(x, 4, block_m=24)


def test_greedy_select_hands_the_fused_case_to_the_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(greedy_triton, "usable", lambda device: True)
    monkeypatch.setattr(greedy_triton, "greedy_triton", lambda x, k, **kw: calls.append((x.dtype, k, kw)) or "kernel")
    groups = torch.arange(40) % 2
    assert greedy_select(pool(40, 6).float(), 8, m=4, groups=groups, quota=4, backend="triton") == "kernel"
    assert calls[0][:2] == (torch.float32, 8) and calls[0][2]["m"] == 4 and calls[0][2]["quota"] == 4
    assert greedy_select(pool(40, 6), 8) != "kernel"  # auto: CPU tensors stay on the torch loop
    assert greedy_select(pool(40, 6), 8, block=2, backend="auto") != "kernel"


POINTERS = dict(x_ptr="fp", y_ptr="fp", quad_ptr="fp", best_val_ptr="fp", best_idx_ptr="i64", best_row_ptr="fp",
                picks_ptr="i64", keys_ptr="fp", sorted_ptr="fp", order_ptr="i64", gone_ptr="i8", groups_ptr="i64",
                taken_ptr="i32", bar_ptr="i32", err_ptr="i32")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", [dict(m=None), dict(m=64, groups=torch.arange(2048) % 4, quota=128)])
def test_every_kernel_variant_compiles_for_hopper_without_a_gpu(dtype, case):
    # Triton's CUDA backend and ptxas ship in its wheel: compiling to an sm_90 cubin needs no GPU, and catches what
    # the interpreter lets through (loop-carried types, scalar conditions, register spills).
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget

    nvidia = pytest.importorskip("triton.backends.nvidia.compiler")
    try:
        ptxas = nvidia.get_ptxas(90).path
    except Exception as e:  # noqa: BLE001 - another triton version, or a build without its CUDA tools
        pytest.skip(f"no ptxas in this triton: {e}")
    if not ptxas or not os.path.isfile(ptxas):
        pytest.skip(f"no ptxas in this triton ({ptxas!r})")
    x = torch.zeros(2048, 128, dtype=dtype)
    plan = greedy_triton._Plan(x, 512, case["m"], 1e-2, 4 if "groups" in case else 0, case.get("quota", 0), None,
                               None, None)
    step, persistent = greedy_triton._kernel()
    fp = "fp32" if dtype == torch.float32 else "fp64"
    # the launch kernel at t = 0, 0 < t < k, t = k, and the persistent kernel (all of them, with grid barriers)
    for kernel, flags in ((step, dict(DO_UPDATE=False, DO_SCORE=True)), (step, dict(DO_UPDATE=True, DO_SCORE=True)),
                          (step, dict(DO_UPDATE=True, DO_SCORE=False)), (persistent, {})):
        constexprs = {**plan.constexprs(), **flags}
        signature = {name: "constexpr" if name in constexprs else
                     "*" + POINTERS[name].replace("fp", fp) if name in POINTERS else "i32" for name in kernel.arg_names}
        compiled = triton.compile(triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", 90, 32))
        assert compiled.asm["cubin"] and ".local" not in compiled.asm["ptx"]  # built, nothing spilled to local
