"""Sparse matmul kernels for SWAT linear layers: torch CSR × dense, chosen by a measured crossover.

Why CSR and why cached indices: on CPU, ``torch.sparse.mm(csr, dense)`` beats a dense matmul
only at high sparsity and for large layers, and building a CSR from a fresh mask
(``to_sparse_csr()``) every step costs about as much as the dense step itself (COO is
far slower still). So SWAT layers refresh their *kept weight index set* together with the
threshold, every ``topk_period`` steps, and build the CSR index structures (``crow``, ``col``
for W and for Wᵀ) once per refresh; each step only gathers the current weight values into
them. The activation's CSR must be built every step (the activation is new each step), but
from a cached threshold it is a compare, a ``nonzero`` and a gather.

Which kernel a layer uses is decided per shape and sparsity by :func:`crossover`: a small
calibration (dense vs sparse, same shapes, median of a few repeats) run once per key and
cached, so a layer switches to sparse kernels only where they measured faster here.
"""
from __future__ import annotations

import time
import warnings

import torch
from torch import Tensor

MIN_ELEMENTS = 1 << 16   # smaller weight matrices: dense always (calibration noise > any gain)
MAX_DENSITY = 0.5        # above this density CSR never wins on CPU
MARGIN = 0.9             # sparse must be measured ≥ 10% faster, so a layer never gets slower
_CACHE: dict = {}


def _csr_structure(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CSR ``crow, col`` of a bool ``mask (p, q)`` and the ``row`` of each kept entry."""
    p = mask.shape[0]
    idx = mask.nonzero()                                                         # (nnz, 2), row-major order
    row, col = idx[:, 0].contiguous(), idx[:, 1].contiguous()
    crow = torch.zeros(p + 1, dtype=torch.long, device=mask.device)
    torch.cumsum(torch.bincount(row, minlength=p), 0, out=crow[1:])
    return crow, col, row


def _csr(crow: Tensor, col: Tensor, values: Tensor, size) -> Tensor:
    with warnings.catch_warnings():                            # "CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def csr_mm_t(a_csr: Tensor, x: Tensor) -> Tensor:
    """``x @ aᵀ`` for ``a_csr (p, q)`` CSR and dense ``x (N, q)``: ``(a · xᵀ)ᵀ``, returns (N, p)."""
    return torch.sparse.mm(a_csr, x.t().contiguous()).t().contiguous()


def act_csr_t(x: Tensor, threshold: Tensor | None) -> Tensor:
    """CSR of the top-K sparsified activation, transposed: ``x (N, q) -> x_sᵀ (q, N)``."""
    xt = x.detach().t().contiguous()                                             # (q, N)
    keep = xt.abs() > threshold if threshold is not None else torch.ones_like(xt, dtype=torch.bool)
    crow, col, _ = _csr_structure(keep)
    return _csr(crow, col, xt[keep], xt.shape)


class SparsePlan:
    """Which SWAT matmuls of one linear layer run on CSR kernels, and the cached index sets.

    Built at each top-K refresh from the layer's weight mask ``(out, in)``; between refreshes
    :meth:`weight_csr` only gathers the current weight values into the cached structures.
    """

    def __init__(self, wmask: Tensor | None, weight_sparse: bool, act_sparse: bool):
        self.weight_sparse = bool(weight_sparse and wmask is not None)
        self.act_sparse = bool(act_sparse)
        if self.weight_sparse:
            out, inp = wmask.shape
            crow, col, row = _csr_structure(wmask)
            self._w = (crow, col, row * inp + col)                               # flat index into W
            crow_t, col_t, row_t = _csr_structure(wmask.t().contiguous())        # Wᵀ[i, o] = W[o, i]
            self._wt = (crow_t, col_t, col_t * inp + row_t)
            self._shape = (out, inp)

    def weight_csr(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """CSR of top-K(W) ``(out, in)`` and of its transpose ``(in, out)``, current values."""
        w = weight.detach().flatten()
        (crow, col, flat), (crow_t, col_t, flat_t) = self._w, self._wt
        out, inp = self._shape
        return _csr(crow, col, w[flat], (out, inp)), _csr(crow_t, col_t, w[flat_t], (inp, out))


def _faster(sparse_fn, dense_fn, repeats: int = 5) -> bool:
    """Is ``sparse_fn`` faster than ``MARGIN ×`` ``dense_fn``? Alternating runs, best of each, so a
    burst of load from other processes hits both alike."""
    sparse_fn(), dense_fn()
    ts, td = [], []
    for _ in range(repeats):
        for fn, times in ((sparse_fn, ts), (dense_fn, td)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return min(ts) < MARGIN * min(td)


@torch.no_grad()
def crossover(rows: int, d_in: int, d_out: int, weight_density: float, act_density: float,
              dtype: torch.dtype = torch.float32) -> tuple[bool, bool]:
    """Measured choice ``(weight_sparse, act_sparse)`` for a SWAT linear ``(rows, d_in) -> d_out``.

    weight side: forward + grad_input (two matmuls with top-K(W)); activation side: grad_weight
    (gᵀ·x_s), each including what the sparse path must build every step. Cached per key.
    """
    key = (rows, d_in, d_out, round(weight_density, 3), round(act_density, 3), dtype, torch.get_num_threads())
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
            mask = w.abs() > w.abs().flatten().kthvalue(max(1, round((1 - weight_density) * w.numel()))).values
            plan = SparsePlan(mask, True, False)

            def dense_w():
                ws = w * mask
                return x @ ws.t(), g @ ws

            def sparse_w():
                a, at = plan.weight_csr(w)
                return csr_mm_t(a, x), csr_mm_t(at, g)
            w_sparse = _faster(sparse_w, dense_w)
        if act_density <= MAX_DENSITY:
            thr = x.abs().flatten().kthvalue(max(1, round((1 - act_density) * x.numel()))).values
            a_sparse = _faster(lambda: torch.sparse.mm(act_csr_t(x, thr), g).t().contiguous(),
                               lambda: g.t() @ (x * (x.abs() > thr)))
        choice = (w_sparse, a_sparse)
    _CACHE[key] = choice
    return choice
