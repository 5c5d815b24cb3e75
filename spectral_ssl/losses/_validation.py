"""Argument and input checks shared by the losses (one place, one wording)."""

from __future__ import annotations

import numbers

import torch
from torch import nn


def is_real(value: object) -> bool:
    """A real number (Python, NumPy or any ``numbers.Real``), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value: object) -> bool:
    """An integer (Python, NumPy or any ``numbers.Integral``), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive(name: str, value: object, hint: str = "") -> float:
    """``value`` as a float if it is a positive number, else a ValueError naming the fix."""
    if not is_real(value) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}{'; ' + hint if hint else ''}.")
    return float(value)


def check_unit_interval(name: str, value: object, hint: str = "") -> float:
    """``value`` as a float if it lies in [0, 1], else a ValueError naming the fix."""
    if not is_real(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}{'; ' + hint if hint else ''}.")
    return float(value)


def check_dim(name: str, value: object, hint: str = "the projection dimension") -> int:
    """``value`` if it is a positive integer, else a ValueError naming the fix."""
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer ({hint}), got {value!r}.")
    return int(value)


def check_gather(value: object) -> bool:
    """``gather_distributed`` as a bool, refused where this torch build has no ``torch.distributed``."""
    if not isinstance(value, bool):
        raise ValueError(f"gather_distributed must be True or False, got {value!r}.")
    if value and not torch.distributed.is_available():
        raise ValueError("gather_distributed=True needs torch.distributed, which this torch build lacks; "
                         "pass gather_distributed=False.")
    return value


def check_pair(z1: torch.Tensor, z2: torch.Tensor, dim: int | None = None) -> None:
    """Both floating-point (B, D) tensors with the same shape, B >= 1 (and D == dim when given)."""
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            kind = f"a {z.dtype} tensor" if isinstance(z, torch.Tensor) else f"a {type(z).__name__}"
            raise ValueError(f"{name} must be a floating-point torch.Tensor of projections, got {kind}.")
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be (B, D) with the same shape, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}.")
    if z1.shape[0] < 1:
        raise ValueError("the batch is empty; a loss needs at least one pair.")
    if dim is not None and z1.shape[1] != dim:
        raise ValueError(f"projections have {z1.shape[1]} dims but the loss was built with dim={dim}; pass "
                         f"dim={z1.shape[1]} (the model's proj_dim).")


def check_targets(targets: tuple[torch.Tensor, torch.Tensor] | None, z1: torch.Tensor) -> None:
    if targets is not None and (len(targets) != 2 or any(t.shape != z1.shape for t in targets)):
        raise ValueError("targets must be a pair (t1, t2) of (B, D) target-network projections shaped like z1.")


def fp32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All in one dtype of at least float32 (also under autocast): similarities and softmaxes never run in half
    precision, and a float32 view meets a float64 one in float64."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)


def for_module(module: nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` in ``module``'s parameter dtype: half-precision or float64 projections meet a float32 predictor
    (under autocast its layers then compute in the autocast dtype as usual)."""
    dtype = next(module.parameters()).dtype
    return tuple(t.to(dtype) for t in tensors)


def full_precision(x: torch.Tensor) -> torch.autocast:
    """Context that switches autocast off on ``x``'s device: similarity matmuls stay in float32 (bf16 logits lose
    ~3 significant digits, which matters at τ = 0.1)."""
    return torch.autocast(x.device.type, enabled=False)
