"""What one MoE call did: :class:`MoEStats`, the second half of ``y, stats = layer(x)``.

Index legend: N tokens, E experts, A assignments, C capacity per expert.

The stats hold what the forward pass had at hand (counts, the auxiliary losses, the proposed
:class:`~pwlab.routing.Routing` and the ``kept`` mask over it); what only a reader needs (the kept
routing, the load, the dropped fraction, the router entropy) is derived on first access, so a
training loop that never looks pays nothing. :class:`_FusedStats` is the same for the one-node
path of :mod:`pwlab.fused`, which assembles even the proposed routing only when read.

Separate from :mod:`pwlab.moe` (the layer) because every reader of a layer's output — the
model's blocks, Soft MoE, the expert-parallel stats, the pathway maps and the figures — needs
this type and none of the layer; ``pwlab.moe`` re-exports :class:`MoEStats`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from pwlab import fused, losses
from pwlab.routing.contract import Routing


@dataclass(frozen=True, eq=False)
class MoEStats:
    """What one MoE call did.

    Fields:
        counts: (E,) long, kept (computed) assignments per expert.
        proposed_counts: (E,) long, the router's assignments per expert, before capacity.
        aux_losses: unweighted auxiliary losses by name (differentiable).
        aux_loss: () their weighted sum (differentiable).
        proposed: the router's :class:`Routing` (before capacity and ablation).
        kept: (A,) bool, which proposed assignments were computed.
        capacity: C, or None when dropless.

    Derived on first access (so a training loop that never looks pays nothing), detached:
        routing: the kept :class:`Routing`, what the pathway maps count.
        load: (E,) float, fraction of the kept assignments per expert.
        dropped_fraction: () float, dropped / proposed assignments (expert choice: the
            fraction of tokens that no expert took).
        router_entropy: () float, mean per-token routing entropy in nats.
    """

    counts: Tensor
    proposed_counts: Tensor
    aux_losses: dict[str, Tensor]
    aux_loss: Tensor
    proposed: Routing
    kept: Tensor
    capacity: int | None = None

    @cached_property
    def routing(self) -> Routing:
        return self.proposed.select(self.kept)

    @cached_property
    def load(self) -> Tensor:
        return self.counts.float() / self.counts.sum().clamp_min(1)

    @cached_property
    def dropped_fraction(self) -> Tensor:
        p = self.proposed
        if p.kind == "expert_choice":
            if p.num_tokens == 0:
                return torch.zeros(())
            taken = torch.zeros(p.num_tokens, dtype=torch.bool, device=self.kept.device)
            taken[p.token[self.kept]] = True
            return 1 - taken.float().mean()
        if p.num_assignments == 0:
            return torch.zeros(())
        return 1 - self.counts.sum().float() / p.num_assignments

    @cached_property
    def router_entropy(self) -> Tensor:
        return losses.router_entropy(self.proposed.probs.detach(), check_finite=False)


class _FusedStats(MoEStats):
    """:class:`MoEStats` of the fused path, whose ``proposed`` routing is assembled on first read
    from the fused node's rank-major tensors (most training steps never read it)."""

    def __init__(self, raw: tuple[Tensor, Tensor, Tensor, Tensor], **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_raw", raw)

    @cached_property
    def proposed(self) -> Routing:
        expert_t, weight_t, probs_t, logits_t = self._raw
        k, n = expert_t.shape
        token, rank = fused.rank_major_layout(n, k, expert_t.device)
        return Routing(token=token, expert=expert_t.reshape(-1), weight=weight_t.reshape(-1), rank=rank,
                       probs=probs_t.t(), logits=logits_t.t())
