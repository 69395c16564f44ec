"""The mixture-of-experts layer: route → capacity → dispatch → experts → combine → (y, MoEStats).

Index legend: N tokens, D d_model, H d_hidden, E experts, k experts per token,
A assignments (A = N·k for token choice), C capacity per expert.

Capacity. ``capacity_factor=None`` is dropless. Otherwise the default convention
``"k_tokens"`` gives ``C = ceil(cf · k · N / E)`` (DeepSpeed, megablocks, tutel: cf = 1 means
"exactly enough slots if routing is balanced"); ``"tokens"`` gives ``C = ceil(cf · N / E)``
(Mesh-TF, flaxformer: the k is folded into cf). A router whose number of experts per token
varies (top-p) may propose more assignments A than the ``N · k`` its ``top_k`` declares:
``"k_tokens"`` then sizes capacity from what it proposed, ``C = ceil(cf · A / E)`` (the same
formula when A = N·k), so cf = 1 keeps meaning "enough slots if balanced". The layer reads
how to treat a routing from the routing itself: ``Routing.kind == "expert_choice"`` (the
router filled every expert) gets no capacity. The routing is checked first
(:func:`pwlab.routing.check_routing`): a router that breaks the contract gets an error that
names it, not an ``IndexError`` deep in dispatch. When an expert is over capacity, assignments
are kept in priority order: ``drop_policy="position"`` takes first choices before second
choices, then earlier tokens first (GShard's cumsum order); ``"probability"`` takes first
choices before second choices, then higher router weight first (batch-prioritized routing,
Riquelme et al. 2021). A dropped assignment contributes nothing; the block's residual carries
the token.

Backends. The forward path is route → capacity → ``layer.backend(x, routing, kept, experts)``
→ stats (:class:`pwlab.dispatch.Backend`). ``dispatch="fast"`` (:class:`~pwlab.dispatch.PaddedDispatch`)
sorts the kept assignments by expert into a padded (E, C, D) buffer and runs every expert at
once with two batched matmuls; ``dispatch="loop"`` (:class:`~pwlab.dispatch.LoopDispatch`) is
the plain reference, one expert at a time (as transformers' Mixtral); the expert-parallel
backend (:class:`pwlab.distributed.ep_moe.ExpertParallelDispatch`) runs each expert on the
rank that holds it. Tests tie them together, values and gradients. The padded backend has a
fast form: when the router declares it is the plain softmax-then-top-k gate
(``Router.fused_gate()``, :class:`~pwlab.routing.TopK` with its defaults) and the bank the
plain FFN (``plain_ffn()``), with position priority, the whole call — routing included — runs
as a single autograd node (:mod:`pwlab.fused`): the same maths with two thirds of the
operations; set ``layer.fused = False`` to force the general path (``layer.backend_for(x)``
says which a call takes). Its routing comes back rank-major (all first choices, then all
second choices); ``token`` and ``rank`` say which assignment is which, as for every router.

Expert kinds. ``expert="ffn"`` (default) is the two-matrix FFN with biases
(:class:`~pwlab.experts.ExpertBank`); ``expert="swiglu"`` the gated expert of Mixtral, Qwen-MoE,
OLMoE and DeepSeek-MoE, ``down(silu(gate(x)) * up(x))`` without biases
(:class:`~pwlab.experts.GatedExpertBank`). The fused path is for the plain bank only; a gated
bank takes the fast padded dispatch (plain autograd through ``forward_padded``) or the loop.

DeepSeek-MoE's shared experts (``num_shared_experts``, ``shared_gate``) and fine-grained experts
(:meth:`MoE.fine_grained`) are built and run by :mod:`pwlab.deepseek_moe`. :class:`MoEStats`
(:mod:`pwlab.moe_stats`) and the argument checks (:mod:`pwlab.moe_inputs`) have their own modules;
this one is the layer and its forward path.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from pwlab import _checks, fused, losses
from pwlab.deepseek_moe import fine_grained_router, make_shared, shared_forward
from pwlab.dispatch import (DISPATCH_BACKENDS, Backend, apply_capacity, dispatch_fast, dispatch_loop,  # noqa: F401
                            keep, slot_positions, sort_by_priority)
from pwlab.experts import make_experts
from pwlab.moe_inputs import checked_tokens, expert_indices
from pwlab.moe_stats import MoEStats, _FusedStats
from pwlab.routing.base import Router
from pwlab.routing.contract import Routing
from pwlab.routing.topk import TopK

CAPACITY_CONVENTIONS = ("k_tokens", "tokens")
DROP_POLICIES = ("position", "probability")
DISPATCHES = ("fast", "loop")
#: ``layer.dropless_layout``, for a dropless call on the one-node path (:mod:`pwlab.fused`):
#: ``"grouped"`` sorts the N·k assignments by expert into exactly N·k rows (one matmul per
#: expert), ``"padded"`` pads every expert to the fullest one's count (one batched matmul, more
#: rows), ``"auto"`` takes ``"grouped"`` from :data:`pwlab.fused.GROUPED_MIN_ROWS` rows per
#: expert on average (``pwlab bench moe --dropless-layout`` times each)
DROPLESS_LAYOUTS = ("auto", "grouped", "padded")
AUX_LOSSES = ("load_balancing", "z_loss", "importance_load", "entropy_local", "entropy_global")
DEFAULT_AUX_WEIGHTS = {"load_balancing": 1e-2, "z_loss": 1e-3, "importance_load": 1e-2,
                       "entropy_local": 0.0, "entropy_global": 0.0}


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float | None,
                    convention: str = "k_tokens", num_assignments: int | None = None) -> int | None:
    """Slots per expert for ``num_tokens`` tokens, or None (dropless).

    ``num_assignments``: the A the router proposed, when known. With ``"k_tokens"`` the budget
    is ``max(A, N·top_k)`` assignments: a router proposing more than it declares (top-p) gets
    slots for them, one proposing fewer (GShard's dropped second experts) keeps the declared
    budget. ``"tokens"`` ignores both k and A.
    """
    if capacity_factor is None:
        return None
    budget = num_tokens * top_k
    if num_assignments is not None:
        budget = max(budget, num_assignments)
    slots = capacity_factor * (budget if convention == "k_tokens" else num_tokens) / num_experts
    return int(math.ceil(slots - 1e-9)) if num_tokens else 0


class MoE(nn.Module):
    """A sparse FFN: each token runs through the few experts its router picks.

    Args:
        d_model: token width D.
        d_hidden: each expert's hidden width H.
        num_experts: E.
        router: a :class:`~pwlab.routing.Router` (default ``TopK(top_k=2)``); bound to
            ``(d_model, num_experts)`` here.
        capacity_factor: None for dropless, else > 0 (see the module docstring).
        capacity_convention: ``"k_tokens"`` (C = ceil(cf·k·N/E)) or ``"tokens"`` (C = ceil(cf·N/E)).
        drop_policy: ``"position"`` or ``"probability"``.
        dispatch: ``"fast"`` or ``"loop"`` (reference).
        aux_weights: weights of the auxiliary losses summed into ``MoEStats.aux_loss``;
            missing names take :data:`DEFAULT_AUX_WEIGHTS`.
        activation: the experts' nonlinearity; None takes the kind's own (GELU for ``"ffn"``,
            SiLU for ``"swiglu"``, which refuses any other).
        expert: the expert kind, ``"ffn"`` (two matrices with biases) or ``"swiglu"`` (gated,
            no biases; see :data:`pwlab.experts.EXPERT_KINDS`).
        num_shared_experts: s ≥ 0 always-on experts of the same kind and width, added to the
            routed output of every token (DeepSeek-MoE); kept in ``layer.shared_experts``.
        shared_gate: scale the shared experts' sum by a learned per-token sigmoid gate,
            ``sigmoid(x·w_s)`` with ``w_s`` in ``layer.shared_gate`` (a bias-free
            ``nn.Linear(d_model, 1)``), as Qwen-MoE does; needs ``num_shared_experts ≥ 1``.
    """

    def __init__(self, d_model: int, d_hidden: int, num_experts: int, router: Router | None = None, *,
                 capacity_factor: float | None = None, capacity_convention: str = "k_tokens",
                 drop_policy: str = "position", dispatch: str = "fast",
                 aux_weights: dict[str, float] | None = None, activation: str | None = None,
                 num_groups: int | None = None,
                 expert: str = "ffn", num_shared_experts: int = 0, shared_gate: bool = False):
        super().__init__()
        _checks.positive_int("num_experts", num_experts)
        _checks.positive_int("d_model", d_model)
        capacity_factor = _checks.positive_float("capacity_factor", capacity_factor, allow_none=True)
        self.capacity_convention = _checks.one_of("capacity_convention", capacity_convention, CAPACITY_CONVENTIONS)
        self.drop_policy = _checks.one_of("drop_policy", drop_policy, DROP_POLICIES)
        self.dispatch = _checks.one_of("dispatch", dispatch, DISPATCHES)
        weights = dict(DEFAULT_AUX_WEIGHTS)
        for name, w in (aux_weights or {}).items():
            _checks.one_of("aux_weights key", name, AUX_LOSSES)
            weights[name] = _checks.non_negative_float(f"aux_weights[{name!r}]", w)
        self.aux_weights = weights
        self.num_groups = None if num_groups is None else _checks.positive_int("num_groups", num_groups)
        if router is None:
            router = TopK(top_k=2)
        if not isinstance(router, Router):
            raise ValueError(f"router must be a pwlab.routing.Router, got {type(router).__name__}")
        self.router = router.bind(d_model, num_experts)
        self._capacity_factor = None
        if self.router.kind == "expert_choice":
            # one capacity factor per layer: a router that fills every expert itself owns it
            if capacity_factor is not None and capacity_factor != getattr(self.router, "capacity_factor", None):
                raise ValueError(
                    f"capacity_factor is set twice: {type(router).__name__} fills every expert itself with its own "
                    f"capacity_factor={self.router.capacity_factor}, and the layer got capacity_factor="
                    f"{capacity_factor}; set it in one place (e.g. {type(router).__name__}(capacity_factor="
                    f"{capacity_factor}), layer capacity_factor=None)")
        else:
            self._capacity_factor = capacity_factor
        # expert kinds and DeepSeek-MoE's shared experts (routing never sees the shared ones)
        self.experts = make_experts(expert, num_experts, d_model, d_hidden, activation)
        self.expert_kind = expert
        self.num_shared_experts = _checks.positive_int("num_shared_experts", num_shared_experts, minimum=0)
        self.shared_experts, self.shared_gate = make_shared(expert, self.num_shared_experts, d_model, d_hidden,
                                                            activation, shared_gate)
        self.granularity = 1         # m of MoE.fine_grained (shown in the repr)
        self.d_model, self.d_hidden, self.num_experts = d_model, d_hidden, num_experts
        # experts switched off for ablation (see `disabled`); not saved in checkpoints
        self.register_buffer("enabled", torch.ones(num_experts, dtype=torch.bool), persistent=False)
        self._all_enabled = True
        #: take the one-node path of :mod:`pwlab.fused` when the configuration allows it
        #: (False forces the general path; tests compare the two)
        self.fused = True
        #: how that path lays out a dropless call (see :data:`DROPLESS_LAYOUTS`)
        self.dropless_layout = "auto"
        self._backend: Backend | None = None       # see `backend`

    @property
    def top_k(self) -> int:
        return self.router.top_k

    @property
    def capacity_factor(self) -> float | None:
        """The layer's one capacity factor: None (dropless) or > 0. Under a router that fills
        every expert itself (``Routing.kind == "expert_choice"``) it is the router's own, read and
        set through the layer (experts then take ``ceil(N·cf/E)`` tokens each)."""
        if self.router.kind == "expert_choice":
            return getattr(self.router, "capacity_factor", None)
        return self._capacity_factor

    @capacity_factor.setter
    def capacity_factor(self, value: float | None) -> None:
        if self.router.kind == "expert_choice":
            if value is None:
                raise ValueError(f"capacity_factor must be a number in (0, num_experts={self.num_experts}] under "
                                 f"{type(self.router).__name__} (experts fill themselves: there is no dropless "
                                 f"expert choice), got None")
            if not hasattr(self.router, "set_capacity_factor"):
                raise ValueError(f"capacity_factor cannot be set on this layer: {type(self.router).__name__} fills "
                                 f"every expert itself and has no set_capacity_factor(value)")
            self.router.set_capacity_factor(value)
        else:
            self._capacity_factor = _checks.positive_float("capacity_factor", value, allow_none=True)

    def capacity(self, num_tokens: int, num_assignments: int | None = None, kind: str | None = None) -> int | None:
        """C for ``num_tokens`` tokens (and ``num_assignments`` proposed ones, when known), or None.

        ``kind``: the routing's kind (default: the kind the router declares); expert choice
        gets None, its router having filled every expert already."""
        if (kind or self.router_kind) == "expert_choice":
            return None
        return expert_capacity(num_tokens, self.num_experts, self.top_k, self.capacity_factor, self.capacity_convention,
                               num_assignments)

    @property
    def router_kind(self) -> str:
        """The :attr:`Routing.kind` the router declares (``Router.kind``); forward reads each routing's own."""
        return self.router.kind

    @contextmanager
    def disabled(self, experts):
        """Within the block, assignments to ``experts`` are dropped (their output is zero).

        ``experts``: an iterable of expert indices (ints in ``[0, num_experts)``), e.g. ``[0, 3]``."""
        idx = expert_indices(experts, self.num_experts, self.enabled.device)
        before, before_flag = self.enabled.clone(), self._all_enabled
        self.enabled[idx] = False
        self._all_enabled = bool(self.enabled.all())
        try:
            yield self
        finally:
            self.enabled.copy_(before)
            self._all_enabled = before_flag

    def forward(self, x: Tensor, *, mask: Tensor | None = None, task: Tensor | None = None,
                token_ids: Tensor | None = None, groups: Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[Tensor, MoEStats]:
        """Args: x (..., D), finite where ``mask`` is true; mask (...) bool, True for real tokens
        (padding is not routed, so it is not checked either); task / token_ids / groups (...)
        per token ids. Returns y (..., D) and :class:`MoEStats`."""
        flat, per_token, real = checked_tokens(x, mask, generator, d_model=self.d_model, device=self.enabled.device,
                                               dtype=self.experts.w1.dtype, task=task, token_ids=token_ids, groups=groups)
        y, stats = self._forward_tokens(flat, generator=generator, **per_token)   # route → capacity → backend → stats
        if self.shared_experts is not None:
            y = y + shared_forward(self.shared_experts, self.shared_gate, flat, loop=self.dispatch == "loop")
        if real is not None:                                                       # padding rows get zeros
            y = x.new_zeros(real.shape[0], self.d_model).index_copy(0, torch.nonzero(real).flatten(), y)
        return y.view(x.shape), stats

    @classmethod
    def fine_grained(cls, d_model: int, d_hidden: int, num_experts: int, m: int, *, top_k: int = 2,
                     router: str = "topk", router_kwargs: dict | None = None, **kw) -> "MoE":
        """DeepSeek-MoE's fine-grained experts: the E-expert top-k layer with each expert split in m.

        Builds ``m·num_experts`` experts of width ``d_hidden/m`` routed top-``m·top_k``: the same
        expert FLOPs per token and the same expert weight matrices as ``MoE(d_model, d_hidden,
        num_experts, top-k)``; the router's gate grows to m·E outputs, and a ``"ffn"`` bank's
        output biases to m·E of them. ``num_shared_experts`` in ``kw`` counts fine-grained
        experts (width ``d_hidden/m``), as in the paper.

        Args:
            d_model, d_hidden, num_experts: the coarse layer's D, H and E.
            m: the granularity (≥ 1); must divide ``d_hidden``.
            top_k: the coarse layer's experts per token.
            router: a name of :data:`pwlab.routing.ROUTERS` whose constructor takes ``top_k``
                (it gets ``top_k=m·top_k``); ``router_kwargs`` are its other arguments.
            **kw: the other :class:`MoE` arguments.
        """
        m, built = fine_grained_router(d_hidden, num_experts, m, top_k, router, router_kwargs)
        layer = cls(d_model, d_hidden // m, m * num_experts, built, **kw)
        layer.granularity = m
        return layer

    # -- the forward path: route → capacity → backend → stats --------------------------------
    @property
    def backend(self) -> Backend:
        """What runs the experts (:class:`pwlab.dispatch.Backend`): the one named by ``dispatch``
        (``"fast"``: :class:`~pwlab.dispatch.PaddedDispatch`, ``"loop"``:
        :class:`~pwlab.dispatch.LoopDispatch`) unless one is set here (the expert-parallel layer
        sets :class:`~pwlab.distributed.ep_moe.ExpertParallelDispatch`)."""
        if self._backend is not None:
            return self._backend
        return DISPATCH_BACKENDS[_checks.one_of("dispatch", self.dispatch, DISPATCHES)]

    @backend.setter
    def backend(self, value: Backend | None) -> None:
        if value is not None and not isinstance(value, Backend):
            raise TypeError(f"backend must be a pwlab.dispatch.Backend or None, got {type(value).__name__}")
        self._backend = value

    def backend_for(self, x: Tensor) -> str:
        """The name of the backend a call on tokens ``x (N, D)`` takes: ``"fused"`` (the padded
        backend's one-node form, which routes too), else :attr:`backend`'s name."""
        return "fused" if self._fused_plan(x, self.backend) is not None else self.backend.name

    def _forward_tokens(self, x: Tensor, *, task=None, token_ids=None, groups=None,
                        generator=None) -> tuple[Tensor, MoEStats]:
        """Route → capacity → backend → stats on the real tokens ``x (N, D)``."""
        backend = self.backend
        plan = self._fused_plan(x, backend)
        if plan is not None:                            # the router lets the one-node layer route for it
            return self._forward_fused(x, plan, groups)
        _checks.finite_tensor("x", x)                   # once here; the router trusts its caller
        proposed = self.router.route_checked(x, task=task, token_ids=token_ids, generator=generator)   # (A,)
        cap = self.capacity(x.shape[0], proposed.num_assignments, proposed.kind)      # None: dropless / expert choice
        kept = keep(proposed, cap, self.drop_policy, None if self._all_enabled else self.enabled)
        y = backend(x, proposed, kept, self.experts)
        stats = MoEStats(counts=kept.counts, proposed_counts=kept.proposed_counts, capacity=cap, proposed=proposed,
                         kept=kept.mask, **self._aux(proposed, kept.proposed_counts, groups))
        return y, backend.finish(stats)

    def _fused_plan(self, x: Tensor, backend: Backend):
        """What :mod:`pwlab.fused` needs to run this call as one node (the padded backend's maths
        with a third fewer operations), or None: the padded backend, position priority, a
        non-empty batch, and a router and bank that declare they allow it."""
        if not (self.fused and backend is DISPATCH_BACKENDS["fast"] and self.drop_policy == "position"
                and x.shape[0] > 0):
            return None
        return fused.plan(self.router, self.experts, x.dtype)

    def _forward_fused(self, x: Tensor, plan, groups: Tensor | None) -> tuple[Tensor, MoEStats]:
        gate, (w1, b1, w2, b2) = plan
        cap = self.capacity(x.shape[0])
        y, logits_t, probs_t, weight_t, lb, z, aux_loss, expert_t, kept, counts, kept_counts, finite = fused.topk_moe(
            x, gate.weight, w1, b1, w2, b2, k=gate.k, renormalize=gate.renormalize, capacity=cap,
            activation=self.experts.activation, w_lb=self.aux_weights["load_balancing"],
            w_z=self.aux_weights["z_loss"], enabled=None if self._all_enabled else self.enabled,
            grouped=cap is None and self._grouped(x.shape[0], gate.k))
        if not finite:
            # any NaN or Inf in x makes its token's logits, and so z, non-finite: one number to
            # look at instead of a pass over x (a finite x cannot overflow here in practice)
            _checks.finite_tensor("x", x)
        aux = {"load_balancing": lb, "z_loss": z}
        for name, value in self._group_entropies(probs_t.t(), groups).items():
            aux[name] = value
            aux_loss = aux_loss + self.aux_weights[name] * value
        return y, _FusedStats((expert_t, weight_t, probs_t, logits_t), counts=kept_counts, proposed_counts=counts,
                              capacity=cap, kept=kept, aux_losses=aux, aux_loss=aux_loss)

    def _grouped(self, num_tokens: int, top_k: int | None = None) -> bool:
        """Whether a dropless call of ``num_tokens`` tokens takes the unpadded layout."""
        layout = self.dropless_layout
        if layout == "auto":
            k = self.top_k if top_k is None else top_k
            return num_tokens * k >= fused.GROUPED_MIN_ROWS * self.num_experts
        return layout == "grouped"

    @property
    def dropless_layout(self) -> str:
        """How the one-node path lays out a dropless call: one of :data:`DROPLESS_LAYOUTS`."""
        return self._dropless_layout

    @dropless_layout.setter
    def dropless_layout(self, value: str) -> None:
        self._dropless_layout = _checks.one_of("dropless_layout", value, DROPLESS_LAYOUTS)

    def _aux(self, proposed: Routing, counts: Tensor, groups: Tensor | None) -> dict:
        aux: dict[str, Tensor] = {}
        if proposed.kind == "token_choice":
            aux["load_balancing"] = losses.load_balancing(proposed.probs, proposed.expert, counts=counts, check_finite=False)
        aux["z_loss"] = losses.z_loss(proposed.logits, check_finite=False)
        aux.update(proposed.aux_losses)
        aux.update(self._group_entropies(proposed.probs, groups))
        total = proposed.probs.new_zeros(())
        for name, value in aux.items():
            if self.aux_weights.get(name, 0.0):
                total = total + self.aux_weights[name] * value
        return {"aux_losses": aux, "aux_loss": total}

    def _group_entropies(self, probs: Tensor, groups: Tensor | None) -> dict:
        """LIMoE's per-group local/global entropy losses, when groups are given and either is weighted."""
        if groups is None or not (self.aux_weights["entropy_local"] or self.aux_weights["entropy_global"]):
            return {}
        return losses.limoe_entropy_losses(probs, groups, self.num_groups, check_finite=False)

    def extra_repr(self) -> str:
        return (f"capacity_factor={self.capacity_factor}, capacity_convention={self.capacity_convention!r}, "
                f"drop_policy={self.drop_policy!r}, dispatch={self.dispatch!r}"
                + self._experts_repr())

    def _experts_repr(self) -> str:
        """The expert kind, shared experts and granularity, where not the defaults."""
        out = "" if self.expert_kind == "ffn" else f", expert={self.expert_kind!r}"
        out += f", num_shared_experts={self.num_shared_experts}" if self.num_shared_experts else ""
        out += ", shared_gate=True" if self.shared_gate is not None else ""
        return out + (f", granularity={self.granularity}" if self.granularity != 1 else "")
