"""DeepSeek-MoE's two additions to the MoE layer: shared experts and fine-grained experts.

Index legend: N tokens, D d_model, H d_hidden, E experts, k experts per token, s shared
experts, m granularity.

DeepSeek-MoE (Dai et al. 2024, arXiv 2401.06066). ``MoE(..., num_shared_experts=s)`` adds s
always-on experts of the same kind and width: ``y = routed(x) + Σ_i shared_i(x)`` for every
token (the routing, and so :class:`~pwlab.moe_stats.MoEStats`, covers the routed experts only;
ablation with :meth:`pwlab.moe.MoE.disabled` leaves the shared ones on); ``shared_gate=True``
scales their sum by a per-token ``sigmoid(x·w_s)``, as Qwen-MoE. :meth:`pwlab.moe.MoE.fine_grained`
splits each of E experts into m experts of width H/m and routes top-(m·k): the same expert
FLOPs per token and the same expert weights, many more combinations of experts.

Separate from :mod:`pwlab.moe` because neither idea touches the forward path (route →
capacity → backend → stats): the shared experts are added beside it, and fine-grained experts
are only a way of building the layer. The modules they make stay the layer's own attributes
(``layer.shared_experts``, ``layer.shared_gate``), so state dicts do not change.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pwlab import _checks
from pwlab.experts import make_experts
from pwlab.routing.base import Router
from pwlab.routing.registry import ROUTERS, make_router


def make_shared(expert: str, num_shared_experts: int, d_model: int, d_hidden: int, activation: str | None,
                shared_gate: bool) -> tuple[nn.Module | None, nn.Linear | None]:
    """The shared experts of a layer: ``(bank of s experts or None, gate or None)``.

    The bank is of the routed experts' ``expert`` kind and width; the gate, when
    ``shared_gate``, is a bias-free ``nn.Linear(d_model, 1)`` (Qwen-MoE) and needs s ≥ 1.
    ``num_shared_experts``: s, already checked (an int ≥ 0)."""
    bank = make_experts(expert, num_shared_experts, d_model, d_hidden, activation) if num_shared_experts else None
    if shared_gate and not num_shared_experts:
        raise ValueError("shared_gate=True needs num_shared_experts >= 1 (it gates the shared experts), "
                         "got num_shared_experts=0")
    return bank, (nn.Linear(d_model, 1, bias=False) if shared_gate else None)


def shared_forward(bank, gate: nn.Linear | None, x: Tensor, *, loop: bool) -> Tensor:
    """Σ_i shared_i(x) over the shared experts ``bank`` (gated by ``gate`` when there is one), for
    every token: ``x (N, D) -> (N, D)``. ``loop``: the reference, one expert at a time."""
    if loop:
        out = sum(bank.forward_expert(i, x) for i in range(bank.num_experts))
    else:
        out = bank.forward_padded(x.unsqueeze(0).expand(bank.num_experts, -1, -1)).sum(0)
    if gate is not None:                              # Qwen-MoE: a per-token sigmoid gate on the shared sum
        out = torch.sigmoid(gate(x)) * out
    return out


def fine_grained_router(d_hidden: int, num_experts: int, m: int, top_k: int, router: str,
                        router_kwargs: dict | None) -> tuple[int, Router]:
    """The checked granularity m and the router of :meth:`pwlab.moe.MoE.fine_grained`: ``router``
    (a name of :data:`pwlab.routing.ROUTERS` whose constructor takes ``top_k``) built with
    ``top_k=m·top_k`` and ``router_kwargs``."""
    m = _checks.positive_int("m", m)
    _checks.positive_int("d_hidden", d_hidden)
    _checks.positive_int("num_experts", num_experts)
    k = _checks.positive_int("top_k", top_k)
    if d_hidden % m:
        raise ValueError(f"d_hidden must be divisible by m={m} (each expert is split into m experts of "
                         f"width d_hidden/m), got d_hidden={d_hidden}")
    if not isinstance(router, str):
        raise TypeError(f"router must be a router name for fine_grained (its top_k is multiplied by m), "
                        f"got {type(router).__name__}")
    built = make_router(router, **(router_kwargs or {}), **({"top_k": m * k} if _takes_top_k(router) else {}))
    if built.top_k != m * k:
        raise ValueError(f"router must take top_k to be fine-grained (top-(m·k) = {m * k}); {router!r} "
                         f"routes top-{built.top_k}")
    return m, built


def _takes_top_k(router: str) -> bool:
    """Whether the router named ``router`` takes ``top_k`` (an unknown name is left to make_router)."""
    cls = ROUTERS.get(router)
    return cls is not None and cls.describe().top_k
