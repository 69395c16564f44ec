"""``pwlab bench swat``: wall-clock of a SWAT linear layer vs the dense layer, forward + backward.

One JSON object per line: layer, batch, sparsity (weights and activations alike),
swat_over_dense_time, the kernels the crossover picked, and the two median times per step.

Each measurement is a window of ``topk_period`` training steps (forward, backward, then an
in-place weight update outside the timer), so the per-refresh costs (top-K thresholds, masks,
CSR index sets) are paid inside the windows: every SWAT window holds exactly one refresh, i.e.
its cost divided over ``topk_period`` steps is in ``swat_ms_per_step``. Dense and SWAT windows
alternate in the same run; the ratio is median(SWAT window) / median(dense window). Also shown,
from the same windows: ``swat_refresh_ms``, how much longer the refresh step took than the
median other step (not an extra cost: already inside the ratio), and ``swat_ms_between_refreshes``.
The crossover's calibration (once per layer shape and sparsity) runs in the warm-up, untimed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from pwlab.swat import SwatLinear


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


def measure(d: int, batch: int, sparsity: float, *, repeats: int, topk_period: int, kernel: str = "auto") -> dict:
    torch.manual_seed(0)
    dense = nn.Linear(d, d)
    swat = SwatLinear(d, d, weight_sparsity=sparsity, act_sparsity=sparsity, topk_period=topk_period, kernel=kernel)
    swat.load_state_dict(dense.state_dict())
    x = torch.relu(torch.randn(batch, d)) + 0.01 * torch.randn(batch, d)   # post-ReLU-like input
    g = torch.randn(batch, d)
    _window(dense, x, g, 2), _window(swat, x, g, topk_period)             # warm-up (and calibration)
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
            "topk_period": topk_period, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pwlab bench swat", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 2048], help="square layer widths")
    p.add_argument("--batch", type=int, nargs="+", default=[256])
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.9, 0.95, 0.99])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--topk-period", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kernel", choices=["auto", "dense", "sparse"], default="auto")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.sparsity, args.repeats, args.topk_period = [256], [32], [0.9], 3, 2
    torch.set_num_threads(args.threads)
    for d in args.sizes:
        for b in args.batch:
            for s in args.sparsity:
                row = measure(d, b, s, repeats=args.repeats, topk_period=args.topk_period, kernel=args.kernel)
                print(json.dumps(row), flush=True)
    return 0
