"""``pwlab bench moe``: MoE top-2 of 8 experts vs a dense FFN with the same active FLOPs.

One JSON object per line per size: ``moe_over_dense`` (forward+backward time of our MoE
layer over a dense FFN of hidden width k·H, so both spend the same FLOPs per token) and
``einsum_over_moe`` (a GShard-style one-hot einsum dispatch over ours). Times are medians of
repeats measured in the same run, interleaved so drifts of the machine hit both sides.

Two more sides by default: the same layer dropless (``capacity_factor=None``, the same
weights), reported as ``dropless_ms`` and ``dropless_over_capacity``; and, when the optional
``transformers`` is installed (``pip install 'pwlab[hf]'``), its own eager Mixtral sparse MoE
block at equal active FLOPs (gated experts of intermediate width round(2H/3): three D×(2H/3)
matmuls per expert against our two D×H), on the same tokens, reported as ``hf_ms`` and
``hf_over_pwlab`` — transformers' time over ours, for our capacity and our dropless layer
(``hf_over_pwlab_capacity``, ``hf_over_pwlab_dropless``). ``--no-peer`` leaves it out.

``--breakdown`` adds one more side, the layer's own expert part (dispatch, expert FFNs,
combine: the same code) with the routing computed beforehand, and reports ``experts_ms``,
``experts_over_dense`` (what the layer would cost over the dense FFN if routing, capacity and
the auxiliary losses took no time) and ``routing_ms`` (``moe_ms − experts_ms``).
"""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import time

import torch
from torch import nn

from pwlab import fused
from pwlab.interop import tiny_hf_block
from pwlab.moe import DROPLESS_LAYOUTS, MoE, apply_capacity
from pwlab.moe_stats import _FusedStats
from pwlab.routing import TopK
from pwlab.commands import _args

SIZES = {"tiny": (512, 64, 128), "mid": (2048, 128, 256), "large": (8192, 256, 512)}
NUM_EXPERTS, TOP_K = 8, 2


class _DenseFFN(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class _EinsumMoE(nn.Module):
    """GShard/Mesh-TF dispatch: one-hot (N, E, C) dispatch and combine tensors and einsums."""

    def __init__(self, moe):
        super().__init__()
        self.moe = moe

    def forward(self, x):

        m = self.moe
        n = x.shape[0]
        routing = m.router(x)                                   # dispatch as GShard: dense one-hot tensors
        cap = m.capacity(n) or n
        kept, pos = apply_capacity(routing, cap, m.drop_policy)
        e = m.num_experts
        combine = x.new_zeros(n, e, cap)
        combine = combine.index_put((kept.token, kept.expert, pos), kept.weight.to(x.dtype), accumulate=True)
        dispatch = (combine > 0).to(x.dtype)
        buf = torch.einsum("nec,nd->ecd", dispatch, x)
        out = m.experts.forward_padded(buf)
        return torch.einsum("nec,ecd->nd", combine, out)


class _ExpertsOnly(torch.autograd.Function):
    """``x (N, D) -> y (N, D)`` through the layer's expert part (:mod:`pwlab.fused`'s own
    dispatch, expert FFNs and combine, forward and backward) with a fixed routing."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, routing):
        slot_token, slot, weight_t, activation = routing
        y, buf, pre, h, _ = fused._experts_forward(x, slot_token, slot, weight_t, w1, b1, w2, b2, activation)
        ctx.save_for_backward(buf, pre, h, w1, w2)
        ctx.routing = routing
        return y

    @staticmethod
    def backward(ctx, gy):
        buf, pre, h, w1, w2 = ctx.saved_tensors
        slot_token, slot, weight_t, activation = ctx.routing
        grads = fused._experts_backward(gy.contiguous(), slot_token, slot, weight_t, buf, pre, h, w1, w2,
                                        activation, ctx.needs_input_grad[0])
        return (*grads, None)


class _ExpertsWithFixedRouting(nn.Module):
    """The expert part of ``moe`` (a top-k MoE on its one-node path) for the routing it gives ``x``."""

    def __init__(self, moe, x):
        super().__init__()

        self.bank = moe.experts
        with torch.no_grad():                                   # the layer's own routing of x
            _, stats = moe(x)
        if not isinstance(stats, _FusedStats):
            raise ValueError("the breakdown needs a layer on the one-node path (pwlab.fused)")
        expert_t, weight_t = stats._raw[:2]
        _, _, _, slot, slot_token = fused.slot_layout(expert_t, moe.num_experts, stats.capacity)
        self.routing = (slot_token, slot, weight_t, self.bank.activation)

    def forward(self, x):
        b = self.bank
        return _ExpertsOnly.apply(x, b.w1, b.b1, b.w2, b.b2, self.routing)


def _time(fn, x, grad, repeats: int) -> list[float]:
    """Wall times of forward + backward (with a fixed upstream gradient, as inside a network)."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        y = fn(x)
        if isinstance(y, tuple):        # our MoE: its auxiliary loss is part of the layer's work
            torch.autograd.backward([y[0], y[1].aux_loss], [grad, torch.ones(())])
        else:
            y.backward(grad)
        out.append(time.perf_counter() - t0)
    return out


class _Peer(nn.Module):
    """transformers' eager Mixtral sparse MoE block, top-2 of 8, at our layer's active FLOPs."""

    def __init__(self, d: int, h: int, seed: int):
        super().__init__()
        self.block = tiny_hf_block("mixtral", seed=seed, d_model=d, d_hidden=round(2 * h / 3),
                                   num_experts=NUM_EXPERTS, top_k=TOP_K).train()

    def forward(self, x):
        return self.block(x.unsqueeze(0)).squeeze(0)


def peer_available() -> bool:
    """Whether the optional ``transformers`` (the peer side) is installed."""
    return importlib.util.find_spec("transformers") is not None


def measure(size: str, repeats: int, *, seed: int = 0, capacity_factor: float | None = 1.0,
            breakdown: bool = False, peer: bool = True, dropless_layout: str = "auto") -> dict:

    n, d, h = SIZES[size]
    torch.manual_seed(seed)
    moe = MoE(d, h, NUM_EXPERTS, TopK(top_k=TOP_K), capacity_factor=capacity_factor)
    dropless = MoE(d, h, NUM_EXPERTS, TopK(top_k=TOP_K), capacity_factor=None)
    dropless.load_state_dict(moe.state_dict())
    dropless.dropless_layout = dropless_layout
    dense = _DenseFFN(d, TOP_K * h)
    einsum = _EinsumMoE(moe)
    x = torch.randn(n, d, requires_grad=True)
    grad = torch.randn(n, d)
    fns = {"moe": moe, "dropless": dropless, "dense": dense, "einsum": einsum}
    if peer:
        fns["hf"] = _Peer(d, h, seed)
    if breakdown:
        fns["experts"] = _ExpertsWithFixedRouting(moe, x)
    for f in fns.values():          # warm-up
        _time(f, x, grad, 2)
    times = {k: [] for k in fns}
    rounds = max(1, repeats // 5)
    for _ in range(rounds):         # interleave so load changes hit every side alike
        for k, f in fns.items():
            times[k] += _time(f, x, grad, max(1, repeats // rounds))
    med = {k: statistics.median(v) for k, v in times.items()}
    extra = {}
    if breakdown:
        extra = {"experts_ms": round(med["experts"] * 1e3, 3),
                 "experts_over_dense": round(med["experts"] / med["dense"], 3),
                 "routing_ms": round((med["moe"] - med["experts"]) * 1e3, 3)}
    if peer:
        extra.update({"hf_ms": round(med["hf"] * 1e3, 3),
                      "hf_over_pwlab_capacity": round(med["hf"] / med["moe"], 3),
                      "hf_over_pwlab_dropless": round(med["hf"] / med["dropless"], 3)})
    return {"size": size, "tokens": n, "d_model": d, "d_hidden": h, "num_experts": NUM_EXPERTS, "top_k": TOP_K,
            "capacity_factor": capacity_factor, "threads": torch.get_num_threads(),
            "moe_ms": round(med["moe"] * 1e3, 3), "dropless_ms": round(med["dropless"] * 1e3, 3),
            "dense_ms": round(med["dense"] * 1e3, 3), "einsum_ms": round(med["einsum"] * 1e3, 3),
            "moe_over_dense": round(med["moe"] / med["dense"], 3),
            "dropless_over_capacity": round(med["dropless"] / med["moe"], 3),
            "einsum_over_moe": round(med["einsum"] / med["moe"], 3), **extra}


def main(argv: list[str] | None = None) -> int:
    p = _args.Parser(prog="pwlab bench moe", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (under a minute on 2 cores)")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--repeats", type=_args.positive_int, default=None, help="timed repeats per side (default 40, quick 15)")
    p.add_argument("--capacity-factor", type=_args.positive_float, default=1.0)
    p.add_argument("--threads", type=_args.positive_int, default=None,
                   help="torch threads for both sides (default: torch's, here the number of cores)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the layer's expert part with the routing precomputed (experts_ms, routing_ms)")
    p.add_argument("--no-peer", action="store_true",
                   help="leave out transformers' Mixtral block (the hf_* columns)")
    p.add_argument("--dropless-layout", default="auto", choices=list(DROPLESS_LAYOUTS),
                   help="the dropless side's layout (see pwlab.moe.DROPLESS_LAYOUTS)")
    args = p.parse_args(argv)
    peer = not args.no_peer
    if peer and not peer_available():
        print("pwlab bench moe: transformers is not installed, so the hf_* columns are left out "
              "(pip install 'pwlab[hf]' adds them)", file=sys.stderr)
        peer = False
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (15 if args.quick else 40)
    for size in args.sizes:
        r = repeats if size != "large" else max(5, repeats // 3)
        print(json.dumps(measure(size, r, capacity_factor=args.capacity_factor, breakdown=args.breakdown, peer=peer,
                                 dropless_layout=args.dropless_layout)), flush=True)
    return 0
