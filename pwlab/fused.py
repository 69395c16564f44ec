"""The whole top-k MoE layer as one autograd node: router → capacity → experts → combine → losses.

Index legend: N tokens, D d_model, H d_hidden, E experts, k experts per token,
A = k·N assignments, C slots per expert.

On a CPU a small MoE layer spends more time in per-operation overhead (dispatching an op,
recording it for autograd, allocating its output) than in arithmetic. :class:`MoE` therefore
runs its most common configuration through :func:`topk_moe`, the padded backend's fast form,
which routes in the router's place: the same maths as the general path with two thirds of the
operations (304 instead of 445 per training step at the benchmark's tiny size) and one autograd
node with a hand-written backward instead of 25. Which calls it takes, the parts say
(:func:`plan`): the router's ``fused_gate()`` (the plain softmax-then-top-k gate) and the bank's
``plain_ffn()`` (the plain two-matrix FFN); the layer adds position priority and the padded
backend. The experts' forward and backward are :mod:`pwlab.expert_kernels`' (shared with the
padded dispatch); the router's and the two losses' backward is written out in
:class:`_TopKMoE` beside its forward. Tests tie it to the general path (values and every
gradient) and check it with ``gradcheck``; docs/moe_performance.md says where the time goes.

The router works in the transposed ``(E, N)`` layout throughout: PyTorch's CPU softmax over a
short last dimension (E = 8) is several times slower than over the first one. The choices come
back rank-major — all first choices, then all second choices — which is exactly the priority
order of the ``"position"`` drop policy, so queue positions are one running count. The
:class:`~pwlab.routing.Routing` it returns is rank-major too (assignment ``a = j·N + n`` is
token n's j-th choice); ``token`` and ``rank`` say so.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from pwlab import expert_kernels as kernels
from pwlab.expert_kernels import RowLayout, rank_major_layout, row_layout  # noqa: F401  (the layouts it uses)
from pwlab.routing.base import FusedGate

#: dtypes the node runs in (half precision takes the general path, whose losses upcast)
FUSED_DTYPES = (torch.float32, torch.float64)
#: the mean rows per expert from which a dropless call takes the unpadded layout by default
#: (``MoE.dropless_layout="auto"``): measured with ``pwlab bench moe --dropless-layout`` on a
#: 2-core CPU, one ``addmm`` per expert is as fast per FLOP as the padded batched matmul from a
#: few hundred rows per expert on, and slower below (per-call overhead)
GROUPED_MIN_ROWS = 256


def plan(router, experts, dtype: torch.dtype) -> tuple[FusedGate, tuple[Tensor, ...]] | None:
    """What the node needs to run in place of ``router`` and the padded dispatch of ``experts``,
    as they declare it — the router's :class:`~pwlab.routing.base.FusedGate`
    (``router.fused_gate()``) and the bank's plain FFN weights (``experts.plain_ffn()``) — or
    None when either cannot, or the dtypes are not one float32/float64 throughout."""
    gate = router.fused_gate()
    ffn = experts.plain_ffn() if gate is not None else None
    if ffn is None or dtype not in FUSED_DTYPES or not dtype == gate.weight.dtype == ffn[0].dtype:
        return None
    return gate, ffn


@functools.lru_cache(maxsize=16)
def _expert_ids(e: int, device: torch.device) -> Tensor:
    return torch.arange(e, device=device)


def _top_k(probs_t: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``probs_t.topk(k, 0)``, largest first; for k ≤ 2 by repeated ``max`` (ties go to the
    lower expert index). On a CPU two ``max`` passes over (8, 2048) take half the time of one
    ``topk`` over the short dimension (at N = 512 they are about even)."""
    if k > 2:
        return probs_t.topk(k, 0)
    p1, e1 = probs_t.max(0)
    if k == 1:
        return p1.unsqueeze(0), e1.unsqueeze(0)
    p2, e2 = probs_t.scatter(0, e1.unsqueeze(0), -1.0).max(0)
    return torch.stack((p1, p2)), torch.stack((e1, e2))


class _TopKMoE(torch.autograd.Function):
    """Forward of the top-k MoE layer; see :func:`topk_moe` for the arguments and outputs."""

    @staticmethod
    def forward(ctx, x, wg, w1, b1, w2, b2, k, renormalize, capacity, activation, w_lb, w_z, enabled, grouped,
                side):
        ctx.set_materialize_grads(False)
        n = x.shape[0]
        e = wg.shape[0]
        # router, in the (E, N) layout
        logits_t = F.linear(wg, x)                                            # (E, N) = wg·xᵀ
        probs_t = logits_t.softmax(0)
        top_p, expert_t = _top_k(probs_t, k)                                  # (k, N) rank-major
        renorm = renormalize and k > 1
        top_sum = top_p.sum(0, keepdim=True) if renorm else None
        weight_t = top_p / top_sum if renorm else top_p
        if capacity is None and enabled is None and grouped:               # dropless: no padding
            counts, layout = row_layout(expert_t, e)
            kept_counts, kept = counts, torch.ones(expert_t.numel(), dtype=torch.bool, device=x.device)
            y, buf, pre, h, mine = _grouped_forward(x, layout, weight_t, w1, b1, w2, b2, activation)
            slot, slot_token = layout.row, layout.row_token
        else:
            counts, kept_counts, kept, slot, slot_token = slot_layout(expert_t, e, capacity, enabled)
            y, buf, pre, h, mine = _experts_forward(x, slot_token, slot, weight_t, w1, b1, w2, b2, activation)
            layout = None
        # auxiliary losses: Switch load balancing and the router z-loss. logsumexp from the
        # top choice's own probability: lse = l_top − log p_top, exact and safe as p_top ≥ 1/E.
        lse = logits_t.gather(0, expert_t[:1]).sub_(top_p[:1].log()).view(-1)   # (N,)
        z = lse.dot(lse) / n
        lb_grad = counts.to(x.dtype).mul_(e / (k * n * n))                    # ∂lb/∂p[e, n] = E·count_e / (A·N)
        lb = torch.dot(lb_grad, probs_t.sum(1))
        aux = torch.add(lb * w_lb, z, alpha=w_z)

        side += [expert_t, kept, counts, kept_counts, math.isfinite(z)]
        ctx.save_for_backward(x, wg, w1, w2, probs_t, top_sum, weight_t, expert_t, lse, lb_grad, slot,
                              slot_token, buf, pre, h, mine)
        ctx.sizes = (k, renorm, activation, w_lb, w_z)
        ctx.layout = layout
        return y, logits_t, probs_t, weight_t, lb, z, aux

    @staticmethod
    @once_differentiable        # a second derivative raises instead of being silently wrong
    def backward(ctx, gy, g_logits_t, g_probs_t, g_weight_t, g_lb, g_z, g_aux):
        (x, wg, w1, w2, probs_t, top_sum, weight_t, expert_t, lse, lb_grad, slot,
         slot_token, buf, pre, h, mine) = ctx.saved_tensors
        k, renorm, activation, w_lb, w_z = ctx.sizes
        n = x.shape[0]
        e = wg.shape[0]
        g_x = g_w1 = g_b1 = g_w2 = g_b2 = None
        g_w = g_weight_t
        if gy is not None:
            gy = gy.contiguous()
            g_mine = torch.linalg.vecdot(mine, gy)                            # (k, N): ∂/∂ combine weight
            g_w = g_mine if g_w is None else g_w.add(g_mine)
            if ctx.layout is not None:
                g_x, g_w1, g_b1, g_w2, g_b2 = _grouped_backward(gy, ctx.layout, weight_t, buf, pre, h, w1, w2,
                                                                activation, ctx.needs_input_grad[0])
            else:
                g_x, g_w1, g_b1, g_w2, g_b2 = _experts_backward(gy, slot_token, slot, weight_t, buf, pre, h, w1, w2,
                                                                activation, ctx.needs_input_grad[0])
        # router: combine weights → top-k probabilities → all probabilities → logits
        lb_scale = _scale(g_lb, g_aux, w_lb)
        g_p = (lb_grad * lb_scale).unsqueeze(1).expand(e, n).clone()          # (E, N)
        if g_probs_t is not None:
            g_p.add_(g_probs_t)
        if g_w is not None:
            if renorm:                                                        # w = p / Σp
                g_w = (g_w - (g_w * weight_t).sum(0, keepdim=True)).div_(top_sum)
            g_p.scatter_add_(0, expert_t, g_w)
        g_logits = g_p.sub_((g_p * probs_t).sum(0, keepdim=True)).mul_(probs_t)   # softmax: p ⊙ (g − Σ g·p)
        z_scale = _scale(g_z, g_aux, w_z)
        if z_scale:                                                           # ∂z/∂l[e, n] = 2·lse_n·p[e, n] / N
            g_logits.addcmul_(probs_t, lse.unsqueeze(0), value=z_scale * 2.0 / n)
        if g_logits_t is not None:
            g_logits.add_(g_logits_t)
        g_wg = torch.mm(g_logits, x) if ctx.needs_input_grad[1] else None
        if ctx.needs_input_grad[0]:
            g_x = torch.mm(g_logits.t(), wg) if g_x is None else g_x.addmm_(g_logits.t(), wg)
        return g_x, g_wg, g_w1, g_b1, g_w2, g_b2, None, None, None, None, None, None, None, None, None


def slot_layout(expert_t: Tensor, num_experts: int, capacity: int | None, enabled: Tensor | None = None):
    """Where every assignment of the rank-major choices ``expert_t (k, N)`` goes, position priority.

    Returns ``(counts (E,) proposed, kept_counts (E,), kept (A,) bool, slot (A,), slot_token (E·C,))``
    with C = ``kept_counts.max()``: the expert-output row ``slot`` of each assignment (row
    1 + expert·C + position − 1; 0 for a dropped one, which reads a zero row) and the token
    ``slot_token`` that fills each buffer row (0 for an empty row)."""
    k, n = expert_t.shape
    expert = expert_t.view(-1, 1)                                             # (A, 1) priority order
    # 1-based queue position of every assignment in its expert: a running count per expert
    queue = (expert == _expert_ids(num_experts, expert_t.device)).cumsum(0, dtype=torch.int32)   # (A, E)
    counts = queue[-1].long()                                                 # (E,) proposed
    position = queue.gather(1, expert).view(-1)
    kept_counts = counts.clamp(max=capacity) if capacity is not None else counts
    if enabled is not None:                                                   # ablation: switched-off experts
        kept_counts = kept_counts * enabled                                   # compute nothing; the others
    slots = int(kept_counts.max())                                            # keep their queue positions
    kept = position <= slots
    if enabled is not None:
        kept &= enabled[expert.view(-1)]
    slot = torch.add(position, expert.view(-1), alpha=slots).mul_(kept).long()
    token, _ = rank_major_layout(n, k, expert_t.device)
    slot_token = torch.zeros(num_experts * slots + 1, dtype=torch.long,
                             device=expert_t.device).index_put_((slot,), token)[1:]
    return counts, kept_counts, kept, slot, slot_token


def _combine(out: Tensor, row: Tensor, weight_t: Tensor) -> tuple[Tensor, Tensor]:
    """Every token gathers its k expert-output rows ``out[row]`` (a gather is cheaper than a
    scatter-add) and sums them by weight: ``(y (N, D), mine (k, N, D))``."""
    k, n = weight_t.shape
    mine = out.index_select(0, row).view(k, n, -1)                            # (k, N, D)
    y = mine[0] * weight_t[0].unsqueeze(1)
    for j in range(1, k):
        y.addcmul_(mine[j], weight_t[j].unsqueeze(1))
    return y, mine


def _combine_input_grad(g_rows: Tensor, row: Tensor, k: int, n: int) -> Tensor:
    """The gradient of x from its rows' gradients ``g_rows``: each token sums its k rows ``row``."""
    g = g_rows.index_select(0, row).view(k, n, -1)
    g_x = g[0] if k == 1 else torch.add(g[0], g[1])
    for j in range(2, k):
        g_x.add_(g[j])
    return g_x


def _experts_forward(x, slot_token, slot, weight_t, w1, b1, w2, b2, activation):
    """Dispatch (padded layout of :func:`slot_layout`), expert FFNs and combine: ``y (N, D)`` and
    what the backward needs ``(buf, pre, h, mine)``."""
    e, d = w1.shape[0], x.shape[1]
    slots = slot_token.shape[0] // e
    buf = x.index_select(0, slot_token).view(e, slots, d)                    # (E, C, D)
    out = _with_zero_row(x, e * slots, d)                                     # (1 + E·C, D): row 0 for dropped
    _, pre, h = kernels.padded_forward(buf, w1, b1, w2, b2, activation, out=out[1:].view(e, slots, d))
    y, mine = _combine(out, slot, weight_t)
    return y, buf, pre, h, mine


def _experts_backward(gy, slot_token, slot, weight_t, buf, pre, h, w1, w2, activation, need_x: bool):
    """Gradients of :func:`_experts_forward` with the routing fixed: ``(g_x or None, g_w1, g_b1,
    g_w2, g_b2)``; ``gy`` contiguous."""
    k, n = weight_t.shape
    e, slots, d = buf.shape
    # ∂/∂ expert output rows: weight · gy of the row's token; empty rows get weight 0
    slot_weight = gy.new_zeros(e * slots + 1).index_put_((slot,), weight_t.reshape(-1))[1:]
    g_out = gy.index_select(0, slot_token).mul_(slot_weight.unsqueeze(1)).view(e, slots, d)
    g_buf = _with_zero_row(gy, e * slots, d) if need_x else None
    _, g_w1, g_b1, g_w2, g_b2 = kernels.padded_backward(
        g_out, buf, pre, h, w1, w2, activation, need_x, g_buf=g_buf[1:].view(e, slots, d) if need_x else None)
    g_x = _combine_input_grad(g_buf, slot, k, n) if need_x else None
    return g_x, g_w1, g_b1, g_w2, g_b2


def _grouped_forward(x, layout: RowLayout, weight_t, w1, b1, w2, b2, activation):
    """:func:`_experts_forward` on the unpadded :class:`RowLayout` (dropless, every expert on):
    ``y (N, D)`` and ``(buf, pre, h, mine)`` for the backward."""
    buf = x.index_select(0, layout.row_token)                                 # (A, D)
    out, pre, h = kernels.grouped_forward(buf, layout, w1, b1, w2, b2, activation)
    y, mine = _combine(out, layout.row, weight_t)
    return y, buf, pre, h, mine


def _grouped_backward(gy, layout: RowLayout, weight_t, buf, pre, h, w1, w2, activation, need_x: bool):
    """Gradients of :func:`_grouped_forward` with the routing fixed, as :func:`_experts_backward`."""
    k, n = weight_t.shape
    row_weight = torch.empty_like(weight_t.reshape(-1)).index_put_((layout.row,), weight_t.reshape(-1))
    g_out = gy.index_select(0, layout.row_token).mul_(row_weight.unsqueeze(1))      # (A, D)
    g_buf, g_w1, g_b1, g_w2, g_b2 = kernels.grouped_backward(g_out, layout, buf, pre, h, w1, w2, activation, need_x)
    g_x = _combine_input_grad(g_buf, layout.row, k, n) if need_x else None
    return g_x, g_w1, g_b1, g_w2, g_b2


def _with_zero_row(like: Tensor, rows: int, d: int) -> Tensor:
    """An uninitialised (1 + rows, d) buffer whose row 0 is zero (what dropped assignments read)."""
    buf = like.new_empty(rows + 1, d)
    buf[0].zero_()
    return buf


def _scale(g_own: Tensor | None, g_aux: Tensor | None, weight: float) -> float:
    """The upstream gradient reaching one loss (a number): its own plus ``weight`` times the weighted sum's."""
    return (float(g_own) if g_own is not None else 0.0) + (float(g_aux) * weight if g_aux is not None else 0.0)


def topk_moe(x: Tensor, wg: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, *, k: int,
             renormalize: bool, capacity: int | None, activation: str, w_lb: float, w_z: float,
             enabled: Tensor | None = None, grouped: bool = True):
    """The top-k MoE layer on ``x (N, D)``, N ≥ 1.

    Args: the gate weight ``wg (E, D)``; the expert bank ``w1 (E, D, H), b1 (E, H), w2 (E, H, D),
    b2 (E, D)``; ``capacity`` C or None (dropless); the weights of the load-balancing and z-losses;
    ``enabled (E,)`` bool, or None when every expert is on (assignments to an expert switched off
    are dropped, as in :meth:`pwlab.moe.MoE.disabled`); ``grouped``: run a dropless call
    (``capacity=None``, every expert on) on the unpadded layout of :func:`row_layout` (False: the
    padded one, every expert padded to the fullest).

    Returns ``(y (N, D), logits (E, N), probs (E, N), weight (k, N), load_balancing, z_loss,
    aux_loss, expert (k, N), kept (A,), counts (E,), kept_counts (E,), finite)``: the router
    tensors transposed (rank-major); expert, kept and the counts without gradient; ``finite``
    (bool) whether the z-loss is finite, which it is unless x holds NaN or Inf.
    """
    side: list = []     # outputs without gradient travel outside autograd (cheaper than outputs)
    outs = _TopKMoE.apply(x, wg, w1, b1, w2, b2, k, renormalize, capacity, activation, float(w_lb), float(w_z),
                          enabled, bool(grouped), side)
    return (*outs, *side)
