"""The synthetic MMoE regression pair with a tunable task correlation (Ma et al., KDD 2018, sec. 3.2).

    u1, u2 orthogonal unit vectors in R^d
    w1 = c * u1,   w2 = c * (p * u1 + sqrt(1 - p^2) * u2)        (so cos(w1, w2) = p)
    x ~ N(0, I_d)
    y_k = w_k^T x + sum_{i=1..m} sin(alpha_i * w_k^T x + beta_i) + eps_k,   eps_k ~ N(0, 0.01)

alpha_i, beta_i are shared by both tasks (so p alone sets how related they are); their
values are a free choice of the generator, drawn N(0, 1) here. Both tasks use the same x for a given seed whatever p is, and task a
does not depend on p at all. Targets are standardized with training statistics, so a
test MSE reads against a chance level (the test variance) near 1.
"""
from __future__ import annotations

import math

import torch

from pwlab.tasks._split import generator
from pwlab.tasks.base import Task


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not -1.0 <= p <= 1.0:
        raise ValueError(f"p (the task correlation) must be a number in [-1, 1], got {p!r}")
    return float(p)


def mmoe_pair(seed: int = 0, *, p: float = 0.5, num_features: int = 16, n_train: int = 4000,
              n_test: int = 1000, m: int = 10, c: float = 1.0) -> tuple[Task, Task]:
    """Both tasks of the pair; see the module docstring.

    Returns:
        (task_a, task_b), each with x (N, num_features) float and y (N,) float.
    """
    p = _check_p(p)
    gen = generator(seed, salt=6)
    # two orthogonal unit vectors: QR of a Gaussian (d, 2) matrix
    q, _ = torch.linalg.qr(torch.randn(num_features, 2, generator=gen, dtype=torch.float64))
    u1, u2 = q[:, 0], q[:, 1]
    alpha = torch.randn(m, generator=gen, dtype=torch.float64)
    beta = torch.randn(m, generator=gen, dtype=torch.float64)
    n = n_train + n_test
    x = torch.randn(n, num_features, generator=gen, dtype=torch.float64)
    eps = 0.1 * torch.randn(n, 2, generator=gen, dtype=torch.float64)  # std 0.1 = variance 0.01
    w = (c * u1, c * (p * u1 + math.sqrt(max(0.0, 1.0 - p * p)) * u2))
    tasks = []
    for k, name in enumerate(("mmoe_a", "mmoe_b")):
        z = x @ w[k]                                                    # (N,)
        y = z + torch.sin(alpha * z[:, None] + beta).sum(1) + eps[:, k]
        mean, std = y[:n_train].mean(), y[:n_train].std()
        y = ((y - mean) / std).float()
        tasks.append(Task(
            name=name, sense="tabular", kind="regression", classes=(),
            x_train=x[:n_train].float(), y_train=y[:n_train], x_test=x[n_train:].float(), y_test=y[n_train:],
            metric="mse", description=f"synthetic MMoE regression task {name[-1]} (task correlation p={p:g})",
            meta={"num_features": num_features, "table": "mmoe", "p": p, "seed": seed, "m": m, "c": c}))
    return tasks[0], tasks[1]


def mmoe_a(seed: int = 0, *, p: float = 0.5, num_features: int = 16, n_train: int = 4000, n_test: int = 1000,
           m: int = 10, c: float = 1.0) -> Task:
    """Task a of the MMoE pair (independent of ``p``; ``p`` is still checked)."""
    return mmoe_pair(seed, p=p, num_features=num_features, n_train=n_train, n_test=n_test, m=m, c=c)[0]


def mmoe_b(seed: int = 0, *, p: float = 0.5, num_features: int = 16, n_train: int = 4000, n_test: int = 1000,
           m: int = 10, c: float = 1.0) -> Task:
    """Task b of the MMoE pair: cosine ``p`` between its weight vector and task a's."""
    return mmoe_pair(seed, p=p, num_features=num_features, n_train=n_train, n_test=n_test, m=m, c=c)[1]
