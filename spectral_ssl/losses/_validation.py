"""Argument and input checks shared by the losses (one place, one wording)."""

from __future__ import annotations

import torch


def check_positive(name: str, value: object, hint: str = "") -> float:
    """``value`` as a float if it is a positive number, else a ValueError naming the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}{'; ' + hint if hint else ''}.")
    return float(value)


def check_unit_interval(name: str, value: object, hint: str = "") -> float:
    """``value`` as a float if it lies in [0, 1], else a ValueError naming the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}{'; ' + hint if hint else ''}.")
    return float(value)


def check_dim(name: str, value: object, hint: str = "the projection dimension") -> int:
    """``value`` if it is a positive integer, else a ValueError naming the fix."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer ({hint}), got {value!r}.")
    return value


def check_gather(value: object) -> bool:
    """``gather_distributed`` as a bool, refused where this torch build has no ``torch.distributed``."""
    if not isinstance(value, bool):
        raise ValueError(f"gather_distributed must be True or False, got {value!r}.")
    if value and not torch.distributed.is_available():
        raise ValueError("gather_distributed=True needs torch.distributed, which this torch build lacks; "
                         "pass gather_distributed=False.")
    return value


def check_pair(z1: torch.Tensor, z2: torch.Tensor, dim: int | None = None) -> None:
    """Both (B, D) with the same shape, B >= 1 (and D == dim when given)."""
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
    """At least float32 (also under autocast): similarities and softmaxes never run in half precision."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors)


def full_precision(x: torch.Tensor) -> torch.autocast:
    """Context that switches autocast off on ``x``'s device: similarity matmuls stay in float32 (bf16 logits lose
    ~3 significant digits, which matters at τ = 0.1)."""
    return torch.autocast(x.device.type, enabled=False)
