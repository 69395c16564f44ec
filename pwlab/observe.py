"""One observation pass: run a model over tasks' data once and keep everything it did.

:func:`observe` runs a :class:`~pwlab.model.PathwaysModel` in eval mode (no gradients, the
previous mode restored) over the first ``n`` examples of each task's split, in batches, and
returns one :class:`Observation`: per example its task, prediction, target, loss and score
(the task's own :meth:`~pwlab.tasks.base.Task.loss` and :meth:`~pwlab.tasks.base.Task.score`),
and per real token its task, sense, id and its route, the kept assignments of every MoE block.

Everything else that looks at a model on data is a reduction of it:

- evaluation (:func:`pwlab.train.evaluate_model`, ``Trainer.evaluate``): :meth:`Observation.metrics`;
- the experiments' validation loss: :meth:`Observation.mean_losses`;
- pathway maps (:func:`pwlab.pathways.pathway_map`): :meth:`Observation.counts` per block and
  :meth:`Observation.flows`, the exact joint counts between consecutive blocks (the Sankey);
- the apps' live pathway map: one joint pass (``joint=True``), tasks sharing each forward;
- one example's route (:func:`pwlab.pathways.route_example`): :meth:`Observation.example_weights`.

Index legend: B examples (all tasks), N real tokens, L MoE blocks, A kept assignments of one
block, E experts, K tasks, M senses.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import zip_longest

import torch
from torch import Tensor

from pwlab import _checks
from pwlab.model import PathwaysModel, eval_mode
from pwlab.senses import SENSES

BY = ("task", "sense")


@dataclass(frozen=True, eq=False)
class Route:
    """The kept assignments of one MoE block: token ``token[a]`` went to ``expert[a]`` with
    combine weight ``weight[a]``; ``token`` indexes the observation's N tokens. All (A,)."""

    token: Tensor
    expert: Tensor
    weight: Tensor


@dataclass(frozen=True, eq=False)
class Observation:
    """What one eval-mode pass of a model over some tasks' data computed (all on the CPU).

    Attributes:
        task_names: the model's K task names (task ids index this).
        split: ``"test"`` or ``"train"``.
        blocks: trunk index of each of the L MoE blocks.
        num_experts: E, the most experts of any MoE block.
        example_task: (B,) long, task id of each example, in the order they were run.
        example_index: (B,) long, the example's index in its task's split.
        predictions: task name → (n_t, classes) logits or (n_t,) values, in split order.
        targets: task name → (n_t,) targets.
        losses: task name → (n_t,) float, each example's loss (``Task.loss``, unreduced).
        scores: task name → (n_t,) float, each example's score (``Task.score``: 1/0 correct,
            or the squared error); the task's metric is their mean.
        token_example: (N,) long, the example (index into B) of each real token.
        token_task: (N,) long task id; token_sense: (N,) long index into ``SENSES``.
        token_pos: (N,) long position in its example (0 is the task token when there is one).
        token_ids: (N,) long token ids.
        routes: one :class:`Route` per MoE block.
    """

    task_names: tuple[str, ...]
    split: str
    blocks: tuple[int, ...]
    num_experts: int
    example_task: Tensor
    example_index: Tensor
    predictions: dict[str, Tensor]
    targets: dict[str, Tensor]
    losses: dict[str, Tensor]
    scores: dict[str, Tensor]
    token_example: Tensor
    token_task: Tensor
    token_sense: Tensor
    token_pos: Tensor
    token_ids: Tensor
    routes: tuple[Route, ...]

    @property
    def tasks(self) -> tuple[str, ...]:
        """The names of the tasks observed, in the order they were run."""
        return tuple(self.predictions)

    @property
    def num_tokens(self) -> int:
        return int(self.token_task.shape[0])

    # -- reductions over examples ----------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Task name → its metric (accuracy, or MSE): the mean of its examples' scores."""
        return {t: float(s.double().sum()) / max(len(s), 1) for t, s in self.scores.items()}

    def mean_losses(self) -> dict[str, float]:
        """Task name → the mean of its examples' losses."""
        return {t: float(v.double().sum()) / max(len(v), 1) for t, v in self.losses.items()}

    # -- reductions over tokens ------------------------------------------------------------
    def _groups(self, by: str) -> tuple[Tensor, int]:
        if by not in BY:
            raise ValueError(f"by must be one of {', '.join(map(repr, BY))}; got {by!r}")
        return (self.token_task, len(self.task_names)) if by == "task" else (self.token_sense, len(SENSES))

    def tokens_per_task(self) -> Tensor:
        """(K,) long: real tokens observed per task."""
        return torch.bincount(self.token_task, minlength=len(self.task_names))

    def counts(self, by: str = "task") -> Tensor:
        """(L, E, K or M) long: kept assignments per MoE block, expert and task (or sense)."""
        group, g = self._groups(by)
        e = self.num_experts
        out = torch.zeros(len(self.routes), e, g, dtype=torch.long)
        for li, r in enumerate(self.routes):
            out[li] = torch.bincount(r.expert * g + group[r.token], minlength=e * g).view(e, g)
        return out

    def assignments(self, block: int) -> Tensor:
        """(N, E) long: 1 where token n was kept on expert e in the ``block``-th MoE block (0-based)."""
        r = self.routes[block]
        m = torch.zeros(self.num_tokens, self.num_experts, dtype=torch.long)
        m.index_put_((r.token, r.expert), torch.ones_like(r.token), accumulate=True)
        return m

    def flows(self, by: str = "task") -> Tensor:
        """(L-1, E, E, K or M) long: exact joint counts between consecutive MoE blocks.

        ``flows[l, i, j, k]`` counts the tokens of task (sense) k kept on expert i in block l and
        on expert j in block l+1, each token once per such pair (a top-k token gives k·k pairs;
        a token dropped in either block gives none). Summed over j it is not the marginal
        count of block l where tokens are dropped in block l+1; the two agree when nothing is
        dropped and every token has the same number of experts.
        """
        group, g = self._groups(by)
        e, nl = self.num_experts, len(self.routes)
        out = torch.zeros(max(nl - 1, 0), e, e, g, dtype=torch.long)
        if nl < 2:
            return out
        members = [torch.nonzero(group == k).flatten() for k in range(g)]
        prev = self.assignments(0).double()                                      # (N, E)
        for li in range(nl - 1):
            nxt = self.assignments(li + 1).double()
            for k, idx in enumerate(members):
                # Σ_{n in group k} prev[n, i] · nxt[n, j]: exact in float64 for counts < 2^53
                out[li, :, :, k] = (prev[idx].t() @ nxt[idx]).round().long()
            prev = nxt
        return out

    def example_weights(self, example: int) -> tuple[Tensor, Tensor]:
        """One example's tokens: ((T,) token ids in position order, (L, T, E) combine weights)."""
        tok = torch.nonzero(self.token_example == example).flatten()              # (T,) in position order
        local = torch.full((self.num_tokens,), -1, dtype=torch.long)
        local[tok] = torch.arange(len(tok))
        weights = torch.zeros(len(self.routes), len(tok), self.num_experts)
        for li, r in enumerate(self.routes):
            keep = local[r.token] >= 0
            weights[li].index_put_((local[r.token[keep]], r.expert[keep]), r.weight[keep], accumulate=True)
        return self.token_ids[tok], weights


@torch.no_grad()
def observe(model: PathwaysModel, tasks: Sequence | None = None, split: str = "test", n: int | None = None, *,
            batch_size: int = 256, joint: bool = False) -> Observation:
    """Run ``model`` once (eval mode, no gradients) over the first ``n`` examples of each task.

    Args:
        tasks: Task objects or names of the model's tasks (None: all of them).
        split: ``"test"`` or ``"train"``.
        n: examples per task, an integer >= 1, or None (all).
        batch_size: examples per task per forward; memory is bounded by it (what is kept is
            per example and per token, not activations).
        joint: run the tasks' i-th batches together in one forward, as a training step does
            (they compete for expert capacity together); default one task per forward.
    Returns:
        An :class:`Observation`. The model's train/eval mode is restored.
    """
    if not isinstance(model, PathwaysModel):
        raise TypeError(f"model must be a pwlab.PathwaysModel, got {type(model).__name__}")
    _checks.one_of("split", split, ("train", "test"))
    if n is not None:
        _checks.positive_int("n", n)
    _checks.positive_int("batch_size", batch_size)
    names = [t if isinstance(t, str) else getattr(t, "name", t) for t in (model.task_names if tasks is None else tasks)]
    # unknown names list the model's tasks
    names = [model.task(t).name for t in names]
    if len(set(names)) != len(names):
        raise ValueError(f"tasks must be distinct, got {names}")
    streams = [model.batches(t, split, n, batch_size) for t in names]
    if joint:
        steps: Iterable = ([b for b in group if b is not None] for group in zip_longest(*streams))
    else:
        steps = ([b] for stream in streams for b in stream)
    return observe_batches(model, steps, split=split, tasks=names)


@torch.no_grad()
def observe_batches(model: PathwaysModel, steps: Iterable[Sequence], *, split: str = "test",
                    tasks: Sequence[str] | None = None, start: dict[str, int] | None = None) -> Observation:
    """:func:`observe` over given forwards: ``steps`` yields lists of TaskBatch, one forward each.

    ``tasks``: the order of the observation's per-task dicts (default: as first met);
    ``start``: task name → split index of its first example (default 0; a task's batches
    follow one another in split order).
    """
    moe = model.moe_blocks()
    blocks = tuple(moe)
    e = max((m.num_experts for m in moe.values()), default=0)
    seen = dict(start or {})
    names = list(tasks or ())
    preds: dict[str, list] = {t: [] for t in names}
    targets: dict[str, list] = {t: [] for t in names}
    losses: dict[str, list] = {t: [] for t in names}
    scores: dict[str, list] = {t: [] for t in names}
    ex_task, ex_index = [], []
    tok_ex, tok_task, tok_mod, tok_pos, tok_ids = [], [], [], [], []
    routes: list[list] = [[] for _ in blocks]
    n_examples = n_tokens = 0
    with eval_mode(model):
        for batches in steps:
            out = model(list(batches))
            for b in batches:
                t = model.task(b.task)
                lo, hi = out.rows[b.task]
                p, y = out.predictions[b.task], out.targets[b.task]
                for d in (preds, targets, losses, scores):
                    d.setdefault(b.task, [])
                preds[b.task].append(p.cpu())
                targets[b.task].append(y.cpu())
                losses[b.task].append(t.loss(p, y, reduction="none").float().cpu())
                scores[b.task].append(t.score(p, y).float().cpu())
                first = seen.get(b.task, 0)
                seen[b.task] = first + (hi - lo)
                ex_task.append(torch.full((hi - lo,), model.task_index[b.task], dtype=torch.long))
                ex_index.append(torch.arange(first, first + hi - lo))
            # rows of this forward follow the batches' order, so a token's example is offset + row
            tok_ex.append(out.token_row.cpu() + n_examples)
            tok_task.append(out.token_task.cpu())
            tok_mod.append(out.token_sense.cpu())
            tok_pos.append(out.token_pos.cpu())
            tok_ids.append(out.token_ids.cpu())
            for li, blk in enumerate(blocks):
                r = out.moe_stats[blk].routing
                routes[li].append((r.token.cpu() + n_tokens, r.expert.cpu(), r.weight.detach().float().cpu()))
            n_examples += sum(len(b.y) for b in batches)
            n_tokens += int(out.token_task.shape[0])

    def cat(parts: list, dtype=torch.long) -> Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)

    def per_task(d: dict) -> dict[str, Tensor]:
        # a task with no examples in the split keeps its key, with an empty tensor
        return {t: cat(v, torch.float32) for t, v in d.items()}

    return Observation(
        task_names=tuple(model.task_names), split=split, blocks=blocks, num_experts=e,
        example_task=cat(ex_task), example_index=cat(ex_index),
        predictions=per_task(preds), targets=per_task(targets), losses=per_task(losses), scores=per_task(scores),
        token_example=cat(tok_ex), token_task=cat(tok_task), token_sense=cat(tok_mod),
        token_pos=cat(tok_pos), token_ids=cat(tok_ids),
        routes=tuple(Route(cat([a for a, _, _ in rs]), cat([b for _, b, _ in rs]),
                           cat([c for _, _, c in rs], torch.float32)) for rs in routes))
