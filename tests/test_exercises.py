"""Each exercise check accepts the reference answer and rejects typical wrong ones with a pointed hint."""
from __future__ import annotations

import math

import pytest
import torch

from pwlab import exercises as ex
from tests.exercise_checks import rejects


# -- moe flops: reference written from the formula, not from pwlab.flops ------------------
def _moe_flops(n, d, h, e, k):
    return 2 * n * d * e + 2 * (n * k) * (2 * d * h)


def test_moe_flops_accepts_formula():
    result = ex.check_moe_flops(_moe_flops)
    assert isinstance(result, ex.Passed) and repr(result).startswith("✓")


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, d, h, e, k: 2 * n * d * e + 2 * (n * e) * (2 * d * h), "only the k chosen experts"),
    (lambda n, d, h, e, k: 2 * (n * k) * (2 * d * h), "router"),
    (lambda n, d, h, e, k: _moe_flops(n, d, h, e, k) // 2, "2 FLOPs"),
    (lambda n, d, h, e, k: 3 * _moe_flops(n, d, h, e, k), "forward pass only"),
    (lambda n, d, h, e, k: "many", "should return a number"),
    (lambda n, d, h, e, k: _moe_flops(n, d, h, e, k) + 1, "expected"),
])
def test_moe_flops_rejects(wrong, hint):
    rejects(ex.check_moe_flops, wrong, hint)


def test_moe_flops_hint_names_the_case():
    msg = rejects(ex.check_moe_flops, lambda *a: 0, "expected")
    assert "tokens=8" in msg and "got 0" in msg


# -- top-k routing -------------------------------------------------------------------------
def _topk(logits, k):
    probs = torch.softmax(logits, dim=-1)
    w, e = probs.topk(k, dim=-1)
    return e, (w / w.sum(-1, keepdim=True) if k > 1 else w)


def test_topk_accepts_reference_and_hand_case():
    assert isinstance(ex.check_topk_routing(_topk), ex.Passed)
    # hand-computed: logits [0, log 3, log 2] -> probs [1/6, 1/2, 1/3]; top-2 = experts 1, 2, weights 3/5, 2/5
    e, w = _topk(torch.tensor([[0.0, math.log(3), math.log(2)]]), 2)
    assert e.tolist() == [[1, 2]] and torch.allclose(w, torch.tensor([[0.6, 0.4]]))


@pytest.mark.parametrize("wrong, hint", [
    (lambda lg, k: (lambda w, e: (e, w))(*torch.softmax(lg, 0).topk(k, -1)), "wrong experts"),
    (lambda lg, k: (lambda w, e: (e, w))(*torch.softmax(lg, -1).topk(k, -1)), "renormalise"),
    (lambda lg, k: (lambda e, w: (e.flip(-1), w.flip(-1)))(*_topk(lg, k)), "wrong order"),
    (lambda lg, k: (lambda e, w: (e, w.sqrt()))(*_topk(lg, k)), "weights differ"),
    (lambda lg, k: _topk(lg, k)[0], "return a pair"),
    (lambda lg, k: (lambda w, e: (e, w / w.sum(-1, keepdim=True)))(*torch.softmax(lg, -1).topk(k, -1)), "k = 1"),
    (lambda lg, k: tuple(t.t() for t in _topk(lg, k)), "shape"),
])
def test_topk_rejects(wrong, hint):
    rejects(ex.check_topk_routing, wrong, hint)


# -- router entropy ------------------------------------------------------------------------
def _entropy(probs):
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()


def test_entropy_accepts_reference():
    assert isinstance(ex.check_router_entropy(_entropy), ex.Passed)
    assert float(_entropy(torch.full((2, 8), 1 / 8))) == pytest.approx(math.log(8))


@pytest.mark.parametrize("wrong, hint", [
    (lambda p: -_entropy(p), "minus sign"),
    (lambda p: _entropy(p) / math.log(2), "natural logarithm"),
    (lambda p: _entropy(p) * p.shape[0], "average over the tokens"),
    (lambda p: _entropy(p.mean(0, keepdim=True)), "not the entropy of the average"),
    (lambda p: torch.zeros(3), "one number"),
])
def test_entropy_rejects(wrong, hint):
    rejects(ex.check_router_entropy, wrong, hint)


# -- capacity ------------------------------------------------------------------------------
def _capacity(n, e, k, cf, convention):
    return math.ceil(cf * n * (k if convention == "k_tokens" else 1) / e)


def test_capacity_accepts_reference():
    assert isinstance(ex.check_capacity(_capacity), ex.Passed)
    assert _capacity(64, 8, 2, 1.0, "k_tokens") == 16 and _capacity(64, 8, 2, 1.0, "tokens") == 8


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, e, k, cf, c: _capacity(n, e, k, cf, "tokens" if c == "k_tokens" else "k_tokens"), "swapped"),
    (lambda n, e, k, cf, c: cf * n * (k if c == "k_tokens" else 1) / e, "math.ceil"),
    (lambda n, e, k, cf, c: math.floor(cf * n * (k if c == "k_tokens" else 1) / e), "not down"),
])
def test_capacity_rejects(wrong, hint):
    rejects(ex.check_capacity, wrong, hint)


# -- load balancing ------------------------------------------------------------------------
def _lb(probs, expert):
    e = probs.shape[1]
    f = torch.bincount(expert, minlength=e).float() / expert.numel()
    return e * (f * probs.mean(0)).sum()


def test_load_balancing_accepts_reference():
    assert isinstance(ex.check_load_balancing(_lb), ex.Passed)
    uniform = torch.full((4, 4), 0.25)
    assert float(_lb(uniform, torch.arange(4))) == pytest.approx(1.0)   # Switch: uniform routing gives 1


@pytest.mark.parametrize("wrong, hint", [
    (lambda p, x: _lb(p, x) / p.shape[1], "multiply by the number of experts"),
    (lambda p, x: _lb(p, x) * (x.numel() // p.shape[0]), "N·k assignments"),
    (lambda p, x: _lb(p, x) * p.shape[0], "mean probability"),
    (lambda p, x: _lb(p, x).detach(), "gradient"),
    (lambda p, x: _lb(p, x).item(), "gradient"),
    (lambda p, x: p.shape[1] * (torch.bincount(x, minlength=p.shape[1]).float() * p.mean(0)).sum(), "fraction of the assignments"),
])
def test_load_balancing_rejects(wrong, hint):
    rejects(ex.check_load_balancing, wrong, hint)


def test_student_stub_propagates():
    """An unanswered exercise fails with the student's NotImplementedError, not a hint."""
    def stub(*args):
        raise NotImplementedError("your turn")
    for check in (ex.check_moe_flops, ex.check_topk_routing, ex.check_router_entropy, ex.check_capacity,
                  ex.check_load_balancing):
        with pytest.raises(NotImplementedError):
            check(stub)
