"""Real MoE blocks of Hugging Face ``transformers`` as pwlab layers (optional: ``pip install 'pwlab[hf]'``).

:func:`moe_from_hf` turns a transformers sparse MoE block into a :class:`~pwlab.moe.MoE` whose
forward equals the block's (float32, eval mode; the block takes ``(B, T, D)``, the layer any
``(..., D)``) and whose :class:`~pwlab.moe.MoEStats` show its routing, so the lab's pathway
maps, ablations and losses work on a real model's layer. The weights are copied, not shared.

Supported blocks (transformers ≥ 5.0, whose experts are fused 3-D parameters
``gate_up_proj (E, 2H, D)`` — gate rows first, then up — and ``down_proj (E, D, H)``):

==========================  ===============================================================
block                        pwlab layer
==========================  ===============================================================
``MixtralSparseMoeBlock``    ``TopK(top_k, softmax_topk, renormalize=True)``, swiglu experts
``OlmoeSparseMoeBlock``      ``TopK(top_k, softmax_topk, renormalize=norm_topk_prob)``
``Qwen3MoeSparseMoeBlock``   as OLMoE
``Qwen2MoeSparseMoeBlock``   as OLMoE, plus its shared expert (width ``shared_expert_intermediate_size``
                             split into s experts of width H) and its sigmoid gate (``shared_gate``)
``DeepseekV3MoE``            :class:`SigmoidGroupTopK` (sigmoid scores, ``e_score_correction_bias``
                             for the choice only, group-limited choice, ``routed_scaling_factor``)
                             and ``n_shared_experts`` shared experts
==========================  ===============================================================

Conventions that differ between transformers and pwlab (tests/test_interop.py checks each):

- **Weight layout.** transformers stores ``x·Wᵀ`` weights (``(out, in)``); pwlab's banks store
  ``x·W`` (``w1, w3 (E, D, H)``, ``w2 (E, H, D)``), so every matrix is transposed on the way.
- **Balance loss.** transformers' ``load_balancing_loss_func`` divides the expert counts by the
  number of tokens N, so the k choices of a token add up to k and uniform routing gives k;
  :func:`pwlab.losses.load_balancing` divides by the N·k assignments, so uniform routing gives
  1. On the same routing, ``hf = k · pwlab``; the weights differ accordingly
  (``router_aux_loss_coef`` 0.02 for Mixtral top-2 is a pwlab weight of 0.04).
- **Top-1 renormalisation.** Mixtral (and ``norm_topk_prob=True``) renormalises even a single
  choice, giving it weight 1 and no router gradient from the task loss; pwlab's ``TopK`` keeps
  the raw probability at k = 1 (as Switch), so such a block is refused.
- **Router precision.** transformers takes the softmax (DeepSeek-V3: the whole router) in
  float32 whatever the model's dtype; pwlab's ``LinearGate`` runs the gate in float32 when its
  weight is float32. Equality is promised in float32.
- **Jitter.** Mixtral's ``router_jitter_noise`` multiplies the input in training mode only; the
  pwlab layer has none, so it equals the block in eval mode.
- **Shared experts.** DeepSeek-V3 keeps its ``n_shared_experts`` as one MLP of width
  ``n_shared_experts · H``; Qwen2-MoE one of width ``shared_expert_intermediate_size``. An MLP
  of width s·H is exactly the sum of s experts of width H (its hidden units split into s
  blocks), which is how pwlab's ``num_shared_experts`` holds them.
- **Routing probabilities.** For the sigmoid router, ``Routing.probs`` (what pwlab's balance
  loss and entropy read) are the sigmoid scores normalised per token, ``s / Σ s`` (the
  affinities of DeepSeek-V3's sequence-wise balance loss); the bias is not in them.

Nothing here imports ``transformers`` until a function needs it; the core never does.
"""
from __future__ import annotations

import importlib

import torch
from torch import Tensor, nn

from pwlab import _checks
from pwlab.experts import GatedExpertBank
from pwlab.moe import MoE
from pwlab.routing.base import LinearGate
from pwlab.routing.contract import Routing, token_choice
from pwlab.routing.topk import TopK

#: the transformers block classes :func:`moe_from_hf` converts, by class name
SUPPORTED_BLOCKS = ("MixtralSparseMoeBlock", "OlmoeSparseMoeBlock", "Qwen3MoeSparseMoeBlock",
                    "Qwen2MoeSparseMoeBlock", "DeepseekV3MoE")
#: the families :func:`tiny_hf_block` builds
FAMILIES = ("mixtral", "olmoe", "qwen3_moe", "qwen2_moe", "deepseek_v3")
_INSTALL = "pip install 'pwlab[hf]'"


def require_transformers():
    """The ``transformers`` module, or an ImportError saying how to install it."""
    try:
        # an optional dependency, imported only when a function needs it
        return importlib.import_module("transformers")
    except ImportError as err:
        raise ImportError(f"pwlab.interop needs the optional 'transformers' package: {_INSTALL}") from err


class SigmoidGroupTopK(LinearGate):
    """DeepSeek-V3's router: sigmoid scores, a selection-only bias, group-limited top-k.

    Per token: scores ``s = sigmoid(x·W_g)`` (float32); the choice uses ``s + expert_bias``
    (the auxiliary-loss-free balancing bias, ``e_score_correction_bias`` in transformers),
    restricted to the ``topk_group`` best of ``num_group`` equal groups of experts (a group's
    score is the sum of its two best biased scores); the weights are the chosen unbiased scores,
    divided by their sum when ``renormalize`` (plus 1e-20, as transformers), times
    ``scaling``. ``num_group = topk_group = 1`` is plain top-k. The bias is a buffer, saved
    with the layer and not trained here.
    """

    def __init__(self, *, top_k: int, num_group: int = 1, topk_group: int = 1, renormalize: bool = True,
                 scaling: float = 1.0, d_model: int | None = None, num_experts: int | None = None):
        self.num_group = _checks.positive_int("num_group", num_group)
        self.topk_group = _checks.positive_int("topk_group", topk_group)
        if self.topk_group > self.num_group:
            raise ValueError(f"topk_group must be between 1 and num_group={num_group}, got {topk_group}")
        self.renormalize = bool(renormalize)
        self.scaling = _checks.positive_float("scaling", scaling)
        super().__init__(top_k=top_k, d_model=d_model, num_experts=num_experts)

    def _check_top_k(self, num_experts: int) -> None:
        super()._check_top_k(num_experts)
        if num_experts % self.num_group:
            raise ValueError(f"num_experts={num_experts} must be divisible by num_group={self.num_group}")
        per_group = num_experts // self.num_group
        if self.num_group > 1 and per_group < 2:
            raise ValueError(f"group-limited routing scores a group by its two best experts: num_experts / "
                             f"num_group must be >= 2, got {per_group}")
        if self.top_k > self.topk_group * per_group:
            raise ValueError(f"top_k={self.top_k} exceeds the {self.topk_group * per_group} experts of the "
                             f"topk_group={self.topk_group} kept groups")

    def build(self) -> None:
        super().build()
        self.register_buffer("expert_bias", torch.zeros(self.num_experts))

    def route(self, x: Tensor, *, task, token_ids, generator) -> Routing:
        logits = nn.functional.linear(x.float(), self.gate.weight.float())    # (N, E), float32 as DeepSeek-V3
        scores = logits.sigmoid()
        choice = scores + self.expert_bias
        if self.num_group > 1:
            n, e, g = x.shape[0], self.num_experts, self.num_group
            group_scores = choice.view(n, g, e // g).topk(2, dim=-1)[0].sum(-1)        # (N, G)
            keep = group_scores.topk(self.topk_group, dim=-1)[1]
            group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
            choice = choice.masked_fill(~group_mask.repeat_interleave(e // g, dim=1), float("-inf"))
        expert = choice.topk(self.top_k, dim=-1)[1]                        # (N, k)
        weight = scores.gather(1, expert)
        if self.renormalize:
            weight = weight / (weight.sum(-1, keepdim=True) + 1e-20)
        weight = weight * self.scaling
        probs = scores / scores.sum(-1, keepdim=True)
        return token_choice(probs, logits, expert, weight)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", num_group={self.num_group}, topk_group={self.topk_group}, "
                f"renormalize={self.renormalize}, scaling={self.scaling}")


def moe_from_hf(block: nn.Module) -> MoE:
    """A pwlab :class:`~pwlab.moe.MoE` equal to a transformers sparse MoE block.

    The layer is dropless with the fast dispatch, swiglu experts, the block's router, and its
    shared experts where it has them; the weights are copied in the block's dtype.
    Compare in eval mode: ``layer(x.reshape(-1, D))[0]`` equals ``block(x).reshape(-1, D)``.

    Args:
        block: one of :data:`SUPPORTED_BLOCKS` (e.g. ``model.model.layers[i].mlp``).

    Raises:
        TypeError: ``block`` is not a supported block (the message lists them).
        ValueError: the block uses an option pwlab does not model (named in the message).
        ImportError: transformers is not installed.
    """
    require_transformers()
    name = type(block).__name__
    if name not in SUPPORTED_BLOCKS:
        raise TypeError(f"block must be one of {', '.join(SUPPORTED_BLOCKS)}; got {name}")
    gate, experts = block.gate, block.experts
    missing = [a for a in ("weight", "top_k") if not hasattr(gate, a)]
    if missing:
        raise ValueError(f"{name}.gate has no {', '.join(missing)} (the router module of transformers >= 5.0); "
                         f"upgrade transformers")
    if not (hasattr(experts, "gate_up_proj") and hasattr(experts, "down_proj")):
        raise ValueError(f"{name}.experts has no fused gate_up_proj/down_proj parameters (the layout of "
                         f"transformers >= 5.0); upgrade transformers")
    if type(experts.act_fn).__name__ not in ("SiLU", "SiLUActivation"):
        raise ValueError(f"{name}: hidden_act must be 'silu' (pwlab's gated experts are SwiGLU), "
                         f"got {type(experts.act_fn).__name__}")
    e, two_h, d = experts.gate_up_proj.shape
    h = two_h // 2
    k = int(gate.top_k)
    if name == "DeepseekV3MoE":
        router = SigmoidGroupTopK(top_k=k, num_group=int(gate.num_group), topk_group=int(gate.topk_group),
                                  renormalize=bool(gate.norm_topk_prob), scaling=float(gate.routed_scaling_factor))
        shared_mlp = block.shared_experts
    else:
        renorm = bool(getattr(gate, "norm_topk_prob", True))          # Mixtral always renormalises
        if k == 1 and renorm:
            raise ValueError(f"{name}: top-1 routing with renormalisation (norm_topk_prob / Mixtral) gives "
                             f"every weight 1; pwlab's TopK keeps the raw probability at k=1 and does not model it")
        router = TopK(top_k=k, order="softmax_topk", renormalize=renorm)
        shared_mlp = getattr(block, "shared_expert", None)
    num_shared, gated = 0, name == "Qwen2MoeSparseMoeBlock"
    if shared_mlp is not None:
        hs = shared_mlp.gate_proj.weight.shape[0]
        if hs % h:
            raise ValueError(f"{name}: the shared expert's width {hs} is not a multiple of the routed experts' "
                             f"width {h}; pwlab's shared experts have the routed experts' width")
        num_shared = hs // h
    layer = MoE(d, h, e, router, capacity_factor=None, dispatch="fast", expert="swiglu",
                num_shared_experts=num_shared, shared_gate=gated)
    dtype = experts.gate_up_proj.dtype
    layer.to(dtype)
    with torch.no_grad():
        layer.router.gate.weight.copy_(gate.weight)
        if name == "DeepseekV3MoE":
            layer.router.gate.float()                                      # the block's router is float32
            layer.router.expert_bias.copy_(gate.e_score_correction_bias)
        gu, down = experts.gate_up_proj, experts.down_proj                 # (E, 2H, D), (E, D, H)
        _load_bank(layer.experts, gu[:, :h], gu[:, h:], down)
        if shared_mlp is not None:
            # an MLP of width s·H is the sum of s experts of width H: split its hidden units
            _load_bank(layer.shared_experts,
                       shared_mlp.gate_proj.weight.view(num_shared, h, d),
                       shared_mlp.up_proj.weight.view(num_shared, h, d),
                       shared_mlp.down_proj.weight.view(d, num_shared, h).transpose(0, 1))
        if gated:
            layer.shared_gate.weight.copy_(block.shared_expert_gate.weight)
    return layer.train(block.training)


def _load_bank(bank: GatedExpertBank, gate: Tensor, up: Tensor, down: Tensor) -> None:
    """Copy transformers' ``(out, in)`` matrices into a gated bank: gate, up ``(E, H, D)``, down ``(E, D, H)``."""
    bank.w1.copy_(gate.transpose(1, 2))
    bank.w3.copy_(up.transpose(1, 2))
    bank.w2.copy_(down.transpose(1, 2))


def tiny_hf_block(family: str, *, seed: int = 0, d_model: int = 16, d_hidden: int = 24, num_experts: int = 8,
                  top_k: int = 2, **config) -> nn.Module:
    """A tiny random transformers MoE block of ``family`` (:data:`FAMILIES`), built offline.

    No download: the block is built from a config with the given sizes (other config fields in
    ``config``, e.g. ``norm_topk_prob=True``), its weights drawn from ``torch.manual_seed(seed)``
    (the router's normal, so routing is not uniform), and returned in eval mode.
    """
    tf = require_transformers()
    _checks.one_of("family", family, FAMILIES)
    common = dict(hidden_size=d_model, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                  vocab_size=32, num_experts_per_tok=top_k, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if family == "mixtral":
        cfg, block = tf.MixtralConfig(intermediate_size=d_hidden, num_local_experts=num_experts, **common, **config), \
            "mixtral.modeling_mixtral.MixtralSparseMoeBlock"
    elif family == "olmoe":
        cfg, block = tf.OlmoeConfig(intermediate_size=d_hidden, num_experts=num_experts, **common, **config), \
            "olmoe.modeling_olmoe.OlmoeSparseMoeBlock"
    elif family == "qwen3_moe":
        cfg, block = tf.Qwen3MoeConfig(moe_intermediate_size=d_hidden, num_experts=num_experts, **common,
                                       **config), "qwen3_moe.modeling_qwen3_moe.Qwen3MoeSparseMoeBlock"
    elif family == "qwen2_moe":
        config.setdefault("shared_expert_intermediate_size", 2 * d_hidden)
        cfg, block = tf.Qwen2MoeConfig(moe_intermediate_size=d_hidden, num_experts=num_experts, **common,
                                       **config), "qwen2_moe.modeling_qwen2_moe.Qwen2MoeSparseMoeBlock"
    else:
        for key, value in (("n_group", 1), ("topk_group", 1), ("n_shared_experts", 1), ("routed_scaling_factor", 2.5)):
            config.setdefault(key, value)
        cfg, block = tf.DeepseekV3Config(moe_intermediate_size=d_hidden, n_routed_experts=num_experts,
                                         q_lora_rank=None, kv_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4,
                                         v_head_dim=4, first_k_dense_replace=0, **common, **config), \
            "deepseek_v3.modeling_deepseek_v3.DeepseekV3MoE"
    module, cls = block.rsplit(".", 1)
    cls = getattr(importlib.import_module(f"transformers.models.{module}"), cls)
    cfg._experts_implementation = "eager"      # what a model sets for its blocks; a lone block must be told
    torch.manual_seed(seed)
    blk = cls(cfg)
    with torch.no_grad():
        # transformers leaves these to the model's init (zeros or empty): draw them here
        for p in blk.parameters():
            nn.init.normal_(p, std=p.shape[-1] ** -0.5)
        if family == "deepseek_v3":
            blk.gate.e_score_correction_bias.normal_(std=0.1)
    return blk.float().eval()
