"""Hash routing (Roller et al. 2021): a fixed, parameter-free map from token id to expert.

We use a seeded random table over token ids modulo ``num_buckets`` (the paper's "random hash"
works as well as cleverer ones), so the map is fixed at construction, balanced in
expectation, and reproducible from ``seed``. No router parameters, no balancing loss; the
router never learns, so ``probs`` is one-hot and ``logits`` its log (clamped).
"""
from __future__ import annotations

import torch
from torch import Tensor

from pwlab import _checks
from pwlab.routing.base import Router
from pwlab.routing.contract import Routing, token_choice


class HashRouter(Router):
    """expert = table[token_id mod num_buckets]; weight 1."""

    expert_id_tables = ("table",)

    trusted = True
    needs_token_ids = True

    def __init__(self, *, num_buckets: int = 4096, seed: int = 0, d_model: int | None = None,
                 num_experts: int | None = None):
        self.num_buckets = _checks.positive_int("num_buckets", num_buckets)
        self.seed = _checks.positive_int("seed", seed, minimum=0, maximum=2**63 - 1)
        super().__init__(top_k=1, d_model=d_model, num_experts=num_experts)

    def build(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        # a balanced table: each expert appears num_buckets/E times, in a random order
        table = torch.arange(self.num_buckets) % self.num_experts
        self.register_buffer("table", table[torch.randperm(self.num_buckets, generator=g)], persistent=True)

    def route(self, x: Tensor, *, task, token_ids: Tensor, generator) -> Routing:
        expert = self.table[token_ids.to(self.table.device).remainder(self.num_buckets)].unsqueeze(-1)   # (N, 1)
        probs = torch.zeros(x.shape[0], self.num_experts, device=x.device, dtype=torch.float32)
        probs.scatter_(1, expert, 1.0)
        weight = torch.ones(expert.shape, device=x.device, dtype=torch.float32)
        return token_choice(probs, probs.clamp_min(1e-9).log(), expert, weight)
