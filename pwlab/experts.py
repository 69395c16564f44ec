"""Banks of E feed-forward experts stored as stacked tensors.

Two kinds (:data:`EXPERT_KINDS`): ``"ffn"``, :class:`ExpertBank`, the two-matrix FFN with
biases of GShard and Switch; ``"swiglu"``, :class:`GatedExpertBank`, the gated expert without
biases of Mixtral, Qwen-MoE, OLMoE and DeepSeek-MoE. Stacking (``w1 (E, D, H)``,
``w2 (E, H, D)``) instead of E separate ``nn.Linear`` modules lets the fast dispatch run every
expert in one batched matmul, and keeps checkpoints small. Both kinds share one interface —
``forward_padded(buf (E, C, D))``, ``forward_expert(e, x)``, ``expert_parameters(e)``,
``num_experts``/``d_model``/``d_hidden`` — which is all the dispatch paths use.

Parameters and effective weights are two things. ``weight_parameters()`` is the stacked
parameters as stored (``WEIGHT_NAMES``): what expert parallelism shards, what import, export
and checkpoints copy; it has no side effects. ``effective_weights()`` is what forward
multiplies by: the same tensors here, the top-K-masked products in the SWAT banks (whose call
also advances the refresh schedule). Code that moves experts (sharding, copying) reads the
first; code that computes with them, the second (``weights()`` is its older name).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pwlab import _checks

ACTIVATIONS = {"gelu": nn.functional.gelu, "relu": nn.functional.relu, "silu": nn.functional.silu}


class _StackedWeights:
    """Parameters vs effective weights, for a bank whose stacked parameters are ``WEIGHT_NAMES``."""

    WEIGHT_NAMES: tuple[str, ...] = ()

    def weight_parameters(self) -> tuple[Tensor, ...]:
        """The stacked parameters in ``WEIGHT_NAMES`` order, as stored: what to shard, copy or
        save. No side effects; what forward computes with is :meth:`effective_weights`."""
        return tuple(getattr(self, n) for n in self.WEIGHT_NAMES)

    def effective_weights(self) -> tuple[Tensor, ...]:
        """The weights as forward uses them, in ``WEIGHT_NAMES`` order (here the parameters
        themselves; the SWAT banks return their top-K-masked products)."""
        return self.weight_parameters()

    def weights(self) -> tuple[Tensor, ...]:
        """The same as :meth:`effective_weights` (the older name)."""
        return self.effective_weights()

    def plain_ffn(self) -> tuple[Tensor, ...] | None:
        """``(w1, b1, w2, b2)`` as forward uses them when this bank computes exactly the plain
        two-matrix FFN of :mod:`pwlab.expert_kernels` (whose hand-written backward the padded
        dispatch and the one-node top-k layer use), else None (autograd through
        :meth:`forward_padded`)."""
        return None


class ExpertBank(_StackedWeights, nn.Module):
    """E independent two-layer FFNs ``x ↦ act(x·W1_e + b1_e)·W2_e + b2_e``."""

    def __init__(self, num_experts: int, d_model: int, d_hidden: int, activation: str = "gelu"):
        super().__init__()
        self.num_experts = _checks.positive_int("num_experts", num_experts)
        self.d_model = _checks.positive_int("d_model", d_model)
        self.d_hidden = _checks.positive_int("d_hidden", d_hidden)
        self.activation = _checks.one_of("activation", activation, ACTIVATIONS)
        _checks.num_elements("the expert weights", num_experts=num_experts, d_model=d_model, d_hidden=d_hidden)
        e, d, h = num_experts, d_model, d_hidden
        self.w1 = nn.Parameter(torch.empty(e, d, h))
        self.b1 = nn.Parameter(torch.zeros(e, h))
        self.w2 = nn.Parameter(torch.empty(e, h, d))
        self.b2 = nn.Parameter(torch.zeros(e, d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same init as nn.Linear, one expert at a time
        for w, fan_in in ((self.w1, self.d_model), (self.w2, self.d_hidden)):
            nn.init.uniform_(w, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)

    #: the stacked parameters, in the order of :meth:`weight_parameters` and :meth:`effective_weights`
    WEIGHT_NAMES = ("w1", "b1", "w2", "b2")

    def plain_ffn(self) -> tuple[Tensor, ...] | None:
        # a subclass that computes otherwise (the SWAT bank) overrides forward_padded
        if type(self).forward_padded is not ExpertBank.forward_padded:
            return None
        if type(self).effective_weights is _StackedWeights.effective_weights:
            return self.w1, self.b1, self.w2, self.b2      # the parameters are what forward uses
        return self.effective_weights()

    def forward_padded(self, buf: Tensor) -> Tensor:
        """All experts on a padded buffer: ``buf (E, C, D) -> (E, C, D)`` (two batched matmuls)."""
        w1, b1, w2, b2 = self.effective_weights()
        h = ACTIVATIONS[self.activation](torch.baddbmm(b1.unsqueeze(1), buf, w1))    # (E, C, H)
        return torch.baddbmm(b2.unsqueeze(1), h, w2)

    def forward_expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` alone on ``x (n, D) -> (n, D)``: the reference path."""
        _checks.index("e", e, self.num_experts)
        w1, b1, w2, b2 = self.effective_weights()
        h = ACTIVATIONS[self.activation](x @ w1[e] + b1[e])
        return h @ w2[e] + b2[e]

    def expert_parameters(self, e: int) -> int:
        """Parameters of expert ``e``: W1, b1, W2, b2."""
        return self.d_model * self.d_hidden * 2 + self.d_hidden + self.d_model

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, d_model={self.d_model}, d_hidden={self.d_hidden}, activation={self.activation!r}"


class GatedExpertBank(_StackedWeights, nn.Module):
    """E gated (GLU) experts without biases: ``x ↦ (act(x·W1_e) ⊙ (x·W3_e))·W2_e``.

    With ``activation="silu"`` (the default) this is SwiGLU (Shazeer 2020), the expert of
    Mixtral, Qwen-MoE, OLMoE and DeepSeek-MoE: ``down(silu(gate(x)) * up(x))``. The names follow
    Mixtral's: ``w1 (E, D, H)`` the gate, ``w3 (E, D, H)`` the up projection, ``w2 (E, H, D)``
    the down projection. Three matmuls of D×H per token (the plain :class:`ExpertBank` does
    two), so at equal FLOPs a gated expert is 2/3 as wide. The interface is
    :class:`ExpertBank`'s: the padded dispatch calls :meth:`weights` and :meth:`forward_padded`
    (plain autograd), the loop reference :meth:`forward_expert`.
    """

    def __init__(self, num_experts: int, d_model: int, d_hidden: int, activation: str = "silu"):
        super().__init__()
        self.num_experts = _checks.positive_int("num_experts", num_experts)
        self.d_model = _checks.positive_int("d_model", d_model)
        self.d_hidden = _checks.positive_int("d_hidden", d_hidden)
        self.activation = _checks.one_of("activation", activation, ACTIVATIONS)
        e, d, h = num_experts, d_model, d_hidden
        self.w1 = nn.Parameter(torch.empty(e, d, h))
        self.w3 = nn.Parameter(torch.empty(e, d, h))
        self.w2 = nn.Parameter(torch.empty(e, h, d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's init (bias=False), one expert at a time
        for w, fan_in in ((self.w1, self.d_model), (self.w3, self.d_model), (self.w2, self.d_hidden)):
            nn.init.uniform_(w, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    #: the stacked parameters — gate, up, down — in the order of :meth:`weight_parameters`
    WEIGHT_NAMES = ("w1", "w3", "w2")

    def forward_padded(self, buf: Tensor) -> Tensor:
        """All experts on a padded buffer: ``buf (E, C, D) -> (E, C, D)`` (three batched matmuls)."""
        w1, w3, w2 = self.effective_weights()
        h = ACTIVATIONS[self.activation](torch.bmm(buf, w1)) * torch.bmm(buf, w3)     # (E, C, H)
        return torch.bmm(h, w2)

    def forward_expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` alone on ``x (n, D) -> (n, D)``: the reference path."""
        _checks.index("e", e, self.num_experts)
        w1, w3, w2 = self.effective_weights()
        return (ACTIVATIONS[self.activation](x @ w1[e]) * (x @ w3[e])) @ w2[e]

    def expert_parameters(self, e: int) -> int:
        """Parameters of expert ``e``: W1, W3, W2 (no biases)."""
        return 3 * self.d_model * self.d_hidden

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, d_model={self.d_model}, d_hidden={self.d_hidden}, "
                f"activation={self.activation!r}")


#: expert kinds by the name the layer takes (``MoE(..., expert=...)``)
EXPERT_KINDS = {"ffn": ExpertBank, "swiglu": GatedExpertBank}
#: every stacked expert bank class (SWAT variants are subclasses)
BANKS = (ExpertBank, GatedExpertBank)


def make_experts(kind: str, num_experts: int, d_model: int, d_hidden: int, activation: str | None = None):
    """A bank of ``num_experts`` experts of ``kind`` (:data:`EXPERT_KINDS`).

    ``activation`` None takes the kind's own: GELU for ``"ffn"``, SiLU for ``"swiglu"`` (the
    name says it, so any other activation is refused for it).
    """
    _checks.one_of("expert", kind, EXPERT_KINDS)
    if kind == "swiglu":
        if activation not in (None, "silu"):
            raise ValueError(f"activation must be None or 'silu' for expert='swiglu' (SwiGLU is SiLU-gated); "
                             f"got {activation!r}")
        return GatedExpertBank(num_experts, d_model, d_hidden, "silu")
    return ExpertBank(num_experts, d_model, d_hidden, "gelu" if activation is None else activation)


def expert_kind(bank: nn.Module) -> str:
    """The :data:`EXPERT_KINDS` name of a bank (its SWAT variant included)."""
    if isinstance(bank, GatedExpertBank):
        return "swiglu"
    if isinstance(bank, ExpertBank):
        return "ffn"
    raise TypeError(f"bank must be an ExpertBank or a GatedExpertBank, got {type(bank).__name__}")
