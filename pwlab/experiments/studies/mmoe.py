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
