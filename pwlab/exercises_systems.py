"""Checks for the exercises of the systems notebooks (07, 08, 09).

Same contract as :mod:`pwlab.exercises`: ``check_*(answer)`` calls the student's function on
a few hand-picked cases and compares it with pwlab's own implementation; a right answer
returns a :class:`~pwlab.exercises.Passed`, a wrong one raises an
:class:`~pwlab.exercises.ExerciseError` whose message is a hint aimed at the likely mistake
(found by comparing the answer with what common mistakes give).

=====================  =============================================  ================
check                  the student writes                             notebook
=====================  =============================================  ================
check_swat_step        one SWAT linear step: y, grad_x, grad_W        07_swat
check_swat_flops       training FLOPs of a SWAT linear layer          07_swat
check_swat_moe_flops   training FLOPs of an MoE FFN with SWAT experts  08_all_together
check_a2a_bytes        bytes an expert-parallel MoE layer exchanges   09_scaling_out
=====================  =============================================  ================
"""
from __future__ import annotations

import torch

from pwlab.distributed.cost import COUNT_BYTES, a2a_volume
from pwlab.exercises import ExerciseError, Passed, _close, _diagnose, _number
from pwlab.exercises_pathways import _tensor
from pwlab.flops import ffn_flops, linear_flops, moe_ffn_flops, swat_linear_flops
from pwlab.swat import SwatLinearFunction, act_threshold, weight_mask

__all__ = ["check_swat_step", "check_swat_flops", "check_swat_moe_flops", "check_a2a_bytes"]


# -- 07 SWAT ------------------------------------------------------------------------------
def _swat_reference(x, w, g, weight_sparsity, act_sparsity):
    """SWAT Alg. 1 on one bias-free layer, through pwlab.swat's own autograd function."""
    wmask = weight_mask(w, weight_sparsity)
    athr = act_threshold(x, act_sparsity) if act_sparsity else None
    xx, ww = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = SwatLinearFunction.apply(xx, ww, None, wmask, athr)
    y.backward(g)
    return y.detach(), xx.grad, ww.grad, wmask, athr


def check_swat_step(swat_step) -> Passed:
    """``swat_step(x (N, in), w (out, in), grad_y (N, out), weight_sparsity, act_sparsity)
    -> (y (N, out), grad_x (N, in), grad_w (out, in))``: SWAT's forward and backward of
    ``y = x·Wᵀ`` (no bias), top-K by magnitude, the activation's top-K over the whole batch."""
    g = torch.Generator().manual_seed(11)
    for n, d_in, d_out, ws, as_ in [(4, 8, 6, 0.5, 0.5), (5, 10, 4, 0.8, 0.6), (3, 6, 6, 0.0, 0.5)]:
        case = f"x ({n}, {d_in}), w ({d_out}, {d_in}), weight_sparsity={ws}, act_sparsity={as_}"
        x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
        w = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
        gy = torch.randn(n, d_out, generator=g, dtype=torch.float64)
        want_y, want_gx, want_gw, wmask, athr = _swat_reference(x, w, gy, ws, as_)
        out = swat_step(x.clone(), w.clone(), gy.clone(), ws, as_)
        if not isinstance(out, tuple) or len(out) != 3:
            raise ExerciseError(f"{case}: return a triple (y, grad_x, grad_w), got {type(out).__name__}")
        y = _tensor("y", out[0], (n, d_out), case)
        gx = _tensor("grad_x", out[1], (n, d_in), case)
        gw = _tensor("grad_w", out[2], (d_out, d_in), case)
        ok = lambda a, b: torch.allclose(a, b, atol=1e-8, rtol=1e-6)
        if not ok(y, want_y):
            if ok(y, x @ w.T):
                raise ExerciseError(f"{case}: y is the dense output. Hint: the forward uses only the top-K weights "
                                    "by magnitude: zero the others (w * mask) before the matmul.")
            raise ExerciseError(f"{case}: y differs from x · top-K(W)ᵀ. Hint: keep the weights whose |w| is among the "
                                "largest (1 − weight_sparsity) of all entries of W (a threshold from "
                                "torch.kthvalue over |W|, keep |w| > threshold).")
        if not ok(gx, want_gx):
            if ok(gx, gy @ w):
                raise ExerciseError(f"{case}: grad_x uses the dense W. Hint: the backward pass uses the same "
                                    "sparse weights as the forward: grad_x = grad_y · top-K(W).")
            raise ExerciseError(f"{case}: grad_x differs from grad_y · top-K(W). Hint: grad_y is never sparsified.")
        if not ok(gw, want_gw):
            if ok(gw, gy.T @ x):
                raise ExerciseError(f"{case}: grad_w uses the dense input. Hint: SWAT saves only the top-K of the "
                                    "input activation (by magnitude, over the whole batch) for the backward: "
                                    "grad_w = grad_yᵀ · top-K(x).")
            if wmask is not None and ok(gw, want_gw * wmask):
                raise ExerciseError(f"{case}: grad_w is zero at the dropped weights. Hint: SWAT's weight gradient "
                                    "is dense-shaped: every weight gets one, so a dropped weight can grow back "
                                    "into the top-K later. Do not mask grad_w.")
            raise ExerciseError(f"{case}: grad_w differs from grad_yᵀ · top-K(x). Hint: the activation threshold "
                                "drops the round(act_sparsity · N · in) entries of x smallest in magnitude.")
    return Passed("swat_step matches pwlab.swat.SwatLinearFunction (forward and both gradients) on 3 layers")


def check_swat_flops(swat_training_flops) -> Passed:
    """``swat_training_flops(tokens, d_in, d_out, weight_sparsity, act_sparsity) -> number``:
    forward + backward FLOPs of one SWAT linear layer step (a multiply-add is 2 FLOPs)."""
    for n, a, b, ws, as_ in [(64, 256, 256, 0.9, 0.9), (32, 100, 10, 0.8, 0.5), (8, 16, 32, 0.5, 0.0),
                             (10, 20, 30, 0.0, 0.75)]:
        case = f"tokens={n}, d_in={a}, d_out={b}, weight_sparsity={ws}, act_sparsity={as_}"
        want = swat_linear_flops(n, a, b, ws, as_).training
        got = _number("swat_training_flops", swat_training_flops(n, a, b, ws, as_))
        if _close(got, want):
            continue
        macs = 2 * n * a * b
        _diagnose(got, want, {
            "grad_weight = grad_yᵀ · x_s uses the sparse saved activation: scale it by the activation density "
            "(1 − act_sparsity), not the weight density.": 3 * macs * (1 - ws),
            "the forward and grad_input use the top-K weights: scale them by (1 − weight_sparsity).":
                macs * (1 - as_) * 3,
            "a training step is the forward plus the two backward products (grad_input and grad_weight).":
                macs * (1 - ws),
            "one multiply-add counts as 2 FLOPs.": want / 2,
            "grad_y is never sparsified, and grad_input = grad_y · top-K(W) costs as much as the forward.":
                macs * (1 - ws) + macs * (1 - as_),
            "density = 1 − sparsity (sparsity is the fraction dropped).": macs * (2 * ws + as_),
        }, case)
    return Passed("swat_training_flops matches pwlab.flops.swat_linear_flops on 4 layers")


# -- 08 all together ----------------------------------------------------------------------
def check_swat_moe_flops(swat_moe_flops) -> Passed:
    """``swat_moe_flops(tokens, d_model, d_hidden, num_experts, top_k, sparsity) -> number``:
    training FLOPs of one MoE FFN step whose experts use SWAT (weights and activations both at
    ``sparsity``); the router stays dense."""
    for n, d, h, e, k, s in [(128, 32, 64, 4, 2, 0.8), (64, 16, 32, 8, 1, 0.9), (10, 8, 16, 4, 2, 0.5)]:
        case = f"tokens={n}, d_model={d}, d_hidden={h}, num_experts={e}, top_k={k}, sparsity={s}"
        want = moe_ffn_flops(n, d, h, e, k, s, s).training
        got = _number("swat_moe_flops", swat_moe_flops(n, d, h, e, k, s))
        if _close(got, want):
            continue
        router = linear_flops(n, d, e).training
        experts = ffn_flops(n * k, d, h, s, s).training
        _diagnose(got, want, {
            "the router stays dense (SWAT leaves it alone: it is tiny and decides the routing).":
                experts + round(router * (1 - s)),
            "don't forget the router: a dense linear map d_model → num_experts for every token.": experts,
            "each token runs top_k experts, not all num_experts of them.": ffn_flops(n * e, d, h, s, s).training + router,
            "each token runs top_k experts: multiply the expert FLOPs by top_k.": ffn_flops(n, d, h, s, s).training + router,
            "we asked for the training FLOPs: forward plus backward (about 3× the forward).":
                moe_ffn_flops(n, d, h, e, k, s, s).forward,
            "SWAT scales the expert FLOPs by the density (1 − sparsity); here with weights and activations "
            "equally sparse, by (1 − sparsity) overall.": ffn_flops(n * k, d, h).training + router,
        }, case)
    return Passed("swat_moe_flops matches pwlab.flops.moe_ffn_flops(…, sparsity, sparsity).training on 3 layers")


# -- 09 scaling out -----------------------------------------------------------------------
def check_a2a_bytes(a2a_bytes) -> Passed:
    """``a2a_bytes(num_tokens, d_model, top_k, num_experts, world_size, bytes_per_element) -> number``:
    bytes one expert-parallel MoE layer sends between devices in one training step (forward and
    backward, balanced routing, dropless), counts included."""
    for n, d, k, e, p, b in [(4096, 64, 2, 8, 2, 4), (1024, 128, 1, 8, 4, 2), (512, 32, 2, 16, 8, 4),
                             (100, 16, 2, 4, 1, 4)]:
        case = f"num_tokens={n}, d_model={d}, top_k={k}, num_experts={e}, world_size={p}, bytes_per_element={b}"
        want = a2a_volume(n, d, k, e, p, bytes_per_element=b)["total"]
        got = _number("a2a_bytes", a2a_bytes(n, d, k, e, p, b))
        if _close(got, want):
            continue
        counts = COUNT_BYTES * e * (p - 1)
        rows = n * k * (p - 1) / p * d * b
        _diagnose(got, want, {
            "only assignments whose expert lives on another device travel: a fraction (P − 1)/P of them.":
                counts + 4 * n * k * d * b,
            "a remote assignment's row crosses four times per training step: dispatch (token to expert) and "
            "combine (result back) in the forward, and the same two routes in reverse for the gradients in "
            "the backward.": counts + 2 * rows,
            "don't forget the counts: before the rows move, each pair of devices exchanges E/P counts of "
            "8 bytes (8·E·(P − 1) bytes in all).": 4 * rows,
            "each of the top_k assignments of a token travels on its own: multiply by top_k.": counts + 4 * rows / k,
            "a row is d_model elements of bytes_per_element bytes each.": counts + 4 * rows / b,
        }, case)
    return Passed("a2a_bytes matches pwlab.distributed.a2a_bytes on 4 layouts (1 to 8 devices)")
