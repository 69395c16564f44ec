"""Argument checks shared by the core: each raises ``ValueError`` naming the parameter."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def positive_float(name: str, value, *, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        allowed = "a finite number > 0" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def non_negative_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def one_of(name: str, value, allowed: Iterable):
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def finite_tensor(name: str, x: torch.Tensor) -> torch.Tensor:
    # one reduction first: a finite sum proves every element finite (the full check runs only
    # when the sum is not finite, which overflow of large finite values can also cause)
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x.detach().sum())) \
            and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values; the input must be finite")
    return x


def last_dim(name: str, x: torch.Tensor, expected: int) -> torch.Tensor:
    if x.dim() < 1 or x.shape[-1] != expected:
        raise ValueError(f"{name} must have last dimension d_model={expected}, got shape {tuple(x.shape)}")
    return x
