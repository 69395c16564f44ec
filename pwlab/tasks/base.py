"""The task contract: a :class:`Task` holds a small offline data set and how it is scored.

Input formats, by sense (what ``x_train``/``x_test`` hold):
    image    float (N, H, W) in [0, 1]
    audio    float (N, L) waveform
    text     long  (N, L) character ids, 0 = padding (one vocabulary for all text tasks)
    tabular  float (N, F) standardized features (the synthetic MMoE pair is tabular too)
Targets: long (N,) class indices for classification, float (N,) for regression.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from pwlab.senses.base import SENSES  # noqa: F401 - the one list of senses (beside the encoders), re-exported

KINDS = ("classification", "regression")
METRICS = ("accuracy", "mse")
_REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True, eq=False)
class Task:
    """One task: data, sense, kind and metric.

    Attributes:
        name: registry name, e.g. ``"digits"``.
        sense: one of :data:`SENSES`.
        kind: ``"classification"`` or ``"regression"``.
        classes: class names (empty for regression).
        x_train, y_train, x_test, y_test: tensors as in the module docstring.
        metric: ``"accuracy"`` (classification) or ``"mse"`` (regression).
        description: one line for the data card.
        meta: sense-specific facts (e.g. ``{"num_features": 13}``, ``{"sample_rate": 4000}``).
    """

    name: str
    sense: str
    kind: str
    classes: tuple[str, ...]
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    metric: str
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def out_dim(self) -> int:
        """Width of the task head: number of classes, or 1 for regression."""
        return len(self.classes) if self.kind == "classification" else 1

    def loss(self, pred: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        """The training loss of predictions ``pred`` against targets ``y`` (see :func:`loss`)."""
        return loss(self.kind, pred, y, reduction)

    def score(self, pred: Tensor, y: Tensor) -> Tensor:
        """Per-example score (B,) of the task's :attr:`metric`; its mean is the metric (see :func:`score`)."""
        return score(self.kind, pred, y)


def loss(kind: str, pred: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """The loss of a task of ``kind``: cross-entropy of logits ``pred (B, classes)``
    (classification) or the squared error of ``pred (B,)`` (regression, MSE).

    ``reduction``: ``"mean"`` (what training minimises), ``"sum"`` or ``"none"`` (one loss per
    example, shape (B,)).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, _REDUCTIONS))}; got {reduction!r}")
    y = y.to(pred.device)
    if kind == "regression":
        return F.mse_loss(pred, y.to(pred.dtype), reduction=reduction)
    return F.cross_entropy(pred, y.long(), reduction=reduction)


def score(kind: str, pred: Tensor, y: Tensor) -> Tensor:
    """Per-example score (B,) float of a task of ``kind``: 1.0 where the arg-max class is the
    target, else 0.0 (accuracy), or the squared error (MSE)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    y = y.to(pred.device)
    if kind == "regression":
        return (pred - y.to(pred.dtype)) ** 2
    return (pred.argmax(-1) == y).to(torch.float32)


@dataclass(frozen=True, eq=False)
class TaskBatch:
    """A batch of one task's examples (a multi-task step holds several of these).

    ``task_index`` is the task's position in the list of tasks the sampler/model was built with.
    """

    task: str
    task_index: int
    sense: str
    x: Tensor
    y: Tensor
