"""Auxiliary losses against hand-computed values."""
from __future__ import annotations

import math

import pytest

import torch

from pwlab import losses


def test_switch_loss_is_one_for_uniform_routing():
    e, n = 8, 64
    probs = torch.full((n, e), 1 / e)
    expert = torch.arange(n) % e                      # perfectly balanced
    assert math.isclose(float(losses.load_balancing(probs, expert)), 1.0, rel_tol=1e-6)
    alpha = 1e-2
    assert math.isclose(alpha * float(losses.load_balancing(probs, expert)), alpha, rel_tol=1e-6)


def test_switch_loss_by_hand_with_top2_counting():
    # 2 tokens, 2 experts, top-2 → A = 4 assignments, f = (2/4, 2/4)... make it uneven:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    expert = torch.tensor([0, 0, 0, 1])               # f = (3/4, 1/4)
    p = probs.mean(0)                                 # (0.75, 0.25)
    expected = 2 * (0.75 * 0.75 + 0.25 * 0.25)       # E·Σ f·P = 2·0.625 = 1.25
    assert math.isclose(float(losses.load_balancing(probs, expert)), expected, rel_tol=1e-6)
    assert math.isclose(float(p[0]), 0.75)


def test_switch_loss_collapsed_routing_is_num_experts():
    e = 4
    probs = torch.zeros(10, e)
    probs[:, 0] = 1
    assert math.isclose(float(losses.load_balancing(probs, torch.zeros(10, dtype=torch.long))), e)


def test_z_loss_of_zero_logits_is_log_e_squared():
    for e in (2, 8, 32):
        assert math.isclose(float(losses.z_loss(torch.zeros(5, e))), math.log(e) ** 2, rel_tol=1e-6)


def test_z_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])     # logsumexp = log(1 + 3) = log 4
    assert math.isclose(float(losses.z_loss(logits)), math.log(4) ** 2, rel_tol=1e-6)


def test_cv_squared_by_hand():
    assert math.isclose(float(losses.cv_squared(torch.tensor([1.0, 3.0]))), 0.25, rel_tol=1e-6)   # var 1, mean 2
    assert float(losses.cv_squared(torch.tensor([2.0, 2.0, 2.0]))) == 0.0
    assert float(losses.cv_squared(torch.tensor([5.0]))) == 0.0


def test_entropies_by_hand():
    uniform = torch.full((3, 4), 0.25)
    assert math.isclose(float(losses.router_entropy(uniform)), math.log(4), rel_tol=1e-6)
    onehot = torch.eye(4)
    assert float(losses.router_entropy(onehot)) < 1e-9
    # group 0: two sharp tokens on different experts → local 0, global log 2
    probs = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0.25] * 4])
    groups = torch.tensor([0, 0, 1])
    local, glob = losses.group_entropies(probs, groups, 3)
    assert torch.allclose(local, torch.tensor([0.0, math.log(4), 0.0]), atol=1e-6)
    assert torch.allclose(glob, torch.tensor([math.log(2), math.log(4), 0.0]), atol=1e-6)
    out = losses.limoe_entropy_losses(probs, groups, 3)
    assert math.isclose(float(out["entropy_local"]), math.log(4), rel_tol=1e-6)
    assert math.isclose(float(out["entropy_global"]), -(math.log(2) + math.log(4)), rel_tol=1e-6)
    thr = losses.limoe_entropy_losses(probs, groups, 3, global_threshold=1.0)   # only group 0 is below 1 nat
    assert math.isclose(float(thr["entropy_global"]), -math.log(2), rel_tol=1e-6)


def test_losses_have_gradients_where_they_should():
    logits = torch.randn(6, 4, requires_grad=True)
    probs = logits.softmax(-1)
    expert = probs.argmax(-1)
    total = losses.load_balancing(probs, expert) + losses.z_loss(logits)
    total.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


@pytest.mark.parametrize("name, call", [
    ("probs", lambda p, e: losses.load_balancing(p, e)),
    ("logits", lambda p, e: losses.z_loss(p)),
    ("probs", lambda p, e: losses.router_entropy(p)),
    ("probs", lambda p, e: losses.limoe_entropy_losses(p, torch.zeros(4, dtype=torch.long))),
])
def test_losses_refuse_nan_input_unless_the_caller_vouches_for_it(name, call):
    """NaN in a public call is an error naming the argument; the MoE layer, whose router
    outputs come from checked input, passes check_finite=False and pays no extra check."""
    probs = torch.full((4, 3), 1 / 3)
    probs[2, 1] = float("nan")
    expert = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=f"{name} contains NaN"):
        call(probs, expert)
    assert not torch.isfinite(losses.load_balancing(probs, expert, check_finite=False))
