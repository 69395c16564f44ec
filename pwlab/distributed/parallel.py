"""A whole model across ranks: experts sharded (expert parallel), everything else replicated.

Each rank holds a replica of the non-expert parameters (data parallel) and E/P experts of
every MoE layer. A step's objective is the *sum* over ranks of each rank's share, chosen so
that the sum is the single-process loss on the whole batch (see :func:`shard_batches`):
then the gradient of a replicated parameter is the sum of the ranks' gradients (one
all-reduce), and an expert's gradient is already complete on its owner — the reverse
all-to-all delivered every rank's contribution to it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pwlab.distributed.ep_moe import ExpertParallelMoE
from pwlab.moe import MoE


def expert_parallel(model: nn.Module, group=None) -> nn.Module:
    """Replace every :class:`~pwlab.moe.MoE` in ``model`` (in place) by its expert-parallel copy.

    Collective: every rank must convert the same model (the same seed gives the same weights,
    so the shards put together are the single-process experts). Returns ``model``.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, MoE) and not isinstance(child, ExpertParallelMoE):
                setattr(module, name, ExpertParallelMoE.from_moe(child, group))
    return model


def expert_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that live on one rank only (the expert shards)."""
    return [p for m in model.modules() if isinstance(m, ExpertParallelMoE) for p in m.experts.parameters()]


def replicated_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters every rank holds a copy of, in a fixed order."""
    experts = {id(p) for p in expert_parameters(model)}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in experts]


def sync_gradients(model: nn.Module, group=None, *, average: bool = False) -> None:
    """Sum (or average) the replicated parameters' gradients over the ranks: one all-reduce.

    A parameter without a gradient on some rank (a task head whose task that rank did not
    see) counts as zeros there; one without a gradient on every rank keeps ``grad=None``.
    """
    params = replicated_parameters(model)
    if not params:
        return
    dev = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dev)
    dist.all_reduce(has, group=group)
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    if not live:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in live])
    dist.all_reduce(flat, group=group)
    if average:
        flat /= dist.get_world_size(group)
    offset = 0
    for p in live:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def clip_grad_norm_(model: nn.Module, max_norm: float | None, group=None) -> Tensor:
    """The global gradient norm over replicated and sharded parameters, clipped to ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_`` on the single-process model: the replicated
    gradients (equal on every rank after :func:`sync_gradients`) count once, each expert
    shard once. Returns the norm before clipping (the same on every rank); a non-finite
    norm clips nothing.
    """
    experts = {id(p) for p in expert_parameters(model)}
    rep = [p.grad for p in model.parameters() if p.grad is not None and id(p) not in experts]
    exp = [p.grad for p in model.parameters() if p.grad is not None and id(p) in experts]
    dev = next(model.parameters()).device
    sq_exp = torch.stack([g.detach().float().pow(2).sum() for g in exp]).sum() if exp else torch.zeros((), device=dev)
    dist.all_reduce(sq_exp, group=group)
    sq_rep = torch.stack([g.detach().float().pow(2).sum() for g in rep]).sum() if rep else torch.zeros((), device=dev)
    total = (sq_rep + sq_exp).sqrt()
    # a NaN/Inf norm leaves the gradients as they are: the caller refuses or skips the step
    if max_norm is not None and math.isfinite(max_norm) and bool(torch.isfinite(total)):
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)     # the same rule as torch's clip_grad_norm_
        for g in rep + exp:
            g.mul_(coef.to(g.dtype))
    return total


def shard_batches(batches: Sequence, rank: int, world_size: int) -> tuple[list, dict[str, float]]:
    """This rank's part of a multi-task step, and each task's share of the whole.

    The step's examples, task after task, are cut into ``world_size`` contiguous pieces whose
    sizes differ by at most one; rank r keeps piece r. Returns the rank's TaskBatches (tasks
    it has no example of are left out) and ``share[task] = n_task_on_rank / n_task``. The
    single-process task loss (a mean over tasks of each task's mean loss) is then exactly
    ``Σ_ranks Σ_task share[task] · loss_on_rank[task] / num_tasks``.
    """
    sizes = [len(b.y) for b in batches]
    total = sum(sizes)
    if total < world_size:
        raise ValueError(f"batch_size must be >= the world size {world_size} (every rank needs an example), "
                         f"got a step of {total} examples")
    lo = rank * total // world_size
    hi = (rank + 1) * total // world_size
    mine, share, start = [], {}, 0
    for b, n in zip(batches, sizes):
        a, z = max(lo, start) - start, min(hi, start + n) - start
        if z > a:
            mine.append(dataclasses.replace(b, x=b.x[a:z], y=b.y[a:z]))
            share[b.task] = (z - a) / n
        start += n
    return mine, share
