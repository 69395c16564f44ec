"""Claim 8 — expert choice converges faster than top-1/top-2 token choice (Zhou et al. 2022).

Design (fixed before running): the digit tasks of three senses trained together on the
``tiny`` preset with both blocks MoE of 8 experts, the same seed and batches, three routers
at the same expert capacity C = 2N/E slots per expert:
expert choice with capacity factor 2 (each expert takes its top 2N/E tokens), top-2 token
choice with capacity factor 1 (C = ceil(1 · 2 · N/E)) and top-1 token choice with capacity
factor 2 (C = ceil(2 · 1 · N/E)); over-capacity tokens are dropped (residual only).

Measurement: the target is a token-choice model's final validation loss (mean of its last
three evaluations after ``steps``); the speed-up is ``steps / first step at which expert
choice reaches it`` (the paper's "steps to the same perplexity"), once for top-1, once
for top-2. Held when both mean speed-ups are > 2 ("more than 2x faster").
"""
from __future__ import annotations

import pwlab.tasks as T
from pwlab.config import tiny
from pwlab.experiments import common
from pwlab.train import Trainer

TASKS = ("digits", "dtmf", "digit_words")
NUM_EXPERTS = 8
EVAL_EVERY = 20
STEPS = {"quick": 150, "full": 400}
MIN_SPEEDUP = 2.0
ROUTERS = ("expert_choice", "top2", "top1")


def configs(seed: int, num_experts: int = NUM_EXPERTS) -> dict:
    """The three routers at the same expert capacity 2N/E, every FFN an MoE of ``num_experts``."""
    base = tiny().with_model(num_experts=num_experts, moe_layers="all").with_train(seed=seed, **common.TRAIN)
    return {"expert_choice": base.with_model(router="expert_choice", router_kwargs={"capacity_factor": 2.0}),
            "top2": base.with_model(router="topk", top_k=2, capacity_factor=1.0),
            "top1": base.with_model(router="topk", top_k=1, capacity_factor=2.0)}


def run(seed: int = 0, quick: bool = False) -> dict:
    """``final_loss/<router>``, ``speedup/top1`` and ``speedup/top2`` (expert choice's step ratio)."""
    steps = STEPS["quick" if quick else "full"]
    tasks = T.load(list(TASKS), seed=seed)
    curves = {name: common.train_curve(Trainer(tasks, cfg), steps, EVAL_EVERY) for name, cfg in configs(seed).items()}
    out: dict = {"seed": seed, "steps": steps}
    for name, (_, ys) in curves.items():
        out[f"final_loss/{name}"] = common.final_value(ys)
    for tc in ("top1", "top2"):
        reached = common.steps_to_target(*curves["expert_choice"], out[f"final_loss/{tc}"])
        out[f"ec_steps/{tc}"] = -1 if reached is None else reached
        out[f"speedup/{tc}"] = common.speedup(steps, reached, steps)
    return out


def _holds(s1: float, s2: float) -> bool:
    return s1 > MIN_SPEEDUP and s2 > MIN_SPEEDUP


def summarize(runs: list[dict]) -> dict:
    numbers = {k: common.collect(runs, k) for k in runs[0] if k.startswith(("final_loss/", "speedup/"))}
    s1, s2 = numbers["speedup/top1"], numbers["speedup/top2"]
    losses = ", ".join(f"{r} {common.fmt(numbers[f'final_loss/{r}'], 3)}" for r in ROUTERS)
    return {"measured": f"steps ratio vs top-1 {common.fmt(s1)}x, vs top-2 {common.fmt(s2)}x "
                        f"(final val loss {losses})",
            "held": _holds(s1["mean"], s2["mean"]),
            "seeds_held": sum(_holds(r["speedup/top1"], r["speedup/top2"]) for r in runs),
            "numbers": numbers}


#: what :func:`headline` measures (the row's mean ± sd in ``pwlab bench claims``)
HEADLINE = "smaller speed-up of expert choice, vs top-1 and top-2 (> 2 holds)"


def headline(run: dict) -> float:
    """The criterion's main quantity in one run (one seed)."""
    return min(float(run["speedup/top1"]), float(run["speedup/top2"]))
