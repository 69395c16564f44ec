"""Helpers shared by the apps: the model apps' arguments, default tasks, example inputs and labels."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import pwlab.tasks as T
from pwlab._checks import positive_int
from pwlab.config import Config, preset
from pwlab.observe import observe
from pwlab.pathways import PathwayMap, route_example
from pwlab.tasks.text import VOCAB as TEXT_VOCAB
from pwlab.train import Trainer

#: one task per sense: the default of every app
DEFAULT_TASKS = ("digits", "dtmf", "digit_words", "wine")


def load_tasks(tasks: Sequence | None, seed: int = 0) -> list:
    """Task objects from names (or tasks), default :data:`DEFAULT_TASKS`."""
    names = DEFAULT_TASKS if tasks is None else tasks
    if isinstance(names, str):
        raise ValueError(f"tasks must be a list of task names or Task objects, got the string {names!r}")
    out = [T.get(t, seed=seed) if isinstance(t, str) else t for t in names]
    if not out:
        raise ValueError("tasks must hold at least one task")
    return out


@dataclass(frozen=True)
class ModelArgs:
    """What a model app shows, resolved from its arguments by :func:`model_args`.

    ``trainer`` is the Trainer given as ``trainer=`` (None: the app builds its own model
    from ``tasks``, ``config`` and ``seed``).
    """

    tasks: list
    config: Config
    seed: int
    trainer: Trainer | None


def _task_names(tasks) -> list[str]:
    return [t if isinstance(t, str) else getattr(t, "name", repr(t)) for t in tasks]


def model_args(app: str, tasks=None, config=None, *, trainer=None, seed=None, need_moe: bool = True,
               reuses_trainer: bool = True) -> ModelArgs:
    """Resolve the convention every model app follows: ``App(tasks=None, config=None, *, trainer=None, seed=None)``.

    Without ``trainer``: ``config`` is a preset name or a :class:`pwlab.config.Config` (None:
    ``"tiny"``), ``seed`` (None: the config's ``train.seed``) seeds the model, its training and
    the tasks' data, and ``tasks`` are names or Task objects (None: one task per sense). With
    ``trainer`` (a :class:`pwlab.train.Trainer`) the tasks, config and seed are the trainer's;
    a ``tasks``, ``config`` or ``seed`` given beside it must agree with it, or a ValueError says
    which one conflicts. A Trainer passed where tasks or a config is expected is refused with a
    pointer to ``trainer=`` (``reuses_trainer=False``: to tasks and a config, for an app that
    trains models of its own). ``app`` names the app in the messages; ``need_moe`` refuses a
    config without an MoE layer.
    """
    for name, value in (("tasks", tasks), ("config", config)):
        if isinstance(value, Trainer):
            if not reuses_trainer:
                raise ValueError(f"{app} got a Trainer as {name}; it trains models of its own and takes no "
                                 f"trainer: pass {app}(trainer.tasks, trainer.config) to train from the same setup")
            raise ValueError(f"{app} got a Trainer as {name}; pass a trained model as {app}(trainer=...)")
    if seed is not None:
        seed = positive_int("seed", seed, minimum=0)
    if trainer is not None:
        if not isinstance(trainer, Trainer):
            raise ValueError(f"trainer must be a pwlab.train.Trainer, got {type(trainer).__name__}")
        cfg, mine = trainer.config, [t.name for t in trainer.tasks]
        if tasks is not None and (isinstance(tasks, str) or _task_names(tasks) != mine):
            raise ValueError(f"tasks {tasks!r} conflict with the trainer's tasks {mine}; give trainer= alone "
                             f"(its tasks are used) or tasks without a trainer")
        if seed is not None and seed != cfg.train.seed:
            raise ValueError(f"seed={seed} conflicts with the trainer's seed {cfg.train.seed}; give trainer= alone "
                             f"or a seed without a trainer")
        if config is not None:
            given = _config(config).with_train(seed=cfg.train.seed)
            if given.to_dict() != cfg.to_dict():
                raise ValueError(f"config {config if isinstance(config, str) else given.name!r} conflicts with the "
                                 f"trainer's config {cfg.name!r}; give trainer= alone (its config is used) or a "
                                 f"config without a trainer")
        out = ModelArgs(list(trainer.tasks), cfg, cfg.train.seed, trainer)
    else:
        cfg = _config("tiny" if config is None else config)
        seed = cfg.train.seed if seed is None else seed
        out = ModelArgs(load_tasks(tasks, seed), cfg.with_train(seed=seed), seed, None)
    if need_moe and not out.config.model.moe_layer_indices():
        raise ValueError("config must have at least one MoE layer (moe_layers='none' has nothing to route)")
    return out


def _config(config) -> Config:
    cfg = preset(config) if isinstance(config, str) else config
    if not isinstance(cfg, Config):
        raise ValueError(f"config must be a preset name or a pwlab.config.Config, got {type(cfg).__name__}")
    return cfg


def example_view(model, task: str, index: int) -> tuple:
    """(ExampleRouting, raw input, token labels) of one test example, for :func:`pwlab.viz.example_routing`."""
    er = route_example(model, task, index)
    t = model.task(task)
    x = t.x_test[index]
    labels = None
    if t.sense == "text":
        labels = [TEXT_VOCAB[int(i) - 1] if int(i) > 0 else "" for i in x if int(i) != 0]
        labels = ["␣" if c == " " else c for c in labels]
    elif t.sense == "tabular":
        names = t.meta.get("feature_names") if isinstance(getattr(t, "meta", None), dict) else None
        if names is not None and len(names) == len(x):
            labels = [str(n)[:10] for n in names]
    inputs = x if t.sense in ("image", "audio") else None
    return er, inputs, labels


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running this code (a Jupyter kernel's), or None in a plain script or test."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return None
    return loop if loop.is_running() else None


def live_pathway_map(model, n: int):
    """The pathway map of the first ``n`` test examples of each task of ``model``, in one forward pass.

    :func:`pwlab.pathways.pathway_map` runs one forward per task; one joint
    :func:`pwlab.observe.observe` pass over all tasks halves the cost of a live refresh. The
    counts are the same under token-choice routing without capacity; with capacity or expert
    choice the tasks' tokens compete for slots together, as they do in a training step.
    """
    return PathwayMap.from_observation(observe(model, n=n, batch_size=n, joint=True))
