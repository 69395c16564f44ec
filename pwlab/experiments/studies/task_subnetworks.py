"""Claim 3, paper-like regime — task subnetworks can be extracted without loss (Task-MoE).

Paper-like regime (Kudugunta et al. 2021: task-level routing with 32 experts, top-2; every
token of a task takes the task's experts, so the task's subnetwork is served alone):
four tasks of four senses (digits, dtmf, digit_words, wine) on the ``tiny`` trunk, every FFN
an MoE of 32 experts, learned task-level routing (``TaskRouter``, ``mode="learned"``, top-2),
``STEPS`` steps. Each task's subnetwork (:func:`pwlab.pathways.extract_subnetwork`: only the
experts its test tokens reach) is evaluated on the task's full test split, as in the default
regime. The contrast is token-level routing (learned top-2 router), where a task's tokens
spread over many experts: its extracted subnetwork keeps more of the experts.

Knob: routing level ∈ {task, token} × ``num_experts`` ∈ {8, 32}: 4 points. Paper-like point:
task-level, 32 experts. ``--quick`` runs 32 experts, task and token, at fewer steps.

Held criterion (fixed before the runs): at the paper-like point, on the mean over seeds, every
task's subnetwork accuracy is within 1 point of the full model's and holds <= 1/4 of the
expert parameters. Regimes tried: 4 (plus the default setting).
"""
