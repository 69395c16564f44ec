"""The systems notebooks' exercise checks accept answers written from the formulas and reject
typical wrong ones with a pointed hint."""
from __future__ import annotations

import pytest
import torch

from pwlab import exercises_systems as ex
from pwlab.exercises import Passed
from tests.exercise_checks import rejects


# -- SWAT step (07) -------------------------------------------------------------------------
def _topk(t, sparsity):
    """Keep the entries above the round(sparsity·n)-th smallest magnitude (written from the paper)."""
    drop = int(round(sparsity * t.numel()))
    if drop == 0:
        return t
    thr = t.abs().flatten().kthvalue(drop).values
    return t * (t.abs() > thr)


def _swat_step(x, w, g, ws, as_):
    w_s, x_s = _topk(w, ws), _topk(x, as_)
    return x @ w_s.T, g @ w_s, g.T @ x_s


def test_swat_step_accepts_the_algorithm():
    assert isinstance(ex.check_swat_step(_swat_step), Passed)


def test_swat_step_hand_case():
    # w = [[3, -1], [0.5, 2]] at 50%: |w| keeps 3 and 2; x = [[1, 2]] at 50% keeps 2
    x, w, g = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0], [0.5, 2.0]]), torch.tensor([[1.0, 1.0]])
    y, gx, gw = _swat_step(x, w, g, 0.5, 0.5)
    assert y.tolist() == [[3.0, 4.0]]
    assert gx.tolist() == [[3.0, 2.0]]
    assert gw.tolist() == [[0.0, 2.0], [0.0, 2.0]]          # dense-shaped: the dropped w[0,1], w[1,0] get 2, 0


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, w, g, ws, as_: (x @ w.T, g @ w, g.T @ _topk(x, as_)), "dense output"),
    (lambda x, w, g, ws, as_: (x @ _topk(w, ws).T, g @ w, g.T @ _topk(x, as_)), "dense W"),
    (lambda x, w, g, ws, as_: (x @ _topk(w, ws).T, g @ _topk(w, ws), g.T @ x), "dense input"),
    (lambda x, w, g, ws, as_: (x @ _topk(w, ws).T, g @ _topk(w, ws), (g.T @ _topk(x, as_)) * (_topk(w, ws) != 0)),
     "dense-shaped"),
    (lambda x, w, g, ws, as_: (x @ _topk(w, ws).T, g @ _topk(w, ws)), "triple"),
    (lambda x, w, g, ws, as_: (x @ _topk(w, ws).T, g @ _topk(w, ws), x.T @ g), "shape"),
])
def test_swat_step_rejects(wrong, hint):
    rejects(ex.check_swat_step, wrong, hint)


# -- SWAT FLOPs (07) ------------------------------------------------------------------------
def _swat_flops(n, a, b, ws, as_):
    macs = 2 * n * a * b
    return macs * (1 - ws) + macs * (1 - ws) + macs * (1 - as_)


def test_swat_flops_accepts_formula_and_hand_case():
    assert isinstance(ex.check_swat_flops(_swat_flops), Passed)
    assert _swat_flops(1, 10, 10, 0.9, 0.9) == pytest.approx(60)          # 200·(0.1 + 0.1 + 0.1)


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, a, b, ws, as_: 3 * 2 * n * a * b * (1 - ws), "activation density"),
    (lambda n, a, b, ws, as_: 2 * n * a * b * (1 - ws), "two backward products"),
    (lambda n, a, b, ws, as_: _swat_flops(n, a, b, ws, as_) / 2, "2 FLOPs"),
    (lambda n, a, b, ws, as_: 2 * n * a * b * (2 * ws + as_), "density = 1 − sparsity"),
    (lambda n, a, b, ws, as_: _swat_flops(n, a, b, ws, as_) + 1000, "expected"),
    (lambda n, a, b, ws, as_: "many", "number"),
])
def test_swat_flops_rejects(wrong, hint):
    rejects(ex.check_swat_flops, wrong, hint)


# -- SWAT MoE FLOPs (08) --------------------------------------------------------------------
def _swat_moe(n, d, h, e, k, s):
    router = 3 * 2 * n * d * e
    experts = (n * k) * 2 * (2 * d * h) * (3 * (1 - s))        # two layers; fwd, grad_x, grad_W each × density
    return router + experts


def test_swat_moe_flops_accepts_formula():
    assert isinstance(ex.check_swat_moe_flops(_swat_moe), Passed)


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, d, h, e, k, s: _swat_moe(n, d, h, e, k, s) - 3 * 2 * n * d * e, "router"),
    (lambda n, d, h, e, k, s: _swat_moe(n, d, h, e, k, s) - 3 * 2 * n * d * e * s, "router stays dense"),
    (lambda n, d, h, e, k, s: _swat_moe(n, d, h, e, e, s), "not all num_experts"),
    (lambda n, d, h, e, k, s: _swat_moe(n, d, h, e, 1, s) if k > 1 else _swat_moe(n, d, h, e, 1, s) + 1, "top_k"),
    (lambda n, d, h, e, k, s: _swat_moe(n, d, h, e, k, s) / 3, "forward plus backward"),
    (lambda n, d, h, e, k, s: _swat_moe(n, d, h, e, k, 0.0), "density"),
])
def test_swat_moe_flops_rejects(wrong, hint):
    rejects(ex.check_swat_moe_flops, wrong, hint)


# -- all-to-all bytes (09) ------------------------------------------------------------------
def _a2a(n, d, k, e, p, b):
    counts = 8 * e * (p - 1)
    remote = n * k * (p - 1) / p
    return counts + 4 * remote * d * b


def test_a2a_bytes_accepts_formula_and_hand_case():
    assert isinstance(ex.check_a2a_bytes(_a2a), Passed)
    # 8 tokens, top-1, 2 devices: 4 remote rows × 4 crossings × 2 floats × 4 bytes + 8·2·1 count bytes
    assert _a2a(8, 2, 1, 2, 2, 4) == 16 + 4 * 4 * 2 * 4


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, d, k, e, p, b: 8 * e * (p - 1) + 4 * n * k * d * b, "(P − 1)/P"),
    (lambda n, d, k, e, p, b: 8 * e * (p - 1) + 2 * n * k * (p - 1) / p * d * b, "four times"),
    (lambda n, d, k, e, p, b: 4 * n * k * (p - 1) / p * d * b, "counts"),
    (lambda n, d, k, e, p, b: 8 * e * (p - 1) + 4 * n * (p - 1) / p * d * b, "top_k"),
    (lambda n, d, k, e, p, b: 8 * e * (p - 1) + 4 * n * k * (p - 1) / p * d, "bytes_per_element"),
])
def test_a2a_bytes_rejects(wrong, hint):
    rejects(ex.check_a2a_bytes, wrong, hint)


def test_a2a_exercise_cases_agree_with_the_cost_model_on_one_device():
    # one device: nothing crosses, the formula and the model both give zero
    from pwlab.distributed import a2a_bytes
    assert a2a_bytes(100, 16, 2, 4, 1) == 0 == _a2a(100, 16, 2, 4, 1, 4)
