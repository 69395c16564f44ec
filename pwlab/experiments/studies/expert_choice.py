"""Claim 8, paper-like regime — expert choice converges faster, with more experts and longer training.

Paper-like regime (Zhou et al. 2022 sec. 4: expert choice with capacity factor 2 against
top-1 and top-2 token choice at the same compute, 16–64 experts, the speed-up read as steps
to the same perplexity): the default regime's set-up (digits, dtmf, digit_words; every FFN
an MoE; expert choice capacity factor 2, top-2 capacity factor 1, top-1 capacity factor 2:
the same expert capacity 2N/E; over-capacity tokens dropped) with more experts and longer
training, ``STEPS`` steps, validation loss every ``EVAL_EVERY`` steps; speed-up = steps /
first step at which expert choice reaches each token-choice model's final validation loss.

Knob: ``num_experts`` ∈ {8, 32}. Paper-like point: 32 experts. ``--quick`` runs 32 experts at
fewer steps.

Held criterion (fixed before the runs, the default regime's): at 32 experts, on the mean over
seeds, the speed-up is > 2 against both top-1 and top-2. Regimes tried: 2 (plus the default
setting).
"""
