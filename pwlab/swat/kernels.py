"""Sparse matmul kernels for SWAT linear layers: torch CSR × dense, chosen by a one-time calibration.

Why CSR and why cached indices: on CPU, ``torch.sparse.mm(csr, dense)`` beats a dense matmul
only at high sparsity and for large layers, and building a CSR from a fresh mask
(``to_sparse_csr()``) every step costs about as much as the dense step itself (COO is
far slower still). So SWAT layers refresh their *kept weight index set* together with the
threshold, every ``topk_period`` steps, and build the CSR index structures (``crow``, ``col``
for W and for Wᵀ) once per refresh; each step only gathers the current weight values into
them. The activation's CSR must be built every step (the activation is new each step), but
from a cached threshold it is one ``hardshrink``, a ``nonzero`` and a gather.

Per-step copies are avoided where they cost: the matmuls run as ``addmm(beta=0)`` into an
empty result (``torch.sparse.mm`` zero-fills and then copies zeros over its result), and the
grad_W kernel's output (grad_Wᵀ row-major) is handed over as is when W is stored in (in, out)
order, which :class:`~pwlab.swat.layers.SwatLinear` arranges on that path.

Which kernel a ``kernel="auto"`` layer uses is decided per shape, sparsity and row count by
:func:`crossover`: a small timing (each path's whole per-step work, its refresh amortized over
``topk_period``, alternating runs, best of 7) run once per key and cached, so a layer switches
to sparse kernels only where they measured faster here. It runs only when asked for, in the
explicit one-time calibration :func:`pwlab.swat.calibrate` (a speed choice is never timed
inside ``forward``); a layer not calibrated for the rows it sees runs the masked dense kernels.
"""
from __future__ import annotations

import time
import warnings

import torch
from torch import Tensor
from torch.nn import functional as F

# in_out_order and storage_flat are re-exported: layers and tests read W's storage order from here
from pwlab.swat.topk import in_out_order, magnitude_threshold, magnitude_topk, storage_flat

MIN_ELEMENTS = 1 << 16   # smaller weight matrices: dense always (calibration noise > any gain)
MAX_DENSITY = 0.5        # above this density CSR never wins on CPU
MARGIN = 0.9             # sparse must be measured ≥ 10% faster than the masked dense path it replaces:
                         # near parity the calibration is noisier than the difference (measured at 80%)
_CACHE: dict = {}


def _csr_structure(flat: Tensor, p: int, q: int) -> tuple[Tensor, Tensor, Tensor]:
    """CSR ``crow, col`` (int32) of the entries at sorted row-major flat indices ``flat`` of a
    ``(p, q)`` matrix, and the ``row`` of each. int32 indices: the sparse BLAS takes them as is."""
    row = flat.div(q, rounding_mode="floor")
    col = (flat - row * q).to(torch.int32)
    crow = torch.zeros(p + 1, dtype=torch.int32, device=flat.device)
    torch.cumsum(torch.bincount(row, minlength=p), 0, out=crow[1:])
    return crow, col, row


def _csr(crow: Tensor, col: Tensor, values: Tensor, size) -> Tensor:
    with warnings.catch_warnings():                            # "CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def csr_mm(a_csr: Tensor, b: Tensor) -> Tensor:
    """``a_csr (p, q) @ b (q, r) -> (p, r)`` contiguous. ``addmm`` with ``beta=0`` into an empty
    result: ``torch.sparse.mm`` would zero-fill a result and then copy zeros over it as the
    ``beta·self`` term (two extra passes over the output, 16 MB for a 2048² grad_W)."""
    out = torch.empty(a_csr.shape[0], b.shape[1], dtype=b.dtype, device=b.device)
    return torch.addmm(out, a_csr, b, beta=0, out=out)


def csr_mm_t(a_csr: Tensor, x: Tensor, bias: Tensor | None = None, xt: Tensor | None = None) -> Tensor:
    """``x @ aᵀ (+ bias)`` for ``a_csr (p, q)`` CSR and dense ``x (N, q)``: ``(a · xᵀ)ᵀ``, returns
    a contiguous (N, p); the transposing copy of the result also adds the bias (one pass).
    ``xt``: ``x.t().contiguous()`` when the caller has it already."""
    yt = csr_mm(a_csr, x.t().contiguous() if xt is None else xt)                 # (p, N)
    y = torch.empty(yt.shape[1], yt.shape[0], dtype=yt.dtype, device=yt.device)
    return torch.add(yt.t(), bias, out=y) if bias is not None else y.copy_(yt.t())


def act_csr_t(x: Tensor, threshold: Tensor | None, xt: Tensor | None = None) -> Tensor:
    """CSR of the top-K sparsified activation, transposed: ``x (N, q) -> x_sᵀ (q, N)``.

    ``hardshrink`` (x where |x| > t, else 0) is the sparsification in one pass; then one
    ``nonzero`` and a gather over the (N·q) entries; row counts come from ``count_nonzero`` so
    no per-entry row index is materialised. (An entry exactly 0 is dropped either way.)
    ``xt``: ``x.t().contiguous()`` when the caller has it already."""
    xt = x.detach().t().contiguous() if xt is None else xt                       # (q, N)
    xs = xt if threshold is None else F.hardshrink(xt, max(float(threshold), 0.0))
    flat = xs.view(-1).nonzero().squeeze(1)
    crow = torch.zeros(xt.shape[0] + 1, dtype=torch.long, device=x.device)
    torch.cumsum(torch.count_nonzero(xs, 1), 0, out=crow[1:])
    return _csr(crow, flat.remainder(xt.shape[1]), xs.view(-1)[flat], xt.shape)


class SparsePlan:
    """Which SWAT matmuls of one linear layer run on CSR kernels, and the cached index sets.

    Built at each top-K refresh from ``kept``, the sorted indices of the kept weights in W's
    *storage* (row-major W, or (in, out)-ordered W as :class:`SwatLinear` stores it on the CSR
    grad_W path). Kept indices in storage order are the CSR entries, in order, of the matrix
    stored that way (W, or Wᵀ); the other one's entries are the same sorted by column (a stable
    sort of nnz keys). Between refreshes :meth:`weight_csr` only gathers the current values: a
    streaming ``index_select`` from the dense weight in storage order, then a permutation of
    that small nnz-long array (a gather in the other order would hop across the whole weight).
    """

    def __init__(self, kept: Tensor | None, shape: tuple[int, int], weight_sparse: bool, act_sparse: bool,
                 in_out: bool = False):
        self.weight_sparse = bool(weight_sparse and kept is not None)
        self.act_sparse = bool(act_sparse)
        self.in_out = bool(in_out)
        if self.weight_sparse:
            out, inp = shape
            p, q = (inp, out) if in_out else (out, inp)                         # the stored matrix
            crow, col, row = _csr_structure(kept, p, q)
            order = torch.sort(col, stable=True).indices                        # rows stay sorted per column
            crow_o = torch.zeros(q + 1, dtype=torch.int32, device=kept.device)
            torch.cumsum(torch.bincount(col, minlength=q), 0, out=crow_o[1:])
            stored = (crow, col, (p, q))
            other = (crow_o, row.index_select(0, order).to(torch.int32), (q, p))
            self._w, self._wt = (other, stored) if in_out else (stored, other)
            self._kept, self._order = kept, order

    def weight_csr(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """CSR of top-K(W) ``(out, in)`` and of its transpose ``(in, out)``, current values."""
        w = weight.detach()
        if in_out_order(w) != self.in_out:
            w = w.t().contiguous().t() if self.in_out else w.contiguous()
        first = storage_flat(w).index_select(0, self._kept)                     # index_select: ~2x faster
        second = first.index_select(0, self._order)                             # than [] or take (measured)
        vals, vals_t = (second, first) if self.in_out else (first, second)
        (crow, col, size), (crow_t, col_t, size_t) = self._w, self._wt
        return _csr(crow, col, vals, size), _csr(crow_t, col_t, vals_t, size_t)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _faster(sparse_fn, dense_fn, sparse_extra: float = 0.0, dense_extra: float = 0.0, repeats: int = 7) -> bool:
    """Is ``sparse_fn`` (+ ``sparse_extra`` seconds) faster than ``MARGIN ×`` (``dense_fn`` +
    ``dense_extra``)? Alternating runs, best of each, so a burst of load from other processes
    hits both alike."""
    sparse_fn(), dense_fn()
    ts, td = [], []
    for _ in range(repeats):
        ts.append(_seconds(sparse_fn))
        td.append(_seconds(dense_fn))
    return min(ts) + sparse_extra < MARGIN * (min(td) + dense_extra)


@torch.no_grad()
def crossover(rows: int, d_in: int, d_out: int, weight_density: float, act_density: float,
              dtype: torch.dtype = torch.float32, topk_period: int = 10) -> tuple[bool, bool]:
    """Measured choice ``(weight_sparse, act_sparse)`` for a SWAT linear ``(rows, d_in) -> d_out``.

    Each side is timed as the whole per-step work of its path, so the choice is by real cost:
    weight side: forward + grad_input (two matmuls with top-K(W)) plus, for CSR, gathering the
    weight values, and for dense, masking W; each path's refresh (its top-K search, the mask,
    and the CSR index sets or the 0/1 mask in W's dtype) is added divided by ``topk_period``. Activation side: grad_weight
    (gᵀ·x_s) plus building x_s (CSR: compare, nonzero, gather; dense: a masking multiply).
    Cached per key. Called by :meth:`SwatLinear.calibrate_kernels
    <pwlab.swat.layers.SwatLinear.calibrate_kernels>` (:func:`pwlab.swat.calibrate`), never by
    a forward.
    """
    key = (rows, d_in, d_out, round(weight_density, 3), round(act_density, 3), dtype, torch.get_num_threads(),
           topk_period)
    if key in _CACHE:
        return _CACHE[key]
    choice = (False, False)
    if d_in * d_out >= MIN_ELEMENTS and rows >= 16 and min(weight_density, act_density) <= MAX_DENSITY:
        gen = torch.Generator().manual_seed(0)                       # never touches the global RNG
        x = torch.randn(rows, d_in, generator=gen, dtype=dtype)
        w = torch.randn(d_out, d_in, generator=gen, dtype=dtype)
        g = torch.randn(rows, d_out, generator=gen, dtype=dtype)
        w_sparse = a_sparse = False
        if weight_density <= MAX_DENSITY:
            sparsity, score = 1 - weight_density, w.abs()

            def refresh_dense():                                # what a refresh costs each path
                return (score > magnitude_threshold(score, sparsity)).to(dtype)

            def refresh_sparse():
                t, kept = magnitude_topk(score, sparsity)
                return score > t, SparsePlan(kept, (d_out, d_in), True, False)
            r_dense = min(_seconds(refresh_dense) for _ in range(2))
            r_sparse = min(_seconds(refresh_sparse) for _ in range(2))
            maskf, (_, plan) = refresh_dense(), refresh_sparse()

            def dense_w():
                ws = w * maskf
                return x @ ws.t(), g @ ws

            def sparse_w():
                a, at = plan.weight_csr(w)
                return csr_mm_t(a, x), csr_mm_t(at, g)
            w_sparse = _faster(sparse_w, dense_w, r_sparse / topk_period, r_dense / topk_period)
        if act_density <= MAX_DENSITY:
            thr = x.abs().flatten().kthvalue(max(1, round((1 - act_density) * x.numel()))).values
            # the CSR result is grad_Wᵀ row-major = grad_W in (in, out) order, which is how a
            # layer on this path stores W (SwatLinear), so no transposing copy follows it
            a_sparse = _faster(lambda: csr_mm(act_csr_t(x, thr), g),
                               lambda: g.t() @ F.hardshrink(x, float(thr)))
        choice = (w_sparse, a_sparse)
    _CACHE[key] = choice
    return choice
