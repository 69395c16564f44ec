"""Claim 3, paper-like regime — task subnetworks can be extracted without loss (Task-MoE).

Paper-like regime (Kudugunta et al. 2021: task-level routing with 32 experts, top-2; every
token of a task takes the task's experts, so the task's subnetwork is served alone):
four tasks of four senses (digits, dtmf, digit_words, wine) on the ``tiny`` trunk, every FFN
an MoE of 32 experts, learned task-level routing (``TaskRouter``, ``mode="learned"``, top-2),
``STEPS`` steps. Each task's subnetwork (:func:`pwlab.pathways.extract_subnetwork`: only the
experts its test tokens reach) is evaluated on the task's full test split, as in the default
regime. The contrast is token-level routing (learned top-2 router), where a task's tokens
spread over many experts: its extracted subnetwork keeps more of the experts.

Knob: routing level ∈ {task, token} × ``num_experts`` ∈ {8, 32}: 4 points. Paper-like point:
task-level, 32 experts. ``--quick`` runs 32 experts, task and token, at fewer steps.

Held criterion (fixed before the runs): at the paper-like point, on the mean over seeds, every
task's subnetwork accuracy is within 1 point of the full model's and holds <= 1/4 of the
expert parameters. Regimes tried: 4 (plus the default setting).
"""
from __future__ import annotations

from collections.abc import Sequence

import pwlab.tasks as T
from pwlab.experiments import common
from pwlab.experiments.studies import _sweep
from pwlab.experiments.task_subnetworks import MAX_DROP_POINTS, MAX_EXPERT_FRACTION, expert_parameters
from pwlab.pathways import extract_subnetwork
from pwlab.train import Trainer, evaluate_model

REGIME = "Task-MoE: learned task-level top-2 of 32 experts in every block, against token-level routing"
KNOB = "routing level × experts"
VALUES = ("task-E8", "token-E8", "task-E32", "token-E32")
QUICK_VALUES = ("task-E32", "token-E32")
PAPER_VALUE = "task-E32"
TASKS = ("digits", "dtmf", "digit_words", "wine")
STEPS = {"quick": 100, "full": 400}
CRITERION = ("task-level, 32 experts: every task's subnetwork within 1 point of the full model with "
             "<= 1/4 of the expert parameters (mean over seeds)")
REGIMES_TRIED = 4
HEADLINE = "worst subnetwork accuracy drop over tasks at task-level, 32 experts, points (<= 1 holds, fraction <= 1/4)"


def config(seed: int, point: str):
    return _sweep.routing_level_config(seed, point, top_k=2)


def run(seed: int = 0, quick: bool = False, values: Sequence | None = None) -> dict:
    """Per sweep point: ``sweep/<point>/worst_drop`` (points, full − subnetwork, worst task) and
    ``sweep/<point>/max_fraction`` (the largest share of expert parameters a subnetwork keeps)."""
    steps = STEPS["quick" if quick else "full"]
    tasks = T.load(list(TASKS), seed=seed)
    out: dict = {"seed": seed, "steps": steps}
    for point in _sweep.values(values, QUICK_VALUES if quick else VALUES):
        tr = Trainer(tasks, config(seed, point))
        tr.step(steps)
        full = evaluate_model(tr.model, tasks)
        total = expert_parameters(tr.model)
        drops, fractions = [], []
        for t in tasks:
            sub, _ = extract_subnetwork(tr.model, t.name)
            drops.append(common.accuracy_points(full[t.name] - evaluate_model(sub, [t])[t.name]))
            fractions.append(expert_parameters(sub) / total)
        out[_sweep.key(point, "worst_drop")], out[_sweep.key(point, "max_fraction")] = max(drops), max(fractions)
        out[_sweep.key(point, "mean_acc")] = common.accuracy_points(sum(full.values()) / len(full))
    return out


def headline(run: dict) -> float:
    return run[_sweep.key(PAPER_VALUE, "worst_drop")]


def _holds(r: dict) -> bool:
    return (r[_sweep.key(PAPER_VALUE, "worst_drop")] <= MAX_DROP_POINTS
            and r[_sweep.key(PAPER_VALUE, "max_fraction")] <= MAX_EXPERT_FRACTION)


def summarize(runs: list[dict]) -> dict:
    numbers = _sweep.numbers(runs)
    parts = [f"{v}: worst drop {common.fmt(numbers[_sweep.key(v, 'worst_drop')], 1)} points with <= "
             f"{numbers[_sweep.key(v, 'max_fraction')]['mean']:.2f} of experts (mean acc "
             f"{common.fmt(numbers[_sweep.key(v, 'mean_acc')], 1)}%)" for v in _sweep.points(runs[0])]
    return _sweep.summary(runs, numbers, "subnetwork vs full model: " + "; ".join(parts), _holds, knob=KNOB,
                          paper_value=PAPER_VALUE, metric="worst accuracy drop of a subnetwork, points",
                          headline="worst_drop", threshold=MAX_DROP_POINTS,
                          fraction=_sweep.sweep(runs, "max_fraction"))
