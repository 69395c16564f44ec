"""The Pathways notebooks' exercise checks accept answers written from the formulas and reject
typical wrong ones with a pointed hint."""
from __future__ import annotations

import math

import pytest
import torch

from pwlab import exercises_pathways as ex
from pwlab.exercises import Passed
from tests.exercise_checks import rejects


# -- expert shares (00) ---------------------------------------------------------------------
def _shares(counts):
    c = counts.double()
    return c / c.sum(0, keepdim=True).clamp_min(1)


def test_expert_shares_accepts_formula_and_hand_case():
    assert isinstance(ex.check_expert_shares(_shares), Passed)
    # hand-computed: column 0 = [3, 1] / 4, column 1 = [0, 2] / 2
    assert _shares(torch.tensor([[3, 0], [1, 2]])).tolist() == [[0.75, 0.0], [0.25, 1.0]]


@pytest.mark.parametrize("wrong, hint", [
    (lambda c: c.double() / c.double().sum(1, keepdim=True).clamp_min(1), "row"),
    (lambda c: c.double() / c.double().sum(), "grand total"),
    (lambda c: c.double() / c.double().sum(0, keepdim=True), "clamp_min(1)"),
    (lambda c: c.double()[:1], "shape"),
    (lambda c: _shares(c) + 0.01, "expected"),
])
def test_expert_shares_rejects(wrong, hint):
    rejects(ex.check_expert_shares, wrong, hint)


# -- mixing probabilities (04) ---------------------------------------------------------------
def _mixing(sizes, strategy, temperature):
    n = torch.tensor(sizes, dtype=torch.float64)
    w = {"proportional": n, "uniform": torch.ones_like(n), "temperature": n ** (1 / temperature)}[strategy]
    return w / w.sum()


def test_mixing_accepts_formula_and_hand_case():
    assert isinstance(ex.check_mixing_probabilities(_mixing), Passed)
    # hand-computed: sizes 100, 900 at T=2 -> sqrt: 10, 30 -> 1/4, 3/4
    assert torch.allclose(_mixing([100, 900], "temperature", 2.0), torch.tensor([0.25, 0.75], dtype=torch.float64))


def _power_t(sizes, strategy, temperature):
    n = torch.tensor(sizes, dtype=torch.float64)
    return _mixing(sizes, strategy, temperature) if strategy != "temperature" else n ** temperature / (n ** temperature).sum()


def _proportional_always(sizes, strategy, temperature):
    return _mixing(sizes, "uniform" if strategy == "uniform" else "proportional", temperature)


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, st, t: torch.tensor(s, dtype=torch.float64), "sum to 1"),
    (_power_t, "1/T"),
    (_proportional_always, "n ** (1 / temperature)"),
    (lambda s, st, t: _mixing(s, st, t)[:1], "shape"),
])
def test_mixing_rejects(wrong, hint):
    rejects(ex.check_mixing_probabilities, wrong, hint)


# -- MMoE gate (04) -------------------------------------------------------------------------
def _gate_loop(experts, logits):
    # a plain loop over examples and experts, written from MMoE eq. 4-5
    b, e, h = experts.shape
    out = torch.zeros(b, h, dtype=experts.dtype)
    for i in range(b):
        g = torch.exp(logits[i]) / torch.exp(logits[i]).sum()
        for j in range(e):
            out[i] += g[j] * experts[i, j]
    return out


def test_mmoe_gate_accepts_loop():
    assert isinstance(ex.check_mmoe_gate(_gate_loop), Passed)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, g: torch.einsum("be,beh->bh", g, x), "raw logits"),
    (lambda x, g: torch.einsum("be,beh->bh", g.softmax(0), x), "over the batch"),
    (lambda x, g: x.mean(1), "averaged the experts"),
    (lambda x, g: x.sum(1), "differs"),
    (lambda x, g: x, "shape"),
])
def test_mmoe_gate_rejects(wrong, hint):
    rejects(ex.check_mmoe_gate, wrong, hint)


# -- token counts (05) ----------------------------------------------------------------------
def _tokens(sense, x, patch_size, hop_length):
    if sense == "image":
        return (x.shape[1] // patch_size) * (x.shape[2] // patch_size)
    if sense == "audio":
        return 1 + x.shape[1] // hop_length
    if sense == "text":
        return int((x[0] != 0).sum())
    return x.shape[1]


def test_token_count_accepts_formula():
    assert isinstance(ex.check_token_count(_tokens), Passed)


def _with(sense_name, value_fn):
    return lambda s, x, p, hop: value_fn(s, x, p, hop) if s == sense_name else _tokens(s, x, p, hop)


@pytest.mark.parametrize("wrong, hint", [
    (_with("image", lambda s, x, p, hop: x.shape[1] * x.shape[2]), "one per pixel"),
    (_with("audio", lambda s, x, p, hop: x.shape[1] // hop), "1 + L // hop_length"),
    (_with("audio", lambda s, x, p, hop: x.shape[1]), "not per sample"),
    (_with("text", lambda s, x, p, hop: x.shape[1]), "padding"),
    (_with("tabular", lambda s, x, p, hop: 1), "one token per feature"),
    (lambda s, x, p, hop: "some", "should return a number"),
])
def test_token_count_rejects(wrong, hint):
    rejects(ex.check_token_count, wrong, hint)


# -- sense mutual information (05) --------------------------------------------------------
def _h(p):
    p = p[p > 0]
    return float(-(p * torch.log2(p)).sum())


def _mi(counts):
    c = counts.double()
    n = c.sum()
    h_e = _h(c.sum(1) / n)
    h_e_m = sum(float(c[:, m].sum() / n) * _h(c[:, m] / c[:, m].sum()) for m in range(c.shape[1]) if c[:, m].sum() > 0)
    return h_e - h_e_m


def test_sense_mi_accepts_formula_and_hand_cases():
    assert isinstance(ex.check_sense_mi(_mi), Passed)
    assert _mi(torch.tensor([[5, 0], [0, 5]])) == pytest.approx(1.0)     # two disjoint senses: 1 bit
    assert _mi(torch.tensor([[2, 4], [2, 4]])) == pytest.approx(0.0)     # identical spreads: 0 bits


def _mi_unweighted(counts):
    c = counts.double()
    return _h(c.sum(1) / c.sum()) - sum(_h(c[:, m] / c[:, m].sum()) for m in range(c.shape[1])) / c.shape[1]


@pytest.mark.parametrize("wrong, hint", [
    (lambda c: _mi(c) * math.log(2), "log base 2"),
    (_mi_unweighted, "p(m)"),
    (lambda c: _h(c.double().sum(1) / c.double().sum()), "H(E) alone"),
    (lambda c: -_mi(c), "other way round"),
    (lambda c: [0.0], "should return a number"),
])
def test_sense_mi_rejects(wrong, hint):
    rejects(ex.check_sense_mi, wrong, hint)


# -- top pathway (06) -----------------------------------------------------------------------
def _top(counts, task, k):
    col = counts[:, task].tolist()
    order = sorted(range(len(col)), key=lambda e: (-col[e], e))       # most used first, ties: lower index
    return [e for e in order[:k] if col[e] > 0]


def test_top_pathway_accepts_sort_and_hand_case():
    assert isinstance(ex.check_top_pathway(_top), Passed)
    assert _top(torch.tensor([[5, 1], [9, 0], [2, 7], [0, 3]]), 0, 2) == [1, 0]


@pytest.mark.parametrize("wrong, hint", [
    (lambda c, t, k: list(reversed(_top(c, t, k))), "wrong order"),
    (lambda c, t, k: torch.argsort(-c[:, t], stable=True)[:k].tolist(), "never"),
    (lambda c, t, k: torch.argsort(c[:, t], stable=True)[:k].tolist(), "least used"),
    (lambda c, t, k: torch.argsort(-c[t], stable=True)[:k].tolist(), "row"),
    (lambda c, t, k: None, "list of expert indices"),
])
def test_top_pathway_rejects(wrong, hint):
    rejects(ex.check_top_pathway, wrong, hint)


# -- expert fraction (06) -------------------------------------------------------------------
def _fraction(kept, num_experts, d_model, d_hidden):
    one = 2 * d_model * d_hidden + d_hidden + d_model          # W1, W2, b1, b2
    return sum(len(v) for v in kept.values()) * one / (len(kept) * num_experts * one)


def test_expert_fraction_accepts_formula_and_hand_case():
    assert isinstance(ex.check_expert_fraction(_fraction), Passed)
    assert _fraction({0: [2, 5], 1: [1, 6]}, 8, 32, 64) == 0.25      # 4 of 16 experts


@pytest.mark.parametrize("wrong, hint", [
    (lambda kept, e, d, h: sum(len(v) for v in kept.values()) / e, "all MoE blocks"),
    (lambda kept, e, d, h: len(kept) / e, "count experts, not blocks"),
    (lambda kept, e, d, h: sum(len(v) for v in kept.values()) * (2 * d * h + d + h), "not a parameter count"),
    (lambda kept, e, d, h: sum(len(v) for v in kept.values()) * 2 * d * h / (len(kept) * e * (2 * d * h + d + h)),
     "count all four"),
])
def test_expert_fraction_rejects(wrong, hint):
    rejects(ex.check_expert_fraction, wrong, hint)
