"""Pathway maps: which experts each task and each sense uses, and what they are worth.

A pathway map counts kept token→expert assignments per MoE block, per expert, per task and
per sense, and the exact flows of tokens between consecutive blocks, all reduced from one
:func:`pwlab.observe.observe` pass (each token's route through every block), so nothing is
hooked. From the counts:

- mutual information ``I(E;T) = H(E) − H(E|T)`` in bits between the expert an assignment
  goes to and its task (or sense): 0 when every task spreads over the experts alike,
  ``log2(#tasks)`` at most when each task owns its experts (Mod-Squad maximises it; LIMoE
  reports the sense version as "modality-specific experts");
- the routing entropy ``H(E|T=t)`` of each task's expert distribution;
- each task's top pathway (its most used experts per block).

Then experiments: :func:`disable_experts` (ablation: the chosen experts output nothing),
:func:`extract_subnetwork` (a smaller model with only the experts one task uses, as in
task-level MoE serving, Kudugunta et al. 2021) and :func:`route_example` (where each token of
one example went).

Index legend: L MoE blocks, E experts, K tasks, M senses, T tokens of one example.
"""
from __future__ import annotations

import copy
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from pwlab import _checks
from pwlab.model import PathwaysModel, make_moe
from pwlab.observe import Observation, observe, observe_batches
from pwlab.senses import SENSES
from pwlab.tasks.base import TaskBatch


@dataclass(frozen=True)
class PathwayMap:
    """Assignment counts of a model on some data.

    Attributes:
        task_counts: (L, E, K) long, kept assignments per MoE block, expert and task.
        sense_counts: (L, E, M) long, the same per sense.
        blocks: the trunk index of each of the L MoE blocks.
        tasks: the K task names; senses: the M sense names.
        tokens: (K,) long, routed tokens per task (an assignment count for each is at most k×).
        task_flows: (L-1, E, E, K) long or None: ``[l, i, j, k]`` counts the tokens of task k on
            expert i of block l and expert j of block l+1 (exact joint counts, see
            :meth:`pwlab.observe.Observation.flows`); None for a map built from counts alone.
        sense_flows: (L-1, E, E, M) long or None, the same per sense.
    """

    task_counts: Tensor
    sense_counts: Tensor
    blocks: tuple[int, ...]
    tasks: tuple[str, ...]
    senses: tuple[str, ...]
    tokens: Tensor
    task_flows: Tensor | None = None
    sense_flows: Tensor | None = None

    @classmethod
    def from_observation(cls, obs: Observation) -> "PathwayMap":
        """The map of an :class:`~pwlab.observe.Observation`: its counts and flows by task and by sense."""
        return cls(obs.counts("task"), obs.counts("sense"), obs.blocks, obs.task_names, SENSES,
                   obs.tokens_per_task(), obs.flows("task"), obs.flows("sense"))

    def share(self, by: str = "task") -> Tensor:
        """(L, E, K or M) float: each task's (sense's) assignments as fractions over experts."""
        c = (self.task_counts if by == "task" else self.sense_counts).double()
        return (c / c.sum(1, keepdim=True).clamp_min(1)).float()

    def mutual_information(self, by: str = "task") -> list[float]:
        """I(E;T) in bits per MoE block (``by="sense"``: I(E;M))."""
        c = self.task_counts if by == "task" else self.sense_counts
        return [mutual_information(c[i]) for i in range(c.shape[0])]

    def entropy(self, task: str) -> list[float]:
        """H(E | T=task) in bits per MoE block: how spread the task's routing is."""
        k = _task_position(self, task)
        return [entropy(self.task_counts[i, :, k]) for i in range(self.task_counts.shape[0])]


def entropy(counts: Tensor) -> float:
    """Shannon entropy in bits of the distribution proportional to ``counts`` (0 for no counts)."""
    c = counts.double().flatten()
    total = float(c.sum())
    if total <= 0:
        return 0.0
    p = c[c > 0] / total
    return float(-(p * p.log2()).sum())


def mutual_information(counts: Tensor) -> float:
    """I(E;T) = H(E) − H(E|T) in bits from a count table ``counts (E, K)`` (rows: experts).

    ``H(E|T) = Σ_t p(t) · H(E | T=t)``; tasks with no counts do not contribute.
    """
    c = counts.double()
    if c.dim() != 2:
        raise ValueError(f"counts must be a 2-D (experts, tasks) table, got shape {tuple(c.shape)}")
    total = float(c.sum())
    if total <= 0:
        return 0.0
    h_e = entropy(c.sum(1))
    h_e_given_t = sum(float(c[:, k].sum()) / total * entropy(c[:, k]) for k in range(c.shape[1]))
    return max(0.0, h_e - h_e_given_t)


def pathway_map(model: PathwaysModel, tasks=None, split: str = "test", max_examples: int | None = 256,
                batch_size: int = 256) -> PathwayMap:
    """Count the routing of ``model`` (in eval mode) on up to ``max_examples`` per task
    (``tasks``: Task objects or names of the model's tasks; None for all of them).

    One :func:`~pwlab.observe.observe` pass, one forward per task and batch, reduced by
    :meth:`PathwayMap.from_observation`.
    """
    if not isinstance(model, PathwaysModel):
        raise TypeError(f"model must be a pwlab.PathwaysModel, got {type(model).__name__}")
    if max_examples is not None:
        _checks.positive_int("max_examples", max_examples)
    _checks.positive_int("batch_size", batch_size)
    return PathwayMap.from_observation(observe(model, tasks, split=split, n=max_examples, batch_size=batch_size))


def _task_position(pmap: PathwayMap, task: str) -> int:
    if task not in pmap.tasks:
        raise ValueError(f"task must be one of {', '.join(map(repr, pmap.tasks))}; got {task!r}")
    return pmap.tasks.index(task)


def top_pathway(pmap: PathwayMap, task: str, top_k: int = 2) -> dict[int, list[int]]:
    """Block index → the ``top_k`` experts ``task`` uses most there (most used first)."""
    t = _task_position(pmap, task)
    out = {}
    for li, blk in enumerate(pmap.blocks):
        c = pmap.task_counts[li, :, t]
        order = torch.argsort(-c, stable=True)[:top_k]
        out[blk] = [int(i) for i in order if c[i] > 0]
    return out


@contextmanager
def disable_experts(model: PathwaysModel, experts: dict[int, list[int]]):
    """Within the block, the given experts of the given MoE blocks output nothing.

    Args:
        experts: trunk block index → expert indices to switch off.
    """
    moe = model.moe_blocks()
    unknown = [b for b in experts if b not in moe]
    if unknown:
        raise ValueError(f"experts keys must be MoE block indices {list(moe)}; got {unknown}")
    with ExitStack() as stack:
        for b, idx in experts.items():
            stack.enter_context(moe[b].disabled(idx))
        yield model


def extract_subnetwork(model: PathwaysModel, task: str, pmap: PathwayMap | None = None,
                       min_share: float = 0.0) -> tuple[PathwaysModel, dict[int, list[int]]]:
    """A copy of ``model`` whose MoE blocks keep only the experts ``task`` uses.

    An expert is kept when it received more than ``min_share`` of the task's assignments in
    ``pmap`` (default: the map of the task's test split). Router parameters are sliced to the
    kept experts (expert tables remapped), so a router that renormalises over the experts it
    picks (top-k and task routing with k >= 2, hash, GShard) computes exactly what the model
    did for the task's tokens whenever they stay on kept experts. Routers whose combine weight
    is a probability over all experts (Switch, k = 1) or whose experts pick tokens (expert
    choice) change a little.
    Evaluate the result with :func:`pwlab.train.evaluate_model` to see what it keeps.

    Returns the smaller model and block index → kept experts (original indices).
    """
    t = model.task(task)
    if pmap is None:
        pmap = pathway_map(model, [t])
    k = _task_position(pmap, task)
    small = copy.deepcopy(model)
    kept: dict[int, list[int]] = {}
    for li, blk in enumerate(pmap.blocks):
        c = pmap.task_counts[li, :, k].double()
        share = c / c.sum().clamp_min(1)
        keep = [int(i) for i in torch.nonzero(share > min_share).flatten()]
        if not keep:
            keep = [int(torch.argmax(c))]
        old = model.moe_blocks()[blk]
        keep = keep if len(keep) >= old.top_k else _pad_keep(keep, c, old.top_k)
        small.blocks[blk].ffn = _sub_moe(model, old, keep)
        kept[blk] = keep
    return small, kept


def _pad_keep(keep: list[int], counts: Tensor, k: int) -> list[int]:
    # a top-k router needs at least k experts: add the next most used ones
    order = [int(i) for i in torch.argsort(-counts, stable=True)]
    return sorted(set(keep) | set(order[:k]))


def _sub_moe(model: PathwaysModel, old, keep: list[int]):
    """A new MoE of ``len(keep)`` experts with the kept experts' and router's weights."""
    idx = torch.tensor(keep, dtype=torch.long)
    new = make_moe(model.cfg, len(model.task_names), num_experts=len(keep)).to(old.experts.w1.device)
    with torch.no_grad():
        for name, t_new in new.experts.state_dict().items():
            t_new.copy_(old.experts.state_dict()[name].index_select(0, idx.to(t_new.device)))
        # the router says which of its tensors run over the experts (Router.sliced_state)
        new.router.load_state_dict(old.router.sliced_state(keep))
    return new


@dataclass(frozen=True)
class ExampleRouting:
    """Where each token of one example went.

    Attributes:
        task: task name; index: the example's index in the split; sense: its sense.
        token_ids: (T,) the tokens' ids (position 0 is the task token when the model has one).
        weights: (L, T, E) combine weight of each expert for each token (0: not routed there).
        blocks: trunk index of each MoE block.
        prediction: the model's output for the example; target: its label.
    """

    task: str
    index: int
    sense: str
    token_ids: Tensor
    weights: Tensor
    blocks: tuple[int, ...]
    prediction: Tensor
    target: Tensor


def route_example(model: PathwaysModel, task: str, index: int = 0, split: str = "test") -> ExampleRouting:
    """Run one example of ``task`` (eval mode) and return its per-token routing.

    An :func:`~pwlab.observe.observe_batches` pass over that one example, reduced by
    :meth:`~pwlab.observe.Observation.example_weights`.
    """
    t = model.task(task)
    _checks.one_of("split", split, ("train", "test"))
    x, y = (t.x_test, t.y_test) if split == "test" else (t.x_train, t.y_train)
    if not 0 <= index < len(y):
        raise ValueError(f"index must be in [0, {len(y)}) for {task!r} {split}, got {index}")
    b = TaskBatch(task=task, task_index=model.task_index[task], sense=t.sense, x=x[index:index + 1], y=y[index:index + 1])
    obs = observe_batches(model, [[b]], split=split, tasks=[task], start={task: index})
    ids, weights = obs.example_weights(0)
    return ExampleRouting(task=task, index=index, sense=t.sense, token_ids=ids, weights=weights,
                          blocks=obs.blocks, prediction=obs.predictions[task][0], target=y[index])


def parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters (for comparing a subnetwork with its model)."""
    return sum(p.numel() for p in model.parameters())
