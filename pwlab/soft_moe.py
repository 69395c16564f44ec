"""Soft MoE (Puigcerver et al. 2023): every expert sees soft mixtures of all tokens.

Index legend: B sequences, T tokens per sequence, D d_model, E experts, S slots per expert.

Per sequence, logits ``X·Φ`` (T, E·S). Dispatch weights: softmax over the *tokens* for each
slot — a slot's input is a convex mix of the sequence's tokens (eq. 1). Combine weights:
softmax over all *slots* for each token — a token's output is a convex mix of the slot
outputs (eq. 2). Nothing is dropped and nothing is discrete, so Soft MoE is not a
:class:`~pwlab.routing.Router`; to keep one vocabulary, its :class:`~pwlab.moe.MoEStats`
report each token's strongest expert (largest combine mass) as a top-1 routing.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pwlab import _checks
from pwlab.experts import ExpertBank
from pwlab.moe_stats import MoEStats
from pwlab.routing.contract import Routing


class SoftMoE(nn.Module):
    """A Soft MoE FFN: ``forward(x (B, T, D) or (T, D), mask=None) -> (y, MoEStats)``."""

    def __init__(self, d_model: int, d_hidden: int, num_experts: int, *, slots_per_expert: int = 1,
                 activation: str = "gelu"):
        super().__init__()
        self.d_model = _checks.positive_int("d_model", d_model)
        self.num_experts = _checks.positive_int("num_experts", num_experts)
        self.slots_per_expert = _checks.positive_int("slots_per_expert", slots_per_expert)
        _checks.num_elements("phi", d_model=d_model, num_experts=num_experts, slots_per_expert=slots_per_expert)
        self.phi = nn.Parameter(torch.randn(d_model, num_experts * slots_per_expert) * d_model ** -0.5)
        self.experts = ExpertBank(num_experts, d_model, d_hidden, activation)
        self.top_k = 1

    def forward(self, x: Tensor, *, mask: Tensor | None = None, **_ignored) -> tuple[Tensor, MoEStats]:
        _checks.float_input("x", x, self.phi.device, self.phi.dtype)
        _checks.last_dim("x", x, self.d_model)
        _checks.finite_tensor("x", x)
        if mask is not None:
            _checks.bool_mask("mask", mask, x.shape[:-1], x.device)
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(0)
            mask = None if mask is None else mask.unsqueeze(0)
        if x.dim() != 3:
            raise ValueError(f"x must be (T, d_model) or (B, T, d_model), got shape {tuple(x.shape)}")
        b, t, d = x.shape
        e, s = self.num_experts, self.slots_per_expert
        logits = torch.einsum("btd,dn->btn", x, self.phi)                       # (B, T, E·S)
        if mask is not None:
            if mask.shape != (b, t):
                raise ValueError(f"mask must have shape {(b, t)}, got {tuple(mask.shape)}")
            logits = logits.masked_fill(~mask.bool().unsqueeze(-1), float("-inf"))
        dispatch = logits.softmax(dim=1)                                         # over tokens
        combine = logits.softmax(dim=2)                                          # over slots
        if mask is not None:
            dispatch = torch.nan_to_num(dispatch)                                # sequences with no tokens
            combine = torch.nan_to_num(combine)
        slots_in = torch.einsum("btn,btd->bnd", dispatch, x)                     # (B, E·S, D)
        buf = slots_in.view(b, e, s, d).transpose(0, 1).reshape(e, b * s, d)    # (E, B·S, D)
        out = self.experts.forward_padded(buf).view(e, b, s, d).transpose(0, 1).reshape(b, e * s, d)
        y = torch.einsum("btn,bnd->btd", combine, out)
        stats = self._stats(combine.detach(), logits.detach(), mask)
        return (y.squeeze(0) if squeeze else y), stats

    def _stats(self, combine: Tensor, logits: Tensor, mask: Tensor | None) -> MoEStats:
        e, s = self.num_experts, self.slots_per_expert
        per_expert = combine.view(*combine.shape[:2], e, s).sum(-1)             # (B, T, E)
        flat = per_expert.reshape(-1, e)
        if mask is not None:
            flat = flat[mask.reshape(-1).bool()]
        lg = torch.nan_to_num(logits.view(*logits.shape[:2], e, s), neginf=-1e9).logsumexp(-1).reshape(-1, e)
        if mask is not None:
            lg = lg[mask.reshape(-1).bool()]
        weight, expert = flat.max(-1)
        n = flat.shape[0]
        routing = Routing(token=torch.arange(n), expert=expert, weight=weight, rank=torch.zeros_like(expert),
                          probs=flat, logits=lg, kind="token_choice")
        counts = torch.bincount(expert, minlength=e)
        zero = flat.new_zeros(())
        return MoEStats(counts=counts, proposed_counts=counts, aux_losses={}, aux_loss=zero, proposed=routing,
                        kept=torch.ones(n, dtype=torch.bool), capacity=None)
