"""Top-k routing: softmax or sigmoid scores, with optional auxiliary-loss-free balancing.

``order="softmax_topk"`` (Mixtral, DeepSpeed): probabilities over all E experts, keep the k
largest, optionally renormalise them to sum to one. ``order="topk_softmax"`` (Shazeer 2017
without noise, Mesh-TF): keep the k largest logits, softmax over those k only. With
renormalisation both give the same weights; without it, the first keeps the raw probabilities
(their sum tells how confident the router is).

Two options from DeepSeek-V3 (DeepSeek-AI 2024, arXiv 2412.19437, §2.1.2):

* ``gate="sigmoid"``: each expert's score is ``s_i = sigmoid(logit_i)``, independent of the
  other experts; the k selected scores are normalised to sum to one.
* ``bias_update_rate=γ``: auxiliary-loss-free load balancing. A per-expert bias
  ``b_i`` is added to the scores for the top-k *selection* only; the gate weights use the
  unbiased scores. After a training step each bias moves by ``γ · sign(mean load − load_i)``,
  the load being the number of the step's tokens assigned to expert i: an overloaded expert
  becomes less attractive, an underloaded one more, with no loss term and no gradient.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from pwlab import _checks
from pwlab.routing.base import FusedGate, LinearGate, softmax_experts
from pwlab.routing.contract import Routing, token_choice

ORDERS = ("softmax_topk", "topk_softmax")
GATES = ("softmax", "sigmoid")


class TopK(LinearGate):
    """Token choice: each token picks its ``top_k`` experts by learned scores.

    Args:
        top_k: experts per token.
        order: ``"softmax_topk"`` or ``"topk_softmax"`` (softmax gate only; see the module docstring).
        renormalize: make the k weights of a token sum to one (for k > 1; top-1 keeps the raw
            score, as Switch, so the router still gets the task loss's gradient).
        gate: ``"softmax"`` (default) or ``"sigmoid"`` (DeepSeek-V3, arXiv 2412.19437 §2.1.2:
            ``s_i = sigmoid(logit_i)``, the selected scores normalised to sum to one). With
            sigmoid scores ``Routing.probs`` holds the scores normalised over all E experts,
            ``s_i / Σ_j s_j``, so the load-balancing loss, the router entropy and the pathway
            maps read a distribution (as V3's complementary sequence-wise balance loss); the
            z-loss still reads the logits.
        bias_update_rate: γ of auxiliary-loss-free load balancing (DeepSeek-V3 §2.1.2);
            None or 0 turns it off. The bias ``expert_bias (E,)`` is a buffer (saved in
            ``state_dict``, so in checkpoints) added to the scores (softmax probabilities or
            sigmoid scores) for selection only. "After each step" is implemented as after each
            forward in training mode: the router updates the bias from the loads of the
            routing it just made (assignments proposed, before capacity), under ``no_grad``;
            with gradient accumulation it therefore updates once per micro-batch. Eval mode
            uses the bias without changing it. The bias stays float32 in a half-precision
            model (its steps are below half precision's resolution). After :meth:`sync_loads`
            (:class:`~pwlab.distributed.ExpertParallelMoE` calls it with its group) the loads
            are summed over the group's ranks before the update, so
            every rank takes the step a single process would take on all the ranks' tokens
            and the replicated routers stay identical; the sum is a collective, so every rank
            of the group must run the router's training forwards in step (as expert
            parallelism already requires).
    """

    trusted = True

    def __init__(self, *, top_k: int = 2, order: str = "softmax_topk", renormalize: bool = True,
                 gate: str = "softmax", bias_update_rate: float | None = None,
                 d_model: int | None = None, num_experts: int | None = None):
        self.order = _checks.one_of("order", order, ORDERS)
        self.renormalize = bool(renormalize)
        # the name `gate` is the linear map's (LinearGate); the score function lives here
        self.gate_fn = _checks.one_of("gate", gate, GATES)
        if self.gate_fn == "sigmoid" and self.order != "softmax_topk":
            raise ValueError(f"order must be 'softmax_topk' with gate='sigmoid' (the top-k of sigmoid scores), "
                             f"got order={order!r}")
        rate = 0.0 if bias_update_rate is None else _checks.non_negative_float("bias_update_rate", bias_update_rate)
        self.bias_update_rate = rate or None
        self._sync, self._load_group = False, None      # see sync_loads (not state: a process group)
        super().__init__(top_k=top_k, d_model=d_model, num_experts=num_experts)

    def build(self) -> None:
        super().build()
        if self.bias_update_rate:
            # only with balancing on, so the state_dict (and checkpoints) of a plain TopK is unchanged
            self.register_buffer("expert_bias", torch.zeros(self.num_experts))
        else:
            self.expert_bias = None

    def route(self, x: Tensor, *, task, token_ids, generator) -> Routing:
        logits = self.logits(x)                                   # (N, E)
        if self.gate_fn == "sigmoid":
            scores = logits.sigmoid()                             # (N, E), each in (0, 1)
            probs = scores / scores.sum(-1, keepdim=True)
        else:
            scores = probs = softmax_experts(logits)
        if self.expert_bias is not None:
            # DeepSeek-V3 §2.1.2: the bias decides which experts, never how much of each
            expert = (scores.detach() + self.expert_bias).topk(self.top_k, dim=-1).indices   # (N, k)
            if self.order == "topk_softmax":
                weight = logits.gather(-1, expert).softmax(-1)
            else:
                weight = self._normalised(scores.gather(-1, expert))
            if self.training:
                self._update_bias(expert)
        elif self.order == "softmax_topk":
            weight, expert = scores.topk(self.top_k, dim=-1)      # (N, k)
            weight = self._normalised(weight)
        else:
            top_logits, expert = logits.topk(self.top_k, dim=-1)
            weight = top_logits.softmax(-1)
        return token_choice(probs, logits, expert, weight)

    def fused_gate(self) -> FusedGate | None:
        """The plain softmax-then-top-k gate (no bias, no sigmoid, no subclass routing or scoring
        otherwise) lets :mod:`pwlab.fused` route in its place."""
        gate = self.gate
        plain = (type(self).route is TopK.route and type(self).logits is LinearGate.logits
                 and gate.bias is None and self.order == "softmax_topk" and self.gate_fn == "softmax"
                 and self.expert_bias is None)
        return FusedGate(gate.weight, self.top_k, self.renormalize) if plain else None

    def _normalised(self, weight: Tensor) -> Tensor:
        if self.renormalize and self.top_k > 1:
            # with k = 1 renormalising would make every weight 1 and cut the router off
            # from the task loss's gradient, so top-1 keeps the raw score (as Switch)
            return weight / weight.sum(-1, keepdim=True)
        return weight

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        if self.expert_bias is not None and self.expert_bias.dtype in (torch.float16, torch.bfloat16):
            # a step of γ ~ 1e-3 is below half precision's resolution once |b| ~ 0.5 (bfloat16's
            # spacing there is 2e-3): the update would silently stop, so the bias stays float32
            self.expert_bias = self.expert_bias.float()
        return out

    def sync_loads(self, group=None) -> None:
        """Sum the loads over the torch.distributed ``group`` (None: the world) before each bias
        update, so the ranks' replicated routers take one update, the one a single process
        would take on all their tokens. A collective in every training forward of the router."""
        self._sync, self._load_group = True, group

    @torch.no_grad()
    def _update_bias(self, expert: Tensor) -> None:
        """``b_i += γ · sign(mean load − load_i)`` from this routing's ``expert (N, k)``."""
        load = torch.bincount(expert.reshape(-1), minlength=self.num_experts).to(self.expert_bias.dtype)
        if self._sync:
            dist.all_reduce(load, group=self._load_group)  # the group's loads: one update on every rank
        self.expert_bias += self.bias_update_rate * torch.sign(load.mean() - load)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", order={self.order!r}, renormalize={self.renormalize}"
        if self.gate_fn != "softmax":
            s += f", gate={self.gate_fn!r}"
        if self.bias_update_rate:
            s += f", bias_update_rate={self.bias_update_rate}"
        return s
