"""Helpers shared by the apps: default tasks, model building, example inputs and labels."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pwlab.tasks as T
from pwlab.observe import observe
from pwlab.pathways import PathwayMap, route_example
from pwlab.tasks.text import VOCAB as TEXT_VOCAB

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
