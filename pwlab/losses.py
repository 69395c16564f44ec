"""Auxiliary losses of sparse routing, as pure functions of router outputs.

All return unweighted scalars; the MoE layer multiplies them by its ``aux_weights``.
Index legend: N tokens, E experts, A assignments, G groups (e.g. senses).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from pwlab import _checks


def _tensor(name: str, x: Tensor, check_finite: bool) -> None:
    """A floating tensor argument, finite unless the caller vouches for it.

    ``check_finite=False`` is for the MoE layer, whose router outputs come from checked input:
    the check is one reduction and, on an accelerator, a device sync per call.
    """
    _checks.float_input(name, x)
    if check_finite:
        _checks.finite_tensor(name, x)


def _upcast(x: Tensor) -> Tensor:
    """Half precision to float32 (losses of small numbers need it); float32/64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) or not x.is_floating_point() else x


def cv_squared(x: Tensor, eps: float = 1e-10, *, check_finite: bool = True) -> Tensor:
    """Squared coefficient of variation ``var(x) / mean(x)²`` (population variance); 0 for one element."""
    _tensor("x", x, check_finite)
    if x.numel() <= 1:
        return x.new_zeros(())
    x = _upcast(x)
    return x.var(unbiased=False) / (x.mean() ** 2 + eps)


def load_balancing(probs: Tensor, expert: Tensor, counts: Tensor | None = None, *,
                   check_finite: bool = True) -> Tensor:
    """Switch Transformer load-balancing loss (Fedus et al. 2021, eq. 4–6), without α.

    ``L = E · Σ_i f_i · P_i`` where ``f_i`` is the fraction of the A assignments sent to expert i
    (for top-k each of the k choices counts, so dividing by A = N·k is "dividing by k") and
    ``P_i`` the mean router probability of expert i. Uniform routing gives exactly 1, so with
    the usual α = 1e-2 the weighted loss of a balanced router is α.

    Args:
        probs: (N, E) router probabilities (differentiable; the gradient flows through P only).
        expert: (A,) chosen experts (proposed, before capacity).
        counts: optional (E,) ``bincount(expert)`` if the caller has it already.
        check_finite: refuse NaN/Inf in ``probs`` (every loss here has this switch; the MoE
            layer turns it off for its own, already checked, router outputs).
    """
    _tensor("probs", probs, check_finite)
    _checks.integer_ids("expert", expert)
    n, e = probs.shape
    if n == 0 or expert.numel() == 0:
        return probs.new_zeros(())
    counts = torch.bincount(expert, minlength=e) if counts is None else counts
    f = counts.to(probs.dtype) / expert.numel()
    p = probs.mean(0)
    return e * (f * p).sum()


def z_loss(logits: Tensor, *, check_finite: bool = True) -> Tensor:
    """Router z-loss (ST-MoE, Zoph et al. 2022, eq. 5): mean over tokens of ``logsumexp(logits)²``.

    Zero logits give ``(log E)²``. Keeps logits small, which keeps the softmax numerically sane.
    """
    _tensor("logits", logits, check_finite)
    if logits.shape[0] == 0:
        return logits.new_zeros(())
    return torch.logsumexp(_upcast(logits), dim=-1).pow(2).mean()


def entropy(probs: Tensor, dim: int = -1, eps: float = 1e-12, *, check_finite: bool = True) -> Tensor:
    """Shannon entropy in nats along ``dim``."""
    _tensor("probs", probs, check_finite)
    return -(probs * (probs + eps).log()).sum(dim)


def router_entropy(probs: Tensor, *, check_finite: bool = True) -> Tensor:
    """Mean per-token routing entropy in nats (0: certain; log E: uniform)."""
    _tensor("probs", probs, check_finite)
    if probs.shape[0] == 0:
        return probs.new_zeros(())
    return entropy(_upcast(probs), check_finite=False).mean()


def group_entropies(probs: Tensor, groups: Tensor, num_groups: int | None = None, *,
                    check_finite: bool = True) -> tuple[Tensor, Tensor]:
    """LIMoE's per-group entropies (Mustafa et al. 2022, §3.1).

    For each group m (a sense) with tokens x ∈ m:
        local_m  = mean_x H(p(x))          — want small: each token's routing sharp;
        global_m = H(mean_x p(x))          — want large: the group uses many experts.

    Returns (local (G,), global (G,)); a group without tokens gives 0 for both.
    """
    _tensor("probs", probs, check_finite)
    _checks.integer_ids("groups", groups)
    if probs.dim() != 2 or groups.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (N, E) and groups (N,), got probs {tuple(probs.shape)}, "
                         f"groups {tuple(groups.shape)}")
    g = int(num_groups if num_groups is not None else (int(groups.max()) + 1 if groups.numel() else 0))
    local = probs.new_zeros(g)
    glob = probs.new_zeros(g)
    for m in range(g):
        sel = groups == m
        if bool(sel.any()):
            pm = probs[sel]
            local[m] = entropy(pm, check_finite=False).mean()
            glob[m] = entropy(pm.mean(0), check_finite=False)
    return local, glob


def limoe_entropy_losses(probs: Tensor, groups: Tensor, num_groups: int | None = None,
                         global_threshold: float | None = None, *, check_finite: bool = True) -> dict[str, Tensor]:
    """LIMoE's two regularisers summed over groups: ``entropy_local`` (minimise the mean
    per-token entropy) and ``entropy_global`` (minimise ``-H(mean p)``, only below
    ``global_threshold`` nats if given, as LIMoE's thresholded variant)."""
    _tensor("probs", probs, check_finite)
    _checks.integer_ids("groups", groups)
    local, glob = group_entropies(probs, groups, num_groups, check_finite=False)
    present = torch.zeros_like(local, dtype=torch.bool)
    if groups.numel():
        present[groups.unique()] = True
    glob_loss = -glob
    if global_threshold is not None:
        glob_loss = torch.where(glob < global_threshold, -glob, torch.zeros_like(glob))
    return {"entropy_local": local[present].sum(), "entropy_global": glob_loss[present].sum()}


def max_entropy(num_experts: int) -> float:
    """log E: the entropy of uniform routing, in nats."""
    _checks.positive_int("num_experts", num_experts)
    return math.log(num_experts)
