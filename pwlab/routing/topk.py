"""Top-k softmax routing, in both orders found in the literature.

``order="softmax_topk"`` (Mixtral, DeepSpeed): probabilities over all E experts, keep the k
largest, optionally renormalise them to sum to one. ``order="topk_softmax"`` (Shazeer 2017
without noise, Mesh-TF): keep the k largest logits, softmax over those k only. With
renormalisation both give the same weights; without it, the first keeps the raw probabilities
(their sum tells how confident the router is).
"""
from __future__ import annotations

from torch import Tensor

from pwlab import _checks
from pwlab.routing.base import LinearGate, Routing, softmax_experts, token_choice

ORDERS = ("softmax_topk", "topk_softmax")


class TopK(LinearGate):
    """Token choice: each token picks its ``top_k`` experts by learned logits."""

    def __init__(self, *, k: int = 2, order: str = "softmax_topk", renormalize: bool = True,
                 d_model: int | None = None, num_experts: int | None = None):
        self.order = _checks.one_of("order", order, ORDERS)
        self.renormalize = bool(renormalize)
        super().__init__(top_k=k, d_model=d_model, num_experts=num_experts)

    def route(self, x: Tensor, *, task, token_ids, generator) -> Routing:
        logits = self.logits(x)                                   # (N, E)
        probs = softmax_experts(logits)
        if self.order == "softmax_topk":
            weight, expert = probs.topk(self.top_k, dim=-1)       # (N, k)
            if self.renormalize and self.top_k > 1:
                # with k = 1 renormalising would make every weight 1 and cut the router off
                # from the task loss's gradient, so top-1 keeps the raw probability (as Switch)
                weight = weight / weight.sum(-1, keepdim=True)
        else:
            top_logits, expert = logits.topk(self.top_k, dim=-1)
            weight = top_logits.softmax(-1)
        return token_choice(probs, logits, expert, weight)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", order={self.order!r}, renormalize={self.renormalize}"
