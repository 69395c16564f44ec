"""Claim 1 — sparse beats dense at equal compute (Switch Transformer, GShard).

Design (fixed before running): the digit tasks of three senses (digits, dtmf, digit_words)
trained together. The sparse model is the ``tiny`` preset with every FFN a Switch MoE
(top-1 of 8 experts, hidden 64 each); the dense twin (:func:`pwlab.config.dense_baseline`)
has one FFN of hidden 64 per block, so both spend the same multiply-adds per token (the
router's D·E aside). Both train the same number of steps from the same seed, and the
validation loss is recorded every ``EVAL_EVERY`` steps.

Measurement: the dense model's final validation loss (mean of its last three evaluations)
is the target; the sparse model's step ratio is ``dense steps / first step at which the
sparse model reaches the target`` (Switch Transformer fig. 1 and 5 read speed-ups this
way: "steps to reach the dense model's quality").
Held when the mean step ratio over seeds is > 1 (the sparse model got there in fewer steps).
"""
from __future__ import annotations

import pwlab.tasks as T
from pwlab.config import dense_baseline, tiny
from pwlab.experiments import common
from pwlab.train import Trainer

TASKS = ("digits", "dtmf", "digit_words")
NUM_EXPERTS = 8
EVAL_EVERY = 20
STEPS = {"quick": 200, "full": 400}


def configs(seed: int):
    """The sparse config and its dense twin, matched in active FLOPs per token."""
    sparse = (tiny().with_model(router="switch", num_experts=NUM_EXPERTS, moe_layers="all")
              .with_train(seed=seed, **common.TRAIN))
    return sparse, dense_baseline(sparse)


def run(seed: int = 0, quick: bool = False) -> dict:
    """Train both models; returns the step ratio and the curves' end points (plain numbers)."""
    steps = STEPS["quick" if quick else "full"]
    tasks = T.load(list(TASKS), seed=seed)
    sparse_cfg, dense_cfg = configs(seed)
    curves = {}
    for name, cfg in (("sparse", sparse_cfg), ("dense", dense_cfg)):
        curves[name] = common.train_curve(Trainer(tasks, cfg), steps, EVAL_EVERY)
    target = common.final_value(curves["dense"][1])
    reached = common.steps_to_target(*curves["sparse"], target)
    return {"seed": seed, "steps": steps, "target_loss": target,
            "sparse_final_loss": common.final_value(curves["sparse"][1]),
            "dense_final_loss": target, "sparse_steps_to_target": -1 if reached is None else reached,
            "step_ratio": common.speedup(steps, reached, steps)}


def summarize(runs: list[dict]) -> dict:
    """The row: mean ± spread of the step ratio; held when the mean ratio is > 1."""
    ratio = common.collect(runs, "step_ratio")
    sparse, dense = common.collect(runs, "sparse_final_loss"), common.collect(runs, "dense_final_loss")
    held = ratio["mean"] > 1.0
    return {"measured": f"{common.fmt(ratio)}x fewer steps to the dense final val loss "
                        f"(final loss sparse {common.fmt(sparse, 3)} vs dense {common.fmt(dense, 3)}, "
                        f"{runs[0]['steps']} steps)",
            "held": held, "seeds_held": sum(r["step_ratio"] > 1.0 for r in runs),
            "numbers": {"step_ratio": ratio, "sparse_final_loss": sparse, "dense_final_loss": dense}}


#: what :func:`headline` measures (the row's mean ± sd in ``pwlab bench claims``)
HEADLINE = "step ratio, sparse vs dense (> 1 holds)"


def headline(run: dict) -> float:
    """The criterion's main quantity in one run (one seed)."""
    return float(run["step_ratio"])
