"""The papers in miniature: one experiment per headline claim, measured with fixed seeds.

Each claim is a module with ``run(seed=0, quick=False) -> dict`` (plain numbers of one
seed) and ``summarize(runs) -> dict`` (``measured`` text, ``held``, ``seeds_held`` and the
mean ± spread of every number over the seeds). The design and the ``held`` criterion of
each were fixed from the claim's wording before any run; see each module's docstring.

    >>> from pwlab.experiments import modality_experts
    >>> modality_experts.run(seed=0, quick=True)         # one seed, well under a minute

Each claim is measured in two regimes (:data:`REGIMES`): ``"default"``, the lab's one tiny
setting (the claim module), and ``"paper"``, the paper's own set-up in miniature with a sweep
across the knob that makes the effect appear or vanish (:mod:`pwlab.experiments.studies`,
a module of the same name). :func:`experiment` gives the module of either; both have the same
``run`` and ``summarize``.

``pwlab bench claims`` runs them all and prints the table (``docs/claims.md`` holds it).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Claim:
    """One headline claim: what the paper says and how we test it.

    Attributes:
        name: the module in :mod:`pwlab.experiments`.
        number: the row number of the claims table.
        title: a few words for the table.
        statement: the claim, as the papers make it.
        reference: the paper's own number, and where it comes from.
        criterion: what we measure and when the row holds (fixed before running).
    """

    name: str
    number: int
    title: str
    statement: str
    reference: str
    criterion: str

    def module(self) -> ModuleType:
        return importlib.import_module(f"pwlab.experiments.{self.name}")

    def study(self) -> ModuleType:
        """The paper-like regime's module (:mod:`pwlab.experiments.studies`)."""
        return importlib.import_module(f"pwlab.experiments.studies.{self.name}")


CLAIMS: dict[str, Claim] = {c.name: c for c in (
    Claim("sparse_vs_dense", 1, "Sparse beats dense at equal compute",
          "Sparse beats dense at equal compute: a sparse model with the same active FLOPs per token "
          "reaches the dense model's final validation loss in fewer steps.",
          "up to 7x pre-training speed-up (Switch Transformer; GShard)",
          "Switch top-1 of 8 vs dense twin; step ratio to the dense final val loss > 1"),
    Claim("modality_experts", 2, "Modality experts emerge",
          "Modality experts emerge: after multi-sense training I(expert; sense) rises well above its "
          "value at initialisation in at least one layer, with and without the entropy regularisers.",
          "modality-specific experts emerge (LIMoE)",
          "rise of I(E;sense) >= 0.25 bits in some block, in both runs"),
    Claim("task_subnetworks", 3, "Task subnetworks",
          "Task subnetworks: with task-level routing, each task's extracted subnetwork keeps its accuracy "
          "within 1 point while holding <= 1/4 of the expert parameters.",
          "subnetworks extracted with no loss (Task-MoE, 32 experts: +1.0 BLEU, 1.9x throughput)",
          "every task: accuracy drop <= 1 point and expert fraction <= 0.25"),
    Claim("mmoe", 4, "Per-task gates help when tasks disagree",
          "Per-task gates help when tasks disagree: MMoE's advantage over a shared-bottom model grows as the "
          "task correlation p falls.",
          "shared-bottom degrades as p drops, MMoE much less (MMoE, KDD 2018, fig. 4)",
          "advantage(0.1) > advantage(0.5) > advantage(1.0), test MSE"),
    Claim("many_tasks", 5, "One model, many tasks",
          "One model, many tasks: training the digit tasks of all senses together reaches at least the "
          "single-task accuracy of each at the same per-task step count.",
          "one model for thousands of tasks (Pathways, Dean 2021; a vision, no number)",
          "token-routed model within 1 point of single-task on every task"),
    Claim("ablation", 6, "Pathways are real (ablation)",
          "Pathways are real: disabling a task's top-pathway experts drops that task's accuracy by >= 20 "
          "points while the other tasks lose <= 5.",
          "task-specific pathways (Pathways, Dean 2021; Task-MoE)",
          "every task: own drop >= 20 points, largest other drop <= 5"),
    Claim("swat", 7, "SWAT: fewer training FLOPs",
          "SWAT: >= 8x fewer training FLOPs within 5 points of dense accuracy.",
          "90% sparsity: 85.6% fewer FLOPs at -4.7 top-1 on ImageNet (SWAT, NeurIPS 2020)",
          "FLOP reduction >= 8x and accuracy gap <= 5 points"),
    Claim("expert_choice", 8, "Expert choice converges faster",
          "Expert choice converges faster than top-1/top-2 token choice at the same capacity.",
          "> 2x faster convergence (Expert Choice, Zhou et al. 2022)",
          "steps ratio to each token-choice final val loss > 2 for both"),
)}


#: the regimes every claim is measured in: the lab's default setting and the paper-like one
REGIMES = ("default", "paper")


def names() -> list[str]:
    """The claim modules, in table order."""
    return sorted(CLAIMS, key=lambda n: CLAIMS[n].number)


def _check(name: str, regime: str) -> Claim:
    if name not in CLAIMS:
        raise ValueError(f"name must be one of {', '.join(map(repr, names()))}; got {name!r}")
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(map(repr, REGIMES))}; got {regime!r}")
    return CLAIMS[name]


def experiment(name: str, regime: str = "default") -> ModuleType:
    """The module that measures claim ``name`` in ``regime`` (``run`` and ``summarize``)."""
    claim = _check(name, regime)
    return claim.module() if regime == "default" else claim.study()


def criterion(name: str, regime: str = "default") -> str:
    """The held criterion of claim ``name`` in ``regime``, as fixed before the runs."""
    claim = _check(name, regime)
    return claim.criterion if regime == "default" else claim.study().CRITERION


def setting(name: str, regime: str = "default") -> str:
    """A few words on the setting of claim ``name`` in ``regime`` (the table's regime column)."""
    claim = _check(name, regime)
    return "default: the lab's tiny setting" if regime == "default" else "paper: " + claim.study().REGIME


def headline(name: str, regime: str, run: dict) -> float:
    """The one number of a run that the row's mean ± sd reports (the criterion's main quantity)."""
    return float(experiment(name, regime).headline(run))


def headline_label(name: str, regime: str) -> str:
    """What :func:`headline` measures, in a few words."""
    return experiment(name, regime).HEADLINE


__all__ = ["Claim", "CLAIMS", "REGIMES", "criterion", "experiment", "headline", "headline_label", "names",
           "setting"]
