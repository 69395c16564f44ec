"""``pwlab bench ep``: expert-parallel MoE over 1, 2 and 4 local gloo processes.

One JSON object per line per world size: ``step_ms`` (forward+backward of one MoE layer, the
median over steps, the slowest rank), ``a2a_bytes`` (bytes all ranks together sent to other
ranks per step, measured by counting every all-to-all), ``model_bytes`` (the cost model
:func:`pwlab.distributed.a2a_bytes` under balanced routing), ``model_exact_bytes`` (the
same model given the measured number of remote assignments) and their ratios. The global
batch is fixed (``--tokens`` split evenly over the ranks), so the expert FLOPs per rank
shrink as ranks are added while the exchange grows like (P−1)/P.
"""
from __future__ import annotations

import json
import statistics
import time

import torch
import torch.distributed as dist

from pwlab.distributed import ExpertParallelMoE, a2a_volume, count_a2a_bytes, run_local
from pwlab.moe import MoE
from pwlab.routing import TopK
from pwlab.commands import _args


def _rank_main(rank: int, world: int, cfg: dict) -> dict:

    torch.manual_seed(cfg["seed"])
    ref = MoE(cfg["d_model"], cfg["d_hidden"], cfg["experts"], TopK(top_k=cfg["top_k"]),
              capacity_factor=cfg["capacity_factor"])
    layer = ExpertParallelMoE.from_moe(ref)
    del ref
    g = torch.Generator().manual_seed(cfg["seed"] + 1)
    x_all = torch.randn(cfg["tokens"], cfg["d_model"], generator=g)
    per = cfg["tokens"] // world
    x = x_all[rank * per:(rank + 1) * per].clone().requires_grad_(True)
    lo, hi = layer.expert_range
    times, remote, nbytes = [], 0, 0
    for step in range(cfg["warmup"] + cfg["steps"]):
        dist.barrier()
        t0 = time.perf_counter()
        with count_a2a_bytes() as traffic:
            y, st = layer(x)
            (y.square().mean() + st.aux_loss).backward()
        times.append(time.perf_counter() - t0)
        layer.zero_grad(set_to_none=True)
        x.grad = None
        if step >= cfg["warmup"]:
            e = st.routing.expert
            remote += int(((e < lo) | (e >= hi)).sum())
            nbytes += traffic.bytes_sent
    return {"step_s": statistics.median(times[cfg["warmup"]:]), "remote": remote, "bytes": nbytes,
            "kept": float(st.counts.sum()) / (cfg["tokens"] * cfg["top_k"])}


def main(argv: list[str] | None = None) -> int:
    ap = _args.Parser(prog="pwlab bench ep", description=__doc__.splitlines()[0])
    ap.add_argument("--world-sizes", default="1,2,4", help="comma-separated process counts (default 1,2,4)")
    ap.add_argument("--tokens", type=_args.positive_int, default=4096, help="tokens per step over all ranks")
    ap.add_argument("--d-model", type=_args.positive_int, default=64)
    ap.add_argument("--d-hidden", type=_args.positive_int, default=128)
    ap.add_argument("--experts", type=_args.positive_int, default=8)
    ap.add_argument("--top-k", type=_args.positive_int, default=2)
    ap.add_argument("--capacity-factor", type=_args.positive_float, default=None, help="default: dropless")
    ap.add_argument("--steps", type=_args.positive_int, default=10)
    ap.add_argument("--warmup", type=_args.nonnegative_int, default=2)
    ap.add_argument("--seed", type=_args.seed, default=0)
    ap.add_argument("--timeout", type=_args.positive_float, default=300.0, help="seconds per world size")
    ap.add_argument("--quick", action="store_true", help="small sizes, few steps (a smoke run)")
    args = ap.parse_args(argv)

    if args.quick:
        args.tokens, args.steps, args.warmup = 512, 3, 1
    try:
        sizes = [int(s) for s in args.world_sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--world-sizes must be comma-separated integers, got {args.world_sizes!r}")
    if args.top_k > args.experts:
        ap.error(f"--top-k must be <= --experts={args.experts}, got {args.top_k}")
    if not sizes:
        ap.error(f"--world-sizes names no process count, got {args.world_sizes!r}")
    for p in sizes:
        if p < 1 or args.experts % p or args.tokens % p:
            ap.error(f"each world size must divide --experts={args.experts} and --tokens={args.tokens}; got {p}")
    cfg = dict(tokens=args.tokens, d_model=args.d_model, d_hidden=args.d_hidden, experts=args.experts,
               top_k=args.top_k, capacity_factor=args.capacity_factor, steps=args.steps, warmup=args.warmup,
               seed=args.seed)
    for p in sizes:
        ranks = run_local(_rank_main, p, cfg, timeout=args.timeout)
        measured = sum(r["bytes"] for r in ranks) / args.steps
        remote = sum(r["remote"] for r in ranks) / args.steps
        kept = ranks[0]["kept"]
        shape = (args.tokens, args.d_model, args.top_k, args.experts, p)
        model = a2a_volume(*shape, kept_fraction=kept)["total"]
        exact = a2a_volume(*shape, remote_assignments=remote)["total"]
        print(json.dumps({
            "bench": "ep", "world_size": p, "step_ms": round(1e3 * max(r["step_s"] for r in ranks), 3),
            "a2a_bytes": round(measured), "model_bytes": round(model), "model_exact_bytes": round(exact),
            "bytes_over_model": round(measured / model, 4) if model else None,
            "bytes_over_model_exact": round(measured / exact, 6) if exact else None,
            "tokens": args.tokens, "d_model": args.d_model, "d_hidden": args.d_hidden, "experts": args.experts,
            "top_k": args.top_k, "capacity_factor": args.capacity_factor, "kept_fraction": round(kept, 4),
            "steps": args.steps}), flush=True)
    return 0
