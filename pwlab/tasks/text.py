"""Text tasks over one character vocabulary: digit words in four languages, and small sums.

All text tasks share :data:`VOCAB` (id 0 = padding), so one text encoder reads them all
and the same character gets the same id (and the same hash route) in every task.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from pwlab._checks import one_of
from pwlab.tasks._split import generator, stratified_split
from pwlab.tasks.base import Task

#: the characters; a character's id is its index here + 1 (0 is padding)
VOCAB = " +=0123456789abcdefghijklmnopqrstuvwxyzßäéöü"
vocab_size = len(VOCAB) + 1
PAD = 0
_ID = {c: i + 1 for i, c in enumerate(VOCAB)}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"

DIGIT_WORDS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
}


def encode(strings: Sequence[str], length: int) -> torch.Tensor:
    """Character ids, right-padded with 0 and cut at ``length``.

    Returns:
        (N, length) long.
    """
    out = torch.zeros(len(strings), length, dtype=torch.long)
    for i, s in enumerate(strings):
        bad = set(s) - set(_ID)
        if bad:
            raise ValueError(f"strings may only use characters of VOCAB {VOCAB!r}; got {sorted(bad)!r}")
        ids = [_ID[c] for c in s[:length]]
        out[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def decode(ids: torch.Tensor) -> list[str]:
    """Inverse of :func:`encode` for a (N, L) id tensor (padding dropped)."""
    return ["".join(VOCAB[i - 1] for i in row.tolist() if i != PAD) for row in ids]


def _noisy(word: str, rng: random.Random, rate: float) -> str:
    # typo model: each character is substituted, dropped, or followed by an inserted letter
    out = []
    for c in word:
        r = rng.random()
        if r < rate / 2:
            out.append(rng.choice(_LETTERS))
        elif r < 3 * rate / 4:
            continue
        elif r < rate:
            out.extend((c, rng.choice(_LETTERS)))
        else:
            out.append(c)
    return "".join(out) or word


def _meta(length: int, seed: int, **extra) -> dict:
    return {"vocab": VOCAB, "vocab_size": vocab_size, "length": length, "seed": seed, **extra}


def digit_words(seed: int = 0, *, n_train: int = 2000, n_test: int = 500, noise: float = 0.15,
                length: int = 12) -> Task:
    """Digit words ("seven", "sept", "sieben", "siete") with random typos -> the digit, 10 classes.

    Strings are drawn (uniform language, typo rate ``noise`` per character) until each digit
    has the same number of distinct strings (a typo landing on another digit's string is
    dropped as ambiguous), then split stratified by digit, so no string is in both splits
    and the classes are balanced in each.

    Returns:
        a Task with x (N, length) long character ids.
    """
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"noise must be in [0, 1), got {noise!r}")
    rng = random.Random(seed * 1_000_003 + 4)
    langs = sorted(DIGIT_WORDS)
    total = n_train + n_test
    per_class = -(-total // 10)
    label_of: dict[str, int] = {}
    clash: set[str] = set()
    have = [0] * 10
    for _ in range(60 * total):  # draw until every digit has per_class distinct strings (or give up)
        short = [d for d in range(10) if have[d] < per_class]
        if not short:
            break
        d = rng.choice(short)
        s = _noisy(DIGIT_WORDS[rng.choice(langs)][d], rng, noise)
        if s in clash:
            continue
        if s not in label_of:
            label_of[s] = d
            have[d] += 1
        elif label_of[s] != d:
            clash.add(s)  # a typo that spells another digit's word: ambiguous, drop it
            have[label_of.pop(s)] -= 1
    if min(have) < per_class:
        raise ValueError(f"noise={noise!r} yields too few distinct strings for n_train + n_test = {total} "
                         f"({min(have)} for some digit, {per_class} needed); raise noise or lower n_train/n_test")
    # equal classes (up to total % 10), drawn in insertion order, which is random
    strings = [s for s in label_of]
    keep, count = [], [0] * 10
    for s in strings:
        d = label_of[s]
        if count[d] < total // 10 + (d < total % 10):
            keep.append(s)
            count[d] += 1
    strings = keep
    y = torch.tensor([label_of[s] for s in strings], dtype=torch.long)
    train_idx, test_idx = stratified_split(y, n_test / len(strings), generator(seed, salt=4))
    x = encode(strings, length)
    return Task(name="digit_words", sense="text", kind="classification", classes=tuple(str(i) for i in range(10)),
                x_train=x[train_idx], y_train=y[train_idx], x_test=x[test_idx], y_test=y[test_idx],
                metric="accuracy", description="digit words in English/French/German/Spanish with typos",
                meta=_meta(length, seed, languages=tuple(langs), noise=noise))


def arithmetic(seed: int = 0, *, holdout: str = "commuted", test_pairs: int | None = None, spaces: bool = True) -> Task:
    """Sums of two digits as text ("3+4", "3 + 4") -> the sum, 19 classes (0..18).

    No string is in both splits; what the test split holds depends on ``holdout``:

    - ``"commuted"`` (default): ``test_pairs`` (default 20) ordered pairs (a, b), a != b, whose reverse
      (b, a) stays in training. A test string is never a training string; answering it
      takes knowing that a + b = b + a, which a small model learns in a few hundred steps.
    - ``"unseen"``: ``test_pairs`` (default 12) unordered pairs {a, b} held out in both orders, at most
      one per sum (sums 0 and 18 have one pair and stay in training). Only a model that
      has learned to add gets these; small dense models memorize the table and score
      near 0 here (an exercise, not part of the learnability suite).

    Each pair is written in 4 spacings ("3+4", "3 +4", "3+ 4", "3 + 4") when ``spaces``.

    Returns:
        a Task with x (N, 5) long character ids.
    """

    one_of("holdout", holdout, ("commuted", "unseen"))
    rng = random.Random(seed * 1_000_003 + 5)
    if test_pairs is None:
        test_pairs = 20 if holdout == "commuted" else 12
    if holdout == "commuted":
        candidates = [(a, b) for a in range(10) for b in range(a + 1, 10)]          # 45 unordered, a < b
        if not 1 <= test_pairs <= len(candidates):
            raise ValueError(f"test_pairs must be in [1, {len(candidates)}], got {test_pairs!r}")
        held = {(a, b) if rng.random() < 0.5 else (b, a) for a, b in rng.sample(candidates, test_pairs)}

        def in_test(a, b):
            return (a, b) in held
    else:
        pairs_by_sum: dict[int, list[tuple[int, int]]] = {}
        for a in range(10):
            for b in range(a, 10):
                pairs_by_sum.setdefault(a + b, []).append((a, b))
        sums = [s for s in sorted(pairs_by_sum) if len(pairs_by_sum[s]) > 1]
        if not 1 <= test_pairs <= len(sums):
            raise ValueError(f"test_pairs must be in [1, {len(sums)}] for holdout='unseen', got {test_pairs!r}")
        held = {rng.choice(pairs_by_sum[s]) for s in rng.sample(sums, test_pairs)}

        def in_test(a, b):
            return (min(a, b), max(a, b)) in held
    formats = ("{}+{}", "{} +{}", "{}+ {}", "{} + {}") if spaces else ("{}+{}",)
    train, test = [], []
    for a in range(10):
        for b in range(10):
            (test if in_test(a, b) else train).extend((f.format(a, b), a + b) for f in formats)
    rng.shuffle(train)
    rng.shuffle(test)
    length = 5

    def tensors(rows):
        return encode([s for s, _ in rows], length), torch.tensor([t for _, t in rows], dtype=torch.long)

    x_tr, y_tr = tensors(train)
    x_te, y_te = tensors(test)
    return Task(name="arithmetic", sense="text", kind="classification", classes=tuple(str(i) for i in range(19)),
                x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, metric="accuracy",
                description=f"sum of two digits written as text (test: {holdout} pairs)",
                meta=_meta(length, seed, holdout=holdout, held_out_pairs=tuple(sorted(held))))
