"""Claim 1, paper-like regime — sparse beats dense at equal compute, more so with more experts.

Paper-like regime (Switch Transformer, Fedus et al. 2021, sec. 3 and fig. 4: at a fixed
FLOP budget per token the speed-up over the dense T5 baseline grows with the number of
experts; top-1 routing, capacity factor 1.25 with token dropping, load-balancing α = 0.01):
the digit tasks of three senses (digits, dtmf, digit_words) on the ``tiny`` trunk, every
FFN a Switch MoE (top-1, ``capacity_factor`` 1.25, hidden 64 per expert), against the dense
twin with one FFN of hidden 64 (equal multiply-adds per token). Same seed, batches and
steps (``STEPS``), validation loss every ``EVAL_EVERY`` steps, measured exactly as the
default regime: step ratio = steps / first step at which the sparse model reaches the dense
model's final validation loss (mean of its last three records).

Knob: ``num_experts`` ∈ {2, 8, 32} (the FLOPs per token do not change with it, the
parameters do). Paper-like point: 32 experts. ``--quick`` runs {2, 32} at fewer steps.

Held criterion (fixed before the runs): on the mean over seeds, the step ratio at 32 experts
is > 1 **and** greater than the step ratio at 2 experts (sparse wins, and more experts buy
more speed-up, as in Switch fig. 4). Regimes tried: 3 (plus the default setting).
"""
from __future__ import annotations

import pwlab.tasks as T
from pwlab.config import dense_baseline, tiny
from pwlab.experiments import common
from pwlab.experiments.studies import _sweep
from pwlab.train import Trainer

REGIME = "Switch top-1, capacity factor 1.25, experts swept 2 → 32 at equal FLOPs per token"
KNOB = "num_experts"
VALUES = (2, 8, 32)
QUICK_VALUES = (2, 32)
PAPER_VALUE = 32
TASKS = ("digits", "dtmf", "digit_words")
CAPACITY_FACTOR = 1.25
EVAL_EVERY = 20
STEPS = {"quick": 150, "full": 400}
CRITERION = "step ratio at 32 experts > 1 and > the step ratio at 2 experts (mean over seeds)"
REGIMES_TRIED = 3
HEADLINE = "step ratio at 32 experts, sparse vs dense (> 1 and > ratio at 2 experts holds)"


def config(seed: int, num_experts: int):
    """Switch top-1 in every block, capacity factor 1.25 (Switch Transformer's)."""
    return (tiny().with_model(router="switch", num_experts=num_experts, moe_layers="all",
                              capacity_factor=CAPACITY_FACTOR)
            .with_train(seed=seed, **common.TRAIN))


def run(seed: int = 0, quick: bool = False) -> dict:
    """Per expert count: ``sweep/<E>/step_ratio`` and ``sweep/<E>/final_loss``; ``dense_final_loss``."""
    steps = STEPS["quick" if quick else "full"]
    tasks = T.load(list(TASKS), seed=seed)
    values = QUICK_VALUES if quick else VALUES
    dense = common.train_curve(Trainer(tasks, dense_baseline(config(seed, values[0]))), steps, EVAL_EVERY)
    target = common.final_value(dense[1])
    out: dict = {"seed": seed, "steps": steps, "dense_final_loss": target}
    for e in values:
        curve = common.train_curve(Trainer(tasks, config(seed, e)), steps, EVAL_EVERY)
        reached = common.steps_to_target(*curve, target)
        out[_sweep.key(e, "step_ratio")] = common.speedup(steps, reached, steps)
        out[_sweep.key(e, "final_loss")] = common.final_value(curve[1])
    return out


def headline(run: dict) -> float:
    return run[_sweep.key(PAPER_VALUE, "step_ratio")]


def _holds(r: dict) -> bool:
    top, low = r[_sweep.key(PAPER_VALUE, "step_ratio")], r[_sweep.key(VALUES[0], "step_ratio")]
    return top > 1.0 and top > low


def summarize(runs: list[dict]) -> dict:
    numbers = _sweep.numbers(runs)
    numbers["dense_final_loss"] = common.collect(runs, "dense_final_loss")
    parts = [f"E={v}: {common.fmt(numbers[_sweep.key(v, 'step_ratio')])}x (final loss "
             f"{common.fmt(numbers[_sweep.key(v, 'final_loss')], 3)})" for v in _sweep.points(runs[0])]
    measured = f"step ratio to the dense final val loss {common.fmt(numbers['dense_final_loss'], 3)}: " + "; ".join(parts)
    return _sweep.summary(runs, numbers, measured, _holds, knob=KNOB, paper_value=PAPER_VALUE,
                          metric="step ratio (sparse vs dense)", headline="step_ratio", paper_number=7.0, threshold=1.0)
