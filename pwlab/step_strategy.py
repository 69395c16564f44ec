"""StepStrategy: where a training step runs, the hooks the Trainer's one step calls.

Separate from :mod:`pwlab.train` because it is the seam between the step, written once in
:class:`~pwlab.train.Trainer`, and the places it can run: this module's strategy runs it in
one process (every hook does nothing, or the plain thing); the expert-parallel one
(:class:`pwlab.distributed.trainer.ExpertParallelStrategy`) subclasses it to shard the
experts, agree across ranks and synchronise gradients. A strategy's hooks take the trainer
as an argument and never import :mod:`pwlab.train` (which imports this module).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from pwlab.checkpoint import restore_trainer, save_trainer
from pwlab.history import StepRecord
from pwlab.model import ModelOutput
from pwlab.nonfinite import _total_norm


class StepStrategy:
    """Where a training step runs: here, one process (every hook does nothing).

    :class:`~pwlab.train.Trainer` writes the step once — rollback of sampler, generators and buffers,
    the non-finite checks, skip or raise, clipping, Ctrl-C held around the update — and asks
    its strategy at the few places where several processes would differ.
    :class:`pwlab.distributed.trainer.ExpertParallelStrategy` is the other one: experts
    sharded over a process group, everything else data parallel.

    Hooks, in the order a step calls them:

    - ``setup(trainer)``: once, after the model is built and before the optimizer is made.
    - ``shard(batches) -> (mine, share)``: this process's TaskBatches of the step and each
      task's share of it (here: all of it, share 1).
    - ``agree(value)``: the first process's non-None value, the same on every process, so
      that every process takes the same branch (a non-finite loss, its task; a non-finite
      gradient, the first parameter holding one). Here: ``value``.
    - ``objective(out, names, share) -> Tensor``: what this process differentiates
      (here ``out.loss``).
    - ``after_backward(model)``: gradient synchronisation (here: nothing).
    - ``grad_norm(model, grads) -> Tensor``: the global gradient norm (here: of ``grads``).
    - ``globalise(record, out, batches, share) -> StepRecord``: the step's record with the
      whole step's values (here: unchanged).
    - ``save(trainer, path)``, ``restore(trainer, path, state=None)``: checkpoints
      (:mod:`pwlab.checkpoint`).

    ``can_locate``: whether the step may rerun the model alone to say which input, parameter
    or layer went non-finite (a process of a group cannot: the others would not join it).
    """

    can_locate = True

    def setup(self, trainer) -> None:
        pass

    def shard(self, batches: Sequence) -> tuple[list, dict[str, float]]:
        return list(batches), {b.task: 1.0 for b in batches}

    def agree(self, value):
        return value

    def objective(self, out: ModelOutput, names: Sequence[str], share: dict[str, float]) -> torch.Tensor:
        return out.loss

    def after_backward(self, model: torch.nn.Module) -> None:
        pass

    def grad_norm(self, model: torch.nn.Module, grads: list) -> torch.Tensor:
        return _total_norm(grads)

    def globalise(self, record: StepRecord, out: ModelOutput, batches: Sequence,
                  share: dict[str, float]) -> StepRecord:
        return record

    def save(self, trainer, path) -> None:
        save_trainer(trainer, path)

    def restore(self, trainer, path, state: dict | None = None) -> None:
        restore_trainer(trainer, path, state)
