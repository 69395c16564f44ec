"""Learnability: a tiny dense model beats chance by a wide margin on every task.

The model is the sense encoder, a per-token MLP, a masked mean over tokens and a small MLP
head (a DeepSets-style reader: the per-token nonlinearity comes before the pool so patch,
frame and character positions are not averaged away). Trained per task with Adam for a few
hundred steps, seeded. ``pytest -s`` prints the table of test metric vs chance.

Margins (why these): accuracy >= chance + 0.3, or >= chance + 0.25 where chance is already
>= 0.5 (binary tasks: two thirds of the way there would demand > 0.83/0.88); the
regression pair must reach MSE <= 0.5 x the test variance (R^2 >= 0.5).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import pwlab.tasks as tasks
from pwlab.senses import Senses

STEPS = 300
D_MODEL = 32


class Tiny(nn.Module):
    def __init__(self, task, d_model: int = D_MODEL, hidden: int = 64):
        super().__init__()
        self.task = task
        self.senses = Senses([task], d_model)
        self.token_mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, task.out_dim))

    def forward(self, x):
        tok = self.senses(x, self.task)
        h = self.token_mlp(tok.tokens)                                # (B, T, H)
        m = tok.mask[..., None].float()
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)             # masked mean (B, H)
        out = self.head(pooled)
        return out.squeeze(-1) if self.task.kind == "regression" else out


@torch.no_grad()
def evaluate(model, task) -> float:
    model.eval()
    total, n = 0.0, 0
    for b in tasks.batches(task, "test", 512):
        out = model(b.x)
        total += float(task.score(out, b.y).sum())          # the task's own metric: correct 1/0, or squared error
        n += len(b.y)
    return total / n


def train(task, steps: int = STEPS, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = Tiny(task)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sampler = tasks.MultiTaskSampler([task], batch_size=64, seed=seed)
    model.train()
    for _ in range(steps):
        (b,) = sampler.sample()
        loss = task.loss(model(b.x), b.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return evaluate(model, task)


def margin_ok(task, score: float, chance: float) -> bool:
    if task.kind == "regression":
        return score <= 0.5 * chance
    return score >= chance + (0.25 if chance >= 0.5 else 0.3)


@pytest.mark.slow
def test_tiny_dense_model_beats_chance_on_every_task():
    torch.set_num_threads(1)  # small matrices: threads only add overhead; keeps runs comparable
    rows = []
    for task in tasks.load("all", seed=0):
        score = train(task)
        rows.append((task.name, task.metric, score, tasks.chance(task), margin_ok(task, score, tasks.chance(task))))
    print(f"\n{'task':<14} {'metric':<9} {'test':>7} {'chance':>7}  ok")
    for name, metric, score, chance, ok in rows:
        print(f"{name:<14} {metric:<9} {score:7.3f} {chance:7.3f}  {'yes' if ok else 'NO'}")
    failing = [r[0] for r in rows if not r[4]]
    assert not failing, f"tasks not beating chance by the margin: {failing}"
