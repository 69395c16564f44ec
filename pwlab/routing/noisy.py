"""Noisy top-k gating with its importance + load loss, as in Shazeer et al. 2017 (§2.1, App. A).

    H(x)_i = (x·W_g)_i + ε · softplus((x·W_noise)_i),   ε ~ N(0, 1)       (eq. 4)
    G(x)   = softmax(KeepTopK(H(x), k))                                    (eq. 3)

Importance_i = Σ_x G(x)_i. Load uses the smooth estimator (eq. 8–10): the probability that
expert i stays in the top k if only its own noise is redrawn,
``P(x, i) = Φ((clean_i − threshold_i) / σ_i)`` with threshold_i the k-th largest noisy logit
among the *other* experts — the (k+1)-th largest overall when i is itself in the top k.
Loss = CV²(importance) + CV²(load) (the paper weights them separately; we use one weight).
Softmax is applied after top-k and thresholds compare raw noisy logits, as in the paper.
In eval mode no noise is drawn and the load term uses hard counts.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pwlab import _checks
from pwlab.losses import cv_squared
from pwlab.routing.base import LinearGate, noise, softmax_experts
from pwlab.routing.contract import Routing, token_choice


class NoisyTopK(LinearGate):
    """Top-k of noisy logits; ``Routing.aux_losses["importance_load"]`` holds the paper's loss."""

    trusted = True
    noise_knob = "noise_eps"

    def __init__(self, *, top_k: int = 2, noise_eps: float = 1e-2, d_model: int | None = None,
                 num_experts: int | None = None):
        self.noise_eps = _checks.non_negative_float("noise_eps", noise_eps)
        super().__init__(top_k=top_k, d_model=d_model, num_experts=num_experts)

    def build(self) -> None:
        super().build()
        self.w_noise = nn.Linear(self.d_model, self.num_experts, bias=False)
        nn.init.zeros_(self.w_noise.weight)   # the paper initialises W_g and W_noise to zero

    def route(self, x: Tensor, *, task, token_ids, generator) -> Routing:
        k, e = self.top_k, self.num_experts
        clean = self.logits(x)                                                  # (N, E)
        if self.training:
            sigma = nn.functional.softplus(self.w_noise(x.to(clean.dtype))) + self.noise_eps
            noisy = clean + noise(clean.shape, like=clean, generator=generator) * sigma
        else:
            sigma, noisy = None, clean
        m = min(k + 1, e)
        top_vals, top_idx = noisy.topk(m, dim=-1)                               # (N, k+1)
        expert = top_idx[:, :k]
        weight = top_vals[:, :k].softmax(-1)
        gates = torch.zeros_like(clean).scatter(1, expert, weight)              # (N, E) = G(x)
        importance = gates.sum(0)
        if sigma is not None and m > k:
            in_top = torch.zeros_like(clean, dtype=torch.bool).scatter(1, expert, True)
            threshold = torch.where(in_top, top_vals[:, k:k + 1], top_vals[:, k - 1:k])
            load = torch.special.ndtr((clean - threshold) / sigma).sum(0)          # Φ(·), eq. 9
        else:   # no noise (eval) or k == E: the load is the hard count
            load = (gates > 0).to(clean.dtype).sum(0)
        loss = cv_squared(importance, check_finite=False) + cv_squared(load, check_finite=False)
        return token_choice(softmax_experts(noisy), noisy, expert, weight, aux_losses={"importance_load": loss})
