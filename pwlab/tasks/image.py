"""Image tasks on scikit-learn's bundled 8x8 digits (nothing downloaded): digit class and parity.

Same images, two labelings: a same-input/different-task pair that only task-aware
routing can tell apart.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from pwlab.tasks._split import generator, stratified_split
from pwlab.tasks.base import Task


@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    # sklearn's loader parses a bundled CSV; cache it so several tasks/seeds load it once.
    # Imported here: sklearn.datasets takes about half as long to import as torch, and
    # `import pwlab` should not pay it until a task built from its data is asked for.
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0  # (1797, 8, 8), grey levels 0..16 -> [0, 1]
    y = torch.tensor(d.target, dtype=torch.long)            # (1797,)
    return x, y


def _split_digits(seed: int, test_fraction: float):
    x, y = _digits()
    # the same salt for both digit tasks: digits and digit_parity share their split for a seed
    train_idx, test_idx = stratified_split(y, test_fraction, generator(seed, salt=1))
    return x[train_idx].clone(), y[train_idx].clone(), x[test_idx].clone(), y[test_idx].clone()


def digits(seed: int = 0, *, test_fraction: float = 0.25) -> Task:
    """Handwritten digits 0-9 as (N, 8, 8) images in [0, 1]; 10 classes, stratified split."""
    x_tr, y_tr, x_te, y_te = _split_digits(seed, test_fraction)
    return Task(name="digits", sense="image", kind="classification", classes=tuple(str(i) for i in range(10)),
                x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, metric="accuracy",
                description="scikit-learn 8x8 handwritten digits, 10 classes",
                meta={"image_size": (8, 8), "seed": seed})


def digit_parity(seed: int = 0, *, test_fraction: float = 0.25) -> Task:
    """The same images as :func:`digits` (same split for a seed), labeled even (0) / odd (1)."""
    x_tr, y_tr, x_te, y_te = _split_digits(seed, test_fraction)
    return Task(name="digit_parity", sense="image", kind="classification", classes=("even", "odd"),
                x_train=x_tr, y_train=y_tr % 2, x_test=x_te, y_test=y_te % 2, metric="accuracy",
                description="the 8x8 digits labeled even/odd (same inputs as 'digits')",
                meta={"image_size": (8, 8), "seed": seed})
