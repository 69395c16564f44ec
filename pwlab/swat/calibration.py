"""The one-time kernel calibration of SWAT layers: ``calibrate(model, rows)``.

A :class:`~pwlab.swat.layers.SwatLinear` with ``kernel="auto"`` runs CSR kernels only for the
row counts it was calibrated for, and only where the calibration measured them faster (see
:func:`pwlab.swat.kernels.crossover`); everything else runs the masked dense kernels. The timing
is a speed choice, so it is an explicit step the user (or a benchmark, in its untimed warm-up)
takes once, never something ``forward`` does::

    model = swatify(mlp, 0.9, 0.9)
    for row in calibrate(model, rows=256):      # batch·tokens each layer's forward will see
        print(row)                              # {'layer': '2', 'rows': 256, 'weight_csr': True, ...}
"""
from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from pwlab import _checks
from pwlab.swat.layers import SwatLinear


def _rows(rows) -> list[int]:
    """``rows`` (an int, or an iterable of ints) as a list of distinct positive ints, in order."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, (int, Iterable)):
        raise ValueError(f"rows must be an integer >= 1 or an iterable of them (batch·tokens), got {rows!r}")
    values = [rows] if isinstance(rows, int) else list(rows)
    if not values:
        raise ValueError("rows must name at least one row count (an integer >= 1), got an empty iterable")
    return list(dict.fromkeys(_checks.positive_int("rows", r) for r in values))


def calibrate(module: nn.Module, rows) -> list[dict]:
    """Time dense vs CSR kernels once for every ``kernel="auto"`` SwatLinear under ``module``.

    Args:
        module: a model holding :class:`SwatLinear` layers (e.g. after :func:`swatify`), or
            one such layer. Layers with ``kernel="dense"`` or ``"sparse"`` are left alone.
        rows: the number of input rows (``batch·tokens``) their forward will see: an int or
            an iterable of ints (each >= 1).

    Records each layer's choice (:meth:`SwatLinear.calibrate_kernels`); a key already timed in
    this process (same shape, sparsities, dtype, ``topk_period``, rows and thread count) is not
    timed again. Returns a plain report, one dict per layer and row count, in module order:
    ``{"layer": name ("" for module itself), "rows": int, "weight_csr": bool, "act_csr": bool}``.
    Raises ValueError when ``module`` holds no SwatLinear.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module holding SwatLinear layers, got {type(module).__name__}")
    counts = _rows(rows)
    layers = [(name, m) for name, m in module.named_modules() if isinstance(m, SwatLinear)]
    if not layers:
        raise ValueError(f"module must hold at least one SwatLinear layer (see pwlab.swat.swatify); "
                         f"{type(module).__name__} has none, so there is nothing to calibrate")
    report = []
    for name, layer in layers:
        if layer.kernel != "auto":
            continue
        for r in counts:
            weight_csr, act_csr = layer.calibrate_kernels(r)
            report.append({"layer": name, "rows": r, "weight_csr": weight_csr, "act_csr": act_csr})
    return report
