"""The plain expert FFN's forward and hand-written backward, once per row layout.

Index legend: E experts, C slots per expert, A rows (assignments), D d_model, H d_hidden.

The plain :class:`~pwlab.experts.ExpertBank` computes ``out = act(buf·w1 + b1)·w2 + b2`` per
expert. Its rows come in one of two layouts, and each layout has one forward and one backward
here, used by every path that runs the bank by hand — the padded dispatch
(:class:`pwlab.dispatch.PaddedDispatch`) and the one-node top-k layer (:mod:`pwlab.fused`):

- **padded**: ``buf (E, C, D)``, every expert padded to C rows; two batched matmuls.
- **grouped**: ``buf (A, D)``, rows sorted by expert (:class:`RowLayout`), no padding; one
  ``addmm`` per expert forward, grouped weight gradients backward (``torch._grouped_mm`` where
  it runs).

Gathering tokens into rows and combining rows back into tokens is the caller's part (a scatter
for any routing, a gather for the fixed-k rank-major one). The backwards are checked against
``torch.autograd.gradcheck`` in tests/test_fused.py.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from pwlab.experts import ACTIVATIONS


def act_backward_(name: str, grad: Tensor, pre: Tensor) -> Tensor:
    """∂act(pre)/∂pre · grad for the activations of :data:`pwlab.experts.ACTIVATIONS`, written
    into ``grad`` (a temporary the caller owns) and returned.

    In place because the temporary is as large as the hidden activations: writing the result
    into a second array of that size (fresh memory, so page faults and cache misses) made the
    padded expert part's forward + backward 4 % slower at ``pwlab bench moe``'s large size and
    8 % at mid. Bit-identical to the out-of-place ``gelu_backward`` / ``silu_backward`` / mask
    product (tests/test_fused.py)."""
    if name == "gelu":
        return torch.ops.aten.gelu_backward.grad_input(grad, pre, grad_input=grad)
    if name == "silu":
        return torch.ops.aten.silu_backward.grad_input(grad, pre, grad_input=grad)
    return grad.mul_((pre > 0).to(grad.dtype))                                    # relu


# -- padded layout: (E, C, ·) ---------------------------------------------------------------------

def padded_forward(buf: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, activation: str,
                   out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``buf (E, C, D)`` through each expert: ``out (E, C, D)`` (written into ``out`` when given)
    and ``(pre, h)`` (E, C, H) for :func:`padded_backward`."""
    pre = torch.baddbmm(b1.unsqueeze(1), buf, w1)                                 # (E, C, H)
    h = ACTIVATIONS[activation](pre)
    if out is None:
        out = torch.baddbmm(b2.unsqueeze(1), h, w2)
    else:
        torch.baddbmm(b2.unsqueeze(1), h, w2, out=out)
    return out, pre, h


def padded_backward(g_out: Tensor, buf: Tensor, pre: Tensor, h: Tensor, w1: Tensor, w2: Tensor, activation: str,
                    need_input: bool, g_buf: Tensor | None = None):
    """Gradients of :func:`padded_forward` from ``g_out (E, C, D)``: ``(g_buf or None, g_w1, g_b1,
    g_w2, g_b2)``; ``g_buf`` (E, C, D) is written into the given buffer when one is passed."""
    g_w2 = torch.bmm(h.transpose(1, 2), g_out)
    g_b2 = g_out.sum(1)
    g_pre = act_backward_(activation, torch.bmm(g_out, w2.transpose(1, 2)), pre)
    g_w1 = torch.bmm(buf.transpose(1, 2), g_pre)
    g_b1 = g_pre.sum(1)
    if not need_input:
        g_buf = None
    elif g_buf is None:
        g_buf = torch.bmm(g_pre, w1.transpose(1, 2))
    else:
        torch.bmm(g_pre, w1.transpose(1, 2), out=g_buf)
    return g_buf, g_w1, g_b1, g_w2, g_b2


# -- grouped layout: (A, ·) sorted by expert ------------------------------------------------------

class RowLayout(NamedTuple):
    """The unpadded dropless layout: the A assignments sorted by expert into A rows.

    ``row_token (A,)`` the token each row reads; ``row (A,)`` the row of each rank-major
    assignment; ``row_expert (A,)`` the expert of each row (non-decreasing); ``bounds`` the
    cumulative counts per expert (row ranges), as ints and as ``offs (E,)`` int32."""

    row_token: Tensor
    row: Tensor
    row_expert: Tensor
    bounds: tuple[int, ...]
    offs: Tensor


@functools.lru_cache(maxsize=64)
def rank_major_layout(n: int, k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Token and rank of each assignment in the rank-major layout (``a = j·N + n``)."""
    return torch.arange(n, device=device).repeat(k), torch.arange(k, device=device).repeat_interleave(n)


def row_layout(expert_t: Tensor, num_experts: int) -> tuple[Tensor, RowLayout]:
    """``counts (E,)`` and the :class:`RowLayout` of the rank-major choices ``expert_t (k, N)``
    (within an expert, rows keep the position-priority order: first choices, then token order)."""
    k, n = expert_t.shape
    expert = expert_t.reshape(-1)
    order = torch.argsort(expert, stable=True)                                # rank-major order within experts
    counts = torch.bincount(expert, minlength=num_experts)
    row = torch.empty_like(order)
    row[order] = torch.arange(order.numel(), device=order.device)
    token, _ = rank_major_layout(n, k, expert_t.device)
    ends = counts.cumsum(0)
    return counts, RowLayout(row_token=token[order], row=row, row_expert=expert[order],
                             bounds=tuple(ends.tolist()), offs=ends.to(torch.int32))


@functools.lru_cache(maxsize=8)
def _grouped_mm_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch._grouped_mm`` (one call for all experts' row ranges) runs for this device
    and dtype: a private PyTorch op, present on CPU for float32 and on recent GPUs for bfloat16;
    where it is missing or refuses, :func:`grouped_mm` loops over the experts instead."""
    op = getattr(torch, "_grouped_mm", None)
    if op is None:
        return False
    try:
        a = torch.ones(8, 4, device=device, dtype=dtype)
        b = torch.ones(2, 4, 4, device=device, dtype=dtype)
        out = op(a, b, offs=torch.tensor([3, 8], device=device, dtype=torch.int32))
        wgrad = op(a.t(), a, offs=torch.tensor([3, 8], device=device, dtype=torch.int32))
        return bool((out == 4).all()) and wgrad.shape == (2, 4, 4) and bool((wgrad[0] == 3).all())
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def _aligned(t: Tensor, *widths: int) -> bool:
    """Whether rows of these widths start on 16-byte boundaries, as ``torch._grouped_mm`` needs."""
    return all(w * t.element_size() % 16 == 0 for w in widths)


def grouped_mm(a: Tensor, b: Tensor, layout: RowLayout) -> Tensor:
    """Row range e of ``a (A, K)`` times ``b[e] (K, M)``, for every expert: ``(A, M)``."""
    if _aligned(a, a.shape[1], b.shape[1], b.shape[2]) and _grouped_mm_works(a.device, a.dtype):
        return torch._grouped_mm(a, b, offs=layout.offs)
    out, start = a.new_empty(a.shape[0], b.shape[2]), 0
    for e, end in enumerate(layout.bounds):
        if end > start:
            torch.mm(a[start:end], b[e], out=out[start:end])
        start = end
    return out


def grouped_mm_t(a: Tensor, g: Tensor, layout: RowLayout) -> Tensor:
    """Per expert, ``a[rows_e]ᵀ · g[rows_e]`` (a weight gradient): ``a (A, K), g (A, M) -> (E, K, M)``
    (an expert without rows gets zeros)."""
    if _aligned(a, a.shape[1], g.shape[1]) and _grouped_mm_works(a.device, a.dtype):
        return torch._grouped_mm(a.t(), g, offs=layout.offs)
    out, start = a.new_zeros(len(layout.bounds), a.shape[1], g.shape[1]), 0
    for e, end in enumerate(layout.bounds):
        if end > start:
            torch.mm(a[start:end].t(), g[start:end], out=out[e])
        start = end
    return out


def _grouped_addmm(bias: Tensor, a: Tensor, b: Tensor, layout: RowLayout) -> Tensor:
    """``bias[e] + a[rows_e] · b[e]`` for every expert: ``(A, M)``, one ``addmm`` per expert with
    rows (on a CPU as fast per FLOP as one batched matmul from a few hundred rows per expert on,
    and the bias rides in the matmul)."""
    out, start = a.new_empty(a.shape[0], b.shape[2]), 0
    for e, end in enumerate(layout.bounds):
        if end > start:
            torch.addmm(bias[e], a[start:end], b[e], out=out[start:end])
        start = end
    return out


def _segment_sums(g: Tensor, layout: RowLayout) -> Tensor:
    """Per expert, the sum of its rows of ``g (A, M)``: ``(E, M)`` (a bias gradient)."""
    out, start = g.new_zeros(len(layout.bounds), g.shape[1]), 0
    for e, end in enumerate(layout.bounds):
        if end > start:
            torch.sum(g[start:end], 0, out=out[e])
        start = end
    return out


def grouped_forward(buf: Tensor, layout: RowLayout, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor,
                    activation: str) -> tuple[Tensor, Tensor, Tensor]:
    """``buf (A, D)``, rows sorted by expert, through each expert: ``out (A, D)`` and ``(pre, h)``
    (A, H) for :func:`grouped_backward`."""
    pre = _grouped_addmm(b1, buf, w1, layout)                                 # (A, H)
    h = ACTIVATIONS[activation](pre)
    return _grouped_addmm(b2, h, w2, layout), pre, h


def grouped_backward(g_out: Tensor, layout: RowLayout, buf: Tensor, pre: Tensor, h: Tensor, w1: Tensor, w2: Tensor,
                     activation: str, need_input: bool):
    """Gradients of :func:`grouped_forward` from ``g_out (A, D)``: ``(g_buf or None, g_w1, g_b1,
    g_w2, g_b2)``."""
    g_w2 = grouped_mm_t(h, g_out, layout)
    g_b2 = _segment_sums(g_out, layout)
    g_pre = act_backward_(activation, grouped_mm(g_out, w2.transpose(1, 2), layout), pre)
    g_w1 = grouped_mm_t(buf, g_pre, layout)
    g_b1 = _segment_sums(g_pre, layout)
    g_buf = grouped_mm(g_pre, w1.transpose(1, 2), layout) if need_input else None
    return g_buf, g_w1, g_b1, g_w2, g_b2
