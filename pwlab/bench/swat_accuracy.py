"""``pwlab bench swat-accuracy``: SWAT's "≥ 8× fewer training FLOPs within 5 points" claim, measured.

For each task, trains with the same seeds, data order and steps: a dense MLP, SWAT-U at 80%
and 90%, and SWAT-ERK at 90% (weights and activations alike; first layer dense). Prints a table
of test accuracy (mean over seeds), counted training FLOPs, the FLOP reduction in the SWAT
layers (dense FLOPs of those layers over their SWAT FLOPs, from :mod:`pwlab.flops`), and the
accuracy drop in points. ``flop_reduction_measured`` recounts the grad-weight FLOPs with the
activation density actually kept each step (a cached threshold can keep more or fewer than K).
``--json``: one JSON object per row.
"""
from __future__ import annotations

import json
import statistics
import time

import torch

# the training run lives with the experiments (claim 7 uses it too); re-exported here for
# ``from pwlab.bench.swat_accuracy import mlp`` in the notebooks
from pwlab.experiments.swat_mlp import VARIANTS, load_task, mlp, run
from pwlab.commands import _args

__all__ = ["VARIANTS", "load_task", "mlp", "run", "main"]


def main(argv: list[str] | None = None) -> int:
    p = _args.Parser(prog="pwlab bench swat-accuracy", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["digits", "breast_cancer"])
    p.add_argument("--seeds", type=_args.seed, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=_args.positive_int, default=1500)
    p.add_argument("--batch", type=_args.positive_int, default=64)
    p.add_argument("--hidden", type=_args.positive_int, default=256)
    p.add_argument("--depth", type=_args.positive_int, default=3, help="hidden layers (the first one stays dense)")
    p.add_argument("--lr", type=_args.positive_float, default=2e-3)
    p.add_argument("--topk-period", type=_args.positive_int, default=10)
    p.add_argument("--compare-refresh", action="store_true",
                   help="also SWAT-U 90%% re-masking every step with the cached threshold (fixed_mask=False)")
    p.add_argument("--threads", type=_args.positive_int, default=1,
                   help="intra-op threads (1: the layers are small; threads only add synchronisation)")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.seeds, args.steps, args.hidden, args.batch = args.tasks[:1], [0], 20, 32, 32
    torch.set_num_threads(args.threads)
    variants = list(VARIANTS) + ([("SWAT-U fixed_mask=False", "uniform", 0.9)] if args.compare_refresh else [])
    start = time.perf_counter()
    if not args.json:
        print(f"{'task':<14}{'variant':<26}{'sparsity':>9}{'accuracy':>10}{'train FLOPs':>13}"
              f"{'reduction':>11}{'(measured)':>11}{'drop (pts)':>12}")
    for name in args.tasks:
        dense_acc = None
        for label, variant, sparsity in variants:
            runs = []
            for seed in args.seeds:
                task = load_task(name, seed)
                runs.append(run(task, variant, sparsity, seed, hidden=args.hidden, depth=args.depth, steps=args.steps,
                                batch=args.batch, lr=args.lr, topk_period=args.topk_period,
                                fixed_mask="fixed_mask=False" not in label))
            acc = statistics.mean(r["accuracy"] for r in runs)
            dense_acc = acc if dense_acc is None else dense_acc
            row = {"task": name, "variant": label, "sparsity": sparsity, "accuracy": round(acc, 4),
                   "accuracy_seeds": [round(r["accuracy"], 4) for r in runs],
                   "train_flops": runs[0]["train_flops"], "flop_reduction": round(runs[0]["flop_reduction"], 3),
                   "flop_reduction_measured": round(statistics.mean(r["flop_reduction_measured"] for r in runs), 3),
                   "accuracy_drop": round(100 * (dense_acc - acc), 2), "steps": args.steps, "seeds": args.seeds}
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{name:<14}{label:<26}{sparsity:>9.2f}{100 * acc:>9.2f}%{row['train_flops']:>13.3e}"
                      f"{row['flop_reduction']:>10.2f}x{row['flop_reduction_measured']:>10.2f}x"
                      f"{row['accuracy_drop']:>12.2f}", flush=True)
    if not args.json:
        print(f"# {len(args.seeds)} seeds x {args.steps} steps, batch {args.batch}, MLP {args.depth}x{args.hidden}, "
              f"topk_period {args.topk_period}; {time.perf_counter() - start:.0f} s")
    return 0
