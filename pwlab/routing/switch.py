"""Switch routing (Fedus et al. 2021): top-1, combine weight = the chosen expert's probability.

Keeping the raw probability (not renormalising to 1) is what lets the router learn with
k = 1: the output is ``p_i(x) · E_i(x)``, so the gradient reaches the gate (Switch eq. 2).
Optional multiplicative input jitter in training (Switch §2.4), from the explicit generator.
"""
from __future__ import annotations

from torch import Tensor

from pwlab import _checks
from pwlab.routing.base import LinearGate, softmax_experts, uniform
from pwlab.routing.contract import Routing, token_choice


class Switch(LinearGate):
    """Top-1 routing with the probability as weight."""

    trusted = True
    noise_knob = "jitter"

    def __init__(self, *, jitter: float = 0.0, d_model: int | None = None, num_experts: int | None = None):
        self.jitter = _checks.non_negative_float("jitter", jitter)
        super().__init__(top_k=1, d_model=d_model, num_experts=num_experts)

    def route(self, x: Tensor, *, task, token_ids, generator) -> Routing:
        if self.training and self.jitter > 0:
            x = x * (1 - self.jitter + 2 * self.jitter * uniform(x.shape, like=x, generator=generator))
        logits = self.logits(x)
        probs = softmax_experts(logits)
        weight, expert = probs.max(-1, keepdim=True)              # (N, 1)
        return token_choice(probs, logits, expert, weight)
