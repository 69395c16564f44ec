"""Dispatch: the capacity step, and the backends that move tokens to experts and back.

Index legend: N tokens, D d_model, H d_hidden, E experts, A assignments, C capacity (slots
per expert).

:func:`keep` is the capacity step (which assignments each expert computes, in priority order);
a backend (:class:`Backend`) then computes ``y = backend(x, routing, kept, experts)``. Two live
here, by ``MoE(dispatch=...)`` name (:data:`DISPATCH_BACKENDS`): :class:`PaddedDispatch`
(``"fast"``) and :class:`LoopDispatch` (``"loop"``, the reference). The one-node top-k layer
(:mod:`pwlab.fused`) is the padded backend's fast form for the configurations it covers, and
the expert-parallel backend is :class:`pwlab.distributed.ep_moe.ExpertParallelDispatch`.

``dispatch_fast`` puts every kept assignment into slot ``expert·C + position`` of an
(E, C, D) buffer and runs all experts with two batched matmuls. For the plain
:class:`~pwlab.experts.ExpertBank` the gather → experts → weighted scatter chain is one
autograd function with a hand-written backward (the same maths as autograd, fewer graph
nodes: on a CPU the per-op overhead, not the FLOPs, dominates small MoE layers); its expert
FFN, forward and backward, is :mod:`pwlab.expert_kernels`' padded layout, the one the fused
node uses too. Which bank that is, the bank says (``experts.plain_ffn()``). Any other
bank — the gated :class:`~pwlab.experts.GatedExpertBank`, the SWAT banks — takes the generic
padded path: gather into the buffer, ``experts.forward_padded(buf)``, weighted scatter, all
plain autograd.
``dispatch_loop`` is the reference, one expert at a time; tests tie the two together.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pwlab import expert_kernels as kernels
from pwlab.experts import ExpertBank, GatedExpertBank
from pwlab.routing.contract import Routing


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
    ffn = experts.plain_ffn()
    if ffn is not None:                                                          # the plain bank only
        return _FusedExperts.apply(x, slot_token, slot_weight, experts.activation, *ffn)
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


class _FusedExperts(torch.autograd.Function):
    """y = Σ_slots slot_weight · FFN_e(x[slot_token]) scattered back to tokens, in one node
    (the expert FFN and its backward: :mod:`pwlab.expert_kernels`, padded layout).

    Inputs: x (N, D), slot_token (E·C,) long, slot_weight (E·C,), activation name,
    w1 (E, D, H), b1 (E, H), w2 (E, H, D), b2 (E, D). Output y (N, D).
    """

    @staticmethod
    def forward(ctx, x, slot_token, slot_weight, activation, w1, b1, w2, b2):
        e, d = w1.shape[0], x.shape[1]
        buf = x.index_select(0, slot_token).view(e, -1, d)                      # (E, C, D)
        out, pre, h = kernels.padded_forward(buf, w1, b1, w2, b2, activation)
        out = out.view(-1, d)                                                    # (E·C, D)
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
        g_buf, g_w1, g_b1, g_w2, g_b2 = kernels.padded_backward(g_out, buf, pre, h, w1, w2, ctx.activation,
                                                                ctx.needs_input_grad[0])
        g_x = gy.new_zeros(gy.shape).index_add_(0, slot_token, g_buf.view(e * c, d)) if g_buf is not None else None
        return g_x, None, g_weight, None, g_w1, g_b1, g_w2, g_b2


# -- the capacity step and the backends ------------------------------------------------------------

class Kept(NamedTuple):
    """What the capacity step kept of a proposed routing (A assignments, E experts).

    ``mask (A,)`` bool, the assignments computed; ``position (A,)`` each assignment's place in its
    expert's priority queue; ``counts (E,)`` kept per expert; ``proposed_counts (E,)`` proposed per
    expert; ``slots`` the fullest expert's kept count (C' of the padded buffer, 0 when nothing is
    computed)."""

    mask: Tensor
    position: Tensor
    counts: Tensor
    proposed_counts: Tensor
    slots: int


def keep(routing: Routing, capacity: int | None, policy: str = "position", enabled: Tensor | None = None) -> Kept:
    """The capacity step: at most ``capacity`` assignments per expert (None: all), in ``policy``
    priority order; with ``enabled (E,)`` bool (ablation) assignments to a switched-off expert are
    dropped too, the enabled experts keeping their queue positions (an expert's queue does not
    depend on the other experts)."""
    position, counts = slot_positions(routing, policy)
    if enabled is None:
        mask = position < capacity if capacity is not None else torch.ones_like(position, dtype=torch.bool)
        kept_counts = counts.clamp(max=capacity) if capacity is not None else counts
    else:
        mask = enabled[routing.expert]
        if capacity is not None:
            mask = mask & (position < capacity)
        kept_counts = torch.bincount(routing.expert[mask], minlength=routing.num_experts)
    slots = int(kept_counts.max()) if routing.num_assignments else 0
    return Kept(mask, position, kept_counts, counts, slots)


class Backend:
    """Runs the experts on the kept assignments of a routing: ``y = backend(x, routing, kept,
    experts)``, ``x (N, D) -> y (N, D)``, the sum over each token's kept assignments of its
    combine weight times its expert's output; a dropped assignment adds nothing.

    ``finish(stats)`` gives the layer's :class:`~pwlab.moe.MoEStats` back, completed as the
    backend needs (the expert-parallel one makes its counts global)."""

    name = ""

    def __call__(self, x: Tensor, routing: Routing, kept: Kept, experts) -> Tensor:
        raise NotImplementedError

    def finish(self, stats):
        return stats

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _nothing_computed(x: Tensor, routing: Routing) -> Tensor:
    """A zero output that still hangs on x and the router, so backward gives them zero gradients
    (a router without parameters, as hash routing, would otherwise leave nothing to differentiate)."""
    return x * 0 + 0 * routing.weight.sum()


class LoopDispatch(Backend):
    """``dispatch="loop"``: the reference, one expert at a time (:func:`dispatch_loop`)."""

    name = "loop"

    def __call__(self, x, routing, kept, experts):
        if kept.slots == 0:
            return _nothing_computed(x, routing)
        return dispatch_loop(x, routing.select(kept.mask), experts)


class PaddedDispatch(Backend):
    """``dispatch="fast"``: every expert padded to the fullest one's kept count, all experts in
    two batched matmuls (:func:`dispatch_fast`)."""

    name = "fast"

    def __call__(self, x, routing, kept, experts):
        if kept.slots == 0:
            return _nothing_computed(x, routing)
        return dispatch_fast(x, routing, torch.where(kept.mask, kept.position, kept.slots), experts, kept.slots)


#: the single-process backends, by ``MoE(dispatch=...)`` name
DISPATCH_BACKENDS: dict[str, Backend] = {"fast": PaddedDispatch(), "loop": LoopDispatch()}
