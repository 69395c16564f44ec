"""The Trainer across ranks: expert parallelism for the experts, data parallelism for the rest.

:class:`DistributedTrainer` is the :class:`~pwlab.train.Trainer` with an
:class:`ExpertParallelStrategy`: the step itself (rollback, the non-finite checks, skip or
raise, clipping, Ctrl-C held around the update) is the one of :mod:`pwlab.train`; the
strategy only says where it runs.

Every rank runs the same sampler (same seed), so all ranks see the same step; each keeps its
piece of it (:func:`~pwlab.distributed.parallel.shard_batches`). A rank minimises its share

    Σ_task share[task] · loss_on_rank[task] / num_tasks  +  aux_loss_on_rank / P

whose sum over the ranks is the single-process task loss on the whole step plus the mean of
the ranks' auxiliary losses. The auxiliary losses are per rank — each rank's tokens are one
GShard group (Lepikhin et al. 2020, §2.2), and capacity is per group too — so with zero
auxiliary weights and no capacity the run equals the single-process one, step for step.

History records have the single-process fields and meanings (losses, counts and MoE load
are global; ``aux/<name>`` is the mean over ranks), identical on every rank.

Checkpoints are the single-process format (:mod:`pwlab.checkpoint`): ``save`` gathers every
expert shard and its optimizer state to rank 0, which writes the file a single-process
``Trainer.load`` reads; it adds one entry, ``expert_parallel`` = ``{"world_size": P, "ranks":
[per rank: {"generator", "torch", "buffers"}]}``, each rank's routing-noise generator, dropout
stream and replicated buffers, so
that ``restore`` in a group of the same size continues the run exactly. ``restore`` reads the
file on every rank (so it must be visible to every rank), keeps each rank's experts and their
optimizer state, and raises on every rank if it fails on any.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from pwlab.checkpoint import load_state, read_checkpoint, trainer_state, write_state
from pwlab.config import Config
from pwlab.distributed.ep_moe import ExpertParallelMoE
from pwlab.distributed.parallel import clip_grad_norm_, expert_parallel, shard_batches, sync_gradients
from pwlab.history import StepRecord
from pwlab.model import ModelOutput
from pwlab.step_strategy import StepStrategy
from pwlab.train import Trainer


class ExpertParallelStrategy(StepStrategy):
    """The step over the ranks of ``group`` (default: the world): each rank's MoE layers hold
    their shard of the experts (:func:`~pwlab.distributed.parallel.expert_parallel`), the
    rest is replicated and its gradients summed. Routing noise on rank r comes from a
    generator seeded ``seed + 1 + r``. Every branch of the step is agreed by all ranks, so no
    rank waits in a collective the others skipped."""

    can_locate = False       # rerunning the model on one rank alone would leave the others waiting

    def __init__(self, group=None):
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("ExpertParallelStrategy needs an initialised torch.distributed process group "
                             "(launch with torchrun, or pwlab.distributed.run_local)")
        self.group = group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.device = torch.device("cpu")

    def setup(self, trainer: Trainer) -> None:
        if trainer.config.train.batch_size < self.world_size:
            raise ValueError(f"batch_size must be >= the world size {self.world_size}, "
                             f"got {trainer.config.train.batch_size}")
        self.device = trainer.device
        expert_parallel(trainer.model, self.group)
        trainer.generator.manual_seed(trainer.config.train.seed + 1 + self.rank)

    # -- the step ------------------------------------------------------------------------
    def shard(self, batches: Sequence) -> tuple[list, dict[str, float]]:
        return shard_batches(batches, self.rank, self.world_size)

    def agree(self, value):
        """The first rank's non-None ``value`` (rank order), on every rank; None if all are None."""
        flag = torch.tensor([float(value is not None)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        if not bool(flag[0]):
            return None
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.group)
        return next(v for v in gathered if v is not None)

    def objective(self, out: ModelOutput, names: Sequence[str], share: dict[str, float]) -> torch.Tensor:
        task_part = sum(share[t] * out.losses[t] for t in out.losses) / len(names)
        return task_part + out.aux_loss / self.world_size

    def after_backward(self, model: torch.nn.Module) -> None:
        sync_gradients(model, self.group)

    def grad_norm(self, model: torch.nn.Module, grads: list) -> torch.Tensor:
        # replicated gradients once, every expert shard once: one verdict on all ranks
        return clip_grad_norm_(model, None, self.group)

    def globalise(self, record: StepRecord, out: ModelOutput, batches: Sequence,
                  share: dict[str, float]) -> StepRecord:
        """The record with the rank's loss fields replaced by the step's (one all-reduce)."""
        names = [b.task for b in batches]
        aux_names = sorted(record.aux)
        per_task = [share.get(t, 0.0) * float(out.losses[t].detach()) if t in out.losses else 0.0 for t in names]
        vec = torch.tensor(per_task + [float(out.aux_loss.detach()) / self.world_size]
                           + [record.aux[a] / self.world_size for a in aux_names], dtype=torch.float64,
                           device=out.loss.device)
        dist.all_reduce(vec, group=self.group)
        vals = vec.tolist()
        task_loss = sum(vals[:len(names)]) / len(names)
        aux_loss = vals[len(names)]
        return dataclasses.replace(record, loss=task_loss + aux_loss, task_loss=task_loss, aux_loss=aux_loss,
                                   task_losses=dict(zip(names, vals)), examples={b.task: len(b.y) for b in batches},
                                   aux={**record.aux, **dict(zip(aux_names, vals[len(names) + 1:]))})

    # -- checkpoints ---------------------------------------------------------------------
    def save(self, trainer: Trainer, path) -> None:
        """Gather the experts and their optimizer state; rank 0 writes a single-process checkpoint.

        Collective; returns on every rank once the file is written, raises on every rank if
        writing failed."""
        model = self._whole_model_state(trainer)
        optimizer = self._whole_optimizer_state(trainer)
        ranks: list = [None] * self.world_size
        dist.all_gather_object(ranks, self._rank_state(trainer), group=self.group)
        error = None
        if self.rank == 0:
            try:
                write_state(trainer_state(trainer, model=model, optimizer=optimizer,
                                          expert_parallel={"world_size": self.world_size, "ranks": ranks}), path)
            except Exception as e:      # noqa: BLE001 - every rank raises it below
                error = e
        self._raise_if_any(error, "save")

    def restore(self, trainer: Trainer, path, state: dict | None = None) -> None:
        """Load a checkpoint (of this or a single-process trainer): each rank keeps its experts.

        Collective; raises ``ValueError`` on every rank when the file does not fit on any."""
        error, local = None, None
        try:
            state = read_checkpoint(path) if state is None else state
            local = self._local_state(trainer, state, path)
        except ValueError as e:
            error = e
        self._raise_if_any(error, "restore")
        load_state(trainer, local, path)

    def _raise_if_any(self, error: Exception | None, what: str) -> None:
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, None if error is None else f"{type(error).__name__}: {error}",
                               group=self.group)
        if error is not None:
            raise error
        failed = [(r, msg) for r, msg in enumerate(gathered) if msg is not None]
        if failed:
            raise ValueError(f"{what} failed on " + "; ".join(f"rank {r}: {msg}" for r, msg in failed))

    @staticmethod
    def _layers(trainer: Trainer) -> list[tuple[str, ExpertParallelMoE]]:
        return [(n, m) for n, m in trainer.model.named_modules() if isinstance(m, ExpertParallelMoE)]

    def _expert_keys(self, trainer: Trainer) -> dict[str, tuple[ExpertParallelMoE, torch.Tensor]]:
        """State-dict key → (its layer, the local parameter) of every expert shard."""
        keys = {}
        for name, layer in self._layers(trainer):
            for wname, p in zip(layer.experts.WEIGHT_NAMES, layer.experts.weight_parameters()):
                keys[f"{name}.experts.{wname}"] = (layer, p)
        return keys

    def _whole_model_state(self, trainer: Trainer) -> dict:
        """The model's state dict with every expert bank whole (collective)."""
        state = dict(trainer.model.state_dict())
        for name, layer in self._layers(trainer):
            prefix = f"{name}.experts."
            held = sorted(k[len(prefix):] for k in state if k.startswith(prefix))
            if held != sorted(layer.experts.WEIGHT_NAMES):
                raise NotImplementedError(f"layer {name!r}: its expert bank holds state {held} beyond its "
                                          f"weights {list(layer.experts.WEIGHT_NAMES)}, which save cannot gather")
            for wname, whole in zip(layer.experts.WEIGHT_NAMES, layer.gather_experts()):
                state[prefix + wname] = whole
        return state

    def _param_index(self, trainer: Trainer) -> dict[int, int]:
        """id(parameter) → its index in the optimizer's state dict."""
        params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
        return {id(p): i for i, p in enumerate(params)}

    def _whole_optimizer_state(self, trainer: Trainer) -> dict:
        """The optimizer's state dict with every expert shard's per-element state whole
        (``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``: concatenated over the ranks on the
        expert axis; scalars such as ``step`` are the same on every rank). Collective."""
        sd = trainer.optimizer.state_dict()
        index = self._param_index(trainer)
        shards = {}
        for _, p in self._expert_keys(trainer).values():
            i = index[id(p)]
            shards[i] = {k: v.detach().cpu() for k, v in sd["state"].get(i, {}).items()
                         if isinstance(v, torch.Tensor) and v.shape == p.shape}
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, shards, group=self.group)
        state = {i: dict(s) for i, s in sd["state"].items()}
        for i, mine in shards.items():
            for k, v in mine.items():
                state[i][k] = torch.cat([part[i][k] for part in parts]).to(sd["state"][i][k].device)
        return {"state": state, "param_groups": sd["param_groups"]}

    def _rank_state(self, trainer: Trainer) -> dict:
        """What differs between the ranks beyond the experts: RNG streams, replicated buffers."""
        experts = set(self._expert_keys(trainer))
        params = {n for n, _ in trainer.model.named_parameters()}
        buffers = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()
                   if k not in params and k not in experts}
        return {"generator": trainer.generator.get_state(), "torch": trainer.torch_rng.clone(), "buffers": buffers}

    def _local_state(self, trainer: Trainer, state: dict, path) -> dict:
        """This rank's part of a whole checkpoint: its experts' shards and their optimizer state,
        and its RNG streams and buffers when the checkpoint was saved by a group of this size."""
        try:
            local = dict(state)
            model = dict(state["model"])
            optimizer = {"state": {i: dict(s) for i, s in state["optimizer"]["state"].items()},
                         "param_groups": state["optimizer"]["param_groups"]}
            index = self._param_index(trainer)
            for key, (layer, p) in self._expert_keys(trainer).items():
                whole = model.get(key)
                lo, hi = layer.expert_range
                if not isinstance(whole, torch.Tensor) or tuple(whole.shape) != (layer.num_experts, *p.shape[1:]):
                    raise ValueError(f"model parameter {key!r} is not a bank of {layer.num_experts} experts "
                                     f"of shape {tuple(p.shape[1:])}")
                model[key] = whole[lo:hi].clone()
                for k, v in optimizer["state"].get(index[id(p)], {}).items():
                    if isinstance(v, torch.Tensor) and v.shape == whole.shape:
                        optimizer["state"][index[id(p)]][k] = v[lo:hi].clone()
            ep = state.get("expert_parallel")
            if isinstance(ep, dict) and ep.get("world_size") == self.world_size:
                mine = ep["ranks"][self.rank]
                unknown = sorted(set(mine["buffers"]) - set(model))
                if unknown:
                    raise ValueError(f"rank {self.rank}'s buffers {unknown[:5]} are not in the model")
                model.update(mine["buffers"])
                local["rng"] = {"generator": mine["generator"], "torch": mine["torch"]}
            else:
                saved = ep.get("world_size") if isinstance(ep, dict) else 1
                if self.rank:
                    gen = torch.Generator(device=trainer.generator.device)
                    gen.manual_seed(trainer.config.train.seed + 1 + self.rank + int(state["step"]))
                    local["rng"] = {"generator": gen.get_state(), "torch": state["rng"]["torch"]}
                warnings.warn(f"{str(path)!r} was saved by {saved} process(es), not {self.world_size}: the model, "
                              "optimizer, sampler and history load exactly, but the ranks' routing-noise generators "
                              "are reseeded, so noisy routing differs from an uninterrupted run", UserWarning,
                              stacklevel=4)
            local["model"], local["optimizer"] = model, optimizer
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise ValueError(f"{str(path)!r} does not fit this trainer: {type(e).__name__}: {e}") from None
        return local


class DistributedTrainer(Trainer):
    """:class:`~pwlab.train.Trainer` over the ranks of ``group`` (collective: build it on every rank).

    The model is built from the seed exactly as the single-process trainer builds it, then its
    MoE layers are sharded (:class:`ExpertParallelStrategy`). ``save``/``restore``/``load`` are
    the trainer's, collective: the checkpoint is a single-process one (see the module doc).
    """

    def __init__(self, tasks: Sequence, config: Config | None = None, *, group=None,
                 callbacks: Sequence[Callable] = (), max_consecutive_skips: int = 10):
        super().__init__(tasks, config, callbacks=callbacks, max_consecutive_skips=max_consecutive_skips,
                         strategy=ExpertParallelStrategy(group))

    @property
    def group(self):
        return self.strategy.group

    @property
    def rank(self) -> int:
        return self.strategy.rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size
