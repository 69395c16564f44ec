"""SWAT expert banks: the MoE layer's stacked experts (plain and gated) trained with SWAT.

Drop-in subclasses of :class:`~pwlab.experts.ExpertBank` and
:class:`~pwlab.experts.GatedExpertBank` with the same stacked parameters, following the rules
of :mod:`pwlab.swat.layers`: top-K of each weight tensor (over the whole stack), refreshed every
``topk_period`` steps, and top-K-sparsified saved inputs whose thresholds are cached between
refreshes. Padding rows of the dispatch buffer are left out of the activation top-K.
"""
from __future__ import annotations

from torch import Tensor, nn

from pwlab.experts import ACTIVATIONS, ExpertBank, GatedExpertBank
from pwlab.swat.functions import SwatBmmFunction, act_threshold
from pwlab.swat.layers import _SwatState


class _SwatBank(_SwatState):
    """What both SWAT banks share: one mask buffer per weight tensor in :attr:`WEIGHTS`, two cached
    activation thresholds (the first matmul's input, then the hidden), and how they refresh."""

    #: the stacked weight tensors masked by top-K, in the order the bank's matmuls use them
    WEIGHTS: tuple[str, ...] = ()

    def _init_bank(self, weight_sparsity, act_sparsity, topk_period, structured, fixed_mask) -> None:
        self._init_swat(weight_sparsity, act_sparsity, topk_period, structured, "dense", fixed_mask)
        for name in self.WEIGHTS:
            self.register_buffer(f"{name}_mask", None, persistent=False)
        self.act_thresholds: list = [None, None]

    def _prepare(self) -> bool:
        refresh = self._refresh_due(tuple(getattr(self, n) for n in self.WEIGHTS))
        for name in self.WEIGHTS:
            setattr(self, f"{name}_mask", self._mask(f"{name}_mask", getattr(self, name), refresh))
        if refresh:
            self.act_thresholds = [None, None]
        return self._wants_act(self.w1)

    def _threshold(self, i: int, x: Tensor, real: Tensor | None) -> Tensor | None:
        if self.act_thresholds[i] is None:
            rows = x.reshape(-1, x.shape[-1])
            rows = rows[real.reshape(-1)] if real is not None else rows
            self.act_thresholds[i] = act_threshold(rows, self.act_sparsity, self.structured, -1)
        return self.act_thresholds[i]

    def _masks(self, e: int | None = None) -> list:
        """The dense masks of :attr:`WEIGHTS` (None where a tensor is kept whole), of expert ``e``
        only when given."""
        masks = [self._dense_mask(f"{n}_mask", getattr(self, n)) for n in self.WEIGHTS]
        return masks if e is None else [None if m is None else m[e] for m in masks]

    def _masked(self) -> list:
        self._prepare()
        return [getattr(self, n) if m is None else getattr(self, n) * m for n, m in zip(self.WEIGHTS, self._masks())]

    @staticmethod
    def _real_rows(buf: Tensor) -> Tensor:
        """``(E, C)`` bool, the rows of a dispatch buffer that hold a token (all-zero rows are padding)."""
        return buf.detach().abs().sum(-1) > 0

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._swat_repr()


class SwatExpertBank(_SwatBank, ExpertBank):
    """An :class:`~pwlab.experts.ExpertBank` whose batched matmuls use top-K(W1), top-K(W2)
    (each over the whole stacked tensor) and save top-K-sparsified inputs. Padding rows of the
    dispatch buffer are left out of the activation top-K."""

    WEIGHTS = ("w1", "w2")

    def __init__(self, num_experts: int, d_model: int, d_hidden: int, activation: str = "gelu", *,
                 weight_sparsity: float = 0.9, act_sparsity: float = 0.9, topk_period: int = 10,
                 structured: bool = False, fixed_mask: bool = True):
        ExpertBank.__init__(self, num_experts, d_model, d_hidden, activation)
        self._init_bank(weight_sparsity, act_sparsity, topk_period, structured, fixed_mask)

    def _ffn(self, x: Tensor, w1, b1, w2, b2, masks, real: Tensor | None) -> Tensor:
        want = self._prepare()
        m1, m2 = masks
        t1 = self._threshold(0, x, real) if want else None
        h = ACTIVATIONS[self.activation](SwatBmmFunction.apply(x, w1, b1, m1, t1, self.structured))
        t2 = self._threshold(1, h, real) if want else None
        return SwatBmmFunction.apply(h, w2, b2, m2, t2, self.structured)

    def effective_weights(self):
        """(w1, b1, w2, b2) with the top-K masks applied (plain autograd: masked gradients)."""
        w1, w2 = self._masked()
        return w1, self.b1, w2, self.b2

    def forward_padded(self, buf: Tensor) -> Tensor:
        """``buf (E, C, D) -> (E, C, D)``; all-zero rows are padding."""
        self._prepare()
        return self._ffn(buf, self.w1, self.b1, self.w2, self.b2, self._masks(), self._real_rows(buf))

    def forward_expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` on ``x (n, D) -> (n, D)`` (reference path; same masks and thresholds)."""
        self._prepare()
        return self._ffn(x, self.w1[e], self.b1[e], self.w2[e], self.b2[e], self._masks(e), None)


class SwatGatedExpertBank(_SwatBank, GatedExpertBank):
    """A :class:`~pwlab.experts.GatedExpertBank` (SwiGLU) trained with SWAT, by the rules of
    :class:`SwatExpertBank`: top-K of each of W1 (gate), W3 (up) and W2 (down), each over the
    whole stacked tensor, and top-K-sparsified saved inputs — the bank's input x, shared by the
    gate and up matmuls (one threshold), and the gated hidden ``act(x·W1) ⊙ (x·W3)`` that the
    down matmul reads. Padding rows of the dispatch buffer are left out of the activation top-K.
    """

    WEIGHTS = ("w1", "w3", "w2")

    def __init__(self, num_experts: int, d_model: int, d_hidden: int, activation: str = "silu", *,
                 weight_sparsity: float = 0.9, act_sparsity: float = 0.9, topk_period: int = 10,
                 structured: bool = False, fixed_mask: bool = True):
        GatedExpertBank.__init__(self, num_experts, d_model, d_hidden, activation)
        self._init_bank(weight_sparsity, act_sparsity, topk_period, structured, fixed_mask)

    def _glu(self, x: Tensor, w1, w3, w2, masks, real: Tensor | None) -> Tensor:
        want = self._prepare()
        m1, m3, m2 = masks
        t1 = self._threshold(0, x, real) if want else None

        def matmul(inp, w, m, t):
            # SwatBmmFunction adds a bias: the gated bank has none, so a zero one (no gradient)
            return SwatBmmFunction.apply(inp, w, w.new_zeros(w.shape[:-2] + w.shape[-1:]), m, t, self.structured)

        h = ACTIVATIONS[self.activation](matmul(x, w1, m1, t1)) * matmul(x, w3, m3, t1)
        t2 = self._threshold(1, h, real) if want else None
        return matmul(h, w2, m2, t2)

    def effective_weights(self):
        """(w1, w3, w2) with the top-K masks applied (plain autograd: masked gradients)."""
        return tuple(self._masked())

    def forward_padded(self, buf: Tensor) -> Tensor:
        """``buf (E, C, D) -> (E, C, D)``; all-zero rows are padding."""
        self._prepare()
        return self._glu(buf, self.w1, self.w3, self.w2, self._masks(), self._real_rows(buf))

    def forward_expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` on ``x (n, D) -> (n, D)`` (reference path; same masks and thresholds)."""
        self._prepare()
        return self._glu(x, self.w1[e], self.w3[e], self.w2[e], self._masks(e), None)


#: the SWAT expert banks (subclasses of the dense banks with the same stacked parameters)
SWAT_BANKS = (SwatExpertBank, SwatGatedExpertBank)


def is_swat_bank(bank: nn.Module) -> bool:
    """Whether ``bank`` is a SWAT expert bank (its forward masks its parameters)."""
    return isinstance(bank, SWAT_BANKS)


def swat_settings(bank: nn.Module) -> dict:
    """The keyword arguments that rebuild a SWAT bank's behaviour on other parameters (a shard,
    a copy): sparsities, top-K period, structure and mask mode."""
    if not is_swat_bank(bank):
        raise TypeError(f"bank must be a SWAT expert bank ({', '.join(c.__name__ for c in SWAT_BANKS)}), "
                        f"got {type(bank).__name__}")
    return {"weight_sparsity": bank.weight_sparsity, "act_sparsity": bank.act_sparsity,
            "topk_period": bank.topk_period, "structured": bank.structured, "fixed_mask": bank.fixed_mask}
