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
