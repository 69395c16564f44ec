"""SWAT's top-K selection and its custom autograd functions (Raihan & Aamodt, NeurIPS 2020, Alg. 1).

For a weight layer ``y = x·Wᵀ + b`` SWAT does, per training step:
    forward       y = x · top-K(W)ᵀ + b               (dense input, sparse weights)
    saved for bw  x_s = top-K(x)                      (the *sparsified* input is what is kept)
    backward      grad_x = grad_y · top-K(W)          (sparse weights; grad_y never sparsified)
                  grad_W = grad_yᵀ · x_s              (dense-shaped: every weight learns, so a
                                                       dropped weight can re-enter the top-K)
Top-K is by magnitude, per layer and per tensor (the activation over the whole batch). The
masks are computed by the layers (``layers.py``) and passed in here, so the functions are pure
and ``gradcheck`` can run them with a fixed mask.

``grad_W`` is deliberately *not* the gradient of the forward w.r.t. W (that one would be zero
at dropped weights and use the dense x): it is SWAT's straight-through estimate.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from pwlab.swat import kernels
# re-exported: the selection is part of this module's public surface (layers, benchmarks, tests)
from pwlab.swat.topk import _kth_smallest, magnitude_threshold, magnitude_topk  # noqa: F401


def check_sparsity(name: str, value) -> float:
    """Sparsities live in [0, 1): 1 would keep nothing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def channel_scores(x: Tensor, dim: int) -> Tensor:
    """Mean magnitude per channel along ``dim`` (L1 norm over the other dims, batch-size free)."""
    dims = [d for d in range(x.dim()) if d != dim % x.dim()]
    return x.detach().abs().mean(dim=dims)


def weight_scores(w: Tensor, structured: bool = False) -> Tensor:
    """What top-K ranks: |w| entries, or the L1 norm of each output row / filter (SWAT §4.4)."""
    mag = w.detach().abs()
    return mag.reshape(w.shape[0], -1).sum(1) if structured else mag


def weight_mask(w: Tensor, sparsity: float, structured: bool = False,
                threshold: Tensor | None = None) -> Tensor | None:
    """Bool mask of the top-K weights of ``w`` (None when nothing is dropped).

    Unstructured: top-K entries by |w|. Structured: top-K output rows / filters (dim 0) by L1
    norm, broadcast to ``w.shape``. ``threshold``: reuse a cached threshold instead of
    recomputing the top-K (see :func:`weight_threshold`).
    """
    if sparsity == 0:
        return None
    score = weight_scores(w, structured)
    keep = score > (magnitude_threshold(score, sparsity) if threshold is None else threshold)
    if structured:
        return keep.view(-1, *([1] * (w.dim() - 1))).expand(w.shape).contiguous()
    return keep


def weight_threshold(w: Tensor, sparsity: float, structured: bool = False) -> Tensor:
    return magnitude_threshold(weight_scores(w, structured), sparsity)


def act_threshold(x: Tensor, sparsity: float, structured: bool = False, channel_dim: int = -1) -> Tensor:
    """The activation threshold for this batch (cached by the layer for ``topk_period`` steps)."""
    score = channel_scores(x, channel_dim) if structured else x.detach().abs()
    return magnitude_threshold(score, sparsity)


def sparsify_activation(x: Tensor, threshold: Tensor | None, structured: bool = False,
                        channel_dim: int = -1) -> Tensor:
    """``x`` with every entry (or channel) whose magnitude is ≤ ``threshold`` set to zero."""
    if threshold is None or math.isinf(float(threshold)):
        return x
    if structured:
        keep = channel_scores(x, channel_dim) > threshold
        shape = [1] * x.dim()
        shape[channel_dim] = -1
        return x * keep.view(shape).to(x.dtype)
    # hardshrink is exactly "x where |x| > t, else 0", in one pass (3x fewer than abs, gt, mul)
    return F.hardshrink(x, max(float(threshold), 0.0))


def _masked(w: Tensor, mask: Tensor | None) -> Tensor:
    # w · mask in one elementwise pass (weights are finite, so 0·w = 0). The layers pass the mask
    # in w's dtype: on a 2048x2048 weight that is ~3x faster than promoting a bool mask in the
    # multiply and ~5x faster than torch.where(mask, w, 0) (measured, 2 CPU threads)
    return w if mask is None else w * mask


class SwatLinearFunction(torch.autograd.Function):
    """``x (N, in), weight (out, in), bias (out,) | None -> y (N, out)``.

    ``wmask`` (out, in) bool, or 0/1 in weight's dtype, or None; ``athr`` the activation
    threshold (None: keep all); ``plan`` a :class:`kernels.SparsePlan` or None (dense kernels).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, wmask, athr, structured=False, plan=None):
        # xᵀ (in, N) contiguous, shared by the CSR forward and the activation's CSR
        csr_x = plan is not None and (plan.weight_sparse or (plan.act_sparse and ctx.needs_input_grad[1]))
        xt = x.detach().t().contiguous() if csr_x else None
        if plan is not None and plan.weight_sparse:
            w_csr, wt_csr = plan.weight_csr(weight)
            y = kernels.csr_mm_t(w_csr, x, bias, xt)                            # (N, out)
            ctx.wt_csr, w_s = wt_csr, None
        else:
            w_s = _masked(weight, wmask)
            y = F.linear(x, w_s, bias)
            ctx.wt_csr = None
        if not ctx.needs_input_grad[1]:
            x_saved = None                                                      # no grad_W: keep nothing
        elif plan is not None and plan.act_sparse:
            x_saved = kernels.act_csr_t(x, athr, xt)                            # CSR of x_sᵀ (in, N)
        else:
            x_saved = sparsify_activation(x, athr, structured, -1)
        ctx.has_bias = bias is not None
        ctx.in_out = kernels.in_out_order(weight)          # grad_W is returned in W's memory order
        ctx.save_for_backward(x_saved, w_s)
        return y

    @staticmethod
    def backward(ctx, g):
        x_saved, w_s = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = kernels.csr_mm_t(ctx.wt_csr, g) if ctx.wt_csr is not None else g.mm(w_s)
        if ctx.needs_input_grad[1]:
            # grad_W = gᵀ·x_s = (x_sᵀ·g)ᵀ. The CSR kernel yields x_sᵀ·g (in, out) row-major: when W
            # is stored in (in, out) order (SwatLinear does so on this path) its transpose view
            # already has W's layout; otherwise a transposing copy (~2.5 ms at 2048², 2 threads)
            if x_saved.layout == torch.sparse_csr:
                gwt = kernels.csr_mm(x_saved, g)
                grad_w = gwt.t() if ctx.in_out else gwt.t().contiguous()
            else:
                grad_w = x_saved.t().mm(g).t() if ctx.in_out else g.t().mm(x_saved)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b, None, None, None, None


class SwatConv2dFunction(torch.autograd.Function):
    """``x (B, C_in, H, W), weight (C_out, C_in/groups, kh, kw) -> y (B, C_out, H', W')``;
    ``conv`` = (stride, padding, dilation, groups). Dense (masked) kernels only."""

    @staticmethod
    def forward(ctx, x, weight, bias, wmask, athr, structured, conv):
        stride, padding, dilation, groups = conv
        w_s = _masked(weight, wmask)
        y = F.conv2d(x, w_s, bias, stride, padding, dilation, groups)
        x_s = sparsify_activation(x, athr, structured, 1)
        ctx.conv, ctx.has_bias = conv, bias is not None
        ctx.save_for_backward(x_s, w_s)
        return y

    @staticmethod
    def backward(ctx, g):
        x_s, w_s = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need = ctx.needs_input_grad
        # one call: grad_input uses only (g, w_s), grad_weight only (g, x_s)
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g, x_s, w_s, [w_s.shape[0]] if ctx.has_bias else None, stride, padding, dilation, False, [0, 0],
            groups, [need[0], need[1], ctx.has_bias and need[2]])
        return gx, gw, gb, None, None, None, None


class SwatBmmFunction(torch.autograd.Function):
    """Expert matmul with the same SWAT rules (masks over the whole stacked tensor): batched
    ``x (E, C, a) @ weight (E, a, b) + bias (E, b) -> (E, C, b)``, or one expert
    ``x (n, a) @ weight (a, b) + bias (b,) -> (n, b)`` (the same ops as ``ExpertBank``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, wmask, athr, structured=False):
        w_s = _masked(weight, wmask)
        y = torch.baddbmm(bias.unsqueeze(1), x, w_s) if x.dim() == 3 else x @ w_s + bias
        ctx.save_for_backward(sparsify_activation(x, athr, structured, -1), w_s)
        return y

    @staticmethod
    def backward(ctx, g):
        x_s, w_s = ctx.saved_tensors
        grad_x = g @ w_s.transpose(-1, -2) if ctx.needs_input_grad[0] else None
        grad_w = x_s.transpose(-1, -2) @ g if ctx.needs_input_grad[1] else None
        grad_b = g.sum(-2) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None
