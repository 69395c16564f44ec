"""``swatify``: turn a model's ``nn.Linear`` / ``nn.Conv2d`` layers and MoE expert banks into SWAT layers.

A plain :class:`~pwlab.experts.ExpertBank` becomes a :class:`SwatExpertBank`, a gated one a
:class:`SwatGatedExpertBank` (its three weights masked alike).

Variants (SWAT §4):
    ``"uniform"``     SWAT-U: the same weight sparsity in every converted layer.
    ``"erk"``         SWAT-ERK: per-layer weight densities from the Erdős–Rényi-Kernel rule of RigL
                      (Evci et al. 2020): density ∝ (sum of the weight's dims) / (product of its
                      dims), scaled so the converted layers together keep (1 − s) of their weights;
                      layers that would exceed density 1 stay dense and the rest is rescaled.
    ``"structured"``  whole output rows / filters (weights) and input features / channels
                      (activations) dropped by L1 norm.
In every variant the first weight layer (in module order) stays dense, as in the paper, and
routers' gates are left alone (they are tiny and decide the routing).
"""
from __future__ import annotations

import math

from torch import nn

from pwlab import _checks
from pwlab.experts import BANKS, ExpertBank, GatedExpertBank
from pwlab.routing.base import Router
from pwlab.senses import Senses
from pwlab.swat.functions import check_sparsity
from pwlab.swat.experts import SwatExpertBank, SwatGatedExpertBank
from pwlab.swat.layers import SwatConv2d, SwatLinear

VARIANTS = ("uniform", "erk", "structured")


def erk_densities(shapes: list[tuple[int, ...]], density: float) -> list[float]:
    """Per-layer densities for weight tensors of ``shapes`` keeping ``density`` of all their weights.

    A bank of E experts counts as E weights of shape ``(a, b)``. Returns one density in (0, 1] each.
    """
    sizes = [math.prod(s) for s in shapes]
    raw = [sum(s) / math.prod(s) for s in shapes]
    dense: set[int] = set()
    while True:
        budget = density * sum(sizes) - sum(sizes[i] for i in dense)
        rest = sum(raw[i] * sizes[i] for i in range(len(shapes)) if i not in dense)
        eps = budget / rest if rest else 0.0
        over = [i for i in range(len(shapes)) if i not in dense and eps * raw[i] > 1]
        if not over:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
        dense.add(max(over, key=lambda i: raw[i]))


def _first_layers(model: nn.Module, targets: list[tuple[str, nn.Module]]) -> set[str]:
    """The layers ``first_layer_dense`` keeps dense: the first weight layer that sees the input.

    In a multi-sense model (one holding :class:`~pwlab.senses.Senses`) every sense encoder
    reads its own input, so each encoder's first weight layer is a first layer (the image and
    audio input projections; the text embedding and the per-feature tabular weights are not
    linear / conv layers and stay as they are). Otherwise it is the first linear / conv layer
    in module order. Expert banks are never a first layer.
    """
    dense = [name for name, m in targets if not isinstance(m, BANKS)]
    encoders = [name for name, m in model.named_modules() if isinstance(m, Senses)]
    if not encoders:
        return set(dense[:1])
    firsts: set[str] = set()
    for prefix in encoders:
        senses = model.get_submodule(prefix) if prefix else model
        for enc_name, _ in [*senses.encoders.named_children(), *senses.tabular.named_children()]:
            root = ".".join(p for p in (prefix, "encoders" if enc_name in senses.encoders else "tabular", enc_name) if p)
            inside = [n for n in dense if n.startswith(root + ".")]
            firsts.update(inside[:1])
    return firsts


def _targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convertible layers in module order, skipping routers and already-converted layers."""

    out, skip = [], []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in skip):
            continue
        if isinstance(m, (Router, SwatLinear, SwatConv2d, SwatExpertBank, SwatGatedExpertBank)):
            skip.append(name)
            continue
        if isinstance(m, (nn.Linear, nn.Conv2d, *BANKS)):
            out.append((name, m))
            skip.append(name)
    return out


def _shape(m: nn.Module) -> tuple[tuple[int, ...], int]:
    if isinstance(m, GatedExpertBank):
        return (m.d_model, m.d_hidden), 3 * m.num_experts                     # w1, w3 and w2 of each expert
    if isinstance(m, ExpertBank):
        return (m.d_model, m.d_hidden), 2 * m.num_experts                     # w1 and w2 of each expert
    return tuple(m.weight.shape), 1


def _convert(m: nn.Module, **kw) -> nn.Module:
    if isinstance(m, GatedExpertBank):
        new = SwatGatedExpertBank(m.num_experts, m.d_model, m.d_hidden, m.activation, **kw)
        new.w1, new.w3, new.w2 = m.w1, m.w3, m.w2                             # the same Parameters
        return new.to(m.w1.device)
    if isinstance(m, ExpertBank):
        new = SwatExpertBank(m.num_experts, m.d_model, m.d_hidden, m.activation, **kw)
        new.w1, new.b1, new.w2, new.b2 = m.w1, m.b1, m.w2, m.b2               # the same Parameters
        return new.to(m.w1.device)
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' to swatify a Conv2d, got {m.padding_mode!r}")
        new = SwatConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                         m.bias is not None, device="meta", **kw)
    else:
        new = SwatLinear(m.in_features, m.out_features, m.bias is not None, device="meta", **kw)
    new.weight, new.bias = m.weight, m.bias                                     # the same Parameters
    return new


def swatify(model: nn.Module, weight_sparsity: float, act_sparsity: float | None = None, *,
            variant: str = "uniform", topk_period: int = 10, first_layer_dense: bool = True,
            kernel: str = "auto", fixed_mask: bool = True) -> nn.Module:
    """Replace ``model``'s linear / conv layers and expert banks by SWAT layers, in place.

    Parameters are shared, not copied, so an optimizer built before still holds them.

    Args:
        weight_sparsity: in [0, 1); per layer (uniform, structured) or overall (erk).
        act_sparsity: in [0, 1); defaults to ``weight_sparsity``.
        variant: ``"uniform"`` (SWAT-U), ``"erk"`` (SWAT-ERK) or ``"structured"``.
        topk_period: steps between top-K refreshes (≥ 1).
        first_layer_dense: keep the first weight layer dense (the paper's rule); in a multi-sense
            model, the input projection of every sense encoder (see :func:`_first_layers`).
        kernel: for linear layers, ``"auto"``, ``"dense"`` or ``"sparse"`` (see :class:`SwatLinear`).
        fixed_mask: keep the kept weight set fixed between top-K refreshes (default), or re-mask
            every step with the cached threshold (the original code; dense kernels only).
    Returns:
        ``model`` (modified).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    weight_sparsity = check_sparsity("weight_sparsity", weight_sparsity)
    act_sparsity = check_sparsity("act_sparsity", weight_sparsity if act_sparsity is None else act_sparsity)
    _checks.one_of("variant", variant, VARIANTS)
    _checks.positive_int("topk_period", topk_period)
    _checks.one_of("kernel", kernel, ("auto", "dense", "sparse"))
    targets = _targets(model)
    if any(not name for name, _ in targets):
        raise ValueError("model must contain the layers to convert; wrap a single layer in nn.Sequential")
    if first_layer_dense:
        keep = _first_layers(model, targets)
        targets = [(name, m) for name, m in targets if name not in keep]
    if variant == "erk":
        shapes, reps = zip(*[_shape(m) for _, m in targets]) if targets else ((), ())
        flat = [s for s, r in zip(shapes, reps) for _ in range(r)]
        dens, per_layer, i = erk_densities(flat, 1 - weight_sparsity), [], 0
        for r in reps:
            per_layer.append(dens[i])
            i += r
        sparsities = [min(max(1 - d, 0.0), 0.999) for d in per_layer]
    else:
        sparsities = [weight_sparsity] * len(targets)
    for (name, m), ws in zip(targets, sparsities):
        kw = dict(weight_sparsity=ws, act_sparsity=act_sparsity, topk_period=topk_period,
                  structured=variant == "structured", fixed_mask=fixed_mask)
        if isinstance(m, nn.Linear):
            kw["kernel"] = kernel
        new = _convert(m, **kw)
        new.train(m.training)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    return model
