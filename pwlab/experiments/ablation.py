"""Claim 6 — pathways are real: switching off a task's top pathway hurts that task only.

Design (fixed before running): four tasks of four senses (digits, dtmf, digit_words, wine)
trained together on the ``tiny`` preset with both blocks MoE, token-level top-2 of 8 experts
(the pathways are learned, not assigned). For each task, its top pathway is the two experts
per block its test tokens use most (:func:`pwlab.pathways.top_pathway`, k = the router's
top-k); with those disabled (:func:`pwlab.pathways.disable_experts`) every task is
re-evaluated on its full test split.

Held when, on the mean over seeds, ablating each task's pathway drops that task's accuracy
by >= 20 points while no other task loses more than 5 points.
"""
from __future__ import annotations

import pwlab.tasks as T
from pwlab.config import tiny
from pwlab.experiments import common
from pwlab.pathways import disable_experts, pathway_map, top_pathway
from pwlab.train import Trainer, evaluate_model

TASKS = ("digits", "dtmf", "digit_words", "wine")
NUM_EXPERTS = 8
TOP_K = 2
STEPS = {"quick": 150, "full": 400}
MIN_SELF_DROP = 20.0
MAX_OTHER_DROP = 5.0


def config(seed: int):
    return (tiny().with_model(num_experts=NUM_EXPERTS, top_k=TOP_K, moe_layers="all")
            .with_train(seed=seed, **common.TRAIN))


def run(seed: int = 0, quick: bool = False) -> dict:
    """Per ablated task t: ``self_drop/<t>`` (points) and ``other_drop/<t>`` (the largest drop
    of another task), plus ``base/<t>`` accuracy."""
    steps = STEPS["quick" if quick else "full"]
    tasks = T.load(list(TASKS), seed=seed)
    tr = Trainer(tasks, config(seed))
    tr.step(steps)
    base = evaluate_model(tr.model, tasks)
    pmap = pathway_map(tr.model)
    out: dict = {"seed": seed, "steps": steps}
    for t in tasks:
        out[f"base/{t.name}"] = common.accuracy_points(base[t.name])
        with disable_experts(tr.model, top_pathway(pmap, t.name, top_k=TOP_K)):
            acc = evaluate_model(tr.model, tasks)
        drops = {o.name: common.accuracy_points(base[o.name] - acc[o.name]) for o in tasks}
        out[f"self_drop/{t.name}"] = drops.pop(t.name)
        out[f"other_drop/{t.name}"] = max(drops.values())
    return out


def _holds(self_drop: float, other_drop: float) -> bool:
    return self_drop >= MIN_SELF_DROP and other_drop <= MAX_OTHER_DROP


def summarize(runs: list[dict]) -> dict:
    parts, numbers, held = [], {}, True
    for n in TASKS:
        s, o = common.collect(runs, f"self_drop/{n}"), common.collect(runs, f"other_drop/{n}")
        numbers.update({f"self_drop/{n}": s, f"other_drop/{n}": o, f"base/{n}": common.collect(runs, f"base/{n}")})
        held = held and _holds(s["mean"], o["mean"])
        parts.append(f"{n} {common.fmt(s, 1)} (worst other {common.fmt(o, 1)})")
    return {"measured": "points lost when a task's top-2 pathway is off: " + "; ".join(parts), "held": held,
            "seeds_held": sum(all(_holds(r[f"self_drop/{n}"], r[f"other_drop/{n}"]) for n in TASKS) for r in runs),
            "numbers": numbers}


#: what :func:`headline` measures (the row's mean ± sd in ``pwlab bench claims``)
HEADLINE = "smallest own drop over tasks, points (>= 20 holds, others' <= 5)"


def headline(run: dict) -> float:
    """The criterion's main quantity in one run (one seed)."""
    return min(float(run[f"self_drop/{n}"]) for n in TASKS)
