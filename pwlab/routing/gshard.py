"""GShard top-2 gating (Lepikhin et al. 2020, Algorithm 1).

Each token always goes to its best expert; the second-best is kept only with probability
``min(1, 2·g₂)`` where ``g₁ + g₂ = 1`` are the two normalised gate values: a token that
clearly prefers one expert rarely spends a second one. The random draw comes from the
explicit generator; in eval mode the second expert is kept whenever ``2·g₂ ≥ 0.5``
(i.e. g₂ ≥ 1/4), so evaluation is deterministic. Capacity is applied by the MoE layer.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pwlab.routing.base import LinearGate, softmax_experts, uniform
from pwlab.routing.contract import Routing, token_choice


class GShardTop2(LinearGate):
    """Top-2 with a randomly dropped second expert."""

    trusted = True

    def __init__(self, *, d_model: int | None = None, num_experts: int | None = None):
        super().__init__(top_k=2, d_model=d_model, num_experts=num_experts)

    def route(self, x: Tensor, *, task, token_ids, generator) -> Routing:
        logits = self.logits(x)
        probs = softmax_experts(logits)
        top, expert = probs.topk(2, dim=-1)                       # (N, 2)
        gates = top / top.sum(-1, keepdim=True)                   # g1 + g2 = 1
        keep_p = (2 * gates[:, 1]).clamp(max=1.0).detach()
        if self.training:
            keep2 = uniform(keep_p.shape, like=keep_p, generator=generator) < keep_p
        else:
            keep2 = keep_p >= 0.5
        routing = token_choice(probs, logits, expert, gates)
        keep = torch.stack([torch.ones_like(keep2), keep2], dim=-1).reshape(-1)
        return routing.select(keep)
