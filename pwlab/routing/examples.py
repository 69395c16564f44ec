"""A complete custom router, written only against the public contract: top-p routing.

This is the example of ``docs/architecture.md`` ("Write your own router") and it is run by
``tests/test_router_contract.py``. It is not registered by default: a user registers it
(or their own copy) with ``pwlab.register_router("top_p", TopP)``.

Top-p routing (Huang et al. 2024, "Harder Tasks Need More Experts: Dynamic Routing in MoE
Models", arXiv 2403.07652): each token takes its most probable experts, best first, until
their probabilities sum to at least ``p``. A confident token runs one expert, an uncertain
one several, so the number of experts per token varies; ``top_k`` is the number declared for
FLOP accounting and the capacity budget (see :class:`pwlab.routing.Router`).
"""
from __future__ import annotations

from torch import Tensor

from pwlab.routing import LinearGate, Routing, softmax_experts


class TopP(LinearGate):
    """Each token takes its best experts until their probabilities reach ``p``; weight = probability.

    Args:
        p: probability mass to cover, in (0, 1].
        top_k: the experts per token it declares (the expected number, for FLOPs and capacity).
    """

    def __init__(self, *, p: float = 0.5, top_k: int = 1, d_model: int | None = None, num_experts: int | None = None):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ValueError(f"p must be a number in (0, 1], got {p!r}")
        self.p = float(p)
        super().__init__(top_k=top_k, d_model=d_model, num_experts=num_experts)   # build() makes self.gate

    def route(self, x: Tensor, *, task, token_ids, generator) -> Routing:
        logits = self.logits(x)                                       # (N, E)
        probs = softmax_experts(logits)
        best, order = probs.sort(dim=-1, descending=True)             # (N, E), best first
        before = best.cumsum(-1) - best                               # mass of the better experts
        take = before < self.p                                        # the first expert always
        token, rank = take.nonzero(as_tuple=True)                     # (A,), token-major
        return Routing(token=token, expert=order[token, rank], weight=best[token, rank], rank=rank,
                       probs=probs, logits=logits)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"
