"""Claim 5 — one model, many tasks (Pathways): the digit tasks of all senses trained together.

Design (fixed before running): the digit tasks of three senses — digits (image), dtmf
(audio), digit_words (text). Each single-task model (the ``tiny`` preset: token-level top-2
of 4 experts in block 1) trains ``steps`` steps of ``PER_TASK_BATCH`` examples on its task.
The multi-task models train ``steps`` steps of 3 × ``PER_TASK_BATCH`` examples with uniform
task sampling, so each task sees the same number of examples per step on average (the same
per-task step count). Three multi-task models: the same token-routed ``tiny`` preset (the
Pathways model of the claim), its dense twin matched in active FLOPs (no routing), and
task-level routing (``TaskRouter``, learned, top-2 of 4): interference = single-task
accuracy − multi-task accuracy, in points, per task.

Held when the token-routed multi-task model is within 1 point of (or above) each task's
single-task accuracy, on the mean over seeds. The dense and task-routed rows show whether
routing reduces the interference.
"""
from __future__ import annotations

import pwlab.tasks as T
from pwlab.config import dense_baseline, tiny
from pwlab.experiments import common
from pwlab.train import Trainer

TASKS = ("digits", "dtmf", "digit_words")
PER_TASK_BATCH = 32
STEPS = {"quick": 150, "full": 400}
TOLERANCE_POINTS = 1.0
MULTI = ("token", "dense", "task")


def configs(seed: int, batch: int) -> dict:
    base = tiny().with_train(seed=seed, lr=common.TRAIN["lr"], batch_size=batch, sampling="uniform")
    return {"token": base, "dense": dense_baseline(base),
            "task": base.with_model(router="task", router_kwargs={"mode": "learned"})}


def run(seed: int = 0, quick: bool = False) -> dict:
    """Accuracy in points: ``single/<task>``, ``<model>/<task>`` and ``interference/<model>/<task>``;
    ``interference/<model>`` is the mean over tasks."""
    steps = STEPS["quick" if quick else "full"]
    tasks = T.load(list(TASKS), seed=seed)
    out: dict = {"seed": seed, "steps": steps}
    single_cfg = configs(seed, PER_TASK_BATCH)["token"]
    for t in tasks:
        tr = Trainer([t], single_cfg)
        tr.step(steps)
        out[f"single/{t.name}"] = common.accuracy_points(tr.evaluate(max_examples=None, record=False)[t.name])
    for name, cfg in configs(seed, PER_TASK_BATCH * len(tasks)).items():
        tr = Trainer(tasks, cfg)
        tr.step(steps)
        acc = tr.evaluate(max_examples=None, record=False)
        gaps = []
        for t in tasks:
            out[f"{name}/{t.name}"] = common.accuracy_points(acc[t.name])
            gaps.append(out[f"single/{t.name}"] - out[f"{name}/{t.name}"])
            out[f"interference/{name}/{t.name}"] = gaps[-1]
        out[f"interference/{name}"] = sum(gaps) / len(gaps)
    return out


def _holds(gaps: list[float]) -> bool:
    return all(g <= TOLERANCE_POINTS for g in gaps)


def summarize(runs: list[dict]) -> dict:
    numbers = {}
    for key in runs[0]:
        if key.startswith(("single/", "interference/")) or key.split("/")[0] in MULTI:
            numbers[key] = common.collect(runs, key)
    per_task = "; ".join(f"{n} {common.fmt(numbers[f'single/{n}'], 1)}→{common.fmt(numbers[f'token/{n}'], 1)}"
                         for n in TASKS)
    inter = ", ".join(f"{m} {common.fmt(numbers[f'interference/{m}'], 1)}" for m in MULTI)
    held = _holds([numbers[f"interference/token/{n}"]["mean"] for n in TASKS])
    return {"measured": f"acc single→together (token routing): {per_task}; mean interference "
                        f"(points lost) {inter}",
            "held": held, "seeds_held": sum(_holds([r[f"interference/token/{n}"] for n in TASKS]) for r in runs),
            "numbers": numbers}


#: what :func:`headline` measures (the row's mean ± sd in ``pwlab bench claims``)
HEADLINE = "worst interference over tasks, token routing, points (<= 1 holds)"


def headline(run: dict) -> float:
    """The criterion's main quantity in one run (one seed)."""
    return max(float(run[f"interference/token/{n}"]) for n in TASKS)
