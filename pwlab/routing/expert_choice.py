"""Expert-choice routing (Zhou et al. 2022): experts pick tokens instead of tokens experts.

Scores ``S = softmax(x·W_g)`` over experts, (N, E); transpose to (E, N) and let each expert
take its top-C tokens, ``C = ceil(N · capacity_factor / E)`` (capped at N). Every expert is
exactly full, so no balancing loss is needed; a token may get several experts or none
(it then passes through the residual). The gate weight is the token's score for that expert.
``capacity_factor`` is the average number of experts per token, so it lies in
``(0, num_experts]``: at ``num_experts`` every expert takes every token, and a larger factor
would name work that cannot happen (it is refused when the router is bound).
Not usable for causal decoding: choosing needs the whole batch.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from pwlab import _checks
from pwlab.routing.base import LinearGate, softmax_experts
from pwlab.routing.contract import Routing


def expert_choice_capacity(num_tokens: int, num_experts: int, capacity_factor: float) -> int:
    """C = ceil(N·c/E), at most N."""
    return min(num_tokens, math.ceil(num_tokens * capacity_factor / num_experts))


class ExpertChoice(LinearGate):
    """Each expert takes its ``C`` highest-scoring tokens."""

    trusted = True
    kind = "expert_choice"     # experts fill themselves: the layer applies no capacity

    def __init__(self, *, capacity_factor: float = 2.0, d_model: int | None = None, num_experts: int | None = None):
        self.capacity_factor = _checks.positive_float("capacity_factor", capacity_factor)
        # top_k is the *average* number of experts per token, rounded up, for FLOP accounting
        super().__init__(top_k=1, d_model=d_model, num_experts=num_experts)
        self.top_k = max(1, math.ceil(self.capacity_factor))

    def set_capacity_factor(self, value: float) -> None:
        """Change the capacity factor (and with it ``top_k``, the rounded-up experts per token),
        checked as at construction and binding."""
        value = _checks.positive_float("capacity_factor", value)
        if self.num_experts is not None:
            self._check_factor(value, self.num_experts)
        self.capacity_factor = value
        self.top_k = max(1, math.ceil(value))

    def _check_top_k(self, num_experts: int) -> None:
        self._check_factor(self.capacity_factor, num_experts)

    @staticmethod
    def _check_factor(value: float, num_experts: int) -> None:
        # experts choose, so a token may get up to E experts, but no more: a factor above E
        # would report (and a dense twin would be sized for) experts per token that never run
        if value > num_experts:
            raise ValueError(f"capacity_factor must be in (0, num_experts={num_experts}] for expert choice "
                             f"(at num_experts every expert already takes every token), "
                             f"got {value}")

    def route(self, x: Tensor, *, task, token_ids, generator) -> Routing:
        logits = self.logits(x)
        probs = softmax_experts(logits)                                 # (N, E)
        n, e = probs.shape
        c = expert_choice_capacity(n, e, self.capacity_factor)
        weight, token = probs.t().topk(c, dim=-1)                  # (E, C)
        expert = torch.arange(e, device=x.device).repeat_interleave(c)
        return Routing(token=token.reshape(-1), expert=expert, weight=weight.reshape(-1),
                       rank=torch.zeros_like(expert), probs=probs, logits=logits, kind="expert_choice")

    def extra_repr(self) -> str:
        return f"capacity_factor={self.capacity_factor}, d_model={self.d_model}, num_experts={self.num_experts}"
