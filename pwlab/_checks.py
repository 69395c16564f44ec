"""Argument checks shared by the core: each raises ``ValueError`` (a bad value) or ``TypeError``
(a wrong type or dtype) naming the parameter and what is allowed.

The input checks look only at a tensor's attributes (type, dtype, device, shape), so they cost
no device synchronisation and can sit at the entry of every forward."""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch


# A size above 2**31 - 1 is a typo or a probe (and overflows many kernels' int32 indexing); a
# tensor above MAX_ELEMENTS (400 GB in float32) is refused before it is allocated, since torch
# would fail with an allocator error or, where memory is overcommitted, take the machine down.
MAX_SIZE = 2**31 - 1
MAX_ELEMENTS = 10**11


def positive_int(name: str, value, *, minimum: int = 1, maximum: int = MAX_SIZE) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value!r}")
    return value


def num_elements(what: str, **sizes: int) -> int:
    """The product of ``sizes`` (already checked ints): the element count of a tensor about to be
    allocated; above :data:`MAX_ELEMENTS` it is refused, naming every size."""
    count = math.prod(sizes.values())
    if count > MAX_ELEMENTS:
        named = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise ValueError(f"{named} would allocate {count:.3g} elements for {what}, "
                         f"more than the limit {MAX_ELEMENTS:.0e}; choose smaller sizes")
    return count


def index(name: str, value, size: int) -> int:
    """An int in ``[0, size)`` (a Python or NumPy int; bool refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int in [0, {size}), got {value!r}")
    if not 0 <= value < size:
        raise ValueError(f"{name} must be an int in [0, {size}), got {value!r}")
    return int(value)


def device_name(name: str, value) -> str:
    """A device torch can parse (``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...); whether it is present is checked where it is used."""
    try:
        torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} must be a torch device such as 'cpu' or 'cuda', got {value!r}") from None
    return value


def generator(name: str, g) -> None:
    """``g`` is None or a ``torch.Generator``."""
    if g is not None and not isinstance(g, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(g).__name__}")


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
    # (.item() and math.isfinite: half the cost of a torch.isfinite on the 0-d sum, per call)
    if x.is_floating_point() and x.numel() and not math.isfinite(x.detach().sum().item()) \
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


def float_input(name: str, x, device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` is a floating-point tensor (on ``device`` and of ``dtype`` when given): the input of a layer."""
    tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype (e.g. torch.float32), got {x.dtype}; "
                        f"convert it with {name}.float()")
    if device is not None:
        same_device(name, x, device)
    elif x.device.type == "meta":        # no layer to compare with: a meta tensor has no values to compute on
        raise ValueError(f"{name} is on the meta device (no values); pass a tensor with data")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the layer's parameters are {dtype}; "
                        f"convert one of them, e.g. {name}.to({dtype})")
    return x


def bool_mask(name: str, mask, shape, device: torch.device) -> torch.Tensor:
    """``mask`` is a bool (or 0/1 integer) tensor of ``shape`` on ``device``."""
    tensor(name, mask)
    if mask.is_floating_point() or mask.is_complex():
        raise TypeError(f"{name} must be a bool tensor (True for real tokens), got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    same_device(name, mask, device)
    return mask


def integer_ids(name: str, ids) -> torch.Tensor:
    """``ids`` as a tensor of an integer dtype; float, bool and complex ids are refused rather than
    truncated (id 2.7 is no id)."""
    try:
        ids = torch.as_tensor(ids)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor of integer ids, got {type(ids).__name__}: {ids!r:.80}") from None
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"{name} must hold integer ids (an integer dtype such as torch.long), got dtype {ids.dtype}")
    if ids.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (no values); pass ids on the layer's device")
    return ids
