"""Tabular tasks on scikit-learn's bundled wine and breast-cancer tables (nothing downloaded)."""
from __future__ import annotations

from functools import lru_cache

import torch

from pwlab.tasks._split import generator, standardize, stratified_split
from pwlab.tasks.base import Task


@lru_cache(maxsize=2)
def _table(which: str):
    # imported here, not at the top: see _digits in image.py (sklearn's import time)
    from sklearn.datasets import load_breast_cancer, load_wine

    d = {"wine": load_wine, "breast_cancer": load_breast_cancer}[which]()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    return x, y, tuple(str(c) for c in d.target_names), tuple(str(f) for f in d.feature_names)


def _tabular_task(name: str, salt: int, seed: int, test_fraction: float, description: str) -> Task:
    x, y, classes, features = _table(name)
    train_idx, test_idx = stratified_split(y, test_fraction, generator(seed, salt))
    # standardize with training statistics only, so nothing of the test split leaks in
    x_tr, x_te, mean, std = standardize(x[train_idx], x[test_idx])
    return Task(name=name, sense="tabular", kind="classification", classes=classes,
                x_train=x_tr, y_train=y[train_idx].clone(), x_test=x_te, y_test=y[test_idx].clone(),
                metric="accuracy", description=description,
                meta={"num_features": x.shape[1], "feature_names": features, "seed": seed,
                      "mean": tuple(mean.tolist()), "std": tuple(std.tolist())})


def wine(seed: int = 0, *, test_fraction: float = 0.25) -> Task:
    """Wine cultivar from 13 chemical measurements: (N, 13) standardized, 3 classes."""
    return _tabular_task("wine", 11, seed, test_fraction, "scikit-learn wine recognition, 13 features, 3 cultivars")


def breast_cancer(seed: int = 0, *, test_fraction: float = 0.25) -> Task:
    """Breast-cancer diagnosis from 30 cell-nucleus features: (N, 30) standardized, 2 classes."""
    return _tabular_task("breast_cancer", 12, seed, test_fraction,
                         "scikit-learn Wisconsin breast cancer, 30 features, malignant/benign")
