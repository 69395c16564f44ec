"""Claim 4, paper-like regime — per-task gates help when tasks disagree (MMoE, KDD 2018).

Paper-like regime (Ma et al. 2018 sec. 3.2 and fig. 4: the synthetic pair with input
dimension d = 100, m = 10 sine terms, c = 1, correlations 1.0, 0.9, 0.5; shared-bottom
loses quality as the correlation falls, MMoE much less): :func:`pwlab.tasks.synthetic.mmoe_pair`
with ``num_features`` 100, 8000 training and 2000 test examples; the default regime's two
models (:class:`pwlab.experiments.mmoe.MMoE`, 8 experts of 16, one softmax gate per task, and
the parameter-matched :class:`~pwlab.experiments.mmoe.SharedBottom`), Adam, ``STEPS`` steps of
batch 128 on the summed MSE, the same seed and batches; metric: the mean test MSE of the two
tasks, advantage(p) = shared-bottom MSE − MMoE MSE.

Knob: task correlation p ∈ {1.0, 0.9, 0.5, 0.1}. Paper-like point: p = 0.5 against p = 1.0
(the fig. 4 ends). ``--quick`` runs {1.0, 0.5} at fewer steps.

Held criterion (fixed before the runs): on the mean over seeds, advantage(0.5) > 0 (MMoE beats
shared-bottom when the tasks disagree) **and** advantage(0.5) > advantage(1.0) (shared-bottom
degrades more as p falls). Regimes tried: 4 (plus the default setting at d = 16).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from pwlab.experiments import common
from pwlab.experiments.mmoe import MMoE, SharedBottom, matched_bottom_width, parameter_count, train_pair
from pwlab.experiments.studies import _sweep
from pwlab.tasks.synthetic import mmoe_pair

REGIME = "MMoE's own generator at d = 100 (8000 examples), p swept 1.0 → 0.1"
KNOB = "task correlation p"
VALUES = (1.0, 0.9, 0.5, 0.1)
QUICK_VALUES = (1.0, 0.5)
PAPER_VALUE = 0.5
NUM_FEATURES = 100
N_TRAIN, N_TEST = 8000, 2000
STEPS = {"quick": 1500, "full": 3000}
CRITERION = "advantage(0.5) > 0 and advantage(0.5) > advantage(1.0) (test MSE, shared − MMoE), d = 100"
REGIMES_TRIED = 4
HEADLINE = "advantage(0.5) − advantage(1.0), test MSE (> 0 with advantage(0.5) > 0 holds)"


def run(seed: int = 0, quick: bool = False, values: Sequence | None = None) -> dict:
    """Per p: ``sweep/<p>/mmoe``, ``sweep/<p>/shared_bottom`` (test MSE) and ``sweep/<p>/advantage``."""
    steps = STEPS["quick" if quick else "full"]
    out: dict = {"seed": seed, "steps": steps}
    for p in _sweep.values(values, QUICK_VALUES if quick else VALUES):
        a, b = mmoe_pair(seed, p=p, num_features=NUM_FEATURES, n_train=N_TRAIN, n_test=N_TEST)
        torch.manual_seed(seed)
        mm = MMoE(NUM_FEATURES)
        torch.manual_seed(seed)
        sb = SharedBottom(NUM_FEATURES, matched_bottom_width(NUM_FEATURES, parameter_count(mm)))
        out[_sweep.key(p, "mmoe")] = train_pair(mm, a, b, steps, seed)
        out[_sweep.key(p, "shared_bottom")] = train_pair(sb, a, b, steps, seed)
        out[_sweep.key(p, "advantage")] = out[_sweep.key(p, "shared_bottom")] - out[_sweep.key(p, "mmoe")]
        out["params/mmoe"], out["params/shared_bottom"] = parameter_count(mm), parameter_count(sb)
    return out


def headline(run: dict) -> float:
    return run[_sweep.key(0.5, "advantage")] - run[_sweep.key(1.0, "advantage")]


def _holds(run_or_means: dict) -> bool:
    a05, a1 = run_or_means[_sweep.key(0.5, "advantage")], run_or_means[_sweep.key(1.0, "advantage")]
    return a05 > 0 and a05 > a1


def summarize(runs: list[dict]) -> dict:
    numbers = _sweep.numbers(runs)
    parts = [f"p={v}: shared {common.fmt(numbers[_sweep.key(v, 'shared_bottom')], 3)} vs MMoE "
             f"{common.fmt(numbers[_sweep.key(v, 'mmoe')], 3)}" for v in _sweep.points(runs[0])]
    return _sweep.summary(runs, numbers, f"test MSE at d={NUM_FEATURES}, " + "; ".join(parts), _holds,
                          knob=KNOB, paper_value=PAPER_VALUE, metric="advantage (shared − MMoE test MSE)",
                          headline="advantage", threshold=0.0)
