"""Top-K by magnitude for SWAT: the exact k-th smallest entry and the kept set, in storage order.

The lowest layer of :mod:`pwlab.swat`: :mod:`~pwlab.swat.functions` (the masks) and
:mod:`~pwlab.swat.kernels` (the CSR index sets, and the crossover calibration that times a
refresh) both select with these functions, so they live here and import nothing of the package.

How the k-th value is found is a speed choice with one exact answer, the ``search`` option of
:func:`magnitude_threshold` and :func:`magnitude_topk` (:data:`SEARCHES`):

* ``"kthvalue"``: ``torch.kthvalue`` over every entry (the reference);
* ``"bracket"``: bracket the answer with two quantiles of a seeded sample, select inside the
  bracket only, fall back to ``kthvalue`` when the answer lies outside (see :func:`_select`);
* ``"auto"`` (default): ``"kthvalue"`` up to ``_DIRECT`` entries, where it is as fast, else
  ``"bracket"``.

All three return the same threshold and kept set (ties included).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from pwlab import _checks

SEARCHES = ("auto", "bracket", "kthvalue")


def in_out_order(weight: Tensor) -> bool:
    """Is the 2-D ``weight (out, in)`` stored in (in, out) memory order (its transpose contiguous)?"""
    return weight.dim() == 2 and not weight.is_contiguous() and weight.t().is_contiguous()


def storage_flat(t: Tensor) -> Tensor:
    """All entries of a 2-D ``t`` as a 1-D view in memory order (row-major, or (in, out) order)."""
    return t.t().reshape(-1) if in_out_order(t) else t.reshape(-1)


def magnitude_threshold(score: Tensor, sparsity: float, *, search: str = "auto") -> Tensor:
    """``t`` such that keeping ``score > t`` drops the ``round(sparsity·n)`` smallest entries.

    score: any shape, non-negative (magnitudes or channel L1 norms). Returns a 0-d tensor
    (``-inf`` at sparsity 0: keep everything). search: how the k-th value is found, one of
    :data:`SEARCHES` (same result, different speed; see the module docstring).
    """
    _checks.one_of("search", search, SEARCHES)
    drop = int(round(sparsity * score.numel()))
    if drop == 0:
        return score.new_tensor(-math.inf)
    flat = storage_flat(score.detach()) if score.dim() == 2 else score.detach().reshape(-1)
    return _kth_smallest(flat, drop, search)                # order-free: memory order, no copy


_SAMPLE = 1 << 15       # largest bracketing sample
_DIRECT = 1 << 14       # up to this many entries kthvalue itself is as fast


def magnitude_topk(score: Tensor, sparsity: float, *, search: str = "auto") -> tuple[Tensor, Tensor]:
    """``(t, kept)``: the threshold of :func:`magnitude_threshold` and the sorted indices, in
    ``score``'s storage order (see :func:`storage_flat`), of the kept entries
    ``score > t`` of a 2-D ``score`` (what the CSR index sets are built from). Found together:
    at sparsity ≥ 0.5 on large tensors the bracketing search already holds every entry above its
    bracket, so ``kept`` costs no second pass over ``score``. search: one of :data:`SEARCHES`."""
    _checks.one_of("search", search, SEARCHES)
    flat = storage_flat(score.detach())
    drop = int(round(sparsity * flat.numel()))
    if drop == 0:
        return score.new_tensor(-math.inf), torch.arange(flat.numel(), device=flat.device)
    t, tail = _select(flat, drop, want_tail=True, search=search)
    if tail is None:
        return t, (flat > t).nonzero().squeeze(1)
    idx, vals = tail
    return t, idx[vals > t]


def _kth_smallest(flat: Tensor, k: int, search: str = "auto") -> Tensor:
    """The exact k-th smallest entry (1-based) of ``flat``, as ``flat.kthvalue(k).values``."""
    return _select(flat, k, search=search)[0]


def _select(flat: Tensor, k: int, want_tail: bool = False,
            search: str = "auto") -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """``(k-th smallest entry of flat, tail)``; ``search`` as in :data:`SEARCHES`.

    ``kthvalue`` over a 2048×2048 weight costs more than the layer's dense step, and SWAT needs
    it at every refresh. For large tensors (``"auto"``: over ``_DIRECT`` entries; ``"bracket"``:
    any size) we bracket the answer with two quantiles of a fixed sample (±4 standard errors), count what lies below the bracket (``count_nonzero``: a bool
    ``sum`` is ~8x slower) and select inside the bracket only (a few % of the entries). With
    ``want_tail`` and k ≥ n/2 we instead gather every entry from the bracket's bottom up (one
    ``nonzero``, ~11 % of the entries at 90 % sparsity) and return it as ``tail`` = (indices,
    values); else ``tail`` is None. If the answer falls outside the bracket we fall back to the
    full select, so the result is always exact. The sample uses its own seeded generator, so the
    global random stream is untouched.
    """
    n = flat.numel()
    if search == "kthvalue" or (search == "auto" and n <= _DIRECT):
        return flat.kthvalue(k).values, None
    size = max(1, min(_SAMPLE, n >> 5))                # 1/32 of the entries, at most 2^15
    gen = torch.Generator(device=flat.device).manual_seed(n)
    sample = flat[torch.randint(n, (size,), generator=gen, device=flat.device)]
    q = k / n
    margin = 4 * math.sqrt(q * (1 - q) / size) + 2 / size            # outside: p ≈ 3e-5 per side
    lo_k = max(1, int(math.floor((q - margin) * size)))
    hi_k = min(size, int(math.ceil((q + margin) * size)))
    lo, hi = sample.kthvalue(lo_k).values, sample.kthvalue(hi_k).values
    tail = None
    if want_tail and q >= 0.5:
        idx = (flat >= lo).nonzero().squeeze(1)
        vals = flat.index_select(0, idx)
        band, below, tail = vals[vals <= hi], n - vals.numel(), (idx, vals)
    else:                                              # 3 passes over flat, and one compaction
        above = flat >= lo
        below = n - int(torch.count_nonzero(above))
        band = flat[above.logical_and_(flat <= hi)]
    r = k - below
    if 1 <= r <= band.numel():
        return band.kthvalue(r).values, tail
    return flat.kthvalue(k).values, None
