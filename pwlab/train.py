"""The Trainer: step-wise multi-task training with typed history records.

One step = one :meth:`pwlab.tasks.MultiTaskSampler.sample` (a TaskBatch per task present),
one forward of :class:`~pwlab.model.PathwaysModel` over all of them, one optimizer update.

History records (``Trainer.history``, in order) are the typed records of :mod:`pwlab.history`:
:class:`~pwlab.history.StepRecord`, :class:`~pwlab.history.SkippedRecord` and
:class:`~pwlab.history.EvalRecord`; read their fields (``rec.task_losses["digits"]``,
``rec.blocks[1].load``). Each is also a read-only mapping with the flat keys below (what
checkpoints store and callbacks receive as a plain dict, ``rec.as_dict()``).

Training record, one per step (:class:`~pwlab.history.StepRecord`)::

    "step"            int, steps applied so far (1 for the first step)
    "loss"            float, task loss + aux loss (what was minimised)
    "task_loss"       float, mean over the tasks present of their losses
    "aux_loss"        float, sum of the MoE blocks' weighted auxiliary losses
    "loss/<task>"     float, that task's loss (only tasks present in the step)
    "n/<task>"        int, that task's examples in the step
    "aux/<name>"      float, an unweighted auxiliary loss ("load_balancing", "z_loss", ...),
                      mean over the MoE blocks
    "load/<block>"    list[float] (E,), fraction of kept assignments per expert of MoE block
                      <block> (its index in the trunk, e.g. "load/1")
    "dropped/<block>" float, fraction of assignments dropped by capacity
    "entropy/<block>" float, mean per-token routing entropy (nats)
    "grad_norm"       float, global gradient norm before clipping
    "time_s"          float, wall time of the step (the only field that differs between runs)
    "lr"              float

Skipped step (``skip_nonfinite=True`` and a NaN/Inf loss, gradient or activation;
:class:`~pwlab.history.SkippedRecord`)::

    "step"            int, steps applied so far (not advanced)
    "skipped"         True
    "nonfinite"       str, the task whose loss was NaN/Inf ("aux_loss" for the auxiliary loss),
                      "gradient", or "forward" (the forward pass failed on NaN/Inf values)
    "where"           str, what was found non-finite, when found: the first parameter with a
                      NaN/Inf gradient, a NaN/Inf parameter, a layer whose output overflowed,
                      or "input" (the task's training input)
    "skipped_in_a_row" int, consecutive skipped steps including this one

The parameters and the optimizer are unchanged; a ``RuntimeWarning`` says what was skipped.
After ``max_consecutive_skips`` skipped steps in a row (a Trainer argument, default 10) the
next non-finite step raises instead: training has diverged. ``Trainer.skipped_steps`` counts
all skipped steps of the history.

Non-finite values (see :class:`NonFiniteLossError`): a NaN/Inf loss, a NaN/Inf gradient
(checked before the optimizer step, so it is never applied) or a forward pass that fails on
NaN/Inf activations raise :class:`NonFiniteLossError` or its subclass
:class:`NonFiniteGradientError`, naming the step, the task(s) and what went non-finite (a
parameter, a layer's output, or the task's input); nothing of the step is applied.

Evaluation record (:meth:`Trainer.evaluate`; :class:`~pwlab.history.EvalRecord`)::

    "step"            int, steps applied when evaluated
    "eval"            True
    "split"           "test" or "train"
    "acc/<task>"      float in [0, 1] (classification)  or  "mse/<task>" float (regression)

Callbacks ``cb(trainer, record)`` run after each record is appended; they get a plain-dict
copy of the record (``as_dict()``) and must only observe (log, plot, stop by raising).
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from pwlab import tasks as registry
from pwlab._checks import positive_int
from pwlab.checkpoint import load_trainer
from pwlab.config import PRESETS, Config, preset, tiny
from pwlab.history import METRIC_PREFIX, BlockRecord, EvalRecord, Record, SkippedRecord, StepRecord
from pwlab.model import ModelOutput, PathwaysModel
from pwlab.nonfinite import (NonFiniteGradientError, NonFiniteLossError, _clip, _input_finding,
                             _interrupts_deferred, _locate_nonfinite, _nonfinite_inputs)
from pwlab.observe import observe
from pwlab.step_strategy import StepStrategy
from pwlab.tasks import MultiTaskSampler, Task

def evaluate_model(model: PathwaysModel, tasks: Sequence, split: str = "test", max_examples: int | None = None,
                   batch_size: int = 256) -> dict[str, float]:
    """Accuracy (classification) or MSE (regression) per task on ``split``.

    Runs in eval mode (deterministic routing, no dropout) and restores the previous mode.
    ``max_examples``: an integer >= 1 (the first that many of each task's split) or None (all).
    Returns task name → metric: :meth:`pwlab.observe.Observation.metrics` of one
    :func:`pwlab.observe.observe` pass, each task scored by its own ``Task.score``.
    """
    if max_examples is not None:
        _max_examples(max_examples)
    for task in tasks:
        model.task(task.name)            # unknown names list the model's tasks
    obs = observe(model, list(dict.fromkeys(t.name for t in tasks)), split=split, n=max_examples, batch_size=batch_size)
    return obs.metrics()


def _max_examples(value, allowed: str = "an integer >= 1 or None (every example)"):
    # 0 would "evaluate" nothing and report accuracy 0 / MSE 0.0 as if it were a result
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_examples must be {allowed}, got {value!r}")
    return value


def metric_key(task) -> str:
    """History key of a task's evaluation metric: ``"acc/<name>"`` or ``"mse/<name>"``."""
    return f"{METRIC_PREFIX[task.kind]}/{task.name}"


def _config(config) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, str):
        return preset(config)           # an unknown name lists the presets
    raise TypeError(f"config must be a pwlab Config or a preset name ({', '.join(map(repr, PRESETS))}), "
                    f"got {type(config).__name__}")


def _tasks(tasks) -> list:
    if isinstance(tasks, str):
        return registry.load(tasks)     # "all" or one name; unknown names list the known ones
    if isinstance(tasks, Task):
        return [tasks]
    try:
        items = list(tasks)
    except TypeError:
        raise TypeError(f"tasks must be a list of Task objects or task names, got {type(tasks).__name__}") from None
    if items and all(isinstance(t, str) for t in items):
        return registry.load(items)
    bad = next((i for i, t in enumerate(items) if not isinstance(t, Task)), None)
    if bad is not None:
        raise TypeError(f"tasks must be a list of Task objects or a list of task names "
                        f"({', '.join(registry.names())}); item {bad} is {type(items[bad]).__name__} "
                        f"{items[bad]!r:.60}")
    if not items:
        raise ValueError(f"tasks must hold at least one task; known task names: {', '.join(registry.names())}")
    return items


class Trainer:
    """Trains a :class:`PathwaysModel` on several tasks at once.

    Args:
        tasks: the tasks (their order fixes the task ids): :class:`~pwlab.tasks.Task` objects,
            or task names (a list of names, one name, or ``"all"``), built with seed 0.
        config: a :class:`~pwlab.config.Config` or a preset name (``pwlab.config.PRESETS``:
            "tiny", "small", ...); default :func:`pwlab.config.tiny`.
        model: an existing model (default: built from ``config.model`` under ``config.train.seed``).
        callbacks: ``cb(trainer, record)`` observers.
        max_consecutive_skips: with ``config.train.skip_nonfinite``, the most steps skipped in
            a row; the next non-finite step raises (default 10).
        strategy: where the step runs (:class:`StepStrategy`, the default: this process);
            :class:`pwlab.distributed.trainer.DistributedTrainer` passes its expert-parallel one.
    """

    def __init__(self, tasks: Sequence | str, config: Config | str | None = None, *,
                 model: PathwaysModel | None = None, callbacks: Sequence[Callable] = (),
                 max_consecutive_skips: int = 10, strategy: StepStrategy | None = None):
        self.config = _config(config) if config is not None else tiny()
        self.tasks = _tasks(tasks)
        self.max_consecutive_skips = positive_int("max_consecutive_skips", max_consecutive_skips)
        tc = self.config.train
        self.device = torch.device(tc.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"config.train.device is {tc.device!r}, but this machine has no CUDA device "
                             "(torch.cuda.is_available() is False); use device='cpu'")
        if model is None:
            with torch.random.fork_rng(devices=[]):      # the init is a function of the seed alone
                torch.manual_seed(tc.seed)
                model = PathwaysModel(self.tasks, self.config.model)
        elif list(model.task_names) != [t.name for t in self.tasks]:
            raise ValueError(f"model was built for tasks {list(model.task_names)}, not {[t.name for t in self.tasks]}")
        self.model = model.to(self.device)
        self.sampler = MultiTaskSampler(self.tasks, batch_size=tc.batch_size, strategy=tc.sampling,
                                        temperature=tc.temperature, seed=tc.seed)
        # routing noise (noisy top-k, GShard, Switch jitter) comes only from this generator
        self.generator = torch.Generator(device=self.device).manual_seed(tc.seed + 1)
        # dropout draws from torch's global generator: the trainer keeps its own copy of that
        # state and swaps it in for each step, so runs do not depend on what else used the RNG
        self.torch_rng = torch.Generator().manual_seed(tc.seed + 2).get_state()
        if strategy is not None and not isinstance(strategy, StepStrategy):
            raise TypeError(f"strategy must be a pwlab.train.StepStrategy, got {type(strategy).__name__}")
        self.strategy = strategy if strategy is not None else StepStrategy()
        self.strategy.setup(self)            # before the optimizer: it may reshape the model
        self.optimizer = self.make_optimizer()
        self.history: list[Record] = []
        self.step_count = 0
        self.callbacks = list(callbacks)
        if not all(callable(cb) for cb in self.callbacks):
            raise TypeError(f"callbacks must be callables cb(trainer, record), got {self.callbacks!r:.80}")

    @property
    def skipped_steps(self) -> int:
        """Skipped steps in the whole history (``skip_nonfinite=True``)."""
        return sum(1 for r in self.history if isinstance(r, SkippedRecord))

    @property
    def consecutive_skips(self) -> int:
        """Skipped steps at the end of the history, in a row (evaluation records do not break a run)."""
        n = 0
        for r in reversed(self.history):
            if isinstance(r, EvalRecord):
                continue
            if not isinstance(r, SkippedRecord):
                break
            n += 1
        return n

    def make_optimizer(self, params=None) -> torch.optim.Optimizer:
        """A new optimizer as ``config.train`` specifies (``optimizer``, ``lr``, ``weight_decay``).

        params: the parameters (or tensors) it updates; default ``self.model.parameters()``,
        which is how :attr:`optimizer` was made. Other tensors of the model's shapes give a
        stand-in, e.g. to check that a saved optimizer state fits before loading it
        (:mod:`pwlab.checkpoint`). The trainer's own :attr:`optimizer` is not touched.
        """
        tc = self.config.train
        params = self.model.parameters() if params is None else params
        if tc.optimizer == "sgd":
            return torch.optim.SGD(params, lr=tc.lr, momentum=0.9, weight_decay=tc.weight_decay)
        return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)

    # -- training ----------------------------------------------------------------------
    def _snapshot(self) -> dict:
        # buffers too: a router may update one in its forward (TopK's expert_bias)
        return {"sampler": self.sampler.state_dict(), "generator": self.generator.get_state(),
                "buffers": [b.clone() for b in self.model.buffers()]}

    def _restore(self, snap: dict) -> None:
        self.sampler.load_state_dict(snap["sampler"])
        self.generator.set_state(snap["generator"])
        self.optimizer.zero_grad(set_to_none=True)
        self._restore_buffers(snap)

    def _restore_buffers(self, snap: dict) -> None:
        with torch.no_grad():
            for b, saved in zip(self.model.buffers(), snap["buffers"]):
                b.copy_(saved)

    def _one_step(self) -> Record:
        """One step with the trainer's own global-RNG stream (dropout) swapped in."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.torch_rng)
            return self._one_step_inner()

    def _one_step_inner(self) -> Record:
        """Compute, then apply and record as one unit; on any exception nothing is applied.

        Where the step runs is the strategy's (:class:`StepStrategy`): it cuts this process's
        part of the step, builds the objective, agrees with the other processes on every
        branch, synchronises gradients and makes the record global. The rest — rollback,
        the non-finite checks, clipping, the deferred Ctrl-C around the update — is here, once.
        """
        tc = self.config.train
        strategy = self.strategy
        snap = self._snapshot()
        t0 = time.perf_counter()
        committed = False
        step = self.step_count + 1
        try:
            self.model.train()
            batches = self.sampler.sample()
            names = [b.task for b in batches]
            mine, share = strategy.shard(batches)
            if not strategy.can_locate:
                # a process whose forward fails alone would leave the others waiting in its
                # collectives: non-finite inputs are agreed on before the forward
                bad_inputs = strategy.agree(_nonfinite_inputs(mine) or None)
                if bad_inputs is not None:
                    found = _input_finding(bad_inputs)
                    err = NonFiniteLossError(step, found["tasks"], what=found["what"], where=found["where"],
                                             detail=found["detail"], skipped=self._skips_at_limit())
                    rec = self._skip_or_raise(err, "forward", snap)
                    committed = True
                    return rec
            try:
                out = self.model(mine, generator=self.generator)
            except ValueError:
                # the model's own finiteness checks: say which step, task and tensor, not "the input"
                found = _locate_nonfinite(self.model, self.generator, mine) if strategy.can_locate else None
                if found is None:
                    raise
                err = NonFiniteLossError(step, found["tasks"] or names, what=found["what"], where=found["where"],
                                         detail=found["detail"], skipped=self._skips_at_limit())
                rec = self._skip_or_raise(err, "forward", snap)
                committed = True
                return rec
            bad = next((name for name, v in out.losses.items() if not math.isfinite(v.detach().item())), None)
            if bad is None and not math.isfinite(float(torch.as_tensor(out.aux_loss).detach())):
                bad = "aux_loss"
            bad = strategy.agree(bad)           # every process takes the same branch
            if bad is not None:
                here = out.losses.get(bad, out.aux_loss if bad == "aux_loss" else None)
                value = float(here.detach()) if here is not None else float("nan")
                found = _locate_nonfinite(self.model, self.generator, mine) if strategy.can_locate else None
                task = bad if bad != "aux_loss" else names
                what = f"auxiliary loss {value}" if bad == "aux_loss" else f"loss {value}"
                err = NonFiniteLossError(step, task, value, what=what, where=found and found["where"],
                                         detail=found and found["detail"], skipped=self._skips_at_limit())
                rec = self._skip_or_raise(err, bad, snap)
                committed = True
                return rec
            self.optimizer.zero_grad(set_to_none=True)
            strategy.objective(out, names, share).backward()
            strategy.after_backward(self.model)
            named = [(n, p) for n, p in self.model.named_parameters() if p.grad is not None]
            params = [p for _, p in named]
            grad_norm = strategy.grad_norm(self.model, [p.grad for p in params])
            if not math.isfinite(float(torch.as_tensor(grad_norm).detach())):
                # checked before clipping and the update: a NaN/Inf gradient is never applied
                first = strategy.agree(next((n for n, p in named if not bool(torch.isfinite(p.grad).all())), None))
                err = NonFiniteGradientError(step, names, float(grad_norm), first, skipped=self._skips_at_limit())
                rec = self._skip_or_raise(err, "gradient", snap)
                committed = True
                return rec
            if tc.grad_clip and params:
                _clip(params, tc.grad_clip, grad_norm)
            # the record before the update: making it global may need the other processes
            rec = strategy.globalise(self._record(out, mine, float(grad_norm), 0.0, step=step), out, batches, share)
            with _interrupts_deferred():     # the update and its record land together
                self.optimizer.step()
                self.step_count += 1
                self._commit(dataclasses.replace(rec, time_s=time.perf_counter() - t0))
                committed = True
            return self.history[-1]
        except BaseException:
            if not committed:
                # nothing was applied: put the sampler and generators back, so the step can be redone
                self._restore(snap)
            raise

    def _skips_at_limit(self) -> int:
        """Skipped steps in a row when one more skip would pass ``max_consecutive_skips``, else 0."""
        n = self.consecutive_skips if self.config.train.skip_nonfinite else 0
        return n if n >= self.max_consecutive_skips else 0

    def _skip_or_raise(self, err: NonFiniteLossError, nonfinite: str, snap: dict) -> SkippedRecord:
        """Raise ``err``, or (``skip_nonfinite``, under the limit) record a skipped step, warn, return it.

        ``nonfinite`` is the record's label: the task whose loss failed, "gradient" or "forward".
        A skipped step puts the model's buffers back from ``snap`` (a router's balancing bias
        moves in forward), as a failed step does.
        """
        in_a_row = self.consecutive_skips
        if not self.config.train.skip_nonfinite or err.skipped:
            raise err
        rec = SkippedRecord(step=self.step_count, nonfinite=nonfinite, skipped_in_a_row=in_a_row + 1, where=err.where)
        with _interrupts_deferred():
            self.optimizer.zero_grad(set_to_none=True)
            self._restore_buffers(snap)
            self._commit(rec)
        warnings.warn(f"skipped step {err.step} ({in_a_row + 1} in a row, at most {self.max_consecutive_skips}): "
                      f"{str(err).split(' (nothing of this step')[0]}", RuntimeWarning, stacklevel=5)
        return rec

    def _commit(self, rec: Record) -> None:
        # the step's dropout draws are now spent: keep the stream where it is
        self.torch_rng = torch.get_rng_state()
        self.history.append(rec)

    def _record(self, out: ModelOutput, batches, grad_norm: float, seconds: float, *,
                step: int | None = None) -> StepRecord:
        aux: dict[str, list[float]] = {}
        blocks = {}
        for i, s in enumerate(out.moe_stats):
            if s is None:
                continue
            for name, v in s.aux_losses.items():
                aux.setdefault(name, []).append(float(v.detach()))
            blocks[i] = BlockRecord(load=tuple(float(v) for v in s.load), dropped=float(s.dropped_fraction),
                                    entropy=float(s.router_entropy))
        return StepRecord(step=self.step_count if step is None else step, loss=float(out.loss.detach()),
                          task_loss=float(out.task_loss.detach()), aux_loss=float(out.aux_loss.detach()),
                          task_losses={b.task: float(out.losses[b.task].detach()) for b in batches},
                          examples={b.task: len(b.y) for b in batches},
                          aux={name: sum(vs) / len(vs) for name, vs in aux.items()}, blocks=blocks,
                          grad_norm=grad_norm, time_s=seconds, lr=float(self.optimizer.param_groups[0]["lr"]))

    def _notify(self, rec: Record) -> None:
        for cb in self.callbacks:
            cb(self, rec.as_dict())

    def step(self, n: int = 1) -> list[Record]:
        """Apply ``n`` training steps; returns their records (also appended to ``history``)."""
        positive_int("n", n)
        recs = []
        for _ in range(n):
            rec = self._one_step()
            self._notify(rec)
            recs.append(rec)
        return recs

    def fit(self, steps: int | None = None, *, progress: bool = True) -> list[Record]:
        """Train ``steps`` more steps (default ``config.train.steps``) with a progress bar.

        An interrupt (Ctrl-C) stops between two steps: every step is applied whole or not
        at all, so the trainer can be saved and resumed. Evaluates every
        ``config.train.eval_every`` steps when that is > 0.
        """
        steps = positive_int("steps", self.config.train.steps if steps is None else steps, minimum=0)
        every = self.config.train.eval_every
        recs = []
        with tqdm(total=steps, disable=not progress, desc="train", leave=False) as bar:
            for _ in range(steps):
                rec = self.step(1)[0]
                recs.append(rec)
                bar.update(1)
                if isinstance(rec, StepRecord):
                    bar.set_postfix(loss=f"{rec.loss:.3f}", refresh=False)
                if every and self.step_count % every == 0:
                    self.evaluate()
        return recs

    # -- evaluation --------------------------------------------------------------------
    def evaluate(self, split: str = "test", max_examples: int | None | str = "config",
                 record: bool = True) -> dict[str, float]:
        """Metric per task (accuracy or MSE) on ``split``; appends an evaluation record.

        ``max_examples``: an integer >= 1 (at most that many examples per task), None (every
        example), or ``"config"`` (the default: ``config.train.eval_examples``). Anything else
        (0, negative, a float) raises ``ValueError``: 0 examples would report accuracy 0 and
        MSE 0.0 as a result. Evaluation draws no random numbers, so it never changes the
        training trajectory.
        """
        if isinstance(max_examples, str) and max_examples == "config":
            limit = self.config.train.eval_examples
        elif max_examples is None:
            limit = None
        else:
            limit = _max_examples(max_examples, "an integer >= 1 or None (every example) or 'config' "
                                                "(config.train.eval_examples, the default)")
        metrics = evaluate_model(self.model, self.tasks, split=split, max_examples=limit)
        if record:
            rec = EvalRecord(step=self.step_count, split=split, metrics={t.name: metrics[t.name] for t in self.tasks},
                             metric_names={t.name: METRIC_PREFIX[t.kind] for t in self.tasks})
            self.history.append(rec)
            self._notify(rec)
        return metrics

    # -- checkpoints (see pwlab.checkpoint) ----------------------------------------------
    def save(self, path) -> None:
        """Write a checkpoint atomically, with a digest of its contents (see :mod:`pwlab.checkpoint`).

        Stale temporary files of earlier saves of ``path`` that were killed are removed.
        """
        self.strategy.save(self, path)

    def restore(self, path) -> None:
        """Load a checkpoint of this same configuration into this trainer (nothing changes on error).

        Raises ``ValueError`` for a file that is not a fitting checkpoint, and
        :class:`pwlab.checkpoint.CheckpointIntegrityError` (a ``ValueError``) for one whose
        contents changed after it was written; a checkpoint without a digest (older pwlab)
        loads with a warning.
        """
        self.strategy.restore(self, path)

    @classmethod
    def load(cls, path, tasks: Sequence | None = None, *, callbacks: Sequence[Callable] = (),
             device: str | torch.device | None = None, max_consecutive_skips: int = 10) -> "Trainer":
        """A new trainer from a checkpoint; ``tasks`` default to the checkpoint's, rebuilt by name.

        ``device``: where to put the trainer (e.g. ``"cpu"``); by default the checkpoint's
        device when this machine has it, else the CPU with a warning, so a checkpoint saved on
        a GPU loads on a machine without one. Raises ``ValueError`` for a file that is not a
        fitting checkpoint and :class:`pwlab.checkpoint.CheckpointIntegrityError` (a
        ``ValueError``) for one whose contents changed after it was written.
        """
        return load_trainer(cls, path, tasks, callbacks=callbacks, device=device,
                            max_consecutive_skips=max_consecutive_skips)
