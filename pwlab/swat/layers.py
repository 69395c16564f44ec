"""SWAT layers: drop-in subclasses of ``nn.Linear``, ``nn.Conv2d`` and the MoE expert banks (plain and gated).

Each layer keeps its masks between refreshes. A *step* is counted when a training-mode forward
sees weights that changed since the last one (optimizer updates are in place, so the
parameters' version counters tell), which keeps counting right under gradient accumulation
and when an expert bank is called once per expert. Every ``topk_period`` steps the layer
recomputes, from the current weights and batch:
    * the weight mask (top-K by magnitude, or top rows/filters by L1 norm when structured);
    * the activation threshold (the value whose top-K over this batch it is), used with the
      following batches until the next refresh (SWAT's "threshold cached between" rule).
The *kept weight index set* is therefore fixed between refreshes (values still change every
step), which is what lets the CSR kernels reuse their index structures (see ``kernels.py``).
The original code instead caches only the threshold and re-masks every step; with
``topk_period`` ≤ 20 the kept sets differ little (accuracy effect measured in
``pwlab bench swat-accuracy --compare-refresh``, quoted in ``docs/swat.md``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pwlab import _checks
from pwlab.experts import ACTIVATIONS, ExpertBank, GatedExpertBank
from pwlab.swat import kernels
from pwlab.swat.functions import (SwatBmmFunction, SwatConv2dFunction, SwatLinearFunction, act_threshold,
                                  check_sparsity, magnitude_threshold, magnitude_topk, weight_mask,
                                  weight_scores, weight_threshold)

KERNELS = ("auto", "dense", "sparse")


class _SwatState:
    """Sparsity settings, the step counter and the refresh schedule shared by the SWAT layers."""

    def _init_swat(self, weight_sparsity, act_sparsity, topk_period, structured, kernel, fixed_mask=True):
        self.weight_sparsity = check_sparsity("weight_sparsity", weight_sparsity)
        self.act_sparsity = check_sparsity("act_sparsity", act_sparsity)
        self.topk_period = _checks.positive_int("topk_period", topk_period)
        self.structured = bool(structured)
        self.kernel = _checks.one_of("kernel", kernel, KERNELS)
        self.fixed_mask = bool(fixed_mask)
        self._wthr: dict = {}
        self._kept: dict = {}                  # name -> kept weights' sorted indices in storage order
        self._fmask: dict = {}                 # name -> (bool mask, the same as 0/1 in the weight's dtype)
        self.step = 0
        self._seen_version = None
        self._refreshed_at = None

    def _refresh_due(self, params) -> bool:
        if self.training and torch.is_grad_enabled():
            version = tuple(p._version for p in params)
            if version != self._seen_version:
                self._seen_version, self.step = version, self.step + 1
        due = self._refreshed_at is None or (self.training and self.step - self._refreshed_at >= self.topk_period)
        if due:
            self._refreshed_at = self.step
        return due

    def _mask(self, name: str, w: Tensor, refresh: bool) -> Tensor | None:
        """The weight mask: recomputed at a refresh; in between either kept (``fixed_mask``, the
        default) or re-thresholded every step with the cached threshold (the original code)."""
        if refresh or name not in self._wthr:
            self._kept[name] = None
            if not self.weight_sparsity:
                self._wthr[name] = None
                return None
            if self.structured:
                self._wthr[name] = weight_threshold(w, self.weight_sparsity, True)
                return weight_mask(w, self.weight_sparsity, True, self._wthr[name])
            score = weight_scores(w)                                 # |w|, computed once per refresh
            if self._csr_candidate(w):                               # the CSR index set comes for free
                self._wthr[name], kept = magnitude_topk(score, self.weight_sparsity)
                self._kept[name] = kept
                mask = torch.zeros_like(score, dtype=torch.bool)     # scatter: ~3x cheaper than a compare
                kernels.storage_flat(mask).index_fill_(0, kept, True)
                return mask
            self._wthr[name] = magnitude_threshold(score, self.weight_sparsity)
            return score > self._wthr[name]
        if self.fixed_mask or self.weight_sparsity == 0:
            return getattr(self, name)
        return weight_mask(w, self.weight_sparsity, self.structured, self._wthr[name])

    def _csr_candidate(self, w: Tensor) -> bool:
        """Will this weight likely go to the CSR kernels (so its kept index set is wanted)? The
        plans of the last period tell (a refresh rebuilds them with the same choice); before
        any, whether the crossover would try CSR at all."""
        plans = getattr(self, "_plans", None)
        if plans:
            return any(p is not None and p.weight_sparse for p in plans.values())
        return (self.kernel != "dense" and self.fixed_mask and w.dim() == 2
                and (self.kernel == "sparse" or (1 - self.weight_sparsity <= kernels.MAX_DENSITY
                                                 and w.numel() >= kernels.MIN_ELEMENTS)))

    def _dense_mask(self, name: str, w: Tensor) -> Tensor | None:
        """The current mask as 0/1 in ``w``'s dtype (what the masked dense kernels multiply by),
        converted once per mask rather than once per step."""
        mask = getattr(self, name)
        if mask is None:
            return None
        cached = self._fmask.get(name)
        if cached is None or cached[0] is not mask or cached[1].dtype != w.dtype:
            cached = self._fmask[name] = (mask, mask.to(w.dtype))
        return cached[1]

    def _kept_index(self, name: str) -> Tensor | None:
        """Sorted indices of the kept weights in the weight's storage order, once per mask."""
        mask = getattr(self, name)
        if mask is None:
            return None
        if self._kept.get(name) is None:
            self._kept[name] = kernels.storage_flat(mask).nonzero().squeeze(1)
        return self._kept[name]

    def refresh_topk(self) -> None:
        """Recompute masks and thresholds at the next forward."""
        self._refreshed_at = None

    def _wants_act(self, weight: Tensor) -> bool:
        return self.act_sparsity > 0 and torch.is_grad_enabled() and weight.requires_grad

    def _swat_repr(self) -> str:
        return (f"weight_sparsity={self.weight_sparsity}, act_sparsity={self.act_sparsity}, "
                f"topk_period={self.topk_period}, structured={self.structured}, kernel={self.kernel!r}"
                + ("" if self.fixed_mask else ", fixed_mask=False"))


class SwatLinear(nn.Linear, _SwatState):
    """``nn.Linear`` trained with SWAT: ``x (..., in) -> y (..., out)``.

    Args:
        weight_sparsity / act_sparsity: fractions in [0, 1) dropped from W and from the saved input.
        topk_period: steps between top-K refreshes (≥ 1).
        structured: drop whole output rows (weights) and input features (activations) by L1 norm.
        kernel: ``"auto"`` (CSR kernels where the measured crossover says faster), ``"dense"``
            (masked dense matmuls), ``"sparse"`` (CSR always; for benchmarks).
        fixed_mask: keep the kept weight set between refreshes (default; needed by the CSR
            kernels); False re-masks every step with the cached threshold (dense kernels).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, weight_sparsity: float = 0.9,
                 act_sparsity: float = 0.9, topk_period: int = 10, structured: bool = False, kernel: str = "auto",
                 fixed_mask: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_swat(weight_sparsity, act_sparsity, topk_period, structured, kernel, fixed_mask)
        self.register_buffer("weight_mask", None, persistent=False)
        self.act_threshold: Tensor | None = None
        self._plans: dict = {}

    def forward(self, x: Tensor) -> Tensor:
        _checks.float_input("x", x, self.weight.device)
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            # checked here: the reshape below would otherwise regroup a wrong width into rows
            raise ValueError(f"x must have last dimension in_features={self.in_features}, "
                             f"got shape {tuple(x.shape)} (last dimension {x.shape[-1] if x.dim() else None})")
        refresh = self._refresh_due((self.weight,))
        if not self.weight_sparsity and not self.act_sparsity:
            # nothing is dropped: SWAT is exactly nn.Linear, and its own autograd node would only
            # add overhead (~5% of a 512x512 step at batch 256)
            return F.linear(x, self.weight, self.bias)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)                                    # (N, in)
        want_act = self._wants_act(self.weight)
        self.weight_mask = self._mask("weight_mask", self.weight, refresh)
        if refresh:
            self.act_threshold = None
            self._plans = {}
        if want_act and self.act_threshold is None:
            self.act_threshold = act_threshold(x2, self.act_sparsity, self.structured, -1)
        plan = self._plan(x2)
        wmask = self.weight_mask if plan is not None and plan.weight_sparse else self._dense_mask("weight_mask",
                                                                                                    self.weight)
        y = SwatLinearFunction.apply(x2, self.weight, self.bias, wmask,
                                     self.act_threshold if want_act else None, self.structured, plan)
        return y.view(*lead, self.out_features)

    def _plan(self, x2: Tensor) -> kernels.SparsePlan | None:
        if self.kernel == "dense" or self.structured or not self.fixed_mask or x2.layout != torch.strided:
            return None
        rows = x2.shape[0]
        if rows not in self._plans:
            if self.kernel == "sparse":
                w_sp, a_sp = True, True
            else:
                w_sp, a_sp = kernels.crossover(rows, self.in_features, self.out_features, 1 - self.weight_sparsity,
                                               1 - self.act_sparsity, x2.dtype, self.topk_period)
            w_sp, a_sp = w_sp and self.weight_mask is not None, a_sp and self.act_sparsity > 0
            if a_sp:
                self._store_in_out_order()
            kept = self._kept_index("weight_mask") if w_sp else None
            self._plans[rows] = (kernels.SparsePlan(kept, tuple(self.weight.shape), w_sp, a_sp,
                                                    kernels.in_out_order(self.weight))
                                 if (w_sp or a_sp) else None)
        return self._plans[rows]

    def _store_in_out_order(self) -> None:
        """Store W (values and shape unchanged) in (in, out) memory order, once.

        The CSR grad_W kernel yields x_sᵀ·g = grad_Wᵀ row-major, i.e. grad_W in (in, out) order;
        with W stored the same way autograd accumulates it as is, saving a transposing copy of
        the dense-shaped gradient every step (~2.5 ms at 2048², ~8 % of a dense step on 2 CPU
        threads). ``.data`` is swapped, so the Parameter object (and an optimizer's hold on it)
        stays the same; the masks follow so masking stays a same-layout multiply. (A weight tied
        to another module is re-stored for it too: values and shape are unchanged.)
        """
        if kernels.in_out_order(self.weight) or self.weight.dim() != 2 or min(self.weight.shape) < 2:
            return
        current = self._seen_version == (self.weight._version,)
        with torch.no_grad():
            self.weight.data = self.weight.data.t().contiguous().t()
            if self.weight_mask is not None:
                self.weight_mask = self.weight_mask.t().contiguous().t()
        self._fmask.clear()
        self._kept.clear()                           # storage order changed: index anew
        if current:                                  # a new storage is not an optimizer step
            self._seen_version = (self.weight._version,)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._swat_repr()


class SwatConv2d(nn.Conv2d, _SwatState):
    """``nn.Conv2d`` trained with SWAT (masked dense kernels): ``x (B, C_in, H, W) -> (B, C_out, H', W')``,
    or unbatched ``(C_in, H, W) -> (C_out, H', W')`` as ``nn.Conv2d``.
    Arguments as :class:`SwatLinear` (structured drops whole filters and input channels)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, weight_sparsity: float = 0.9, act_sparsity: float = 0.9,
                 topk_period: int = 10, structured: bool = False, fixed_mask: bool = True, device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         device=device, dtype=dtype)
        self._init_swat(weight_sparsity, act_sparsity, topk_period, structured, "dense", fixed_mask)
        if isinstance(self.padding, str):
            if self.padding == "valid":
                self.padding = (0, 0)
            elif all(d * (k - 1) % 2 == 0 for d, k in zip(self.dilation, self.kernel_size)):
                self.padding = tuple(d * (k - 1) // 2 for d, k in zip(self.dilation, self.kernel_size))
            else:
                raise ValueError("padding='same' needs dilation·(kernel_size − 1) even for SwatConv2d")
        self.register_buffer("weight_mask", None, persistent=False)
        self.act_threshold: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' for SwatConv2d, got {self.padding_mode!r}")
        _checks.float_input("x", x, self.weight.device)
        if x.dim() not in (3, 4):
            raise ValueError(f"x must be (B, C_in, H, W) or unbatched (C_in, H, W), got shape {tuple(x.shape)}")
        if x.dim() == 3:
            # unbatched, as nn.Conv2d allows: a batch of one (the SWAT kernels and the activation
            # top-K over channels expect the batch dimension)
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have in_channels={self.in_channels} channels (dimension 1 of (B, C_in, H, W)), "
                             f"got shape {tuple(x.shape)}")
        refresh = self._refresh_due((self.weight,))
        if not self.weight_sparsity and not self.act_sparsity:                 # exactly nn.Conv2d
            return self._conv_forward(x, self.weight, self.bias)
        want_act = self._wants_act(self.weight)
        self.weight_mask = self._mask("weight_mask", self.weight, refresh)
        if refresh:
            self.act_threshold = None
        if want_act and self.act_threshold is None:
            self.act_threshold = act_threshold(x, self.act_sparsity, self.structured, 1)
        conv = (list(self.stride), list(self.padding), list(self.dilation), self.groups)
        return SwatConv2dFunction.apply(x, self.weight, self.bias, self._dense_mask("weight_mask", self.weight),
                                        self.act_threshold if want_act else None, self.structured, conv)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._swat_repr()


class SwatExpertBank(ExpertBank, _SwatState):
    """An :class:`~pwlab.experts.ExpertBank` whose batched matmuls use top-K(W1), top-K(W2)
    (each over the whole stacked tensor) and save top-K-sparsified inputs. Padding rows of the
    dispatch buffer are left out of the activation top-K."""

    def __init__(self, num_experts: int, d_model: int, d_hidden: int, activation: str = "gelu", *,
                 weight_sparsity: float = 0.9, act_sparsity: float = 0.9, topk_period: int = 10,
                 structured: bool = False, fixed_mask: bool = True):
        super().__init__(num_experts, d_model, d_hidden, activation)
        self._init_swat(weight_sparsity, act_sparsity, topk_period, structured, "dense", fixed_mask)
        self.register_buffer("w1_mask", None, persistent=False)
        self.register_buffer("w2_mask", None, persistent=False)
        self.act_thresholds: list = [None, None]

    def _prepare(self) -> bool:
        refresh = self._refresh_due((self.w1, self.w2))
        self.w1_mask = self._mask("w1_mask", self.w1, refresh)
        self.w2_mask = self._mask("w2_mask", self.w2, refresh)
        if refresh:
            self.act_thresholds = [None, None]
        return self._wants_act(self.w1)

    def _threshold(self, i: int, x: Tensor, real: Tensor | None) -> Tensor | None:
        if self.act_thresholds[i] is None:
            rows = x.reshape(-1, x.shape[-1])
            rows = rows[real.reshape(-1)] if real is not None else rows
            self.act_thresholds[i] = act_threshold(rows, self.act_sparsity, self.structured, -1)
        return self.act_thresholds[i]

    def _ffn(self, x: Tensor, w1, b1, w2, b2, m1, m2, real: Tensor | None) -> Tensor:
        want = self._prepare()
        t1 = self._threshold(0, x, real) if want else None
        h = ACTIVATIONS[self.activation](SwatBmmFunction.apply(x, w1, b1, m1, t1, self.structured))
        t2 = self._threshold(1, h, real) if want else None
        return SwatBmmFunction.apply(h, w2, b2, m2, t2, self.structured)

    def effective_weights(self):
        """(w1, b1, w2, b2) with the top-K masks applied (plain autograd: masked gradients)."""
        self._prepare()
        m1, m2 = self._dense_mask("w1_mask", self.w1), self._dense_mask("w2_mask", self.w2)
        return (self.w1 if m1 is None else self.w1 * m1, self.b1,
                self.w2 if m2 is None else self.w2 * m2, self.b2)

    def forward_padded(self, buf: Tensor) -> Tensor:
        """``buf (E, C, D) -> (E, C, D)``; all-zero rows are padding."""
        self._prepare()
        real = buf.detach().abs().sum(-1) > 0                                   # (E, C)
        return self._ffn(buf, self.w1, self.b1, self.w2, self.b2, self._dense_mask("w1_mask", self.w1),
                         self._dense_mask("w2_mask", self.w2), real)

    def forward_expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` on ``x (n, D) -> (n, D)`` (reference path; same masks and thresholds)."""
        self._prepare()
        m1, m2 = self._dense_mask("w1_mask", self.w1), self._dense_mask("w2_mask", self.w2)
        m1, m2 = (None if m1 is None else m1[e]), (None if m2 is None else m2[e])
        return self._ffn(x, self.w1[e], self.b1[e], self.w2[e], self.b2[e], m1, m2, None)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._swat_repr()


class SwatGatedExpertBank(GatedExpertBank, _SwatState):
    """A :class:`~pwlab.experts.GatedExpertBank` (SwiGLU) trained with SWAT, by the rules of
    :class:`SwatExpertBank`: top-K of each of W1 (gate), W3 (up) and W2 (down), each over the
    whole stacked tensor, and top-K-sparsified saved inputs — the bank's input x, shared by the
    gate and up matmuls (one threshold), and the gated hidden ``act(x·W1) ⊙ (x·W3)`` that the
    down matmul reads. Padding rows of the dispatch buffer are left out of the activation top-K.
    """

    def __init__(self, num_experts: int, d_model: int, d_hidden: int, activation: str = "silu", *,
                 weight_sparsity: float = 0.9, act_sparsity: float = 0.9, topk_period: int = 10,
                 structured: bool = False, fixed_mask: bool = True):
        super().__init__(num_experts, d_model, d_hidden, activation)
        self._init_swat(weight_sparsity, act_sparsity, topk_period, structured, "dense", fixed_mask)
        for name in ("w1_mask", "w3_mask", "w2_mask"):
            self.register_buffer(name, None, persistent=False)
        self.act_thresholds: list = [None, None]

    def _prepare(self) -> bool:
        refresh = self._refresh_due((self.w1, self.w3, self.w2))
        for name in ("w1", "w3", "w2"):
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
        masks = [self._dense_mask(f"{n}_mask", getattr(self, n)) for n in ("w1", "w3", "w2")]
        return masks if e is None else [None if m is None else m[e] for m in masks]

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
        self._prepare()
        return tuple(w if m is None else w * m for w, m in zip((self.w1, self.w3, self.w2), self._masks()))

    def forward_padded(self, buf: Tensor) -> Tensor:
        """``buf (E, C, D) -> (E, C, D)``; all-zero rows are padding."""
        self._prepare()
        real = buf.detach().abs().sum(-1) > 0                                   # (E, C)
        return self._glu(buf, self.w1, self.w3, self.w2, self._masks(), real)

    def forward_expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` on ``x (n, D) -> (n, D)`` (reference path; same masks and thresholds)."""
        self._prepare()
        return self._glu(x, self.w1[e], self.w3[e], self.w2[e], self._masks(e), None)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._swat_repr()


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
