"""Tabular sense: one token per feature, value * W_f + b_f (FT-Transformer, Gorishniy et al. 2021)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pwlab._checks import positive_int
from pwlab.senses._common import check_d_model, check_input
from pwlab.senses.base import SENSES, Tokens


class TabularEncoder(nn.Module):
    """(B, F) standardized features -> F tokens, token f = x_f * W_f + b_f.

    W and b are per table (feature f of one table has nothing to do with feature f of
    another), so :class:`pwlab.senses.Senses` keeps one of these per tabular task. b_f also
    plays the role of a feature-position embedding.

    Args:
        d_model: token width D.
        num_features: F.
        id_offset: added to the feature index to form ``token_ids``.

    Shapes: x (B, F) -> tokens (B, F, D).
    """

    sense = SENSES.index("tabular")

    def __init__(self, d_model: int, num_features: int, id_offset: int = 0):
        super().__init__()
        self.d_model = check_d_model(d_model)
        self.num_features = positive_int("num_features", num_features)
        self.num_ids = num_features
        self.id_offset = id_offset
        # FT-Transformer's init: uniform(-1/sqrt(D), 1/sqrt(D)) for both weight and bias
        bound = 1.0 / math.sqrt(d_model)
        self.weight = nn.Parameter(torch.empty(num_features, d_model).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_features, d_model).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tokens:
        check_input(x, dims=2, what=f"(B, F) features with F = num_features={self.num_features}", floating=True)
        if x.shape[1] != self.num_features:
            raise ValueError(f"x must be (B, F) features with F = num_features={self.num_features}, got {tuple(x.shape)}")
        b = x.shape[0]
        tokens = x[:, :, None] * self.weight + self.bias          # (B, F, D)
        ids = (torch.arange(self.num_features, device=x.device) + self.id_offset).expand(b, -1)
        mask = torch.ones(b, self.num_features, dtype=torch.bool, device=x.device)
        return Tokens(tokens=tokens, mask=mask, token_ids=ids, sense=self.sense)
