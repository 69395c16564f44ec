"""Seeded helpers shared by the task builders: generators and stratified train/test splits."""
from __future__ import annotations

import torch
from torch import Tensor


def generator(seed: int, salt: int) -> torch.Generator:
    """A CPU generator for one task and seed; ``salt`` keeps different tasks' streams apart."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)


def stratified_split(y: Tensor, test_fraction: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Shuffle each class and send ``round(test_fraction * count)`` of it to the test split.

    Keeps the class proportions of both splits equal to the full set's (up to rounding),
    so the chance level reads the same on train and test.

    Args:
        y: (N,) long labels.
    Returns:
        (train_idx, test_idx): long index tensors, each shuffled, disjoint, covering 0..N-1.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    train, test = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    # shuffle across classes too, so a split read in order is not sorted by label
    return (train_idx[torch.randperm(len(train_idx), generator=gen)],
            test_idx[torch.randperm(len(test_idx), generator=gen)])


def standardize(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Standardize both splits with the *training* mean and std only (no test leakage).

    Returns:
        (x_train, x_test, mean, std); constant features keep std 1 so they map to 0.
    """
    mean = x_train.mean(0)
    std = x_train.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (x_train - mean) / std, (x_test - mean) / std, mean, std
