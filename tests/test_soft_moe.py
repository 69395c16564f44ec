"""Soft MoE against a naive per-sequence implementation of Puigcerver et al. 2023, eq. 1-2."""
from __future__ import annotations

import pytest
import torch

from pwlab.soft_moe import SoftMoE

D, H, E, S = 6, 10, 3, 2


def _naive(layer: SoftMoE, x: torch.Tensor) -> torch.Tensor:
    """One sequence (T, D), slot by slot and token by token."""
    t = x.shape[0]
    logits = x @ layer.phi                                     # (T, E·S)
    y = torch.zeros_like(x)
    slot_out = []
    for n in range(E * S):
        w = torch.softmax(logits[:, n], 0)                     # dispatch: over tokens
        slot_in = sum(w[i] * x[i] for i in range(t))
        slot_out.append(layer.experts.forward_expert(n // S, slot_in.unsqueeze(0))[0])
    for i in range(t):
        c = torch.softmax(logits[i], 0)                        # combine: over slots
        y[i] = sum(c[n] * slot_out[n] for n in range(E * S))
    return y


def test_matches_the_naive_equations_per_sequence():
    torch.manual_seed(0)
    layer = SoftMoE(D, H, E, slots_per_expert=S).double()
    x = torch.randn(2, 5, D, dtype=torch.float64)
    y, stats = layer(x)
    for b in range(2):
        assert torch.allclose(y[b], _naive(layer, x[b]), atol=1e-10)
    assert stats.counts.sum() == 10 and float(stats.dropped_fraction) == 0.0


def test_padding_is_ignored():
    torch.manual_seed(1)
    layer = SoftMoE(D, H, E, slots_per_expert=S).double()
    x = torch.randn(1, 6, D, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True, False, False]])
    y, stats = layer(x, mask=mask)
    assert torch.allclose(y[0, :4], _naive(layer, x[0, :4]), atol=1e-10)
    assert stats.proposed.num_tokens == 4


def test_gradients_and_two_dimensional_input():
    layer = SoftMoE(D, H, E)
    x = torch.randn(7, D, requires_grad=True)
    y, _ = layer(x)
    y.pow(2).sum().backward()
    assert y.shape == (7, D)
    assert x.grad is not None and layer.phi.grad is not None and float(layer.phi.grad.abs().sum()) > 0


def test_bad_input():
    with pytest.raises(ValueError, match="slots_per_expert"):
        SoftMoE(D, H, E, slots_per_expert=0)
    with pytest.raises(ValueError, match="d_model"):
        SoftMoE(D, H, E)(torch.randn(3, D + 1))
