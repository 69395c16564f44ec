"""Argument checks shared by the core: each raises ``ValueError`` (a bad value) or ``TypeError``
(a wrong type or dtype) naming the parameter and what is allowed.

The input checks look only at a tensor's attributes (type, dtype, device, shape), so they cost
no device synchronisation and can sit at the entry of every forward."""
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


def tensor(name: str, x) -> torch.Tensor:
    """``x`` is a ``torch.Tensor`` (a list or a NumPy array is refused, not converted: the caller
    chooses the dtype and device)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                        f"convert it with torch.as_tensor(...) on the layer's device")
    return x


def same_device(name: str, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` is on ``device``, the device of the layer it is given to."""
    if x.device != device:
        raise ValueError(f"{name} is on device {x.device} but the layer is on device {device}; "
                         f"move one of them, e.g. {name}.to({str(device)!r})")
    return x


def float_input(name: str, x, device: torch.device | None = None) -> torch.Tensor:
    """``x`` is a floating-point tensor (on ``device`` when given): the input of a layer."""
    tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype (e.g. torch.float32), got {x.dtype}; "
                        f"convert it with {name}.float()")
    if device is not None:
        same_device(name, x, device)
    return x


def integer_ids(name: str, ids) -> torch.Tensor:
    """``ids`` as a tensor of an integer dtype; float, bool and complex ids are refused rather than
    truncated (id 2.7 is no id)."""
    try:
        ids = torch.as_tensor(ids)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor of integer ids, got {type(ids).__name__}: {ids!r:.80}") from None
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"{name} must hold integer ids (an integer dtype such as torch.long), got dtype {ids.dtype}")
    return ids
