"""Checks for the exercises of the language-model notebook (10).

Same contract as :mod:`pwlab.exercises`: ``check_*(answer)`` calls the student's function on
a few hand-picked cases and compares it with pwlab's own implementation; a right answer
returns a :class:`~pwlab.exercises.Passed`, a wrong one raises an
:class:`~pwlab.exercises.ExerciseError` whose message is a hint aimed at the likely mistake
(found by comparing the answer with what common mistakes give).

===================  ==========================================  ==================
check                the student writes                          notebook
===================  ==========================================  ==================
check_unigram_loss   cross-entropy of a text under add-one       10_language_model
                     smoothed character frequencies (nats)
===================  ==========================================  ==================
"""
from __future__ import annotations

import math
from collections import Counter

from pwlab.exercises import ExerciseError, Passed, _close, _diagnose, _number
from pwlab import lm

__all__ = ["check_unigram_loss"]


def _unigram(train: str, val: str, alpha: float, vocab: set, log=math.log) -> float:
    counts = Counter(train)
    denom = len(train) + alpha * len(vocab)
    return -sum(log((counts[c] + alpha) / denom) for c in val) / len(val)


def check_unigram_loss(unigram_loss) -> Passed:
    """``unigram_loss(train: str, val: str) -> float``: the mean cross-entropy in nats per
    character of ``val`` under the character frequencies of ``train``, add-one smoothed over
    the V characters of both: p(c) = (n(c) + 1) / (N + V)."""
    cases = {"train 'aab', val 'ab'": ("aab", "ab"),
             "train 'hello world', val 'low'": ("hello world", "low"),
             "a character unseen in train, train 'aab', val 'abc'": ("aab", "abc"),
             "a longer text": ("The cat sees 12 dogs.\n" * 3 + "El gato ve 7 perros!\n", "The dog sees 3 cats?\n")}
    for case, (train, val) in cases.items():
        want = lm.unigram_loss(train, val)
        try:
            out = unigram_loss(train, val)
        except (ValueError, ZeroDivisionError) as e:
            raise ExerciseError(f"{case}: your function raised {type(e).__name__}: {e}. Hint: a character of val "
                                "that train never holds has count 0 and log(0) is undefined: smooth with add-one, "
                                "p(c) = (n(c) + 1) / (N + V).") from None
        got = _number("unigram_loss", out)
        if _close(got, want, 1e-6):
            continue
        both, only_train = set(train) | set(val), set(train)
        counts = Counter(train)
        mistakes = {
            "use the natural log (math.log): the model's loss is in nats, not bits.":
                _unigram(train, val, 1.0, both, math.log2),
            "take the frequencies from train, not val: the baseline must not peek at the text it is scored on.":
                _unigram(val, val, 1.0, set(val)),
            "take the frequencies from train, not val (the baseline must not peek at the text it is scored on).":
                _unigram(val, val, 1.0, both),
            "the mean over val's characters, not the sum.": want * len(val),
            "cross-entropy is −mean(log p): you forgot the minus sign.": -want,
            "V counts the characters of train and val together (a character only val holds needs a share too).":
                _unigram(train, val, 1.0, only_train),
            "add-one smoothing adds V to the denominator (N + V), not 1.":
                -sum(math.log((counts[c] + 1) / (len(train) + 1)) for c in val) / len(val),
        }
        if all(c in counts for c in val):
            mistakes["smooth with add-one: p(c) = (n(c) + 1) / (N + V)."] = _unigram(train, val, 0.0, both)
        _diagnose(got, want, mistakes, case)
    return Passed("unigram_loss matches pwlab.lm.unigram_loss (add-one smoothed, nats per character)")
