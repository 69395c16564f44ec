"""The character language model's data: a synthesized corpus in five styles, the token classes
of its characters, and the tokenizer (:mod:`pwlab.lm` trains and reads the model on them).

Separate from the model so the data can be read, split and tokenized without building one.
"""
from __future__ import annotations

import random

import torch
from torch import Tensor

from pwlab import _checks

#: token classes, in the order of :func:`class_counts`' columns
CLASSES = ("lower", "upper", "digit", "punct", "space")
#: the line styles of :func:`corpus`
STYLES = ("english", "spanish", "date", "sum", "code")

# -- the corpus ---------------------------------------------------------------------------
_EN = dict(names=["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry"],
           nouns=["cat", "dog", "house", "river", "book", "garden", "city", "letter", "window", "song"],
           verbs=["sees", "likes", "finds", "paints", "reads", "opens", "visits", "writes"],
           adjs=["red", "small", "old", "quiet", "bright", "green", "long", "happy"],
           dets=["the", "a", "every", "one"], tails=[".", ".", ".", "!", "?"])
_ES = dict(names=["Lucia", "Pablo", "Sofia", "Mateo", "Elena", "Diego", "Carmen", "Javier"],
           nouns=["gato", "perro", "casa", "libro", "jardin", "ciudad", "carta", "ventana", "cancion"],
           verbs=["ve", "busca", "pinta", "lee", "abre", "visita", "escribe", "quiere"],
           adjs=["rojo", "viejo", "grande", "verde", "nuevo", "claro", "largo", "feliz"],
           dets=["el", "un", "este", "otro"], tails=[".", ".", ".", "!", "?"])
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_VARS = ["x", "y", "n", "total", "count", "value", "item", "size"]
_FUNCS = ["max", "min", "len", "sum", "abs", "print"]


def _sentence(rng: random.Random, w: dict) -> str:
    subject = rng.choice(w["names"]) if rng.random() < 0.5 else f"{rng.choice(w['dets'])} {rng.choice(w['nouns'])}"
    obj = f"{rng.choice(w['dets'])} {rng.choice(w['adjs'])} {rng.choice(w['nouns'])}" if w is _EN else \
        f"{rng.choice(w['dets'])} {rng.choice(w['nouns'])} {rng.choice(w['adjs'])}"   # Spanish: noun before adjective
    s = f"{subject} {rng.choice(w['verbs'])} {obj}"
    if rng.random() < 0.3:
        s += f", {'and' if w is _EN else 'y'} {rng.choice(w['names'])} {rng.choice(w['verbs'])} {rng.choice(w['dets'])} " \
             f"{rng.choice(w['nouns'])}"
    return s[0].upper() + s[1:] + rng.choice(w["tails"])


def _line(rng: random.Random, style: str) -> str:
    if style == "english":
        return _sentence(rng, _EN)
    if style == "spanish":
        return _sentence(rng, _ES)
    if style == "date":
        y, m, d = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
        return rng.choice([f"{y}-{m:02d}-{d:02d}", f"On {_MONTHS[m - 1]} {d}, {y}.", f"{d:02d}/{m:02d}/{y}"])
    if style == "sum":
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        return f"{a} + {b} = {a + b}" if rng.random() < 0.6 else f"{max(a, b)} - {min(a, b)} = {abs(a - b)}"
    v, u, f = rng.choice(_VARS), rng.choice(_VARS), rng.choice(_FUNCS)
    return rng.choice([f"{v} = {f}({u}, {rng.randint(0, 99)});", f"if ({v} > {rng.randint(0, 9)}) {{ {u} += 1; }}",
                       f"def f({v}, {u}): return {v} * {u}", f"{v}[{rng.randint(0, 9)}] = \"{u}\";"])


def corpus(seed: int = 0, num_lines: int = 4000) -> str:
    """A deterministic synthetic text of ``num_lines`` lines, one style per line drawn uniformly
    from :data:`STYLES` (English-like and Spanish-like sentences with names, dates, sums, code)."""
    _checks.positive_int("num_lines", num_lines)
    rng = random.Random(seed)
    return "\n".join(_line(rng, rng.choice(STYLES)) for _ in range(num_lines)) + "\n"


def train_val_split(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split ``text`` at a line boundary: the first lines for training, the last ``val_fraction`` for validation."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    cut = text.rfind("\n", 0, int(len(text) * (1 - val_fraction))) + 1
    return text[:cut], text[cut:]


def token_class(ch: str) -> str:
    """The class of one character: ``"lower"``, ``"upper"``, ``"digit"``, ``"space"`` (blank or newline) or ``"punct"``."""
    if not isinstance(ch, str) or len(ch) != 1:
        raise ValueError(f"ch must be one character, got {ch!r}")
    if ch.isdigit():
        return "digit"
    if ch.isalpha():
        return "upper" if ch.isupper() else "lower"
    return "space" if ch.isspace() else "punct"


# -- the tokenizer -------------------------------------------------------------------------
class CharTokenizer:
    """One id per character of ``vocab`` (sorted, duplicates removed)."""

    def __init__(self, vocab: str):
        if not isinstance(vocab, str) or not vocab:
            raise ValueError(f"vocab must be a non-empty string of characters, got {vocab!r}")
        self.chars = "".join(sorted(set(vocab)))
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(text)

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """(len(text),) long ids; a character outside the vocabulary raises ValueError."""
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.long)
        except KeyError as e:
            raise ValueError(f"text holds {e.args[0]!r}, which is not in the vocabulary {self.chars!r}") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def classes(self) -> Tensor:
        """(V,) long: the index in :data:`CLASSES` of each id's character."""
        return torch.tensor([CLASSES.index(token_class(c)) for c in self.chars], dtype=torch.long)
