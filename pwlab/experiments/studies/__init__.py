"""The paper-like regime of each claim, and the sweep across the knob that makes it appear or vanish.

One module per claim of :mod:`pwlab.experiments` (same name). Each module's docstring fixes,
before any run of it:

- the **paper-like regime**: the paper's own set-up, in miniature (not found by search);
- the **knob** swept and its values (``KNOB``, ``VALUES``; ``PAPER_VALUE`` is the paper-like
  point, ``QUICK_VALUES`` the points ``--quick`` runs);
- the **held criterion**: a number and a comparison, evaluated on the mean over seeds at the
  paper-like point (``CRITERION``);
- the number of regimes tried (``REGIMES_TRIED``: every point of the sweep counts, the
  lab's default setting of the claim module is one more).

Each module has ``run(seed=0, quick=False) -> dict`` (plain numbers of one seed; every key
``sweep/<value>/<metric>`` is one sweep point; where the points are independent — all but
``sparse_vs_dense``, whose points share one dense baseline — ``run(..., values=[...])`` measures
some of them, and ``pwlab bench claims`` runs each point of each seed in its own process) and ``summarize(runs) -> dict`` (``measured``,
``held``, ``seeds_held``, ``numbers`` and ``sweep``: per knob value, mean and sd of the
study's headline metric), like the claim modules, so ``pwlab bench claims --regime paper``
runs them the same way.
"""
