"""Training history: one typed, frozen record per event of a :class:`~pwlab.train.Trainer`.

Three kinds, in the order they happen (``Trainer.history`` is a list of them):

- :class:`StepRecord`: an applied training step (losses, per-task losses and example counts,
  auxiliary losses, per-MoE-block :class:`BlockRecord` of load, dropped fraction, entropy);
- :class:`SkippedRecord`: a step skipped for a NaN/Inf (``skip_nonfinite=True``);
- :class:`EvalRecord`: an evaluation (``Trainer.evaluate``), metric per task.

Figures (:mod:`pwlab.viz`) read the fields. Each record is also a read-only mapping with the
flat keys of earlier pwlab versions (``rec["loss/digits"]``, ``rec["load/1"]``, ``"eval" in
rec``; see :mod:`pwlab.train`), so code and notebooks that index records by key keep working;
:meth:`~_Record.as_dict` gives that view as a plain dict (what checkpoints store and callbacks
receive), and :func:`from_dict` rebuilds the typed record from it exactly.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields

#: metric prefix of an evaluation key, by task kind
METRIC_PREFIX = {"classification": "acc", "regression": "mse"}


class _Record(Mapping):
    """The flat-key view shared by the records (read-only)."""

    def as_dict(self) -> dict:
        """The record as a plain dict with the flat keys (a fresh copy)."""
        raise NotImplementedError

    def _view(self) -> dict:
        view = self.__dict__.get("_flat")
        if view is None:
            view = self.as_dict()
            object.__setattr__(self, "_flat", view)
        return view

    def __getitem__(self, key: str):
        value = self._view()[key]
        return list(value) if isinstance(value, list) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    def __eq__(self, other) -> bool:
        # records compare by fields; with a plain mapping, by the flat-key view
        if isinstance(other, _Record):
            return type(self) is type(other) and all(getattr(self, f.name) == getattr(other, f.name)
                                                     for f in fields(self))
        if isinstance(other, Mapping):
            return self.as_dict() == dict(other)
        return NotImplemented

    __hash__ = None


@dataclass(frozen=True)
class BlockRecord:
    """One MoE block in one step: ``load`` (E,) fraction of kept assignments per expert,
    ``dropped`` fraction dropped by capacity, ``entropy`` mean per-token routing entropy (nats)."""

    load: tuple[float, ...] | None = None
    dropped: float | None = None
    entropy: float | None = None


@dataclass(frozen=True, eq=False)
class StepRecord(_Record):
    """An applied training step.

    Attributes:
        step: steps applied so far (1 for the first step).
        loss: task loss + aux loss (what was minimised); task_loss: mean over the tasks
            present; aux_loss: sum of the MoE blocks' weighted auxiliary losses.
        task_losses: task → its loss (tasks present in the step); examples: task → its
            examples in the step.
        aux: auxiliary loss name → its unweighted value, mean over the MoE blocks.
        blocks: trunk index of each MoE block → its :class:`BlockRecord`.
        grad_norm: global gradient norm before clipping; time_s: wall time of the step (the
            only field that differs between runs); lr: the learning rate.
        extra: any other key of a record built by :func:`from_dict` (kept for a round trip).
    Fields a partial record (e.g. a hand-written dict) lacks are None.
    """

    step: int
    loss: float
    task_loss: float | None = None
    aux_loss: float | None = None
    task_losses: dict[str, float] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    aux: dict[str, float] = field(default_factory=dict)
    blocks: dict[int, BlockRecord] = field(default_factory=dict)
    grad_norm: float | None = None
    time_s: float | None = None
    lr: float | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {"step": self.step, "loss": self.loss}
        _put(d, "task_loss", self.task_loss)
        _put(d, "aux_loss", self.aux_loss)
        for t in dict.fromkeys([*self.task_losses, *self.examples]):
            _put(d, f"loss/{t}", self.task_losses.get(t))
            _put(d, f"n/{t}", self.examples.get(t))
        for b, s in self.blocks.items():
            _put(d, f"load/{b}", None if s.load is None else list(s.load))
            _put(d, f"dropped/{b}", s.dropped)
            _put(d, f"entropy/{b}", s.entropy)
        for name, v in self.aux.items():
            d[f"aux/{name}"] = v
        _put(d, "grad_norm", self.grad_norm)
        _put(d, "time_s", self.time_s)
        _put(d, "lr", self.lr)
        d.update(self.extra)
        return d


@dataclass(frozen=True, eq=False)
class SkippedRecord(_Record):
    """A step skipped for a NaN/Inf: nothing was applied.

    Attributes:
        step: steps applied so far (not advanced).
        nonfinite: the task whose loss was NaN/Inf (``"aux_loss"``), ``"gradient"``, or
            ``"forward"``.
        skipped_in_a_row: consecutive skipped steps including this one.
        where: what was found non-finite (a parameter, a layer, ``"input"``), or None.
    """

    step: int
    nonfinite: str
    skipped_in_a_row: int
    where: str | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {"step": self.step, "skipped": True, "nonfinite": self.nonfinite}
        _put(d, "where", self.where)
        d["skipped_in_a_row"] = self.skipped_in_a_row
        d.update(self.extra)
        return d


@dataclass(frozen=True, eq=False)
class EvalRecord(_Record):
    """An evaluation.

    Attributes:
        step: steps applied when evaluated; split: ``"test"`` or ``"train"``.
        metrics: task → its metric value; metric_names: task → ``"acc"`` (accuracy in [0, 1])
            or ``"mse"``.
    """

    step: int
    split: str
    metrics: dict[str, float] = field(default_factory=dict)
    metric_names: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {"step": self.step, "eval": True, "split": self.split}
        for t, v in self.metrics.items():
            d[f"{self.metric_names.get(t, 'acc')}/{t}"] = v
        d.update(self.extra)
        return d

    def metric_key(self, task: str) -> str:
        """``"acc/<task>"`` or ``"mse/<task>"``: the label of a task's metric."""
        return f"{self.metric_names.get(task, 'acc')}/{task}"


Record = StepRecord | SkippedRecord | EvalRecord


def _put(d: dict, key: str, value) -> None:
    if value is not None:
        d[key] = value


def _block(key: str) -> int | None:
    try:
        return int(key)
    except ValueError:
        return None


def from_dict(d: Mapping) -> Record:
    """The typed record of a flat-key dict (a checkpoint's, or an earlier version's history).

    Inverse of ``as_dict``: ``from_dict(r.as_dict()) == r``. Keys it does not know are kept in
    ``extra``. Raises ValueError for a mapping that is not a record.
    """
    if isinstance(d, _Record):
        return d
    if not isinstance(d, Mapping) or "step" not in d:
        raise ValueError(f"a history record must be a mapping with a 'step', got {d!r:.80}")
    rest = dict(d)
    step = rest.pop("step")
    if rest.pop("eval", False):
        split = rest.pop("split", "test")
        metrics, names, extra = {}, {}, {}
        for k, v in rest.items():
            prefix, _, task = k.partition("/")
            if task and prefix in METRIC_PREFIX.values():
                metrics[task], names[task] = v, prefix
            else:
                extra[k] = v
        return EvalRecord(step, split, metrics, names, extra)
    if rest.pop("skipped", False):
        return SkippedRecord(step, rest.pop("nonfinite", ""), rest.pop("skipped_in_a_row", 1), rest.pop("where", None),
                             rest)
    if "loss" not in rest:
        raise ValueError(f"a training record must have a 'loss' (or be an evaluation or a skipped step), "
                         f"got keys {sorted(d)}")
    scalars = {name: rest.pop(name, None) for name in ("loss", "task_loss", "aux_loss", "grad_norm", "time_s", "lr")}
    task_losses, examples, aux, extra = {}, {}, {}, {}
    blocks: dict[int, dict] = {}
    for k, v in rest.items():
        prefix, _, name = k.partition("/")
        if prefix == "loss" and name:
            task_losses[name] = v
        elif prefix == "n" and name:
            examples[name] = v
        elif prefix == "aux" and name:
            aux[name] = v
        elif prefix in ("load", "dropped", "entropy") and _block(name) is not None:
            blocks.setdefault(_block(name), {})[prefix] = tuple(v) if prefix == "load" else v
        else:
            extra[k] = v
    return StepRecord(step=step, task_losses=task_losses, examples=examples, aux=aux,
                      blocks={b: BlockRecord(**s) for b, s in blocks.items()}, extra=extra, **scalars)


def records(history: Iterable | None) -> list[Record]:
    """Typed records of a history (records pass through, flat-key dicts are rebuilt)."""
    return [from_dict(r) for r in (history or ())]


def train_records(history: Iterable | None) -> list[StepRecord]:
    """The applied training steps of a history (skipped steps and evaluations left out)."""
    return [r for r in records(history) if isinstance(r, StepRecord)]


def eval_records(history: Iterable | None) -> list[EvalRecord]:
    """The evaluations of a history."""
    return [r for r in records(history) if isinstance(r, EvalRecord)]
