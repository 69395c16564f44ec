"""Text tasks over one character vocabulary: digit words in four languages, and small sums.

All text tasks share :data:`VOCAB` (id 0 = padding), so one text encoder reads them all
and the same character gets the same id (and the same hash route) in every task.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch

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

    Strings are drawn (uniform digit and language, typo rate ``noise`` per character), made
    unique, then split stratified by digit, so no string is in both splits.

    Returns:
        a Task with x (N, length) long character ids.
    """
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"noise must be in [0, 1), got {noise!r}")
    rng = random.Random(seed * 1_000_003 + 4)
    langs = sorted(DIGIT_WORDS)
    label_of: dict[str, int] = {}
    clash: set[str] = set()
    total = n_train + n_test
    tries = 0
    while len(label_of) - len(clash) < total * 1.05 and tries < 40 * total:
        tries += 1
        d, lang = rng.randrange(10), rng.choice(langs)
        s = _noisy(DIGIT_WORDS[lang][d], rng, noise)
        if label_of.setdefault(s, d) != d:
            clash.add(s)  # a typo that spells another digit's word: ambiguous, drop it
    strings = [s for s in label_of if s not in clash]
    y = torch.tensor([label_of[s] for s in strings], dtype=torch.long)
    train_idx, test_idx = stratified_split(y, n_test / len(strings), generator(seed, salt=4))
    train_idx, test_idx = train_idx[:n_train], test_idx[:n_test]
    x = encode(strings, length)
    return Task(name="digit_words", sense="text", kind="classification", classes=tuple(str(i) for i in range(10)),
                x_train=x[train_idx], y_train=y[train_idx], x_test=x[test_idx], y_test=y[test_idx],
                metric="accuracy", description="digit words in English/French/German/Spanish with typos",
                meta=_meta(length, seed, languages=tuple(langs), noise=noise))


def arithmetic(seed: int = 0, *, test_pairs: int = 12, spaces: bool = True) -> Task:
    """Sums of two digits as text ("3+4", "3 + 4") -> the sum, 19 classes (0..18).

    The test split holds out whole unordered pairs {a, b} (both orders, every spacing), so
    a test sum is never a training string nor a training string reversed: the model must
    have learned to add, not to look up. Sums 0 and 18 have a single pair and stay in
    training; at most one pair per sum is held out.

    Returns:
        a Task with x (N, 5) long character ids.
    """
    rng = random.Random(seed * 1_000_003 + 5)
    pairs_by_sum: dict[int, list[tuple[int, int]]] = {}
    for a in range(10):
        for b in range(a, 10):
            pairs_by_sum.setdefault(a + b, []).append((a, b))
    candidates = [s for s in sorted(pairs_by_sum) if len(pairs_by_sum[s]) > 1]
    if not 1 <= test_pairs <= len(candidates):
        raise ValueError(f"test_pairs must be in [1, {len(candidates)}], got {test_pairs!r}")
    held = {rng.choice(pairs_by_sum[s]) for s in rng.sample(candidates, test_pairs)}
    formats = ("{}+{}", "{} +{}", "{}+ {}", "{} + {}") if spaces else ("{}+{}",)
    train, test = [], []
    for a in range(10):
        for b in range(10):
            split = test if (min(a, b), max(a, b)) in held else train
            split.extend((f.format(a, b), a + b) for f in formats)
    rng.shuffle(train)
    rng.shuffle(test)
    length = 5

    def tensors(rows):
        return encode([s for s, _ in rows], length), torch.tensor([t for _, t in rows], dtype=torch.long)

    x_tr, y_tr = tensors(train)
    x_te, y_te = tensors(test)
    return Task(name="arithmetic", sense="text", kind="classification", classes=tuple(str(i) for i in range(19)),
                x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, metric="accuracy",
                description="sum of two digits written as text, unseen pairs at test",
                meta=_meta(length, seed, held_out_pairs=tuple(sorted(held))))
