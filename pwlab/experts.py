"""A bank of E feed-forward experts stored as stacked tensors.

Stacking (``w1 (E, D, H)``, ``w2 (E, H, D)``) instead of E separate ``nn.Linear`` modules lets
the fast dispatch run every expert in one batched matmul, and keeps checkpoints small.
Subclasses (SWAT) may change what :meth:`weights` returns; both dispatch paths use it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pwlab import _checks

ACTIVATIONS = {"gelu": nn.functional.gelu, "relu": nn.functional.relu, "silu": nn.functional.silu}


class ExpertBank(nn.Module):
    """E independent two-layer FFNs ``x ↦ act(x·W1_e + b1_e)·W2_e + b2_e``."""

    def __init__(self, num_experts: int, d_model: int, d_hidden: int, activation: str = "gelu"):
        super().__init__()
        self.num_experts = _checks.positive_int("num_experts", num_experts)
        self.d_model = _checks.positive_int("d_model", d_model)
        self.d_hidden = _checks.positive_int("d_hidden", d_hidden)
        self.activation = _checks.one_of("activation", activation, ACTIVATIONS)
        _checks.num_elements("the expert weights", num_experts=num_experts, d_model=d_model, d_hidden=d_hidden)
        e, d, h = num_experts, d_model, d_hidden
        self.w1 = nn.Parameter(torch.empty(e, d, h))
        self.b1 = nn.Parameter(torch.zeros(e, h))
        self.w2 = nn.Parameter(torch.empty(e, h, d))
        self.b2 = nn.Parameter(torch.zeros(e, d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same init as nn.Linear, one expert at a time
        for w, fan_in in ((self.w1, self.d_model), (self.w2, self.d_hidden)):
            nn.init.uniform_(w, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)

    def weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(w1, b1, w2, b2) as used in forward."""
        return self.w1, self.b1, self.w2, self.b2

    def forward_padded(self, buf: Tensor) -> Tensor:
        """All experts on a padded buffer: ``buf (E, C, D) -> (E, C, D)`` (two batched matmuls)."""
        w1, b1, w2, b2 = self.weights()
        h = ACTIVATIONS[self.activation](torch.baddbmm(b1.unsqueeze(1), buf, w1))    # (E, C, H)
        return torch.baddbmm(b2.unsqueeze(1), h, w2)

    def forward_expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` alone on ``x (n, D) -> (n, D)``: the reference path."""
        _checks.index("e", e, self.num_experts)
        w1, b1, w2, b2 = self.weights()
        h = ACTIVATIONS[self.activation](x @ w1[e] + b1[e])
        return h @ w2[e] + b2[e]

    def expert_parameters(self, e: int) -> int:
        return self.d_model * self.d_hidden * 2 + self.d_hidden + self.d_model

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, d_model={self.d_model}, d_hidden={self.d_hidden}, activation={self.activation!r}"
