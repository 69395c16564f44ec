"""The Trainer across ranks: expert parallelism for the experts, data parallelism for the rest.

Every rank runs the same sampler (same seed), so all ranks see the same step; each keeps its
piece of it (:func:`~pwlab.distributed.parallel.shard_batches`). A rank minimises its share

    Σ_task share[task] · loss_on_rank[task] / num_tasks  +  aux_loss_on_rank / P

whose sum over the ranks is the single-process task loss on the whole step plus the mean of
the ranks' auxiliary losses. The auxiliary losses are per rank — each rank's tokens are one
GShard group (Lepikhin et al. 2020, §2.2), and capacity is per group too — so with zero
auxiliary weights and no capacity the run equals the single-process one, step for step.

History records have the single-process fields and meanings (losses, counts and MoE load
are global; ``aux/<name>`` is the mean over ranks), identical on every rank.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from pwlab.config import Config
from pwlab.distributed.parallel import clip_grad_norm_, expert_parallel, shard_batches, sync_gradients
from pwlab.history import Record, StepRecord
from pwlab.train import NonFiniteGradientError, NonFiniteLossError, Trainer


class DistributedTrainer(Trainer):
    """:class:`~pwlab.train.Trainer` over the ranks of ``group`` (collective: build it on every rank).

    The model is built from the seed exactly as the single-process trainer builds it, then its
    MoE layers are sharded (:func:`~pwlab.distributed.parallel.expert_parallel`). Routing noise
    on rank r comes from a generator seeded ``seed + 1 + r``. Checkpoints are not supported
    (each rank holds only its experts).
    """

    def __init__(self, tasks: Sequence, config: Config | None = None, *, group=None,
                 callbacks: Sequence[Callable] = ()):
        super().__init__(tasks, config, callbacks=callbacks)
        self.group = group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        if self.config.train.batch_size < self.world_size:
            raise ValueError(f"batch_size must be >= the world size {self.world_size}, "
                             f"got {self.config.train.batch_size}")
        expert_parallel(self.model, group)
        self.optimizer = self._make_optimizer()          # over the sharded parameters
        self.generator.manual_seed(self.config.train.seed + 1 + self.rank)

    def _one_step(self) -> Record:
        tc = self.config.train
        snap = self._snapshot()               # the buffers a skipped step puts back
        t0 = time.perf_counter()
        self.model.train()
        batches = self.sampler.sample()
        mine, share = shard_batches(batches, self.rank, self.world_size)
        out = self.model(mine, generator=self.generator)
        names = [b.task for b in batches]
        task_part = sum(share[t] * out.losses[t] for t in out.losses) / len(names)
        objective = task_part + out.aux_loss / self.world_size
        # every rank must take the same branch, or the next collective waits forever
        finite = torch.tensor([float(bool(torch.isfinite(objective)))], device=objective.device)
        dist.all_reduce(finite, op=dist.ReduceOp.MIN, group=self.group)
        if not bool(finite[0]):
            err = NonFiniteLossError(self.step_count + 1, names, float("nan"), what="distributed objective",
                                     skipped=self._skips_at_limit())
            return self._skip_or_raise(err, "distributed objective", snap)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        sync_gradients(self.model, self.group)
        grad_norm = clip_grad_norm_(self.model, tc.grad_clip, self.group)    # global: one verdict on all ranks
        if not bool(torch.isfinite(grad_norm)):
            # checked before the update, as the single-process trainer does: never applied
            first = next((n for n, p in self.model.named_parameters()
                          if p.grad is not None and not bool(torch.isfinite(p.grad).all())), None)
            err = NonFiniteGradientError(self.step_count + 1, names, float(grad_norm), first,
                                         skipped=self._skips_at_limit())
            return self._skip_or_raise(err, "gradient", snap)
        self.optimizer.step()
        self.step_count += 1
        rec = self._record(out, mine, float(grad_norm), time.perf_counter() - t0)
        rec = self._globalise(rec, out, batches, share)
        self._commit(rec)
        return rec

    def _globalise(self, rec: StepRecord, out, batches, share: dict[str, float]) -> StepRecord:
        """The record with the rank's loss fields replaced by the step's (one all-reduce)."""
        names = [b.task for b in batches]
        aux_names = sorted(rec.aux)
        per_task = [share.get(t, 0.0) * float(out.losses[t].detach()) if t in out.losses else 0.0 for t in names]
        vec = torch.tensor(per_task + [float(out.aux_loss.detach()) / self.world_size]
                           + [rec.aux[a] / self.world_size for a in aux_names], dtype=torch.float64,
                           device=out.loss.device)
        dist.all_reduce(vec, group=self.group)
        vals = vec.tolist()
        task_loss = sum(vals[:len(names)]) / len(names)
        aux_loss = vals[len(names)]
        return dataclasses.replace(rec, loss=task_loss + aux_loss, task_loss=task_loss, aux_loss=aux_loss,
                                   task_losses=dict(zip(names, vals)), examples={b.task: len(b.y) for b in batches},
                                   aux={**rec.aux, **dict(zip(aux_names, vals[len(names) + 1:]))})

    def save(self, path) -> None:
        """Not supported: each rank holds only its experts (gather them with ``gather_experts``)."""
        raise NotImplementedError("DistributedTrainer cannot save checkpoints yet: each rank holds only its "
                                  "experts; gather them with ExpertParallelMoE.gather_experts()")

    def restore(self, path) -> None:
        """Not supported (see :meth:`save`)."""
        raise NotImplementedError("DistributedTrainer cannot restore checkpoints yet")
