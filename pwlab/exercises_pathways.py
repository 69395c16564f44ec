"""Checks for the exercises of the Pathways notebooks (00, 04, 05, 06).

Same contract as :mod:`pwlab.exercises`: ``check_*(answer)`` calls the student's function on
a few hand-picked cases and compares it with pwlab's own implementation; a right answer
returns a :class:`~pwlab.exercises.Passed`, a wrong one raises an
:class:`~pwlab.exercises.ExerciseError` whose message is a hint aimed at the likely mistake
(found by comparing the answer with what common mistakes give).

==========================  ======================================  ===============
check                       the student writes                      notebook
==========================  ======================================  ===============
check_expert_shares         counts (E, K) → each task's shares      00_welcome
check_mixing_probabilities  task sizes → sampling probabilities     04_multitask
check_mmoe_gate             one task's gate over shared experts     04_multitask
check_token_count           tokens T an encoder makes per input     05_senses
check_sense_mi           I(E; sense) in bits from counts      05_senses
check_top_pathway           a task's top-k experts in one block     06_pathways
check_expert_fraction       expert parameters a subnetwork keeps    06_pathways
==========================  ======================================  ===============
"""
from __future__ import annotations

import math

import torch

from pwlab.exercises import ExerciseError, Passed, _close, _diagnose, _number
from pwlab.experts import ExpertBank
from pwlab.pathways import entropy, mutual_information
from pwlab.senses import AudioEncoder, ImageEncoder, TabularEncoder, TextEncoder
from pwlab.tasks import mixing_probabilities

__all__ = ["check_expert_shares", "check_mixing_probabilities", "check_mmoe_gate", "check_token_count",
           "check_sense_mi", "check_top_pathway", "check_expert_fraction"]


def _tensor(name: str, value, shape: tuple[int, ...], case: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(value).detach().double()
    except (TypeError, ValueError, RuntimeError):
        raise ExerciseError(f"{case}: {name} should return a tensor, got {type(value).__name__}") from None
    if tuple(t.shape) != shape:
        raise ExerciseError(f"{case}: {name} should return shape {shape}, got {tuple(t.shape)}")
    return t


def _count_table(seed: int, e: int, k: int, *, empty_column: bool = False) -> torch.Tensor:
    """(E, K) long assignment counts with some structure (a few experts favoured per column)."""
    g = torch.Generator().manual_seed(seed)
    c = (torch.rand(e, k, generator=g) ** 3 * 100).round().long()
    if empty_column:
        c[:, -1] = 0
    return c


# -- 00 welcome --------------------------------------------------------------------------
def _shares_reference(counts: torch.Tensor) -> torch.Tensor:
    c = counts.double()
    return c / c.sum(0, keepdim=True).clamp_min(1)


def check_expert_shares(expert_shares) -> Passed:
    """``expert_shares(counts (E, K)) -> (E, K)``: column k is task k's assignments as fractions
    over the experts (each used column sums to 1; a task with no assignments gives zeros)."""
    cases = {"counts [[3, 0], [1, 2]]": torch.tensor([[3, 0], [1, 2]]),
             "random counts (4 experts, 3 tasks)": _count_table(1, 4, 3),
             "counts (8 experts, 4 tasks), the last task never routed": _count_table(2, 8, 4, empty_column=True)}
    for case, counts in cases.items():
        want = _shares_reference(counts)
        got = _tensor("expert_shares", expert_shares(counts.clone()), tuple(counts.shape), case)
        if torch.allclose(got, want, atol=1e-6):
            continue
        c = counts.double()
        if torch.allclose(got, c / c.sum(1, keepdim=True).clamp_min(1), atol=1e-6):
            raise ExerciseError(f"{case}: you divided each expert's row by its total. Hint: a task's shares "
                                "are over the experts, so divide each column by the column's sum (dim=0).")
        if torch.allclose(got, c / c.sum(), atol=1e-6):
            raise ExerciseError(f"{case}: you divided by the grand total. Hint: each task (column) should "
                                "sum to 1 on its own: divide by counts.sum(0).")
        if not torch.isfinite(got).all():
            raise ExerciseError(f"{case}: your answer holds NaN or Inf. Hint: a task with no assignments has a "
                                "column sum of 0; divide by .clamp_min(1) so its shares stay 0.")
        raise ExerciseError(f"{case}: got {got.tolist()}, expected {want.tolist()}.")
    return Passed("expert_shares matches PathwayMap.share (columns sum to 1, empty tasks stay 0)")


# -- 04 multi-task -----------------------------------------------------------------------
def check_mixing_probabilities(mixing) -> Passed:
    """``mixing(sizes, strategy, temperature) -> (K,)`` task-sampling probabilities for the
    strategies ``"proportional"`` (p ∝ n), ``"uniform"`` and ``"temperature"`` (p ∝ n^(1/T))."""
    for sizes in ([1437, 360, 2000], [100, 900], [10, 1000, 100, 1]):
        for strategy, temp in (("proportional", 2.0), ("uniform", 2.0), ("temperature", 2.0), ("temperature", 4.0)):
            case = f"sizes={sizes}, strategy={strategy!r}, temperature={temp}"
            want = mixing_probabilities(sizes, strategy, temp)
            got = _tensor("mixing", mixing(list(sizes), strategy, temp), (len(sizes),), case)
            if torch.allclose(got, want, atol=1e-6):
                continue
            n = torch.tensor(sizes, dtype=torch.float64)
            if not math.isclose(float(got.sum()), 1.0, abs_tol=1e-6):
                raise ExerciseError(f"{case}: your probabilities sum to {float(got.sum()):.4g}. Hint: normalise "
                                    "the weights so that they sum to 1.")
            if strategy == "temperature" and torch.allclose(got, (n ** temp) / (n ** temp).sum(), atol=1e-6):
                raise ExerciseError(f"{case}: you raised the sizes to the power T. Hint: the exponent is 1/T, "
                                    "so a higher temperature flattens the mix towards uniform.")
            if strategy == "temperature" and torch.allclose(got, n / n.sum(), atol=1e-6):
                raise ExerciseError(f"{case}: that is the proportional mix. Hint: temperature mixing uses "
                                    "n ** (1 / temperature) before normalising.")
            raise ExerciseError(f"{case}: got {[round(v, 4) for v in got.tolist()]}, expected "
                                f"{[round(v, 4) for v in want.tolist()]}.")
    return Passed("mixing matches pwlab.tasks.mixing_probabilities for all three strategies")


def check_mmoe_gate(gate_mix) -> Passed:
    """``gate_mix(expert_out (B, E, H), gate_logits (B, E)) -> (B, H)``: MMoE eq. 4-5 for one task,
    ``Σ_e softmax(gate_logits)_e · expert_out[:, e]``."""
    g = torch.Generator().manual_seed(5)
    for b, e, h in [(2, 3, 4), (5, 8, 16), (1, 2, 1)]:
        case = f"expert_out ({b}, {e}, {h}), gate_logits ({b}, {e})"
        experts = torch.randn(b, e, h, generator=g, dtype=torch.float64)
        logits = torch.randn(b, e, generator=g, dtype=torch.float64) * 2
        want = torch.einsum("be,beh->bh", logits.softmax(-1), experts)
        got = _tensor("gate_mix", gate_mix(experts.clone(), logits.clone()), (b, h), case)
        if torch.allclose(got, want, atol=1e-6):
            continue
        if torch.allclose(got, torch.einsum("be,beh->bh", logits, experts), atol=1e-6):
            raise ExerciseError(f"{case}: you mixed with the raw logits. Hint: the gate is a softmax over the "
                                "experts, so its weights are positive and sum to 1.")
        if b > 1 and torch.allclose(got, torch.einsum("be,beh->bh", logits.softmax(0), experts), atol=1e-6):
            raise ExerciseError(f"{case}: your softmax runs over the batch. Hint: normalise over the experts "
                                "(dim=-1 of gate_logits).")
        if torch.allclose(got, experts.mean(1), atol=1e-6):
            raise ExerciseError(f"{case}: you averaged the experts. Hint: each example weighs the experts by "
                                "its own gate, softmax(gate_logits).")
        raise ExerciseError(f"{case}: the mixture differs from Σ_e softmax(gate_logits)_e · expert_out[:, e] "
                            f"(first example: got {got[0, :3].tolist()}..., expected {want[0, :3].tolist()}...).")
    return Passed("gate_mix is MMoE's per-task gate: a softmax-weighted sum of the shared experts")


# -- 05 senses ----------------------------------------------------------------------------
def _token_reference(sense: str, x: torch.Tensor, patch_size: int, hop_length: int) -> int:
    if sense == "image":
        enc = ImageEncoder(8, tuple(x.shape[1:]), patch_size)
    elif sense == "audio":
        enc = AudioEncoder(8, x.shape[1], hop_length=hop_length)
    elif sense == "text":
        enc = TextEncoder(8, int(x.max()) + 1, x.shape[1])
    else:
        enc = TabularEncoder(8, x.shape[1])
    return int(enc(x).mask[0].sum())


def check_token_count(num_tokens) -> Passed:
    """``num_tokens(sense, x, patch_size, hop_length) -> int``: the real (unmasked) tokens the
    sense's encoder makes from the first example of ``x`` (shapes as in :mod:`pwlab.tasks.base`)."""
    g = torch.Generator().manual_seed(4)
    text = torch.zeros(2, 12, dtype=torch.long)
    text[0, :6] = torch.randint(1, 40, (6,), generator=g)
    cases = [("image", torch.rand(2, 8, 8, generator=g), 2, 64),
             ("image", torch.rand(2, 8, 8, generator=g), 4, 64),
             ("audio", torch.randn(2, 1000, generator=g), 2, 64),
             ("audio", torch.randn(2, 640, generator=g), 2, 128),
             ("text", text, 2, 64),
             ("tabular", torch.randn(2, 13, generator=g), 2, 64),
             ("tabular", torch.randn(2, 30, generator=g), 2, 64)]
    for sense, x, p, hop in cases:
        case = f"sense={sense!r}, x of shape {tuple(x.shape)}, patch_size={p}, hop_length={hop}"
        want = _token_reference(sense, x, p, hop)
        got = _number("num_tokens", num_tokens(sense, x.clone(), p, hop))
        if got == want:
            continue
        hints = {}
        if sense == "image":
            hints = {"one token per p×p patch: (H/p)·(W/p), not one per pixel.": x.shape[1] * x.shape[2],
                     "a patch covers p×p pixels, so divide each side by p (not the area by p).":
                         x.shape[1] * x.shape[2] / p,
                     "count patches in both directions: (H/p)·(W/p).": x.shape[1] / p}
        elif sense == "audio":
            hints = {"centered STFT frames add one: T = 1 + L // hop_length.": x.shape[1] // hop,
                     "one token per frame, not per sample.": x.shape[1]}
        elif sense == "text":
            hints = {"padding (id 0) is masked out: count only the non-zero ids.": x.shape[1]}
        elif sense == "tabular":
            hints = {"a table row gives one token per feature (F tokens).": 1}
        _diagnose(got, want, hints, case)
    return Passed("num_tokens matches the four encoders' masks (image patches, STFT frames, characters, features)")


def check_sense_mi(mutual_information_bits) -> Passed:
    """``mutual_information_bits(counts (E, M)) -> float``: I(E; M) = H(E) − H(E|M) in bits from
    a table of assignment counts (rows: experts, columns: senses)."""
    cases = {"one expert per sense, [[5, 0], [0, 5]]": torch.tensor([[5, 0], [0, 5]]),
             "every sense spread alike, [[2, 4], [2, 4]]": torch.tensor([[2, 4], [2, 4]]),
             "random counts (8 experts, 4 senses)": _count_table(3, 8, 4),
             "random counts (4 experts, 3 senses, unequal sizes)": _count_table(4, 4, 3) * torch.tensor([1, 5, 2])}
    for case, counts in cases.items():
        want = mutual_information(counts)
        got = _number("mutual_information_bits", mutual_information_bits(counts.clone()))
        if _close(got, want, 1e-4) or (abs(want) < 1e-9 and abs(got) < 1e-6):
            continue
        c = counts.double()
        h_cond_unweighted = sum(entropy(c[:, m]) for m in range(c.shape[1])) / c.shape[1]
        _diagnose(got, want, {
            "use log base 2 (torch.log2): we count in bits, not nats.": want * math.log(2),
            "H(E|M) weighs each sense's entropy by p(m), its share of all assignments, "
            "not equally.": entropy(c.sum(1)) - h_cond_unweighted,
            "I(E;M) = H(E) − H(E|M): you returned H(E) alone.": entropy(c.sum(1)),
            "I(E;M) = H(E) − H(E|M), not the other way round.": -want,
            "H(E) is the entropy of the experts' totals (sum over senses, dim=1), not of the senses'.":
                entropy(c.sum(0)) - (entropy(c.sum(1)) - want),
        }, case)
    return Passed("mutual_information_bits matches pwlab.pathways.mutual_information (0 when alike, 1 bit for 2 disjoint)")


# -- 06 pathways ---------------------------------------------------------------------------
def check_top_pathway(top_experts) -> Passed:
    """``top_experts(counts (E, K), task, k) -> list[int]``: the ``k`` experts task ``task``
    (a column index) uses most, most used first; ties go to the lower expert index; experts
    the task never uses are left out."""
    cases = [(torch.tensor([[5, 1], [9, 0], [2, 7], [0, 3]]), 1, 2),
             (torch.tensor([[5, 1], [9, 0], [2, 7], [0, 3]]), 0, 3),
             (torch.tensor([[4, 0], [4, 1], [1, 0]]), 0, 2),
             (torch.tensor([[0, 3], [6, 0], [0, 1], [0, 0]]), 0, 2),
             (_count_table(6, 8, 4), 2, 2)]
    for counts, task, k in cases:
        case = f"counts {counts.tolist()}, task={task}, k={k}"
        col = counts[:, task]
        order = torch.argsort(-col, stable=True)[:k]
        want = [int(i) for i in order if col[i] > 0]
        out = top_experts(counts.clone(), task, k)
        try:
            got = [int(i) for i in (out.tolist() if isinstance(out, torch.Tensor) else out)]
        except (TypeError, ValueError):
            raise ExerciseError(f"{case}: return a list of expert indices, got {out!r}") from None
        if got == want:
            continue
        full = [int(i) for i in order]
        if got == full and full != want:
            raise ExerciseError(f"{case}: got {got}, expected {want}. Hint: leave out experts the task never "
                                "used (count 0): they are not on its pathway.")
        row_order = torch.argsort(-counts[task] if task < counts.shape[0] else counts[0], stable=True)[:k].tolist()
        if got == row_order and sorted(row_order) != sorted(want):
            raise ExerciseError(f"{case}: you read a row. Hint: rows are experts and columns tasks, so the task's "
                                "counts are counts[:, task].")
        if sorted(got) == sorted(want):
            raise ExerciseError(f"{case}: right experts, wrong order (got {got}, expected {want}). Hint: most used "
                                "first; on a tie the lower index first (torch.argsort(-col, stable=True)).")
        if got == [int(i) for i in torch.argsort(col, stable=True)[:k]]:
            raise ExerciseError(f"{case}: you took the least used experts. Hint: sort by decreasing count.")
        raise ExerciseError(f"{case}: got {got}, expected {want}.")
    return Passed("top_experts matches pwlab.pathways.top_pathway")


def check_expert_fraction(expert_fraction) -> Passed:
    """``expert_fraction(kept, num_experts, d_model, d_hidden) -> float``: the share of the MoE
    blocks' expert parameters a subnetwork keeps, where ``kept`` maps each MoE block to its
    kept experts and every block has ``num_experts`` experts of (W1, b1, W2, b2)."""
    cases = [({1: [0, 3]}, 4, 32, 64), ({0: [2, 5], 1: [1, 6]}, 8, 32, 64), ({0: [1], 1: [0, 2, 3]}, 4, 8, 16)]
    for kept, e, d, h in cases:
        case = f"kept={kept}, num_experts={e}, d_model={d}, d_hidden={h}"
        one = sum(p.numel() for p in ExpertBank(1, d, h).parameters())       # W1, b1, W2, b2 of one expert
        n_kept = sum(len(v) for v in kept.values())
        want = n_kept * one / (len(kept) * e * one)
        got = _number("expert_fraction", expert_fraction(kept, e, d, h))
        if _close(got, want):
            continue
        _diagnose(got, want, {
            "divide by the experts of all MoE blocks together (number of blocks × num_experts).": n_kept / e,
            "count experts, not blocks: a block keeps len(kept[block]) of its num_experts.": len(kept) / e,
            "we asked for a fraction (kept parameters / all expert parameters), not a parameter count.":
                n_kept * one,
            "an expert holds W1 (D×H), b1 (H), W2 (H×D) and b2 (D); count all four in both the kept and the "
            "total parameters.": n_kept * 2 * d * h / (len(kept) * e * one),
        }, case)
    return Passed("expert_fraction matches the parameter count of the extracted expert banks")
