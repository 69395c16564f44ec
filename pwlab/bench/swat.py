"""``pwlab bench swat``: wall-clock of a SWAT linear layer vs the dense layer, forward + backward.

One JSON object per line: layer, batch, sparsity (weights and activations alike),
swat_over_dense_time, the kernels the layer ran, and the two median times per step.

Each measurement is a window of ``topk_period`` training steps (forward, backward, then an
in-place weight update outside the timer), so the per-refresh costs (top-K thresholds, masks,
CSR index sets) are paid inside the windows: every SWAT window holds exactly one refresh, i.e.
its cost divided over ``topk_period`` steps is in ``swat_ms_per_step``. Dense and SWAT windows
alternate in the same run; the ratio is median(SWAT window) / median(dense window). Also shown,
from the same windows: ``swat_refresh_ms``, how much longer the refresh step took than the
median other step (not an extra cost: already inside the ratio), and ``swat_ms_between_refreshes``.
With ``--kernel auto`` (the default) the warm-up, untimed, calls :func:`pwlab.swat.calibrate`
for the batch: the layer's one-time timing of the dense/CSR crossover (once per layer shape,
sparsity and rows; a SWAT layer's forward never times anything, and an uncalibrated ``auto``
layer runs the masked dense kernels), so the windows measure the calibrated choice.
``--components`` adds ``components_ms``: each piece of the layer's chosen path and of one
refresh, timed alone after the windows (where the time goes; the pieces do not sum exactly
to a step: cache effects and autograd are not in them).
"""
from __future__ import annotations

import json
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from pwlab.swat import SwatLinear, calibrate, functions, kernels
from pwlab.commands import _args


def _window(layer: nn.Module, x: torch.Tensor, g: torch.Tensor, steps: int) -> list[float]:
    """Seconds of each of ``steps`` training steps (forward + backward; the update is untimed)."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        xx = x.detach().requires_grad_(True)                  # a hidden layer: grad_input is needed
        layer(xx).backward(g)
        times.append(time.perf_counter() - start)
        with torch.no_grad():                                 # the optimizer step, untimed
            for p in layer.parameters():
                p.add_(p.grad, alpha=-1e-4)
                p.grad = None
    return times


def measure(d: int, batch: int, sparsity: float, *, repeats: int, topk_period: int, kernel: str = "auto",
            components: bool = False) -> dict:
    torch.manual_seed(0)
    dense = nn.Linear(d, d)
    swat = SwatLinear(d, d, weight_sparsity=sparsity, act_sparsity=sparsity, topk_period=topk_period, kernel=kernel)
    swat.load_state_dict(dense.state_dict())
    x = torch.relu(torch.randn(batch, d)) + 0.01 * torch.randn(batch, d)   # post-ReLU-like input
    g = torch.randn(batch, d)
    if kernel == "auto":
        calibrate(swat, batch)                                            # the one-time crossover timing
    _window(dense, x, g, 2), _window(swat, x, g, topk_period)             # warm-up
    td, ts, first, rest = [], [], [], []
    for _ in range(repeats):
        td.append(sum(_window(dense, x, g, topk_period)))
        steps = _window(swat, x, g, topk_period)                          # steps[0] is the refresh step
        ts.append(sum(steps))
        first.append(steps[0])
        rest.extend(steps[1:])
    plan = swat._plans.get(batch)
    between = statistics.median(rest) if rest else statistics.median(first)
    return {"layer": f"{d}x{d}", "batch": batch, "sparsity": sparsity,
            "swat_over_dense_time": round(statistics.median(ts) / statistics.median(td), 3),
            "weight_kernel": "csr" if plan is not None and plan.weight_sparse else "dense",
            "act_kernel": "csr" if plan is not None and plan.act_sparse else "dense",
            "dense_ms_per_step": round(1e3 * statistics.median(td) / topk_period, 3),
            "swat_ms_per_step": round(1e3 * statistics.median(ts) / topk_period, 3),
            "swat_ms_between_refreshes": round(1e3 * between, 3),
            "swat_refresh_ms": round(1e3 * (statistics.median(first) - between), 3),
            "topk_period": topk_period, "threads": torch.get_num_threads(),
            **({"components_ms": breakdown(swat, x, g)} if components else {})}


def _median_ms(fn, repeats: int = 11) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1e3 * statistics.median(times), 3)


@torch.no_grad()
def breakdown(swat: SwatLinear, x: torch.Tensor, g: torch.Tensor) -> dict:
    """Milliseconds of each piece of a trained layer's step (its chosen path), each timed alone,
    and of the pieces of one refresh (``refresh: ...``; paid once per ``topk_period`` steps)."""
    plan = swat._plans.get(x.shape[0])
    w, b, t = swat.weight.detach(), swat.bias.detach(), swat.act_threshold
    s_w, s_a, out = swat.weight_sparsity, swat.act_sparsity, {}
    xt = x.t().contiguous()
    if plan is not None and plan.weight_sparse:
        wc, wtc = plan.weight_csr(w)
        out["gather W and Wt values"] = _median_ms(lambda: plan.weight_csr(w))
        out["forward CSR matmul (+ transposes, bias)"] = _median_ms(lambda: kernels.csr_mm_t(wc, x, b))
        out["grad_x CSR matmul (+ transposes)"] = _median_ms(lambda: kernels.csr_mm_t(wtc, g))
    else:
        mf = swat._dense_mask("weight_mask", swat.weight)
        ws = w if mf is None else w * mf
        if mf is not None:
            out["W * mask"] = _median_ms(lambda: w * mf)
        out["forward matmul (+ bias)"] = _median_ms(lambda: F.linear(x, ws, b))
        out["grad_x matmul"] = _median_ms(lambda: g.mm(ws))
    if plan is not None and plan.act_sparse:
        xs = kernels.act_csr_t(x, t, xt)
        out["activation CSR"] = _median_ms(lambda: kernels.act_csr_t(x, t, xt))
        out["grad_W CSR matmul"] = _median_ms(lambda: kernels.csr_mm(xs, g))
    else:
        xs = functions.sparsify_activation(x, t)
        if t is not None:
            out["activation hardshrink"] = _median_ms(lambda: functions.sparsify_activation(x, t))
        out["grad_W matmul"] = _median_ms(lambda: g.t().mm(xs))
    out["grad_b"] = _median_ms(lambda: g.sum(0))
    if s_w > 0:
        score = functions.weight_scores(w)
        out["refresh: |W|"] = _median_ms(lambda: functions.weight_scores(w), 5)
        if plan is not None and plan.weight_sparse:
            _, kept = functions.magnitude_topk(score, s_w)
            out["refresh: top-K search + kept set"] = _median_ms(lambda: functions.magnitude_topk(score, s_w), 5)
            out["refresh: CSR index sets"] = _median_ms(
                lambda: kernels.SparsePlan(kept, tuple(w.shape), True, plan.act_sparse, plan.in_out), 5)
        else:
            thr = functions.magnitude_threshold(score, s_w)
            out["refresh: top-K search"] = _median_ms(lambda: functions.magnitude_threshold(score, s_w), 5)
            out["refresh: masks"] = _median_ms(lambda: (score > thr).to(w.dtype), 5)
    if s_a > 0:
        out["refresh: activation threshold"] = _median_ms(lambda: functions.act_threshold(x, s_a), 5)
    return out


def main(argv: list[str] | None = None) -> int:
    p = _args.Parser(prog="pwlab bench swat", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=_args.positive_int, nargs="+", default=[512, 2048], help="square layer widths")
    p.add_argument("--batch", type=_args.positive_int, nargs="+", default=[256])
    p.add_argument("--sparsity", type=_args.sparsity, nargs="+", default=[0.0, 0.5, 0.8, 0.9, 0.95, 0.99])
    p.add_argument("--repeats", type=_args.positive_int, default=7)
    p.add_argument("--topk-period", type=_args.positive_int, default=10)
    p.add_argument("--threads", type=_args.positive_int, default=2)
    p.add_argument("--kernel", choices=["auto", "dense", "sparse"], default="auto")
    p.add_argument("--components", action="store_true",
                   help="also time each piece of the chosen path and of a refresh alone (components_ms)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.sparsity, args.repeats, args.topk_period = [256], [32], [0.9], 3, 2
    torch.set_num_threads(args.threads)
    for d in args.sizes:
        for b in args.batch:
            for s in args.sparsity:
                row = measure(d, b, s, repeats=args.repeats, topk_period=args.topk_period, kernel=args.kernel,
                              components=args.components)
                print(json.dumps(row), flush=True)
    return 0
