"""Claim 2 — modality experts emerge (LIMoE, Mustafa et al. 2022).

Design (fixed before running): one task per sense — digits (image), dtmf (audio),
digit_words (text), wine (tabular) — trained together on the ``tiny`` preset with both
blocks MoE (top-2 of 8 experts), once without and once with LIMoE's entropy regularisers
(``entropy_local`` and ``entropy_global``, weight ``ENTROPY_WEIGHT`` each, the order of the
load-balancing weight). The pathway map counts every kept token→expert assignment of up to
256 test examples per task; ``I(E; sense)`` in bits per block is measured on the freshly
initialised model and after training.

Held when, in both runs, at least one block's ``I(E; sense)`` rises by at least
``RISE_BITS`` = 0.25 bits over its value at initialisation (an eighth of the 2-bit maximum
for four senses: "well above"), on the mean over seeds.
"""
from __future__ import annotations

import pwlab.tasks as T
from pwlab.config import tiny
from pwlab.experiments import common
from pwlab.pathways import pathway_map
from pwlab.train import Trainer

TASKS = ("digits", "dtmf", "digit_words", "wine")
NUM_EXPERTS = 8
ENTROPY_WEIGHT = 0.01
RISE_BITS = 0.25
STEPS = {"quick": 150, "full": 400}
VARIANTS = ("plain", "entropy")


def config(seed: int, regularised: bool):
    aux = {"entropy_local": ENTROPY_WEIGHT, "entropy_global": ENTROPY_WEIGHT} if regularised else {}
    return (tiny().with_model(num_experts=NUM_EXPERTS, moe_layers="all", aux_weights=aux)
            .with_train(seed=seed, **common.TRAIN))


def run(seed: int = 0, quick: bool = False) -> dict:
    """I(E; sense) per MoE block at init and after training, for both variants.

    Returns keys ``<variant>/init/<block>``, ``<variant>/trained/<block>`` (bits),
    ``<variant>/rise`` (the largest rise over blocks) and the blocks.
    """
    steps = STEPS["quick" if quick else "full"]
    tasks = T.load(list(TASKS), seed=seed)
    out: dict = {"seed": seed, "steps": steps}
    for variant in VARIANTS:
        tr = Trainer(tasks, config(seed, variant == "entropy"))
        before = pathway_map(tr.model).mutual_information("sense")
        tr.step(steps)
        pmap = pathway_map(tr.model)
        after = pmap.mutual_information("sense")
        for blk, b, a in zip(pmap.blocks, before, after):
            out[f"{variant}/init/{blk}"], out[f"{variant}/trained/{blk}"] = b, a
        out[f"{variant}/rise"] = max(a - b for a, b in zip(after, before))
        out["blocks"] = list(pmap.blocks)
    return out


def summarize(runs: list[dict]) -> dict:
    """The row: bits per block before → after, per variant; held if both rise >= RISE_BITS."""
    parts, numbers, held = [], {}, True
    for variant in VARIANTS:
        layers = []
        for blk in runs[0]["blocks"]:
            init = common.collect(runs, f"{variant}/init/{blk}")
            trained = common.collect(runs, f"{variant}/trained/{blk}")
            numbers[f"{variant}/init/{blk}"], numbers[f"{variant}/trained/{blk}"] = init, trained
            layers.append(f"L{blk} {init['mean']:.2f}→{common.fmt(trained)}")
        rise = common.collect(runs, f"{variant}/rise")
        numbers[f"{variant}/rise"] = rise
        held = held and rise["mean"] >= RISE_BITS
        parts.append(f"{variant}: " + ", ".join(layers))
    return {"measured": "I(E;sense) bits init→trained; " + "; ".join(parts),
            "held": held,
            "seeds_held": sum(all(r[f"{v}/rise"] >= RISE_BITS for v in VARIANTS) for r in runs),
            "numbers": numbers}


#: what :func:`headline` measures (the row's mean ± sd in ``pwlab bench claims``)
HEADLINE = "smaller rise of I(E;sense) of the two runs, bits (>= 0.25 holds)"


def headline(run: dict) -> float:
    """The criterion's main quantity in one run (one seed)."""
    return min(float(run[f"{v}/rise"]) for v in VARIANTS)
