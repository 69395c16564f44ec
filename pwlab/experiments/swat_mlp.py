"""Dense-versus-SWAT training of a plain MLP on one task: the measurement behind claim 7.

:mod:`pwlab.experiments.swat` (the claim) and ``pwlab bench swat-accuracy`` (the table over
tasks, variants and seeds) both train with :func:`run`, so the claim and the benchmark
measure the same thing. Each run trains with the given seed, data order and steps, counts
training FLOPs with :mod:`pwlab.flops` and reports test accuracy; ``flop_reduction_measured``
recounts the grad-weight FLOPs with the activation density actually kept each step (a cached
threshold can keep more or fewer than K).
"""
from __future__ import annotations

import functools

import torch
from torch import nn

import pwlab.tasks
from pwlab import flops
from pwlab.swat import SwatLinear, swatify
from pwlab.tasks.base import loss as task_loss
from pwlab.tasks.base import score as task_score

VARIANTS = (("dense", "uniform", 0.0), ("SWAT-U", "uniform", 0.8), ("SWAT-U", "uniform", 0.9),
            ("SWAT-ERK", "erk", 0.9))


@functools.lru_cache(maxsize=None)
def load_task(name: str, seed: int):
    """``(x_train (N, F), y_train, x_test, y_test, num_classes)`` with images flattened."""
    t = pwlab.tasks.get(name, seed=seed)
    flat = lambda x: x.reshape(x.shape[0], -1).float()
    return flat(t.x_train), t.y_train, flat(t.x_test), t.y_test, t.num_classes


def mlp(d_in: int, hidden: int, depth: int, classes: int) -> nn.Sequential:
    """A ReLU MLP: ``depth`` hidden layers of width ``hidden``, then a linear head to ``classes``."""
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, classes))


def _act_densities(model: nn.Module) -> tuple[dict, list]:
    """Measurement probe: the fraction of each SWAT layer's input kept for backward, per step."""
    seen: dict = {}

    def hook(mod, inp, out):
        if mod.act_threshold is not None and torch.is_grad_enabled():
            seen[mod] = float((inp[0].detach().abs() > mod.act_threshold).float().mean())
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, SwatLinear)]
    return seen, handles


def run(task, variant: str, sparsity: float, seed: int, *, hidden: int, depth: int, steps: int, batch: int,
        lr: float, topk_period: int, fixed_mask: bool = True) -> dict:
    """Train :func:`mlp` on ``task`` (from :func:`load_task`), SWAT at ``sparsity`` unless 0.

    Returns ``accuracy`` (test), ``train_flops`` (counted, all ``steps``), ``flop_reduction``
    (dense over SWAT training FLOPs of the SWAT layers) and ``flop_reduction_measured``.
    """
    x_tr, y_tr, x_te, y_te, classes = task
    torch.manual_seed(seed)
    model = mlp(x_tr.shape[1], hidden, depth, classes)
    if sparsity > 0:
        swatify(model, sparsity, sparsity, variant=variant, topk_period=topk_period, fixed_mask=fixed_mask)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    seen, handles = _act_densities(model)
    swat_layers = [m for m in model.modules() if isinstance(m, SwatLinear)]
    measured_gw = 0.0                                                     # grad-weight FLOPs, kept density
    model.train()
    order = torch.randperm(len(x_tr), generator=gen)
    pos = 0
    for _ in range(steps):
        if pos + batch > len(order):
            order, pos = torch.randperm(len(x_tr), generator=gen), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = task_loss("classification", model(x_tr[idx]), y_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        measured_gw += sum(2 * batch * m.in_features * m.out_features * seen.get(m, 1.0) for m in swat_layers)
    for h in handles:
        h.remove()
    model.eval()
    with torch.no_grad():
        acc = float(task_score("classification", model(x_te), y_te).mean())       # the tasks' own accuracy
    mf = flops.model_flops(model, batch)
    swat = mf.total(swat_only=True)
    dense_same = sum((flops.linear_flops(batch, m.in_features, m.out_features) for m in swat_layers),
                     flops.ZERO)
    measured = swat.forward + swat.grad_input + measured_gw / steps
    return {"accuracy": acc, "train_flops": mf.run(steps),
            "flop_reduction": dense_same.training / swat.training if swat_layers else 1.0,
            "flop_reduction_measured": dense_same.training / measured if swat_layers else 1.0}
