"""Claim 3 — task subnetworks (Task-MoE, Kudugunta et al. 2021).

Design (fixed before running): four tasks of four senses (digits, dtmf, digit_words, wine)
trained together on the ``tiny`` preset with both blocks MoE of 8 experts and task-level
routing (:class:`~pwlab.routing.TaskRouter`, ``mode="learned"``, top-2): every token of a
task takes the same two experts per block. After training, each task's subnetwork is
extracted (:func:`pwlab.pathways.extract_subnetwork`: only the experts the task's test
tokens reach) and evaluated on the task's full test split.

Held when every task's subnetwork accuracy is within 1 point of the full model's and it
holds <= 1/4 of the expert parameters, on the mean over seeds.
"""
from __future__ import annotations

import pwlab.tasks as T
from pwlab.config import tiny
from pwlab.experiments import common
from pwlab.pathways import extract_subnetwork
from pwlab.train import Trainer, evaluate_model

TASKS = ("digits", "dtmf", "digit_words", "wine")
NUM_EXPERTS = 8
STEPS = {"quick": 150, "full": 400}
MAX_DROP_POINTS = 1.0
MAX_EXPERT_FRACTION = 0.25


def config(seed: int):
    return tiny().with_model(router="task", router_kwargs={"mode": "learned"}, top_k=2,
                             num_experts=NUM_EXPERTS, moe_layers="all").with_train(seed=seed, **common.TRAIN)


def expert_parameters(model) -> int:
    """Parameters of all MoE blocks' expert banks (what a subnetwork keeps a part of)."""
    return sum(p.numel() for m in model.moe_blocks().values() for p in m.experts.parameters())


def run(seed: int = 0, quick: bool = False) -> dict:
    """Per task: ``full/<task>``, ``sub/<task>`` accuracy (points), ``drop/<task>`` (full − sub)
    and ``fraction/<task>`` (its expert parameters over the model's)."""
    steps = STEPS["quick" if quick else "full"]
    tasks = T.load(list(TASKS), seed=seed)
    tr = Trainer(tasks, config(seed))
    tr.step(steps)
    full = evaluate_model(tr.model, tasks)
    total = expert_parameters(tr.model)
    out: dict = {"seed": seed, "steps": steps}
    for t in tasks:
        sub, _ = extract_subnetwork(tr.model, t.name)
        acc = evaluate_model(sub, [t])[t.name]
        out[f"full/{t.name}"] = common.accuracy_points(full[t.name])
        out[f"sub/{t.name}"] = common.accuracy_points(acc)
        out[f"drop/{t.name}"] = out[f"full/{t.name}"] - out[f"sub/{t.name}"]
        out[f"fraction/{t.name}"] = expert_parameters(sub) / total
    return out


def _task_ok(drop: float, fraction: float) -> bool:
    return drop <= MAX_DROP_POINTS and fraction <= MAX_EXPERT_FRACTION


def summarize(runs: list[dict]) -> dict:
    parts, numbers, held = [], {}, True
    for name in TASKS:
        full, sub = common.collect(runs, f"full/{name}"), common.collect(runs, f"sub/{name}")
        drop, frac = common.collect(runs, f"drop/{name}"), common.collect(runs, f"fraction/{name}")
        numbers.update({f"full/{name}": full, f"sub/{name}": sub, f"drop/{name}": drop, f"fraction/{name}": frac})
        held = held and _task_ok(drop["mean"], frac["mean"])
        parts.append(f"{name} {common.fmt(full, 1)}→{common.fmt(sub, 1)}% with {frac['mean']:.2f} of experts")
    return {"measured": "acc full→subnetwork: " + "; ".join(parts), "held": held,
            "seeds_held": sum(all(_task_ok(r[f"drop/{n}"], r[f"fraction/{n}"]) for n in TASKS) for r in runs),
            "numbers": numbers}


#: what :func:`headline` measures (the row's mean ± sd in ``pwlab bench claims``)
HEADLINE = "worst subnetwork accuracy drop over tasks, points (<= 1 holds, with <= 1/4 of experts)"


def headline(run: dict) -> float:
    """The criterion's main quantity in one run (one seed)."""
    return max(float(run[f"drop/{n}"]) for n in TASKS)
