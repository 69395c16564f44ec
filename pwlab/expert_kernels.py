"""The plain expert FFN's forward and hand-written backward, once per row layout.

Index legend: E experts, C slots per expert, A rows (assignments), D d_model, H d_hidden.

The plain :class:`~pwlab.experts.ExpertBank` computes ``out = act(buf·w1 + b1)·w2 + b2`` per
expert. Its rows come in one of two layouts, and each layout has one forward and one backward
here, used by every path that runs the bank by hand — the padded dispatch
(:class:`pwlab.dispatch.PaddedDispatch`) and the one-node top-k layer (:mod:`pwlab.fused`):

- **padded**: ``buf (E, C, D)``, every expert padded to C rows; two batched matmuls.
- **grouped**: ``buf (A, D)``, rows grouped by expert (:class:`RowLayout`), no padding. The
  first E·m rows are an ``(E, m, ·)`` block, m the fewest rows any expert has, computed by
  batched matmuls as the padded layout is; the rest (each expert's rows beyond m) by one
  ``addmm`` per expert forward and grouped products backward (``torch._grouped_mm`` where it
  runs). On a 2-core CPU one batched matmul is faster per FLOP than the same work as one
  matmul per expert, so the block takes most of the rows at the batched speed.

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


def act_backward(name: str, grad: Tensor, pre: Tensor) -> Tensor:
    """∂act(pre)/∂pre · grad for the activations of :data:`pwlab.experts.ACTIVATIONS`."""
    if name == "gelu":
        return torch.ops.aten.gelu_backward(grad, pre)
    if name == "silu":
        return torch.ops.aten.silu_backward(grad, pre)
    return grad * (pre > 0).to(grad.dtype)                                        # relu


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
    g_pre = act_backward(activation, torch.bmm(g_out, w2.transpose(1, 2)), pre)
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
    """The unpadded dropless layout: the A assignments grouped by expert into A rows.

    ``row_token (A,)`` the token each row reads; ``row (A,)`` the row of each rank-major
    assignment; ``row_expert (A,)`` the expert of each row. Rows ``[0, E·prefix)`` are the block
    ``(E, prefix)``: expert e's first ``prefix`` rows at ``[e·prefix, (e+1)·prefix)``; the other
    rows (the *tail*, from ``E·prefix`` on) hold each expert's remaining rows, sorted by expert:
    ``bounds`` are the tail's cumulative counts per expert (row ranges relative to the tail's
    start), as ints and as ``offs (E,)`` int32. With ``prefix`` 0 the tail is every row."""

    row_token: Tensor
    row: Tensor
    row_expert: Tensor
    bounds: tuple[int, ...]
    offs: Tensor
    prefix: int = 0


@functools.lru_cache(maxsize=64)
def rank_major_layout(n: int, k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Token and rank of each assignment in the rank-major layout (``a = j·N + n``)."""
    return torch.arange(n, device=device).repeat(k), torch.arange(k, device=device).repeat_interleave(n)


def row_layout(expert_t: Tensor, num_experts: int, batched: bool = True) -> tuple[Tensor, RowLayout]:
    """``counts (E,)`` and the :class:`RowLayout` of the rank-major choices ``expert_t (k, N)``
    (within an expert, rows keep the position-priority order: first choices, then token order).
    ``batched``: put each expert's first m rows (m = the smallest count) in the batched block;
    False: every row in the tail (``prefix`` 0)."""
    k, n = expert_t.shape
    expert = expert_t.reshape(-1)
    order = torch.argsort(expert, stable=True)                                # rank-major order within experts
    counts = torch.bincount(expert, minlength=num_experts)
    token, _ = rank_major_layout(n, k, expert_t.device)
    m = int(counts.min()) if batched else 0
    sorted_expert = expert[order]
    if m == 0:
        pos = torch.arange(order.numel(), device=order.device)
        tails = counts
    else:
        starts = counts.cumsum(0) - counts
        rank = torch.arange(order.numel(), device=order.device) - starts[sorted_expert]   # rank within expert
        tails = counts - m
        tail_start = num_experts * m + tails.cumsum(0) - tails
        pos = torch.where(rank < m, sorted_expert * m + rank, tail_start[sorted_expert] + rank - m)
    row = torch.empty_like(order)
    row[order] = pos
    row_token, row_expert = torch.empty_like(order), torch.empty_like(order)
    row_token[pos], row_expert[pos] = token[order], sorted_expert
    ends = tails.cumsum(0)
    return counts, RowLayout(row_token=row_token, row=row, row_expert=row_expert, bounds=tuple(ends.tolist()),
                             offs=ends.to(torch.int32), prefix=m)


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


def _block(t: Tensor, layout: RowLayout) -> tuple[Tensor | None, Tensor]:
    """``t (A, ·)`` as the layout's batched block ``(E, prefix, ·)`` (None when empty) and its tail."""
    p = len(layout.bounds) * layout.prefix
    return (t[:p].view(len(layout.bounds), layout.prefix, t.shape[1]) if p else None), t[p:]


def grouped_mm(a: Tensor, b: Tensor, layout: RowLayout) -> Tensor:
    """Row range e of ``a (A, K)`` times ``b[e] (K, M)``, for every expert: ``(A, M)``."""
    out = a.new_empty(a.shape[0], b.shape[2])
    (a_blk, a_tail), (o_blk, o_tail) = _block(a, layout), _block(out, layout)
    if a_blk is not None:
        torch.bmm(a_blk, b, out=o_blk)
    if not a_tail.shape[0]:
        return out
    if _aligned(a, a.shape[1], b.shape[1], b.shape[2]) and _grouped_mm_works(a.device, a.dtype):
        o_tail.copy_(torch._grouped_mm(a_tail, b, offs=layout.offs))
        return out
    start = 0
    for e, end in enumerate(layout.bounds):
        if end > start:
            torch.mm(a_tail[start:end], b[e], out=o_tail[start:end])
        start = end
    return out


def grouped_mm_t(a: Tensor, g: Tensor, layout: RowLayout) -> Tensor:
    """Per expert, ``a[rows_e]ᵀ · g[rows_e]`` (a weight gradient): ``a (A, K), g (A, M) -> (E, K, M)``
    (an expert without rows gets zeros)."""
    (a_blk, a_tail), (g_blk, g_tail) = _block(a, layout), _block(g, layout)
    if a_blk is not None:
        out = torch.bmm(a_blk.transpose(1, 2), g_blk)
    else:
        out = a.new_zeros(len(layout.bounds), a.shape[1], g.shape[1])
    if not a_tail.shape[0]:
        return out
    if _aligned(a, a.shape[1], g.shape[1]) and _grouped_mm_works(a.device, a.dtype):
        tail = torch._grouped_mm(a_tail.t(), g_tail, offs=layout.offs)
        return out.add_(tail) if a_blk is not None else tail
    start = 0
    for e, end in enumerate(layout.bounds):
        if end > start:
            torch.addmm(out[e], a_tail[start:end].t(), g_tail[start:end], out=out[e])
        start = end
    return out


def _grouped_addmm(bias: Tensor, a: Tensor, b: Tensor, layout: RowLayout) -> Tensor:
    """``bias[e] + a[rows_e] · b[e]`` for every expert: ``(A, M)``: one ``baddbmm`` for the batched
    block and one ``addmm`` per expert with tail rows (the bias rides in the matmuls)."""
    out = a.new_empty(a.shape[0], b.shape[2])
    (a_blk, a_tail), (o_blk, o_tail) = _block(a, layout), _block(out, layout)
    if a_blk is not None:
        torch.baddbmm(bias.unsqueeze(1), a_blk, b, out=o_blk)
    start = 0
    for e, end in enumerate(layout.bounds):
        if end > start:
            torch.addmm(bias[e], a_tail[start:end], b[e], out=o_tail[start:end])
        start = end
    return out


def _segment_sums(g: Tensor, layout: RowLayout) -> Tensor:
    """Per expert, the sum of its rows of ``g (A, M)``: ``(E, M)`` (a bias gradient)."""
    g_blk, g_tail = _block(g, layout)
    out = g_blk.sum(1) if g_blk is not None else g.new_zeros(len(layout.bounds), g.shape[1])
    start = 0
    for e, end in enumerate(layout.bounds):
        if end > start:
            out[e] += g_tail[start:end].sum(0)
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
    g_pre = act_backward(activation, grouped_mm(g_out, w2.transpose(1, 2), layout), pre)
    g_w1 = grouped_mm_t(buf, g_pre, layout)
    g_b1 = _segment_sums(g_pre, layout)
    g_buf = grouped_mm(g_pre, w1.transpose(1, 2), layout) if need_input else None
    return g_buf, g_w1, g_b1, g_w2, g_b2
