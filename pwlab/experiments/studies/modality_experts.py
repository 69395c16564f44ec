"""Claim 2, paper-like regime — modality experts emerge (LIMoE, Mustafa et al. 2022).

Paper-like regime (LIMoE sec. 3: one sparse backbone for two modalities, image and text,
imbalanced in tokens per example; top-1 routing; many experts; the V-MoE balancing losses
plus the per-modality entropy regularisers — ``entropy_local`` keeps each token's routing
sharp, ``entropy_global`` keeps each modality's mean routing diverse): two tasks of the same
content in two modalities, digits (image) and digit_words (text), trained together on the
``tiny`` trunk with every FFN an MoE, Switch top-1 routing, load balancing 0.01 (the lab's
default), ``STEPS`` steps. ``I(E; modality)`` in bits per block from the pathway map
(256 test examples per task) at initialisation and after training, as in the default regime.
The lab's MoE layer exposes LIMoE's global entropy loss without its threshold; LIMoE's
thresholded form lies between "local only" (threshold 0: the global term never acts) and
"local + global" (no threshold), so both ends are run.

Knob: ``num_experts`` ∈ {4, 16} × regularisers ∈ {none, local (0.01), local + global
(0.01 each)}: 6 points. Paper-like point: 16 experts, local + global. ``--quick`` runs
16 experts with none and local + global, at fewer steps.

Held criterion (fixed before the runs): at the paper-like point, on the mean over seeds, the
largest per-block rise of ``I(E; modality)`` over its value at initialisation is
>= 0.125 bits (an eighth of the 1-bit maximum for two modalities: the default regime's rule,
an eighth of the maximum). Regimes tried: 6 (plus the default setting).
"""
