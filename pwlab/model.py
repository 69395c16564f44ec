"""PathwaysModel: many senses and many tasks through one sparsely activated trunk.

    task batches ─ sense encoders ─→ tokens (B, T, D) ─ prepend a learned task token
      ─ pad to a common T and concatenate along the batch (all tasks share the routers)
      ─ L blocks of [pre-norm attention + FFN], FFN = MoE or dense per block
      ─ final norm ─ pool (mean of real tokens, or the task token) ─ one head per task

Index legend: B examples (all tasks of the step), T tokens per example, D d_model,
N real (unpadded) tokens, E experts, L blocks.

Observation is explicit: :class:`ModelOutput` holds each MoE block's :class:`~pwlab.moe.MoEStats`
and the task and sense of every routed token (``Routing.token`` indexes them), so the
pathway maps are counted from the output, with no hooks.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pwlab.config import ModelConfig
from pwlab.experts import ACTIVATIONS
from pwlab.moe import MoE
from pwlab.moe_stats import MoEStats
from pwlab.routing import make_router
from pwlab.senses import SENSES, Senses, Tokens, pad_cat
from pwlab.tasks import batches as task_batches

#: first task-token id when the sense encoders do not say how many ids they use
TASK_TOKEN_ID = 1 << 20


@dataclass(frozen=True, eq=False)
class ModelOutput:
    """What one forward pass over a multi-task step computed.

    Attributes:
        predictions: task name → logits (B_t, classes) or regression values (B_t,).
        targets: task name → the batch's targets.
        losses: task name → that task's loss (cross-entropy or MSE), differentiable.
        task_loss: mean of ``losses`` over the tasks present.
        aux_loss: sum of the MoE blocks' weighted auxiliary losses.
        loss: ``task_loss + aux_loss`` (what is minimised).
        moe_stats: one entry per block: its :class:`MoEStats`, or None for a dense block.
        token_task: (N,) task index (position in ``model.task_names``) of each real token,
            in the order the MoE layers route them (``Routing.token`` indexes this).
        token_sense: (N,) index into :data:`pwlab.senses.base.SENSES`.
        token_row: (N,) row of the token's example in the concatenated batch.
        token_pos: (N,) position of the token in its example (0 is the task token).
        rows: task name → (start, stop) rows of its examples in the concatenated batch.
        token_ids: (N,) each real token's id (what hash routing reads; the task token's id
            comes after every sense's ids).
    """

    predictions: dict[str, Tensor]
    targets: dict[str, Tensor]
    losses: dict[str, Tensor]
    task_loss: Tensor
    aux_loss: Tensor
    loss: Tensor
    moe_stats: tuple[MoEStats | None, ...]
    token_task: Tensor
    token_sense: Tensor
    token_row: Tensor
    token_pos: Tensor
    rows: dict[str, tuple[int, int]]
    token_ids: Tensor | None = None


class Attention(nn.Module):
    """Multi-head self-attention over real tokens: padding is never attended to."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, D), mask (B, T) bool → (B, T, D)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        keep = mask[:, None, None, :]                                          # (B, 1, 1, T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    """The dense FFN ``act(x·W1 + b1)·W2 + b2``."""

    def __init__(self, d_model: int, d_hidden: int, activation: str = "gelu"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_hidden), nn.Linear(d_hidden, d_model)
        self.act = ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; the FFN is an :class:`MoE` or a :class:`FeedForward`."""

    def __init__(self, cfg: ModelConfig, ffn: nn.Module):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.num_heads, cfg.dropout)
        self.ffn = ffn
        self.drop = nn.Dropout(cfg.dropout)

    @property
    def is_moe(self) -> bool:
        return isinstance(self.ffn, MoE)

    def forward(self, x: Tensor, mask: Tensor, *, task: Tensor, token_ids: Tensor, groups: Tensor,
                generator: torch.Generator | None) -> tuple[Tensor, MoEStats | None]:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        h = self.ln2(x)
        if self.is_moe:
            y, stats = self.ffn(h, mask=mask, task=task, token_ids=token_ids, groups=groups, generator=generator)
        else:
            y, stats = self.ffn(h), None
        return x + self.drop(y), stats


def make_moe(cfg: ModelConfig, num_tasks: int, num_experts: int | None = None) -> MoE:
    """The MoE FFN a config describes (``num_experts`` overrides the config's E)."""
    router = make_router(cfg.router, **cfg.router_arguments(num_tasks))
    return MoE(cfg.d_model, cfg.d_hidden, num_experts or cfg.num_experts, router,
               capacity_factor=cfg.capacity_factor, aux_weights=cfg.aux_weights,
               activation=cfg.activation if cfg.expert == "ffn" else None, num_groups=len(SENSES),
               expert=cfg.expert)


class PathwaysModel(nn.Module):
    """Sense encoders → task token → trunk of blocks → pooling → one head per task.

    Args:
        tasks: the :class:`~pwlab.tasks.base.Task` list; a task's index in it is its task id.
        cfg: a :class:`ModelConfig`.
        senses: the encoders (default ``pwlab.senses.Senses(tasks, cfg.d_model)``): a module
            with ``forward(x, task_name) -> Tokens``.
    """

    def __init__(self, tasks: Sequence, cfg: ModelConfig | None = None, *, senses: nn.Module | None = None):
        super().__init__()
        cfg = cfg if cfg is not None else ModelConfig()
        if not tasks:
            raise ValueError("tasks must hold at least one task")
        self.cfg = cfg
        self.tasks = tuple(tasks)
        self.task_names = tuple(t.name for t in tasks)
        if len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"tasks must have distinct names, got {list(self.task_names)}")
        self.task_index = {name: i for i, name in enumerate(self.task_names)}
        if senses is None:
            senses = Senses(list(tasks), cfg.d_model)
        self.senses = senses
        d = cfg.d_model
        self.task_tokens = nn.Parameter(torch.randn(len(tasks), d) * 0.02)     # (num_tasks, D)
        moe_at = set(cfg.moe_layer_indices())
        self.blocks = nn.ModuleList(
            Block(cfg, make_moe(cfg, len(tasks)) if i in moe_at
                  else FeedForward(d, cfg.ffn_hidden, cfg.activation))
            for i in range(cfg.num_layers))
        self.norm = nn.LayerNorm(d)
        self.heads = nn.ModuleDict({t.name: nn.Linear(d, t.out_dim) for t in tasks})

    # -- structure ---------------------------------------------------------------------
    def moe_blocks(self) -> dict[int, MoE]:
        """Block index → its MoE layer, for the sparse blocks."""
        return {i: b.ffn for i, b in enumerate(self.blocks) if b.is_moe}

    def task(self, name: str):
        """The task called ``name``; unknown names list the known ones."""
        if name not in self.task_index:
            raise ValueError(f"task must be one of {', '.join(map(repr, self.task_names))}; got {name!r}")
        return self.tasks[self.task_index[name]]

    # -- forward -----------------------------------------------------------------------
    def encode(self, batches: Sequence) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, dict]:
        """Encode each task's batch, prepend its task token, pad to a common T and concatenate.

        Returns x (B, T, D), mask (B, T) bool, task ids (B, T), token ids (B, T), sense ids
        (B, T) and each task's (start, stop) rows.
        """
        dev = self.task_tokens.device
        # task tokens get ids after every sense's ids, so hash routing gives them their own experts
        first_id = int(getattr(self.senses, "num_token_ids", TASK_TOKEN_ID))
        parts, tasks, rows, start = [], [], {}, 0
        for b in batches:
            if b.task not in self.task_index:
                self.task(b.task)   # raises, listing the known tasks
            if b.task in rows:
                raise ValueError(f"task {b.task!r} appears twice in one step")
            t = self.task_index[b.task]
            tok = self.senses(b.x.to(dev), b.task)
            n = tok.tokens.shape[0]
            if self.cfg.task_token:
                tok = Tokens(tokens=torch.cat([self.task_tokens[t].expand(n, 1, -1), tok.tokens], dim=1),
                             mask=torch.cat([tok.mask.new_ones(n, 1), tok.mask.bool()], dim=1),
                             token_ids=torch.cat([tok.token_ids.new_full((n, 1), first_id + t), tok.token_ids], dim=1),
                             sense=tok.sense)
            parts.append(tok)
            tasks.append(torch.full((n,), t, dtype=torch.long, device=dev))
            rows[b.task] = (start, start + n)
            start += n
        x, mask, ids, sense = pad_cat(parts)
        width = x.shape[1]
        task = torch.cat(tasks)[:, None].expand(-1, width)
        ids = ids.clamp_min(0)        # padding is never routed; keep ids valid for hashing anyway
        return x, mask.bool(), task, ids, sense[:, None].expand(-1, width), rows

    def forward(self, batches: Sequence, *, generator: torch.Generator | None = None) -> ModelOutput:
        """Run one multi-task step: ``batches`` is a list of TaskBatch (one per task present)."""
        if not batches:
            raise ValueError("batches must hold at least one TaskBatch")
        x, mask, task, ids, sense, rows = self.encode(batches)
        stats = []
        for block in self.blocks:
            x, s = block(x, mask, task=task, token_ids=ids, groups=sense, generator=generator)
            stats.append(s)
        x = self.norm(x)
        predictions, targets, losses = {}, {}, {}
        for b in batches:
            lo, hi = rows[b.task]
            h, m = x[lo:hi], mask[lo:hi]
            if self.cfg.pooling == "task_token":
                pooled = h[:, 0]
            else:   # mean over real tokens
                pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
            out = self.heads[b.task](pooled)
            y = b.y.to(out.device)
            spec = self.tasks[self.task_index[b.task]]
            if spec.kind == "regression":
                out = out.squeeze(-1)
            losses[b.task] = spec.loss(out, y)           # the task owns its loss
            predictions[b.task], targets[b.task] = out, y
        task_loss = torch.stack(list(losses.values())).mean()
        aux = sum((s.aux_loss for s in stats if s is not None), task_loss.new_zeros(()))
        rowpos = torch.nonzero(mask)                                              # (N, 2) in routing order
        return ModelOutput(predictions=predictions, targets=targets, losses=losses, task_loss=task_loss,
                           aux_loss=aux, loss=task_loss + aux, moe_stats=tuple(stats),
                           token_task=task[mask], token_sense=sense[mask],
                           token_row=rowpos[:, 0], token_pos=rowpos[:, 1], rows=rows, token_ids=ids[mask])

    def batches(self, task: str, split: str = "test", max_examples: int | None = None,
                batch_size: int = 256) -> Iterator:
        """The first ``max_examples`` (None: all) of a task's split, as TaskBatches in order."""
        t = self.task(task)
        seen = 0
        for b in task_batches(t, split=split, batch_size=batch_size, task_index=self.task_index[task]):
            if max_examples is not None:
                if seen >= max_examples:
                    return
                b = replace(b, x=b.x[:max_examples - seen], y=b.y[:max_examples - seen])
            seen += len(b.y)
            yield b

    def extra_repr(self) -> str:
        return f"tasks={list(self.task_names)}, moe_blocks={list(self.cfg.moe_layer_indices())}"


@contextmanager
def eval_mode(model: nn.Module):
    """Within the block the model is in eval mode (deterministic routing, no dropout)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
