"""Analytic FLOP counts: dense layers, MoE (active experts only) and SWAT layers.

Convention: one multiply-add is **2 FLOPs**, so a matmul ``(N, a) @ (a, b)`` costs ``2·N·a·b``
(the convention of Kaplan et al. 2020 and PaLM's MFU). Only matmuls and convolutions are
counted; biases, nonlinearities, norms, softmax, top-K selection and routing bookkeeping are
ignored (they are O(N·D), not O(N·D²)).

Training cost of a weight layer (Raihan & Aamodt 2020, §3): forward ``y = x·Wᵀ``; backward
``grad_x = grad_y·W`` and ``grad_W = grad_yᵀ·x``, each as costly as the forward, so a dense
layer's backward is 2× its forward. SWAT multiplies the forward and ``grad_x`` by the weight
density (1 − weight_sparsity) and ``grad_W`` by the activation density (1 − act_sparsity):
the forward uses the top-K weights, the saved activation is top-K sparsified, and ``grad_y``
is never sparsified.

MoE: only the experts a token is routed to do work: ``N·k`` token-expert assignments run one
expert FFN each, plus the router's ``N·D·E`` multiply-adds. Capacity drops are not modelled
(an upper bound when tokens are dropped). A gated (SwiGLU) expert does three D×H matmuls per
token instead of two: forward 2·3·D·H per token-expert (:func:`gated_ffn_flops`). Shared
experts (DeepSeek-MoE) run on every token: N·s more token-expert pairs.

:func:`model_flops` walks a module tree (``nn.Linear``, ``nn.Conv2d``, :class:`~pwlab.moe.MoE`,
:class:`~pwlab.experts.ExpertBank` / :class:`~pwlab.experts.GatedExpertBank`, and the SWAT layers, recognised by their
``weight_sparsity``/``act_sparsity`` attributes) and returns per-layer counts and totals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pwlab import _checks
from pwlab.experts import BANKS, GatedExpertBank
from pwlab.moe import MoE

__all__ = ["LayerFlops", "ModelFlops", "linear_flops", "swat_linear_flops", "conv2d_flops", "swat_conv2d_flops",
           "ffn_flops", "gated_ffn_flops", "moe_ffn_flops", "attention_flops", "model_flops", "train_flops"]


@dataclass(frozen=True)
class LayerFlops:
    """FLOPs of one layer for one step: forward, and the two halves of the backward."""

    forward: int
    grad_input: int
    grad_weight: int

    @property
    def backward(self) -> int:
        return self.grad_input + self.grad_weight

    @property
    def training(self) -> int:
        """Forward + backward: one training step."""
        return self.forward + self.backward

    def __add__(self, other: "LayerFlops") -> "LayerFlops":
        return LayerFlops(self.forward + other.forward, self.grad_input + other.grad_input,
                          self.grad_weight + other.grad_weight)

    def scaled(self, factor: float) -> "LayerFlops":
        return LayerFlops(round(self.forward * factor), round(self.grad_input * factor),
                          round(self.grad_weight * factor))


ZERO = LayerFlops(0, 0, 0)


def _density(name: str, sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {sparsity!r}")
    return 1.0 - float(sparsity)


def _count(name: str, value) -> int:
    return _checks.positive_int(name, value, minimum=0)


def swat_linear_flops(tokens: int, d_in: int, d_out: int, weight_sparsity: float = 0.0,
                      act_sparsity: float = 0.0) -> LayerFlops:
    """A SWAT linear layer on ``tokens`` rows ``(N, d_in) -> (N, d_out)``.

    forward = grad_input = 2·N·d_in·d_out·(1 − weight_sparsity);
    grad_weight = 2·N·d_in·d_out·(1 − act_sparsity).
    """
    macs = 2 * _count("tokens", tokens) * _count("d_in", d_in) * _count("d_out", d_out)
    w, a = _density("weight_sparsity", weight_sparsity), _density("act_sparsity", act_sparsity)
    return LayerFlops(round(macs * w), round(macs * w), round(macs * a))


def linear_flops(tokens: int, d_in: int, d_out: int) -> LayerFlops:
    """A dense linear layer: forward 2·N·d_in·d_out; backward twice that."""
    return swat_linear_flops(tokens, d_in, d_out)


def swat_conv2d_flops(batch: int, c_in: int, c_out: int, kernel_size, out_hw, groups: int = 1,
                      weight_sparsity: float = 0.0, act_sparsity: float = 0.0) -> LayerFlops:
    """A (SWAT) Conv2d: forward 2·B·H_out·W_out·c_out·(c_in/groups)·kh·kw, scaled as in
    :func:`swat_linear_flops` (a convolution is a matmul over the B·H_out·W_out positions)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    ho, wo = (out_hw, out_hw) if isinstance(out_hw, int) else out_hw
    _count("groups", groups)
    if c_in % max(groups, 1) or c_out % max(groups, 1):
        raise ValueError(f"groups must divide c_in and c_out, got groups={groups}, c_in={c_in}, c_out={c_out}")
    positions = _count("batch", batch) * _count("out_hw", ho) * _count("out_hw", wo)
    return swat_linear_flops(positions, (c_in // groups) * kh * kw, c_out, weight_sparsity, act_sparsity)


def conv2d_flops(batch: int, c_in: int, c_out: int, kernel_size, out_hw, groups: int = 1) -> LayerFlops:
    """A dense Conv2d (see :func:`swat_conv2d_flops`)."""
    return swat_conv2d_flops(batch, c_in, c_out, kernel_size, out_hw, groups)


def ffn_flops(tokens: int, d_model: int, d_hidden: int, weight_sparsity: float = 0.0,
              act_sparsity: float = 0.0) -> LayerFlops:
    """A two-layer FFN ``D -> H -> D`` on N tokens: 4·N·D·H forward (dense)."""
    return (swat_linear_flops(tokens, d_model, d_hidden, weight_sparsity, act_sparsity)
            + swat_linear_flops(tokens, d_hidden, d_model, weight_sparsity, act_sparsity))


def gated_ffn_flops(tokens: int, d_model: int, d_hidden: int, weight_sparsity: float = 0.0,
                    act_sparsity: float = 0.0) -> LayerFlops:
    """A gated FFN ``down(act(gate(x)) * up(x))`` (SwiGLU) on N tokens: three matmuls of D×H,
    6·N·D·H forward (dense); the elementwise gate product is not counted."""
    return (swat_linear_flops(tokens, d_model, d_hidden, weight_sparsity, act_sparsity).scaled(2)
            + swat_linear_flops(tokens, d_hidden, d_model, weight_sparsity, act_sparsity))


_EXPERT_FLOPS = {"ffn": ffn_flops, "swiglu": gated_ffn_flops}


def moe_ffn_flops(tokens: int, d_model: int, d_hidden: int, num_experts: int, top_k: int,
                  weight_sparsity: float = 0.0, act_sparsity: float = 0.0, *, expert: str = "ffn",
                  num_shared_experts: int = 0) -> LayerFlops:
    """An MoE FFN, active experts only: N·k assignments through one expert each, plus the
    router's linear gate (2·N·D·E forward; the gate stays dense), plus N·s assignments
    through the ``num_shared_experts`` s. ``expert`` is ``"ffn"`` (:func:`ffn_flops`) or
    ``"swiglu"`` (:func:`gated_ffn_flops`)."""
    _checks.positive_int("top_k", top_k)
    per_expert = _EXPERT_FLOPS[_checks.one_of("expert", expert, _EXPERT_FLOPS)]
    shared = _checks.positive_int("num_shared_experts", num_shared_experts, minimum=0)
    experts = per_expert(tokens * (top_k + shared), d_model, d_hidden, weight_sparsity, act_sparsity)
    return experts + linear_flops(tokens, d_model, _checks.positive_int("num_experts", num_experts))


def attention_flops(batch: int, seq_len: int, d_model: int) -> LayerFlops:
    """Scaled dot-product attention core (Q·Kᵀ and P·V), without the projections (those are
    ``nn.Linear`` layers, counted as such): forward 4·B·T²·D. Backward: grad of Q·Kᵀ w.r.t.
    both Q and K, and of P·V w.r.t. both P and V, i.e. 2× forward (reported as grad_input; no
    weights)."""
    fwd = 4 * _count("batch", batch) * _count("seq_len", seq_len) ** 2 * _count("d_model", d_model)
    return LayerFlops(fwd, 2 * fwd, 0)


@dataclass(frozen=True)
class ModelFlops:
    """Per-layer FLOPs of a model for one step.

    Attributes:
        layers: ``(name, kind, LayerFlops)`` per counted layer; kind is ``"linear"``,
            ``"conv2d"``, ``"moe"``, ``"experts"``, or ``"swat_…"`` for SWAT layers.
        tokens: rows (tokens or examples) the step processed.
    """

    layers: list = field(default_factory=list)
    tokens: int = 0

    def total(self, *, swat_only: bool = False) -> LayerFlops:
        out = ZERO
        for _, kind, f in self.layers:
            if not swat_only or kind.startswith("swat"):
                out = out + f
        return out

    @property
    def forward(self) -> int:
        return self.total().forward

    @property
    def training(self) -> int:
        """Forward + backward FLOPs of one step."""
        return self.total().training

    def per_token(self) -> float:
        """Training FLOPs per token (or per example)."""
        return self.training / max(self.tokens, 1)

    def run(self, steps: int) -> int:
        """Training FLOPs of ``steps`` identical steps."""
        return self.training * _count("steps", steps)


def _sparsities(m: nn.Module) -> tuple[float, float] | None:
    if hasattr(m, "weight_sparsity") and hasattr(m, "act_sparsity"):
        return float(m.weight_sparsity), float(m.act_sparsity)
    return None


def _bank_flops(bank: nn.Module, assignments: int) -> tuple[str, LayerFlops]:
    sp = _sparsities(bank)
    ws, as_ = sp or (0.0, 0.0)
    count = gated_ffn_flops if isinstance(bank, GatedExpertBank) else ffn_flops
    return ("swat_experts" if sp else "experts"), count(assignments, bank.d_model, bank.d_hidden, ws, as_)


def _walk(module: nn.Module, prefix: str, rows: dict, default_rows: int | None, out: list) -> None:

    n = rows.get(prefix, default_rows)
    sp = _sparsities(module)
    kind_prefix = "swat_" if sp else ""
    ws, as_ = sp or (0.0, 0.0)
    if isinstance(module, MoE):
        if n is None:
            raise ValueError(f"tokens must be given to count MoE layer {prefix!r}")
        router: list = []
        _walk(module.router, prefix + ".router", rows, n, router)
        if module.shared_gate is not None:                   # Qwen-MoE's shared-expert gate: a D→1 linear
            _walk(module.shared_gate, prefix + ".shared_gate", rows, n, router)
        gate = sum((f for _, _, f in router), ZERO)
        kind, experts = _bank_flops(module.experts, n * module.top_k)
        if module.shared_experts is not None:                # always on: every token, every shared expert
            experts = experts + _bank_flops(module.shared_experts, n * module.shared_experts.num_experts)[1]
        out.append((prefix, "moe" if kind == "experts" else "swat_moe", gate + experts))
        return
    if isinstance(module, BANKS):
        if n is None:
            raise ValueError(f"tokens must be given to count expert bank {prefix!r}")
        kind, f = _bank_flops(module, n)
        out.append((prefix, kind, f))
        return
    if isinstance(module, nn.Linear):
        if n is None:
            raise ValueError(f"tokens must be given to count linear layer {prefix!r}")
        out.append((prefix, kind_prefix + "linear",
                    swat_linear_flops(n, module.in_features, module.out_features, ws, as_)))
        return
    if isinstance(module, nn.Conv2d):
        if prefix not in rows:
            raise ValueError(f"example_input must be given to count Conv2d layer {prefix!r} (its output size)")
        b, ho, wo = rows[prefix]
        out.append((prefix, kind_prefix + "conv2d",
                    swat_conv2d_flops(b, module.in_channels, module.out_channels, module.kernel_size, (ho, wo),
                                      module.groups, ws, as_)))
        return
    for name, child in module.named_children():
        _walk(child, f"{prefix}.{name}" if prefix else name, rows, default_rows, out)


def _observed_rows(model: nn.Module, example_input) -> dict:
    """Rows each leaf layer sees in one forward on ``example_input`` (a shape probe)."""
    rows: dict = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            def hook(mod, inp, out, name=name):
                rows[name] = (out.shape[0], out.shape[-2], out.shape[-1])
        elif isinstance(m, nn.Linear):
            def hook(mod, inp, out, name=name):
                rows[name] = rows.get(name, 0) + inp[0].numel() // inp[0].shape[-1]
        elif type(m).__name__ == "MoE" or hasattr(m, "forward_padded"):
            def hook(mod, inp, out, name=name):
                rows[name] = inp[0].numel() // inp[0].shape[-1]
        else:
            continue
        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for h in handles:
            h.remove()
    return rows


def model_flops(model: nn.Module, tokens: int | None = None, *, example_input=None) -> ModelFlops:
    """FLOPs of one training step of ``model``.

    Args:
        model: any module tree of ``nn.Linear``, ``nn.Conv2d``, MoE / expert banks (plain or
            gated, with shared experts) and SWAT layers.
        tokens: rows each linear / MoE layer processes per step (tokens, or examples for an MLP).
        example_input: alternatively, one batch (tensor or tuple of arguments); a forward pass
            under ``no_grad`` records the rows of every layer (needed for Conv2d output sizes,
            and exact when layers see different numbers of rows, e.g. a head after pooling).
    Returns:
        :class:`ModelFlops` (``.total()``, ``.training``, ``.per_token()``, ``.run(steps)``).
    """
    if tokens is None and example_input is None:
        raise ValueError("tokens or example_input must be given")
    if tokens is not None:
        _count("tokens", tokens)
    rows = _observed_rows(model, example_input) if example_input is not None else {}
    out: list = []
    _walk(model, "", rows, tokens, out)
    if tokens is None:
        tokens = _examples(example_input[0] if isinstance(example_input, tuple) else example_input)
    return ModelFlops(layers=out, tokens=tokens)


def _examples(x) -> int:
    """Examples in a batch: a tensor's first dimension, or the sum over a list of task batches
    (what :class:`~pwlab.model.PathwaysModel` takes)."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0])
    if isinstance(x, (list, tuple)) and x and all(hasattr(b, "x") for b in x):
        return sum(int(b.x.shape[0]) for b in x)
    raise ValueError("cannot tell the number of examples of example_input: pass tokens= as well")


def train_flops(model: nn.Module, tokens_per_step: int, steps: int) -> int:
    """Counted training FLOPs of a run: ``steps`` steps of ``tokens_per_step`` rows each."""
    return model_flops(model, tokens_per_step).run(steps)
