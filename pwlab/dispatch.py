"""Dispatch: which slot each assignment takes, and moving tokens to experts and back.

Index legend: N tokens, D d_model, H d_hidden, E experts, A assignments, C capacity (slots
per expert).

``dispatch_fast`` puts every kept assignment into slot ``expert·C + position`` of an
(E, C, D) buffer and runs all experts with two batched matmuls. For the plain
:class:`~pwlab.experts.ExpertBank` the gather → experts → weighted scatter chain is one
autograd function with a hand-written backward (the same maths as autograd, fewer graph
nodes: on a CPU the per-op overhead, not the FLOPs, dominates small MoE layers). Any other
bank — the gated :class:`~pwlab.experts.GatedExpertBank`, the SWAT banks — takes the generic
padded path: gather into the buffer, ``experts.forward_padded(buf)``, weighted scatter, all
plain autograd.
``dispatch_loop`` is the reference, one expert at a time; tests tie the two together.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pwlab.experts import ACTIVATIONS, ExpertBank, GatedExpertBank
from pwlab.routing.base import Routing


def sort_by_priority(routing: Routing, policy: str = "position") -> tuple[Tensor, Tensor]:
    """Group the assignments by expert, each group in priority order.

    Returns ``order (A,)`` (indices into the assignments, grouped by expert) and
    ``position (A,)``, the slot each *sorted* assignment takes in its expert (0, 1, 2, ...).
    """
    order, position, _ = _sort_by_priority(routing, policy)
    return order, position


def _sort_by_priority(routing: Routing, policy: str) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`sort_by_priority`, plus the proposed ``counts (E,)`` it computes on the way."""
    a, n, e = routing.num_assignments, routing.num_tokens, routing.num_experts
    dev = routing.expert.device
    if policy == "position":
        within = routing.rank * n + routing.token                    # first choices, then token order
        span = (int(routing.rank.max()) + 1) * n if a else 1
    else:
        by_weight = torch.argsort(-routing.weight.detach(), stable=True)
        prio = torch.empty_like(by_weight)
        prio[by_weight] = torch.arange(a, device=dev)
        within = routing.rank * a + prio                              # first choices, then by weight
        span = (int(routing.rank.max()) + 1) * a if a else 1
    order = torch.argsort(routing.expert * span + within)
    counts = torch.bincount(routing.expert, minlength=e)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(a, device=dev) - starts[routing.expert[order]]
    return order, position, counts


def slot_positions(routing: Routing, policy: str = "position") -> tuple[Tensor, Tensor]:
    """``position (A,)`` of every assignment in its expert's queue (original order) and ``counts (E,)``."""
    order, pos_sorted, counts = _sort_by_priority(routing, policy)
    position = torch.empty_like(pos_sorted)
    position[order] = pos_sorted
    return position, counts


def apply_capacity(routing: Routing, capacity: int | None, policy: str = "position") -> tuple[Routing, Tensor]:
    """Keep at most ``capacity`` assignments per expert in priority order.

    Returns the kept routing, sorted by expert (and by priority within an expert), and the
    slot ``position (A_kept,)`` of each kept assignment.
    """
    order, position = sort_by_priority(routing, policy)
    if capacity is not None:
        keep = position < capacity
        order, position = order[keep], position[keep]
    return routing.select(order), position


def dispatch_fast(x: Tensor, routing: Routing, position: Tensor, experts: ExpertBank | GatedExpertBank,
                  slots: int) -> Tensor:
    """Padded batched dispatch.

    Every assignment with ``position < slots`` goes to slot ``expert·slots + position`` of an
    (E, slots, D) buffer; the others are dropped. Empty slots read token 0 with combine weight 0,
    which adds exact zeros to outputs and gradients, so no masking is needed.

    Args: x (N, D); routing (A,); position (A,) from :func:`slot_positions`; ``slots`` = C'.
    Returns: y (N, D).
    """
    n, d = x.shape
    e = experts.num_experts
    total = e * slots
    keep = position < slots
    slot = torch.where(keep, routing.expert * slots + position, total)            # dropped → a trash slot
    slot_token = torch.zeros(total + 1, dtype=torch.long, device=x.device).index_put_((slot,), routing.token)
    slot_weight = x.new_zeros(total + 1).index_put((slot,), routing.weight.to(x.dtype))
    slot_token, slot_weight = slot_token[:total], slot_weight[:total]
    if type(experts).forward_padded is ExpertBank.forward_padded:               # the plain bank only
        return _FusedExperts.apply(x, slot_token, slot_weight, experts.activation, *experts.effective_weights())
    buf = x.index_select(0, slot_token).view(e, slots, d)                        # (E, C', D)
    out = experts.forward_padded(buf).view(total, d)
    return x.new_zeros(n, d).index_add(0, slot_token, out * slot_weight.unsqueeze(-1))


def dispatch_loop(x: Tensor, routing: Routing, experts: ExpertBank | GatedExpertBank) -> Tensor:
    """Reference dispatch of the kept ``routing``: one expert at a time, tokens gathered and scattered back."""
    y = x.new_zeros(x.shape)
    for e in range(experts.num_experts):
        sel = torch.nonzero(routing.expert == e).flatten()
        if sel.numel() == 0:
            continue
        tok = routing.token[sel]
        out = experts.forward_expert(e, x[tok]) * routing.weight[sel].to(x.dtype).unsqueeze(-1)
        y = y.index_add(0, tok, out)
    return y


def _act_backward(name: str, grad: Tensor, pre: Tensor) -> Tensor:
    if name == "gelu":
        return torch.ops.aten.gelu_backward(grad, pre)
    if name == "silu":
        return torch.ops.aten.silu_backward(grad, pre)
    return grad * (pre > 0).to(grad.dtype)                                        # relu


class _FusedExperts(torch.autograd.Function):
    """y = Σ_slots slot_weight · FFN_e(x[slot_token]) scattered back to tokens, in one node.

    Inputs: x (N, D), slot_token (E·C,) long, slot_weight (E·C,), activation name,
    w1 (E, D, H), b1 (E, H), w2 (E, H, D), b2 (E, D). Output y (N, D).
    """

    @staticmethod
    def forward(ctx, x, slot_token, slot_weight, activation, w1, b1, w2, b2):
        e, d = w1.shape[0], x.shape[1]
        buf = x.index_select(0, slot_token).view(e, -1, d)                      # (E, C, D)
        pre = torch.baddbmm(b1.unsqueeze(1), buf, w1)                            # (E, C, H)
        h = ACTIVATIONS[activation](pre)
        out = torch.baddbmm(b2.unsqueeze(1), h, w2).view(-1, d)                 # (E·C, D)
        y = x.new_zeros(x.shape).index_add_(0, slot_token, out * slot_weight.unsqueeze(-1))
        ctx.activation = activation
        ctx.save_for_backward(slot_token, slot_weight, buf, pre, h, out, w1, w2)
        return y

    @staticmethod
    def backward(ctx, gy):
        slot_token, slot_weight, buf, pre, h, out, w1, w2 = ctx.saved_tensors
        e, c, d = buf.shape
        gy = gy.contiguous()           # e.g. the expanded gradient of a .sum()
        g_yw = gy.index_select(0, slot_token)                                    # (E·C, D)
        g_weight = (g_yw * out).sum(-1) if ctx.needs_input_grad[2] else None
        g_out = (g_yw * slot_weight.unsqueeze(-1)).view(e, c, d)
        g_w2 = torch.bmm(h.transpose(1, 2), g_out)
        g_b2 = g_out.sum(1)
        g_pre = _act_backward(ctx.activation, torch.bmm(g_out, w2.transpose(1, 2)), pre)
        g_w1 = torch.bmm(buf.transpose(1, 2), g_pre)
        g_b1 = g_pre.sum(1)
        g_x = None
        if ctx.needs_input_grad[0]:
            g_buf = torch.bmm(g_pre, w1.transpose(1, 2)).view(e * c, d)
            g_x = gy.new_zeros(gy.shape).index_add_(0, slot_token, g_buf)
        return g_x, None, g_weight, None, g_w1, g_b1, g_w2, g_b2
