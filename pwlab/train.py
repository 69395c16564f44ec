"""The Trainer: step-wise multi-task training with plain-dict history records.

One step = one :meth:`pwlab.tasks.MultiTaskSampler.sample` (a TaskBatch per task present),
one forward of :class:`~pwlab.model.PathwaysModel` over all of them, one optimizer update.

History records (``Trainer.history``, a list of plain dicts, in order):

Training record, one per step::

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

Skipped step (``skip_nonfinite=True`` and a NaN/Inf loss): ``{"step", "skipped": True,
"nonfinite": "<task>"}``; the parameters are unchanged and "step" is not advanced.

Evaluation record (:meth:`Trainer.evaluate`)::

    "step"            int, steps applied when evaluated
    "eval"            True
    "split"           "test" or "train"
    "acc/<task>"      float in [0, 1] (classification)  or  "mse/<task>" float (regression)

Callbacks ``cb(trainer, record)`` run after each record is appended; they get a copy of the
record and must only observe (log, plot, stop by raising).
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from pwlab.config import Config
from pwlab.model import ModelOutput, PathwaysModel, eval_mode


class NonFiniteLossError(FloatingPointError):
    """A task's loss was NaN or Inf; ``step`` and ``task`` say where."""

    def __init__(self, step: int, task: str, value: float):
        super().__init__(f"non-finite loss {value} at step {step} in task {task!r} "
                         "(lower the learning rate, or pass skip_nonfinite=True to skip such batches)")
        self.step, self.task, self.value = step, task, value


@torch.no_grad()
def evaluate_model(model: PathwaysModel, tasks: Sequence, split: str = "test", max_examples: int | None = None,
                   batch_size: int = 256) -> dict[str, float]:
    """Accuracy (classification) or MSE (regression) per task on ``split``.

    Runs in eval mode (deterministic routing, no dropout) and restores the previous mode.
    Returns task name → metric.
    """
    for task in tasks:
        model.task(task.name)            # unknown names list the model's tasks
    out = {}
    with eval_mode(model):
        for task in tasks:
            seen, total = 0, 0.0
            for b in model.batches(task.name, split, max_examples, batch_size):
                o = model([b])
                pred, y = o.predictions[task.name], o.targets[task.name]
                if task.kind == "regression":
                    total += float(((pred - y.to(pred.dtype)) ** 2).sum())
                else:
                    total += float((pred.argmax(-1) == y).sum())
                seen += len(b.y)
            out[task.name] = total / max(seen, 1)
    return out


def metric_key(task) -> str:
    """History key of a task's evaluation metric: ``"acc/<name>"`` or ``"mse/<name>"``."""
    return ("mse/" if task.kind == "regression" else "acc/") + task.name


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C until the block ends, so an update is applied whole or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


class Trainer:
    """Trains a :class:`PathwaysModel` on several tasks at once.

    Args:
        tasks: the tasks (their order fixes the task ids).
        config: a :class:`~pwlab.config.Config` (default :func:`pwlab.config.tiny`).
        model: an existing model (default: built from ``config.model`` under ``config.train.seed``).
        callbacks: ``cb(trainer, record)`` observers.
    """

    def __init__(self, tasks: Sequence, config: Config | None = None, *, model: PathwaysModel | None = None,
                 callbacks: Sequence[Callable] = ()):
        from pwlab.config import tiny
        from pwlab.tasks import MultiTaskSampler
        self.config = config if config is not None else tiny()
        self.tasks = list(tasks)
        tc = self.config.train
        self.device = torch.device(tc.device)
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
        self.optimizer = self._make_optimizer()
        self.history: list[dict] = []
        self.step_count = 0
        self.callbacks = list(callbacks)

    def _make_optimizer(self, params=None) -> torch.optim.Optimizer:
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

    def _one_step(self) -> dict:
        """One step with the trainer's own global-RNG stream (dropout) swapped in."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.torch_rng)
            return self._one_step_inner()

    def _one_step_inner(self) -> dict:
        """Compute, then apply and record as one unit; on any exception nothing is applied."""
        tc = self.config.train
        snap = self._snapshot()
        t0 = time.perf_counter()
        committed = False
        try:
            self.model.train()
            batches = self.sampler.sample()
            out = self.model(batches, generator=self.generator)
            bad = next((name for name, v in out.losses.items() if not bool(torch.isfinite(v))), None)
            if bad is None and not bool(torch.isfinite(out.aux_loss)):
                bad = "aux_loss"
            if bad is not None:
                value = float((out.losses[bad] if bad in out.losses else out.aux_loss).detach())
                if not tc.skip_nonfinite:
                    raise NonFiniteLossError(self.step_count + 1, bad, value)
                with _interrupts_deferred():
                    self.optimizer.zero_grad(set_to_none=True)
                    self._restore_buffers(snap)
                    rec = {"step": self.step_count, "skipped": True, "nonfinite": bad}
                    self._commit(rec)
                    committed = True
                return rec
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            params = [p for p in self.model.parameters() if p.grad is not None]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip else float("inf"))
            with _interrupts_deferred():     # the update and its record land together
                self.optimizer.step()
                self.step_count += 1
                self._commit(self._record(out, batches, float(grad_norm), time.perf_counter() - t0))
                committed = True
            return self.history[-1]
        except BaseException:
            if not committed:
                # nothing was applied: put the sampler and generators back, so the step can be redone
                self._restore(snap)
            raise

    def _commit(self, rec: dict) -> None:
        # the step's dropout draws are now spent: keep the stream where it is
        self.torch_rng = torch.get_rng_state()
        self.history.append(rec)

    def _record(self, out: ModelOutput, batches, grad_norm: float, seconds: float) -> dict:
        rec = {"step": self.step_count, "loss": float(out.loss.detach()), "task_loss": float(out.task_loss.detach()),
               "aux_loss": float(out.aux_loss.detach())}
        for b in batches:
            rec[f"loss/{b.task}"] = float(out.losses[b.task].detach())
            rec[f"n/{b.task}"] = len(b.y)
        aux: dict[str, list[float]] = {}
        for i, s in enumerate(out.moe_stats):
            if s is None:
                continue
            for name, v in s.aux_losses.items():
                aux.setdefault(name, []).append(float(v.detach()))
            rec[f"load/{i}"] = [float(v) for v in s.load]
            rec[f"dropped/{i}"] = float(s.dropped_fraction)
            rec[f"entropy/{i}"] = float(s.router_entropy)
        for name, vs in aux.items():
            rec[f"aux/{name}"] = sum(vs) / len(vs)
        rec["grad_norm"] = grad_norm
        rec["time_s"] = seconds
        rec["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return rec

    def _notify(self, rec: dict) -> None:
        for cb in self.callbacks:
            cb(self, dict(rec))

    def step(self, n: int = 1) -> list[dict]:
        """Apply ``n`` training steps; returns their records (also appended to ``history``)."""
        from pwlab._checks import positive_int
        positive_int("n", n)
        recs = []
        for _ in range(n):
            rec = self._one_step()
            self._notify(rec)
            recs.append(rec)
        return recs

    def fit(self, steps: int | None = None, *, progress: bool = True) -> list[dict]:
        """Train ``steps`` more steps (default ``config.train.steps``) with a progress bar.

        An interrupt (Ctrl-C) stops between two steps: every step is applied whole or not
        at all, so the trainer can be saved and resumed. Evaluates every
        ``config.train.eval_every`` steps when that is > 0.
        """
        from pwlab._checks import positive_int
        steps = positive_int("steps", self.config.train.steps if steps is None else steps, minimum=0)
        every = self.config.train.eval_every
        recs = []
        with tqdm(total=steps, disable=not progress, desc="train", leave=False) as bar:
            for _ in range(steps):
                rec = self.step(1)[0]
                recs.append(rec)
                bar.update(1)
                if "loss" in rec:
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", refresh=False)
                if every and self.step_count % every == 0:
                    self.evaluate()
        return recs

    # -- evaluation --------------------------------------------------------------------
    def evaluate(self, split: str = "test", max_examples: int | None = -1, record: bool = True) -> dict[str, float]:
        """Metric per task (accuracy or MSE) on ``split``; appends an evaluation record.

        ``max_examples=-1`` takes ``config.train.eval_examples``; None evaluates everything.
        Evaluation draws no random numbers, so it never changes the training trajectory.
        """
        limit = self.config.train.eval_examples if max_examples == -1 else max_examples
        metrics = evaluate_model(self.model, self.tasks, split=split, max_examples=limit)
        if record:
            rec = {"step": self.step_count, "eval": True, "split": split}
            rec.update({metric_key(t): metrics[t.name] for t in self.tasks})
            self.history.append(rec)
            self._notify(rec)
        return metrics

    # -- checkpoints (see pwlab.checkpoint) ----------------------------------------------
    def save(self, path) -> None:
        """Write a checkpoint atomically (see :mod:`pwlab.checkpoint`)."""
        from pwlab.checkpoint import save_trainer
        save_trainer(self, path)

    def restore(self, path) -> None:
        """Load a checkpoint of this same configuration into this trainer (nothing changes on error)."""
        from pwlab.checkpoint import restore_trainer
        restore_trainer(self, path)

    @classmethod
    def load(cls, path, tasks: Sequence | None = None, *, callbacks: Sequence[Callable] = ()) -> "Trainer":
        """A new trainer from a checkpoint; ``tasks`` default to the checkpoint's, rebuilt by name."""
        from pwlab.checkpoint import load_trainer
        return load_trainer(cls, path, tasks, callbacks=callbacks)
