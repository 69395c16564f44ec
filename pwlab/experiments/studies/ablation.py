"""Claim 6, paper-like regime — pathways are real: task-level pathways, ablated.

Paper-like regime (Task-MoE, Kudugunta et al. 2021, and Pathways, Dean 2021: a task
activates its own pathway; task-level routing with 32 experts, top-2): four tasks of four
senses (digits, dtmf, digit_words, wine) on the ``tiny`` trunk, every FFN an MoE, learned
task-level routing (``TaskRouter``, ``mode="learned"``, top-2), ``STEPS`` steps. As in the
default regime, each task's top pathway (its two most used experts per block,
:func:`pwlab.pathways.top_pathway`) is disabled and every task re-evaluated on its full test
split.

Knob: routing level ∈ {token, task} × ``num_experts`` ∈ {8, 32}: 4 points. Paper-like point:
task-level, 32 experts. ``--quick`` runs 32 experts, token and task, at fewer steps.

Held criterion (fixed before the runs, the default regime's): at the paper-like point, on the
mean over seeds, ablating each task's pathway drops that task's accuracy by >= 20 points while
no other task loses more than 5 points. Regimes tried: 4 (plus the default setting).
"""
