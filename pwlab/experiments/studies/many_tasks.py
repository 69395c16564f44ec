"""Claim 5, paper-like regime — one model, many tasks: tasks that share structure vs tasks that conflict.

Paper-like regime (Pathways, Dean 2021: one model that learns many tasks draws on what the
tasks share, and a new task learns faster with less data; Caruana 1997 and MMoE sec. 3.2 for
the controlled version): the synthetic regression pair (:func:`pwlab.tasks.synthetic.mmoe_pair`,
16 features) with *scarce* data, 500 training examples per task, where sharing is worth the
most. Single-task models (``tiny`` preset, token top-2 of 4) train ``STEPS`` steps of
``PER_TASK_BATCH`` examples; the two-task model (the same preset) trains ``STEPS`` steps of
2 × ``PER_TASK_BATCH``, uniform sampling: the same per-task step count, as in the default
regime. Metric: each task's test MSE (lower is better); ratio = multi-task MSE / single-task MSE.

Knob: task correlation p ∈ {1.0, 0.5, 0.0} (tasks that share their structure → tasks whose
weight vectors are orthogonal). Paper-like point: p = 1.0. ``--quick`` runs {1.0, 0.0} at
fewer steps.

Held criterion (fixed before the runs): at p = 1.0, on the mean over seeds, the two-task
model's test MSE is <= 1.05 × the single-task model's on each task ("at least single-task
quality", with the 5% tolerance standing in for the default regime's 1 point).
Regimes tried: 3 (plus the default setting).
"""
