"""Checks for the notebook exercises: ``check_*(answer)`` accepts a right answer or explains a wrong one.

Each check calls the student's function on a few hand-picked cases and compares it with
pwlab's own implementation (the reference). A right answer returns a :class:`Passed`, shown
as "✓ …" when it is a cell's last expression; a wrong one raises :class:`ExerciseError`
(an ``AssertionError``) whose message is a hint aimed at the likely mistake, found by
comparing the answer with the values that common mistakes give.

=====================  =================================  ==========================
check                  the student writes                 notebook
=====================  =================================  ==========================
check_moe_flops        forward FLOPs of an MoE FFN        01_dense_vs_sparse
check_topk_routing     softmax → top-k → renormalise      02_routers
check_router_entropy   mean per-token entropy (nats)      02_routers
check_capacity         slots per expert, two conventions  03_balance_and_capacity
check_load_balancing   Switch load-balancing loss         03_balance_and_capacity
=====================  =================================  ==========================
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pwlab.flops import ffn_flops, linear_flops, moe_ffn_flops
from pwlab.losses import entropy, load_balancing, router_entropy
from pwlab.moe import expert_capacity
from pwlab.routing import TopK

__all__ = ["ExerciseError", "Passed", "check_moe_flops", "check_topk_routing", "check_router_entropy",
           "check_capacity", "check_load_balancing"]


class ExerciseError(AssertionError):
    """A wrong answer; the message is the hint."""


@dataclass(frozen=True)
class Passed:
    """A right answer."""

    message: str

    def __repr__(self) -> str:
        return "✓ " + self.message

    __str__ = __repr__


def _number(name: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ExerciseError(f"{name} should be one number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExerciseError(f"{name} should return a number, got {type(value).__name__}: {value!r}")
    return float(value)


def _close(a: float, b: float, rel: float = 1e-4) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def _diagnose(got: float, want: float, mistakes: dict[str, float], case: str) -> None:
    """Raise with the hint of the first mistake whose value ``got`` matches, else a plain mismatch."""
    for hint, value in mistakes.items():
        if _close(got, value) and not _close(value, want):
            raise ExerciseError(f"{case}: got {got:g}, expected {want:g}. Hint: {hint}")
    raise ExerciseError(f"{case}: got {got:g}, expected {want:g}.")


# -- 01 dense vs sparse -------------------------------------------------------------------
def check_moe_flops(moe_forward_flops) -> Passed:
    """``moe_forward_flops(tokens, d_model, d_hidden, num_experts, top_k) -> int``: forward FLOPs
    of an MoE FFN layer (router + the active experts), one multiply-add = 2 FLOPs."""
    for n, d, h, e, k in [(8, 4, 16, 8, 2), (100, 32, 64, 4, 1), (3, 16, 8, 16, 2), (64, 8, 32, 64, 4)]:
        case = f"tokens={n}, d_model={d}, d_hidden={h}, num_experts={e}, top_k={k}"
        want = moe_ffn_flops(n, d, h, e, k).forward
        got = _number("moe_forward_flops", moe_forward_flops(n, d, h, e, k))
        if _close(got, want):
            continue
        router = linear_flops(n, d, e).forward
        _diagnose(got, want, {
            "only the k chosen experts run for each token, not all E of them.": ffn_flops(n * e, d, h).forward + router,
            "don't forget the router: a linear map from d_model to num_experts for every token.":
                ffn_flops(n * k, d, h).forward,
            "one multiply-add counts as 2 FLOPs.": want / 2,
            "we asked for the forward pass only (training adds a backward pass twice as costly).": 3 * want,
            "an expert is two linear layers, d_model→d_hidden and d_hidden→d_model.":
                ffn_flops(n * k, d, h).forward / 2 + router,
        }, case)
    return Passed("moe_forward_flops matches pwlab.flops.moe_ffn_flops on 4 layer shapes")


# -- 02 routers ---------------------------------------------------------------------------
def _topk_reference(logits: torch.Tensor, k: int):
    e = logits.shape[1]
    router = TopK(top_k=k, d_model=e, num_experts=e)
    with torch.no_grad():
        router.gate.weight.copy_(torch.eye(e))      # logits = x: the router applied to given logits
    r = router(logits)
    return r.expert.view(-1, k), r.weight.view(-1, k).detach()


def check_topk_routing(topk_route) -> Passed:
    """``topk_route(logits (N, E), k) -> (expert (N, k) long, weight (N, k))``: softmax over the
    experts, keep the k largest (largest first); for k > 1 renormalise them to sum to one, for
    k = 1 keep the raw probability (as Switch: a weight of exactly 1 would give the router no gradient)."""
    g = torch.Generator().manual_seed(7)
    for n, e, k in [(6, 4, 2), (10, 8, 1), (5, 8, 3)]:
        case = f"logits of shape ({n}, {e}), k={k}"
        logits = torch.randn(n, e, generator=g) * 2
        want_e, want_w = _topk_reference(logits, k)
        out = topk_route(logits.clone(), k)
        if not isinstance(out, tuple) or len(out) != 2:
            raise ExerciseError(f"{case}: return a pair (expert, weight), got {type(out).__name__}")
        got_e, got_w = (torch.as_tensor(t) for t in out)
        if tuple(got_e.shape) != (n, k) or tuple(got_w.shape) != (n, k):
            raise ExerciseError(f"{case}: expert and weight should both have shape ({n}, {k}), got "
                                f"{tuple(got_e.shape)} and {tuple(got_w.shape)}. Hint: top-k over the experts, dim=-1.")
        got_w = got_w.detach().float()
        if not torch.equal(got_e.long().sort(-1).values, want_e.sort(-1).values):
            raise ExerciseError(f"{case}: wrong experts chosen. Hint: take the softmax over the experts (dim=-1), "
                                "then the k largest per token (torch.topk).")
        if not torch.equal(got_e.long(), want_e):
            raise ExerciseError(f"{case}: right experts, wrong order. Hint: list each token's experts largest "
                                "weight first, as torch.topk does.")
        if torch.allclose(got_w, torch.gather(logits.softmax(-1), 1, want_e), atol=1e-5) and k > 1:
            raise ExerciseError(f"{case}: the weights are the raw probabilities. Hint: renormalise the k kept "
                                "probabilities so that each token's weights sum to one.")
        if k == 1 and torch.allclose(got_w, torch.ones_like(got_w)):
            raise ExerciseError(f"{case}: every weight is 1. Hint: with k = 1 keep the raw probability (do not "
                                "renormalise), otherwise the output does not depend on the router and it cannot learn.")
        if not torch.allclose(got_w, want_w, atol=1e-5):
            raise ExerciseError(f"{case}: the weights differ from the reference (first token: got "
                                f"{got_w[0].tolist()}, expected {want_w[0].tolist()}).")
    return Passed("topk_route matches pwlab.routing.TopK(order='softmax_topk') on 3 batches")


def check_router_entropy(mean_entropy) -> Passed:
    """``mean_entropy(probs (N, E)) -> scalar``: the mean over tokens of each token's routing
    entropy ``-Σ_e p log p``, in nats."""
    g = torch.Generator().manual_seed(3)
    cases = {"uniform probs (4, 8)": torch.full((4, 8), 1 / 8),
             "one-hot probs (3, 4)": torch.eye(4)[:3],
             "random probs (16, 8)": (torch.randn(16, 8, generator=g) * 2).softmax(-1)}
    for case, probs in cases.items():
        want = float(router_entropy(probs))
        got = _number("mean_entropy", mean_entropy(probs.clone()))
        if _close(got, want, 1e-3):
            continue
        _diagnose(got, want, {
            "entropy is -Σ p·log p: mind the minus sign.": -want,
            "use the natural logarithm (torch.log): we count in nats, not bits.": want / math.log(2),
            "average over the tokens rather than summing.": want * probs.shape[0],
            "compute each token's entropy first, then average; not the entropy of the average probabilities.":
                float(entropy(probs.mean(0))),
        }, case)
    return Passed("mean_entropy matches pwlab.losses.router_entropy (uniform: log E, one-hot: 0)")


# -- 03 balance and capacity ----------------------------------------------------------------
def check_capacity(capacity) -> Passed:
    """``capacity(num_tokens, num_experts, top_k, capacity_factor, convention) -> int`` for the
    conventions ``"k_tokens"`` (C = ceil(cf·k·N/E)) and ``"tokens"`` (C = ceil(cf·N/E))."""
    for n, e, k, cf in [(64, 8, 2, 1.0), (100, 8, 2, 1.25), (10, 4, 1, 1.0), (30, 16, 2, 0.5)]:
        for conv in ("k_tokens", "tokens"):
            case = f"N={n}, E={e}, k={k}, cf={cf}, convention={conv!r}"
            want = expert_capacity(n, e, k, cf, conv)
            got = _number("capacity", capacity(n, e, k, cf, conv))
            if got == want:
                continue
            other = expert_capacity(n, e, k, cf, "tokens" if conv == "k_tokens" else "k_tokens")
            raw = cf * n * (k if conv == "k_tokens" else 1) / e
            _diagnose(got, want, {
                f"swapped conventions: {conv!r} {'multiplies by' if conv == 'k_tokens' else 'does not multiply by'} k.":
                    other,
                "a capacity is a whole number of slots: round up with math.ceil.": raw,
                "round up (math.ceil), not down: rounding down drops tokens even when routing is balanced.":
                    math.floor(raw),
            }, case)
    return Passed("capacity matches pwlab.moe.expert_capacity for both conventions")


def check_load_balancing(load_balancing_loss) -> Passed:
    """``load_balancing_loss(probs (N, E), expert (A,)) -> scalar``: the Switch loss without α,
    ``E · Σ_i f_i · P_i`` (f_i: fraction of the A assignments to expert i; P_i: mean probability)."""
    g = torch.Generator().manual_seed(11)
    for n, e, k in [(12, 4, 1), (20, 8, 2), (9, 3, 2)]:
        case = f"N={n} tokens, E={e} experts, top-{k} assignments"
        probs = (torch.randn(n, e, generator=g) * 1.5).softmax(-1).requires_grad_(True)
        expert = probs.detach().topk(k, -1).indices.reshape(-1)
        want = float(load_balancing(probs.detach(), expert))
        out = load_balancing_loss(probs, expert.clone())
        got = _number("load_balancing_loss", out)
        if _close(got, want):
            if not (isinstance(out, torch.Tensor) and out.requires_grad):
                raise ExerciseError(f"{case}: right value, but the router could not learn from it. Hint: compute "
                                    "P_i = probs.mean(0) with torch operations so the loss has a gradient.")
            continue
        counts = torch.bincount(expert, minlength=e).float()
        p = probs.detach().mean(0)
        _diagnose(got, want, {
            "multiply by the number of experts E, so that uniform routing gives exactly 1.": want / e,
            f"f_i divides by all A = N·k assignments (here {n * k}), not by the N tokens.": want * k,
            "f_i counts the assignments actually made (expert), not the argmax of probs.":
                float(e * (torch.bincount(probs.detach().argmax(-1), minlength=e).float() / n * p).sum()),
            "P_i is the mean probability over tokens (not the sum) and f_i a fraction of the assignments "
            "(counts / A).": want * n,
            "f_i is a fraction of the assignments (counts / A) and P_i the mean probability over tokens.":
                float(e * (counts * p).sum()),
        }, case)
    return Passed("load_balancing_loss matches pwlab.losses.load_balancing and has a gradient")
