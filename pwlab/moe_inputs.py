"""The MoE layer's input plumbing: its call's arguments checked, and tokens ``(..., D)`` made flat.

:func:`checked_tokens` is the first step of :meth:`pwlab.moe.MoE.forward`: ``x``, ``mask``,
``generator`` and the per-token ids checked (attribute reads only: no device synchronisation),
and the real tokens taken out of the padded ``(..., D)`` batch as ``x (N, D)`` with their ids
``(N,)``. :func:`expert_indices` checks the experts given to :meth:`pwlab.moe.MoE.disabled`.

Separate from :mod:`pwlab.moe` so that the layer's file reads as the forward path (route →
capacity → backend → stats); every error here names the argument and what it allows.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable

import torch
from torch import Tensor

from pwlab import _checks


def checked_tokens(x: Tensor, mask: Tensor | None, generator, *, d_model: int, device: torch.device,
                   dtype: torch.dtype, **ids):
    """The arguments checked, and the real tokens flat: ``(x (N, D), per-token ids (N,) by name,
    real (numel,) bool or None)``, ``real`` the flattened mask."""
    _checks.float_input("x", x, device, dtype)      # attributes only: no sync
    _checks.last_dim("x", x, d_model)
    _checks.generator("generator", generator)
    lead = x.shape[:-1]
    flat = x if x.dim() == 2 else x.reshape(-1, d_model)
    per_token = {}
    for name, t in ids.items():
        if t is not None:
            t = _checks.integer_ids(name, t).to(x.device)
            if t.shape != lead:
                raise ValueError(f"{name} must have shape {tuple(lead)} (one id per token), got {tuple(t.shape)}")
            per_token[name] = t.reshape(-1)
    if mask is None:
        return flat, per_token, None
    _checks.bool_mask("mask", mask, lead, x.device)
    real = mask.reshape(-1).bool()
    return flat[real], {k: v[real] for k, v in per_token.items()}, real


def expert_indices(experts, num_experts: int, device: torch.device) -> Tensor:
    """``experts`` as a long tensor, refusing what is not a collection of in-range integer indices
    (a float index would be truncated, a string is no index)."""
    allowed = f"an iterable of expert indices, ints in [0, num_experts={num_experts})"
    if isinstance(experts, Tensor):
        dtype = experts.dtype
        if experts.dim() > 1 or dtype == torch.bool or dtype.is_floating_point or dtype.is_complex:
            raise TypeError(f"experts must be {allowed}; got a {dtype} tensor of shape {tuple(experts.shape)}")
        values = experts.reshape(-1).tolist()
    elif isinstance(experts, (str, bytes)) or not isinstance(experts, Iterable):
        raise TypeError(f"experts must be {allowed} (e.g. [{num_experts - 1}]); got {experts!r}")
    else:
        values = list(experts)
        bad = [e for e in values if isinstance(e, bool) or not isinstance(e, numbers.Integral)]
        if bad:
            raise TypeError(f"experts must be {allowed}; got {values!r} (not an index: {bad[0]!r})")
    out = [int(e) for e in values if not 0 <= int(e) < num_experts]
    if out:
        raise ValueError(f"experts must be {allowed}; got {values!r} (out of range: {out[0]})")
    return torch.as_tensor([int(e) for e in values], dtype=torch.long, device=device)
