"""Claim 7, paper-like regime — SWAT: >= 8x fewer whole-model training FLOPs within 5 points.

Paper-like regime (Raihan & Aamodt 2020: SWAT-U at 90% weight and activation sparsity,
constant from step 0 — the paper's schedule —, first layer dense, FLOPs of the whole network
counted; in ResNet-50 the dense first convolution is about 3% of the FLOPs): the claim's MLP
on digits (:mod:`pwlab.experiments.swat_mlp`, 3 hidden layers, SWAT-U 90%, first layer dense,
batch 64, lr 2e-3, top-K refresh every 10 steps, ``STEPS`` steps), with the hidden width
large enough that the dense first layer (64 inputs → width) is a small share of the training
FLOPs, as in the paper's networks. Whole-model training FLOPs (every layer, the head
included) counted by :mod:`pwlab.flops`.

Knob: hidden width ∈ {256, 512, 1024} (first layer's share of the dense FLOPs about 7.5%, 3.9%
and 2.0%). Paper-like point: width 1024 (share nearest ResNet-50's). ``--quick`` runs width 1024
at fewer steps.

Held criterion (fixed before the runs, the default regime's): at the paper-like point, on the
mean over seeds, dense / SWAT whole-model training FLOPs >= 8 and the accuracy gap
(dense − SWAT) <= 5 points. Regimes tried: 3 (plus the default setting).
"""
