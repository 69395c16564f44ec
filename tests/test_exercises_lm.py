"""The language-model notebook's exercise check accepts the formula and rejects typical wrong answers
with a pointed hint."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from pwlab import exercises_lm as ex
from pwlab.exercises import Passed
from tests.exercise_checks import rejects


def _unigram(train, val, log=math.log, vocab=None, plus=None, alpha=1.0):
    counts = Counter(train)
    v = len(set(train) | set(val)) if vocab is None else vocab
    denom = len(train) + (alpha * v if plus is None else plus)
    return -sum(log((counts[c] + alpha) / denom) for c in val) / len(val)


def test_unigram_accepts_formula_and_hand_case():
    assert isinstance(ex.check_unigram_loss(_unigram), Passed)
    # hand-computed: train "aab", val "ab", V = 2: p(a) = 3/5, p(b) = 2/5
    assert _unigram("aab", "ab") == pytest.approx(-(math.log(3 / 5) + math.log(2 / 5)) / 2)


@pytest.mark.parametrize("wrong, hint", [
    (lambda t, v: _unigram(t, v, log=math.log2), "natural log"),
    (lambda t, v: _unigram(v, v), "from train"),
    (lambda t, v: _unigram(t, v) * len(v), "mean"),
    (lambda t, v: -_unigram(t, v), "minus sign"),
    (lambda t, v: _unigram(t, v, vocab=len(set(t))), "V counts"),
    (lambda t, v: _unigram(t, v, plus=1), "N + V"),
    (lambda t, v: _unigram(t, v, alpha=0.0), "add-one"),
    (lambda t, v: _unigram(t, v) + 0.01, "expected"),
])
def test_unigram_rejects(wrong, hint):
    rejects(ex.check_unigram_loss, wrong, hint)
