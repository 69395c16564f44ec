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
from pwlab.swat import kernels
from pwlab.swat.functions import (SwatConv2dFunction, SwatLinearFunction, act_threshold,
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
        any, the kernel setting: always for ``"sparse"``, for ``"auto"`` where a calibration
        recorded CSR weights for some row count."""
        plans = getattr(self, "_plans", None)
        if plans:
            return any(p is not None and p.weight_sparse for p in plans.values())
        if self.kernel == "auto":
            return any(w_sp for w_sp, _ in getattr(self, "_kernel_choice", {}).values())
        return self.kernel == "sparse" and self.fixed_mask and w.dim() == 2

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
        kernel: ``"auto"`` (CSR kernels for the row counts where a one-time calibration,
            :func:`pwlab.swat.calibrate`, measured them faster; masked dense kernels for every
            row count not calibrated, so an uncalibrated ``"auto"`` layer runs as ``"dense"``),
            ``"dense"`` (masked dense matmuls), ``"sparse"`` (CSR always; for benchmarks).
        fixed_mask: keep the kept weight set between refreshes (default; needed by the CSR
            kernels); False re-masks every step with the cached threshold (dense kernels).

    ``forward`` never times anything: with ``kernel="auto"`` it only looks up the choice that
    :meth:`calibrate_kernels` (called by :func:`pwlab.swat.calibrate`) recorded for its number
    of rows. The choice is not part of the ``state_dict``; calibrate again after loading, or
    after changing the sparsities, the dtype or ``torch.set_num_threads``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, weight_sparsity: float = 0.9,
                 act_sparsity: float = 0.9, topk_period: int = 10, structured: bool = False, kernel: str = "auto",
                 fixed_mask: bool = True, device=None, dtype=None):
        _checks.positive_int("in_features", in_features)
        _checks.positive_int("out_features", out_features)
        _checks.num_elements("the weight", in_features=in_features, out_features=out_features)
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_swat(weight_sparsity, act_sparsity, topk_period, structured, kernel, fixed_mask)
        self.register_buffer("weight_mask", None, persistent=False)
        self.act_threshold: Tensor | None = None
        self._plans: dict = {}                 # rows -> SparsePlan, or None: masked dense kernels
        self._kernel_choice: dict = {}         # rows -> (weight_csr, act_csr) recorded by calibrate_kernels

    def forward(self, x: Tensor) -> Tensor:
        _checks.float_input("x", x, self.weight.device, self.weight.dtype)
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            # checked here: the reshape below would otherwise regroup a wrong width into rows
            raise ValueError(f"x must have last dimension in_features={self.in_features}, "
                             f"got shape {tuple(x.shape)} (last dimension {x.shape[-1] if x.dim() else None})")
        _checks.finite_tensor("x", x)
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
            # "auto": the calibrated choice for this many rows, looked up (never timed here);
            # rows not calibrated run the masked dense kernels
            w_sp, a_sp = (True, True) if self.kernel == "sparse" else self._kernel_choice.get(rows, (False, False))
            w_sp, a_sp = w_sp and self.weight_mask is not None, a_sp and self.act_sparsity > 0
            if a_sp:
                self._store_in_out_order()
            kept = self._kept_index("weight_mask") if w_sp else None
            self._plans[rows] = (kernels.SparsePlan(kept, tuple(self.weight.shape), w_sp, a_sp,
                                                    kernels.in_out_order(self.weight))
                                 if (w_sp or a_sp) else None)
        return self._plans[rows]

    def calibrate_kernels(self, rows: int) -> tuple[bool, bool]:
        """Time the dense/CSR crossover for ``rows`` input rows (``batch·tokens``) and record it.

        A ``kernel="auto"`` layer's one-time calibration (:func:`pwlab.swat.calibrate` calls
        this for every such layer of a model): :func:`~pwlab.swat.kernels.crossover` times both
        kernels on synthetic data of this layer's shape, sparsities, dtype and ``topk_period``
        (cached per key, so equal layers are timed once), and ``forward`` then uses the choice
        for inputs of ``rows`` rows. Structured and ``fixed_mask=False`` layers always use the
        masked dense kernels (nothing is timed). Returns ``(weight_csr, act_csr)``.
        """
        _checks.positive_int("rows", rows)
        if self.kernel != "auto":
            raise ValueError(f"calibrate_kernels needs kernel='auto'; this layer has kernel={self.kernel!r}, "
                             "which fixes its kernels")
        choice = (False, False)
        if not self.structured and self.fixed_mask:
            w_sp, a_sp = kernels.crossover(rows, self.in_features, self.out_features, 1 - self.weight_sparsity,
                                           1 - self.act_sparsity, self.weight.dtype, self.topk_period)
            choice = (bool(w_sp and self.weight_sparsity > 0), bool(a_sp and self.act_sparsity > 0))
        self._kernel_choice[rows] = choice
        self._plans.pop(rows, None)                  # the next forward of this many rows plans anew
        return choice

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



def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum``, as a pair (what nn.Conv2d accepts)."""
    values = tuple(value) if isinstance(value, (tuple, list)) and len(value) == 2 else (value, value)
    for v in values:
        _checks.positive_int(name, v, minimum=minimum)
    return values


def _check_conv_args(in_channels, out_channels, kernel_size, stride, padding, dilation, groups) -> None:
    """SwatConv2d's sizes, checked before nn.Conv2d allocates (it accepts zero and negative sizes)."""
    _checks.positive_int("in_channels", in_channels)
    _checks.positive_int("out_channels", out_channels)
    _checks.positive_int("groups", groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups must divide in_channels={in_channels} and out_channels={out_channels}, "
                         f"got groups={groups}")
    kh, kw = _pair("kernel_size", kernel_size, 1)
    _pair("stride", stride, 1)
    _pair("dilation", dilation, 1)
    if not (isinstance(padding, str) and padding in ("same", "valid")):
        _pair("padding", padding, 0)
    _checks.num_elements("the weight", out_channels=out_channels, in_channels=in_channels // groups,
                         kernel_size=kh * kw)


class SwatConv2d(nn.Conv2d, _SwatState):
    """``nn.Conv2d`` trained with SWAT (masked dense kernels): ``x (B, C_in, H, W) -> (B, C_out, H', W')``,
    or unbatched ``(C_in, H, W) -> (C_out, H', W')`` as ``nn.Conv2d``.
    Arguments as :class:`SwatLinear` (structured drops whole filters and input channels)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, weight_sparsity: float = 0.9, act_sparsity: float = 0.9,
                 topk_period: int = 10, structured: bool = False, fixed_mask: bool = True, device=None, dtype=None):
        _check_conv_args(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
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
        _checks.float_input("x", x, self.weight.device, self.weight.dtype)
        if x.dim() not in (3, 4):
            raise ValueError(f"x must be (B, C_in, H, W) or unbatched (C_in, H, W), got shape {tuple(x.shape)}")
        if x.dim() == 3:
            # unbatched, as nn.Conv2d allows: a batch of one (the SWAT kernels and the activation
            # top-K over channels expect the batch dimension)
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have in_channels={self.in_channels} channels (dimension 1 of (B, C_in, H, W)), "
                             f"got shape {tuple(x.shape)}")
        _checks.finite_tensor("x", x)
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
