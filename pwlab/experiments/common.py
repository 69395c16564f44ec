"""Shared plumbing of the claim experiments: curves, steps-to-target, spread over seeds.

Every experiment trains small models with fixed seeds and returns plain numbers; the
helpers here measure them the same way everywhere:

- :func:`validation_loss`: mean over tasks of each task's mean test loss, eval mode, on a
  fixed capped subset (evaluation draws no random numbers, so it never changes training);
- :func:`train_curve`: train a :class:`~pwlab.train.Trainer` and record the validation loss
  every ``eval_every`` steps;
- :func:`steps_to_target`: the first recorded step whose value is at or below a target;
- :func:`speedup`: the reference's steps over the candidate's (a lower bound when the
  candidate never reached the target);
- :func:`spread`: mean, sample standard deviation, min and max over seeds.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from pwlab.observe import observe

#: examples per task in validation-loss evaluations (fixed, so curves are comparable)
VAL_EXAMPLES = 256
#: training settings of every trunk experiment, pinned here so a change of the presets'
#: defaults does not silently change the measured table (the ``tiny`` preset's values)
TRAIN = {"batch_size": 128, "lr": 5e-3}


def validation_loss(model, tasks: Sequence, max_examples: int | None = None, split: str = "test") -> float:
    """Mean over ``tasks`` of the task's mean loss (cross-entropy or MSE) on ``split``.

    Uses the first ``max_examples`` examples of each task's split, in eval mode (the mode
    is restored; ``max_examples`` defaults to :data:`VAL_EXAMPLES`), in one forward per task:
    :meth:`~pwlab.observe.Observation.mean_losses` of one :func:`~pwlab.observe.observe` pass.
    Aux losses are not included: this is the quality the papers compare.
    """
    max_examples = VAL_EXAMPLES if max_examples is None else max_examples
    names = [t.name for t in tasks]
    per_task = observe(model, list(dict.fromkeys(names)), split=split, n=max_examples, batch_size=max_examples).mean_losses()
    return sum(per_task[t] for t in names) / len(names)


def train_curve(trainer, steps: int, eval_every: int,
                max_examples: int | None = None) -> tuple[list[int], list[float]]:
    """Train ``steps`` steps, recording the validation loss at step 0 and every ``eval_every``.

    Returns (steps, losses), two lists of equal length; the last entry is at ``steps``.
    ``max_examples`` defaults to :data:`VAL_EXAMPLES`.
    """
    max_examples = VAL_EXAMPLES if max_examples is None else max_examples
    if eval_every < 1 or steps < 1:
        raise ValueError(f"steps and eval_every must be >= 1, got steps={steps}, eval_every={eval_every}")
    xs, ys = [trainer.step_count], [validation_loss(trainer.model, trainer.tasks, max_examples)]
    done = 0
    while done < steps:
        n = min(eval_every, steps - done)
        trainer.step(n)
        done += n
        xs.append(trainer.step_count)
        ys.append(validation_loss(trainer.model, trainer.tasks, max_examples))
    return xs, ys


def final_value(values: Sequence[float], last: int = 3) -> float:
    """Mean of the last ``last`` values of a curve (a final loss less sensitive to one noisy eval)."""
    if not values:
        raise ValueError("values must not be empty")
    tail = list(values)[-last:]
    return sum(tail) / len(tail)


def steps_to_target(steps: Sequence[int], values: Sequence[float], target: float) -> int | None:
    """The first step whose value is <= ``target``; None if the curve never gets there."""
    if len(steps) != len(values):
        raise ValueError(f"steps and values must have the same length, got {len(steps)} and {len(values)}")
    for s, v in zip(steps, values):
        if v <= target:
            return int(s)
    return None


def speedup(reference_steps: int, steps: int | None, horizon: int) -> float:
    """``reference_steps / steps``: how many times fewer steps the candidate needed.

    A candidate that never reached the target within ``horizon`` steps gets
    ``reference_steps / horizon``, an upper bound of its true speed-up (it would have needed
    more than ``horizon``), so a failure is never reported as a success. Step 0 counts as 1.
    """
    if reference_steps < 1 or horizon < 1:
        raise ValueError(f"reference_steps and horizon must be >= 1, got {reference_steps} and {horizon}")
    return reference_steps / max(1, horizon if steps is None else steps)


def spread(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max of ``values``."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("values must not be empty")
    if any(math.isnan(v) for v in vals):
        raise ValueError(f"values must not contain NaN, got {vals}")
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": statistics.fmean(vals), "std": sd, "min": min(vals), "max": max(vals), "n": len(vals)}


def collect(runs: Sequence[dict], key: str) -> dict:
    """:func:`spread` of ``run[key]`` over the runs (one per seed)."""
    return spread([r[key] for r in runs])


def fmt(s: dict, digits: int = 2, unit: str = "") -> str:
    """``"mean ± std"`` of a :func:`spread` (just the mean for one seed)."""
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}{unit}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}{unit}"


def accuracy_points(a: float) -> float:
    """An accuracy in [0, 1] as percentage points."""
    return 100.0 * a
