"""Claim 6, paper-like regime — pathways are real: task-level pathways, ablated.

Paper-like regime (Task-MoE, Kudugunta et al. 2021, and Pathways, Dean 2021: a task
activates its own pathway; task-level routing with 32 experts, top-2): four tasks of four
senses (digits, dtmf, digit_words, wine) on the ``tiny`` trunk, every FFN an MoE, learned
task-level routing (``TaskRouter``, ``mode="learned"``, top-2), ``STEPS`` steps. As in the
default regime, each task's top pathway (its two most used experts per block,
:func:`pwlab.pathways.top_pathway`) is disabled and every task re-evaluated on its full test
split.

Knob: routing level ∈ {token, task} × ``num_experts`` ∈ {8, 32}: 4 points. Paper-like point:
task-level, 32 experts. ``--quick`` runs 32 experts, token and task, at fewer steps.

Held criterion (fixed before the runs, the default regime's): at the paper-like point, on the
mean over seeds, ablating each task's pathway drops that task's accuracy by >= 20 points while
no other task loses more than 5 points. Regimes tried: 4 (plus the default setting).
"""
from __future__ import annotations

from collections.abc import Sequence

import pwlab.tasks as T
from pwlab.experiments import common
from pwlab.experiments.ablation import MAX_OTHER_DROP, MIN_SELF_DROP
from pwlab.experiments.studies import _sweep
from pwlab.pathways import disable_experts, pathway_map, top_pathway
from pwlab.train import Trainer, evaluate_model

REGIME = "Task-MoE pathways: learned task-level top-2 of 32 experts, against token-level routing"
KNOB = "routing level × experts"
VALUES = ("token-E8", "task-E8", "token-E32", "task-E32")
QUICK_VALUES = ("token-E32", "task-E32")
PAPER_VALUE = "task-E32"
TASKS = ("digits", "dtmf", "digit_words", "wine")
TOP_K = 2
STEPS = {"quick": 80, "full": 400}
CRITERION = ("task-level, 32 experts: ablating each task's top-2 pathway drops its accuracy by >= 20 points "
             "while no other task loses > 5 (mean over seeds)")
REGIMES_TRIED = 4
HEADLINE = "smallest own drop over tasks at task-level, 32 experts, points (>= 20 holds, others' <= 5)"


def config(seed: int, point: str):
    return _sweep.routing_level_config(seed, point, top_k=TOP_K)


def run(seed: int = 0, quick: bool = False, values: Sequence | None = None) -> dict:
    """Per sweep point: ``sweep/<point>/min_self_drop`` (the smallest own drop over tasks, points)
    and ``sweep/<point>/max_other_drop`` (the largest drop of another task over all ablations)."""
    steps = STEPS["quick" if quick else "full"]
    tasks = T.load(list(TASKS), seed=seed)
    out: dict = {"seed": seed, "steps": steps}
    for point in _sweep.values(values, QUICK_VALUES if quick else VALUES):
        tr = Trainer(tasks, config(seed, point))
        tr.step(steps)
        base = evaluate_model(tr.model, tasks)
        pmap = pathway_map(tr.model)
        own, other = [], []
        for t in tasks:
            with disable_experts(tr.model, top_pathway(pmap, t.name, top_k=TOP_K)):
                acc = evaluate_model(tr.model, tasks)
            drops = {o.name: common.accuracy_points(base[o.name] - acc[o.name]) for o in tasks}
            own.append(drops.pop(t.name))
            other.append(max(drops.values()))
        out[_sweep.key(point, "min_self_drop")], out[_sweep.key(point, "max_other_drop")] = min(own), max(other)
        out[_sweep.key(point, "mean_self_drop")] = sum(own) / len(own)
    return out


def headline(run: dict) -> float:
    return run[_sweep.key(PAPER_VALUE, "min_self_drop")]


def _holds(r: dict) -> bool:
    return (r[_sweep.key(PAPER_VALUE, "min_self_drop")] >= MIN_SELF_DROP
            and r[_sweep.key(PAPER_VALUE, "max_other_drop")] <= MAX_OTHER_DROP)


def summarize(runs: list[dict]) -> dict:
    numbers = _sweep.numbers(runs)
    parts = [f"{v}: own drop >= {common.fmt(numbers[_sweep.key(v, 'min_self_drop')], 1)} (mean "
             f"{common.fmt(numbers[_sweep.key(v, 'mean_self_drop')], 1)}), worst other "
             f"{common.fmt(numbers[_sweep.key(v, 'max_other_drop')], 1)}" for v in _sweep.points(runs[0])]
    return _sweep.summary(runs, numbers, "points lost when a task's top-2 pathway is off: " + "; ".join(parts), _holds,
                          knob=KNOB, paper_value=PAPER_VALUE, metric="smallest own drop, points",
                          headline="min_self_drop", threshold=MIN_SELF_DROP,
                          other=_sweep.sweep(runs, "max_other_drop"))
