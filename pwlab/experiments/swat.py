"""Claim 7 — SWAT: >= 8x fewer training FLOPs within 5 points of dense accuracy.

Design: the measurement of ``pwlab bench swat-accuracy`` (:mod:`pwlab.experiments.swat_mlp`),
shared rather than re-implemented: a dense model and its SWAT twin at 90% weight and
activation sparsity (SWAT-U, first layer dense), same seed and steps; counted training FLOPs
from :mod:`pwlab.flops`. "8x fewer FLOPs within 5%" is the paper's 90% rows (ResNet-50 on
ImageNet: 85.6% fewer FLOPs at −4.7 top-1).

Task digits, SWAT-U at 90%, the benchmark's MLP (3 hidden layers of 256) and settings.
The FLOP ratio is the whole model's counted training FLOPs (the dense first layer and the
head included), the ratio in the SWAT layers alone is reported beside it.

Held when, on the mean over seeds, dense FLOPs / SWAT FLOPs >= 8 and the accuracy gap
(dense − SWAT) is <= 5 points.
"""
from __future__ import annotations

from pwlab.experiments import common, swat_mlp

MIN_FLOP_RATIO = 8.0
MAX_GAP_POINTS = 5.0


TASK = "digits"
SPARSITY = 0.9
#: the SWAT accuracy benchmark's defaults (its MLP, optimizer and top-K refresh period)
SETTINGS = {"hidden": 256, "depth": 3, "batch": 64, "lr": 2e-3, "topk_period": 10}
STEPS = {"quick": 500, "full": 1500}


def _measure(seed: int, quick: bool) -> dict:
    """Dense and SWAT-U 90% runs of :func:`pwlab.experiments.swat_mlp.run` with one seed."""
    steps = STEPS["quick" if quick else "full"]
    task = swat_mlp.load_task(TASK, seed)
    dense = swat_mlp.run(task, "uniform", 0.0, seed, steps=steps, **SETTINGS)
    swat = swat_mlp.run(task, "uniform", SPARSITY, seed, steps=steps, **SETTINGS)
    return {"dense_acc": dense["accuracy"], "swat_acc": swat["accuracy"],
            "flop_ratio": dense["train_flops"] / swat["train_flops"],
            "layer_flop_ratio": swat["flop_reduction"], "steps": steps}


def run(seed: int = 0, quick: bool = False) -> dict:
    """``dense_acc``, ``swat_acc`` (points), ``gap`` (points), ``flop_ratio`` (whole model's counted
    training FLOPs, dense over SWAT) and ``layer_flop_ratio`` (in the SWAT layers only)."""
    m = _measure(seed, quick)
    dense, swat = common.accuracy_points(m["dense_acc"]), common.accuracy_points(m["swat_acc"])
    return {"seed": seed, "steps": m["steps"], "dense_acc": dense, "swat_acc": swat, "gap": dense - swat,
            "flop_ratio": float(m["flop_ratio"]), "layer_flop_ratio": float(m["layer_flop_ratio"])}


def _holds(ratio: float, gap: float) -> bool:
    return ratio >= MIN_FLOP_RATIO and gap <= MAX_GAP_POINTS


def summarize(runs: list[dict]) -> dict:
    numbers = {k: common.collect(runs, k) for k in ("dense_acc", "swat_acc", "gap", "flop_ratio", "layer_flop_ratio")}
    ratio, gap = numbers["flop_ratio"], numbers["gap"]
    return {"measured": f"{common.fmt(ratio, 1)}x fewer training FLOPs (SWAT layers alone "
                        f"{common.fmt(numbers['layer_flop_ratio'], 1)}x), accuracy dense "
                        f"{common.fmt(numbers['dense_acc'], 1)}% vs SWAT {common.fmt(numbers['swat_acc'], 1)}% "
                        f"(gap {common.fmt(gap, 1)} points)",
            "held": _holds(ratio["mean"], gap["mean"]),
            "seeds_held": sum(_holds(r["flop_ratio"], r["gap"]) for r in runs), "numbers": numbers}


#: what :func:`headline` measures (the row's mean ± sd in ``pwlab bench claims``)
HEADLINE = "whole-model training FLOP ratio, dense / SWAT (>= 8 holds, gap <= 5)"


def headline(run: dict) -> float:
    """The criterion's main quantity in one run (one seed)."""
    return float(run["flop_ratio"])
