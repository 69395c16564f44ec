"""The router base classes: :class:`Router` and :class:`LinearGate`, and the helpers a router draws on.

Index legend: N tokens, E experts, A assignments, k experts per token (token choice),
C capacity per expert.

A router maps tokens ``x (N, D)`` to a :class:`Routing`: flat assignment tensors of length
A (``token``, ``expert``, ``weight``), plus the router's ``probs (N, E)`` and ``logits (N, E)``.
Token-choice top-k gives A = N·k; expert choice gives A = E·C. The same representation serves
capacity, dispatch, losses and the pathway maps, whatever the router. The representation and
its check live in :mod:`pwlab.routing.contract` (re-exported here: :class:`Routing`,
:data:`ROUTING_KINDS`, :func:`token_choice`, :func:`check_routing`).

Writing a router: subclass :class:`Router` (or :class:`LinearGate` for a learned ``x·W_g``
gate), create parameters in :meth:`Router.build`, return a :class:`Routing` from
:meth:`Router.route` (:func:`token_choice` builds one from per-token ``(N, k)`` choices), and
make it available by name with :func:`pwlab.routing.register_router`. The MoE layer checks
what ``route`` returns (:func:`check_routing`). ``docs/architecture.md`` ("Write your own
router") walks through :class:`pwlab.routing.examples.TopP`.
"""
from __future__ import annotations

import inspect
import itertools
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pwlab import _checks
from pwlab.routing.contract import ROUTING_KINDS, Routing, check_routing, token_choice

__all__ = ["ROUTING_KINDS", "Routing", "check_routing", "token_choice", "Router", "FusedGate", "RouterDescription",
           "LinearGate", "softmax_experts", "noise", "uniform"]


class Router(nn.Module):
    """Base class: ``router(x (N, D), *, task=None, token_ids=None, generator=None) -> Routing``.

    Routers can be created before the layer that owns them knows its sizes
    (``MoE(..., router=TopK(top_k=2))``): the layer calls :meth:`bind` with ``d_model`` and
    ``num_experts``, which creates the parameters (:meth:`build`). Given both sizes up front, a
    router is bound at once. Randomness comes only from the explicit ``generator``; in eval
    mode every router is deterministic.

    A subclass implements:

    * :meth:`build` (optional): create parameters and buffers once ``self.d_model`` and
      ``self.num_experts`` are set (call ``super().build()`` first when subclassing a router
      that has parameters, e.g. :class:`LinearGate`, which creates ``self.gate``).
    * :meth:`route`: the routing itself (see its docstring for the contract).

    ``top_k`` (the constructor's argument) is the router's *nominal* experts per token, what
    the rest of the lab budgets for: FLOP counts (:mod:`pwlab.flops`), the width of a dense
    twin (:func:`pwlab.config.dense_baseline`) and the floor of the capacity budget. A router
    that gives every token exactly k experts declares ``top_k=k``. A router whose number of
    experts per token varies (top-p, GShard's random second expert, expert choice) declares
    the number it means on average (or at most, if it wants FLOPs bounded from above); the MoE
    layer sizes capacity from the assignments it actually proposes when they exceed
    ``N · top_k`` (see :func:`pwlab.moe.expert_capacity`), so a router that proposes more than
    it declares loses nothing to that mismatch.

    Class attributes describe the router (read them through :meth:`describe`):

    * ``needs_task`` / ``needs_token_ids``: forward needs per-token task ids / token ids.
    * ``kind``: the :attr:`Routing.kind` it returns; ``"expert_choice"`` means the router fills
      every expert itself (it owns capacity) and the layer applies none.
    * ``noise_knob`` / ``temperature_knob``: the name of the constructor argument (and
      attribute) that sets the routing noise / temperature, or None.
    * ``trusted``: the layer skips the value-range checks of :func:`check_routing` (the ones
      that synchronise with the device) for this router. Set on pwlab's own routers, whose
      tests prove their ranges; not inherited, so a subclass defined elsewhere is checked
      until it sets ``trusted = True`` itself.
    """

    #: whether the router needs ``task`` ids / ``token_ids`` in forward
    needs_task: bool = False
    needs_token_ids: bool = False
    #: the Routing.kind this router returns (``"expert_choice"``: it owns capacity)
    kind: str = "token_choice"
    #: constructor argument (and attribute) setting the routing noise / temperature, if any
    noise_knob: str | None = None
    temperature_knob: str | None = None
    #: skip the value-range checks (they synchronise); not inherited, see the class docstring
    trusted: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "trusted" not in cls.__dict__:
            cls.trusted = False      # a subclass earns trust itself, it does not inherit it

    @classmethod
    def describe(cls) -> "RouterDescription":
        """The router's knobs, read from its class attributes and constructor signature."""
        params = inspect.signature(cls.__init__).parameters
        return RouterDescription(
            name=cls.__name__, top_k="top_k" in params, noise=cls.noise_knob, temperature=cls.temperature_knob,
            kind=cls.kind, owns_capacity=cls.kind == "expert_choice", needs_task=cls.needs_task,
            needs_token_ids=cls.needs_token_ids, num_tasks="num_tasks" in params, trusted=cls.trusted)

    def __init__(self, *, top_k: int = 1, d_model: int | None = None, num_experts: int | None = None):
        super().__init__()
        self.top_k = _checks.positive_int("top_k", top_k)
        self.d_model: int | None = None
        self.num_experts: int | None = None
        if d_model is not None or num_experts is not None:
            if d_model is None or num_experts is None:
                raise ValueError("give both d_model and num_experts to bind a router at construction, or neither")
            self.bind(d_model, num_experts)

    # -- slicing to a subset of experts ---------------------------------------------------
    #: state entries holding expert ids (remapped when slicing), e.g. a hash table
    expert_id_tables: tuple[str, ...] = ()

    def expert_axis(self, name: str, tensor: Tensor) -> int | None:
        """The axis of state entry ``name`` that runs over the experts (None: not per expert).

        The default covers linear gates (``nn.Linear(d_model, num_experts)`` stores its weight
        as (E, D)) and per-expert buffers such as a balancing bias (E,): axis 0 when its size is
        num_experts. A router whose state lays experts out otherwise overrides this.
        """
        return 0 if tensor.dim() >= 1 and tensor.shape[0] == self.num_experts else None

    def sliced_state(self, keep) -> dict[str, Tensor]:
        """This router's state for a copy that routes over the experts ``keep`` only.

        ``keep``: the kept expert ids; the copy's expert i is this router's ``keep[i]``. Per-expert
        axes (:meth:`expert_axis`) are indexed by ``keep``; expert-id tables
        (``expert_id_tables``) are remapped, ids of dropped experts going to the copy's expert 0.
        Used by :func:`pwlab.pathways.extract_subnetwork`.
        """
        keep = torch.as_tensor(list(keep), dtype=torch.long)
        remap = torch.zeros(self.num_experts, dtype=torch.long)
        remap[keep] = torch.arange(len(keep))
        out = {}
        for name, t in self.state_dict().items():
            if name in self.expert_id_tables:
                out[name] = remap.to(t.device)[t]
                continue
            axis = self.expert_axis(name, t)
            out[name] = t if axis is None else t.index_select(axis, keep.to(t.device))
        return out

    # -- sizes -------------------------------------------------------------------------
    def bind(self, d_model: int, num_experts: int) -> "Router":
        """Fix the sizes and create the parameters; binding twice to the same sizes is a no-op."""
        _checks.positive_int("d_model", d_model)
        _checks.positive_int("num_experts", num_experts)
        if self.d_model is not None:
            if (self.d_model, self.num_experts) != (d_model, num_experts):
                raise ValueError(
                    f"router already bound to d_model={self.d_model}, num_experts={self.num_experts}; "
                    f"cannot rebind to d_model={d_model}, num_experts={num_experts}"
                )
            return self
        self._check_top_k(num_experts)
        _checks.num_elements("the router's weight", d_model=d_model, num_experts=num_experts)
        self.d_model, self.num_experts = d_model, num_experts
        if type(self)._build is not Router._build:
            # a router written before build() was public: its _build still runs
            warnings.warn(f"{type(self).__name__}._build is deprecated: name the method build (the public hook)",
                          DeprecationWarning, stacklevel=2)
            self._build()
        else:
            self.build()
        return self

    def _check_top_k(self, num_experts: int) -> None:
        if self.top_k > num_experts:
            raise ValueError(f"top_k must be between 1 and num_experts={num_experts}, got top_k={self.top_k}")

    def build(self) -> None:
        """Create parameters and buffers; called once by :meth:`bind`, with ``self.d_model`` and
        ``self.num_experts`` set. The base router has none."""

    def _build(self) -> None:
        """Deprecated name of :meth:`build` (a subclass that overrides it still works, with a warning)."""
        self.build()

    # -- forward -----------------------------------------------------------------------
    def forward(self, x: Tensor, *, task: Tensor | None = None, token_ids: Tensor | None = None,
                generator: torch.Generator | None = None) -> Routing:
        if self.d_model is None:
            raise RuntimeError(f"{type(self).__name__} is not bound: pass d_model and num_experts, or use it inside MoE")
        _checks.float_input("x", x, self._device())
        if x.dim() != 2:
            raise ValueError(f"x must be (N, d_model), got shape {tuple(x.shape)}")
        _checks.last_dim("x", x, self.d_model)
        _checks.finite_tensor("x", x)
        _checks.generator("generator", generator)
        return self.route_checked(x, task=task, token_ids=token_ids, generator=generator)

    def _device(self) -> torch.device | None:
        """The device of the router's parameters or buffers (None for a router that has none)."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return None

    def route_checked(self, x: Tensor, *, task: Tensor | None = None, token_ids: Tensor | None = None,
                      generator: torch.Generator | None = None) -> Routing:
        """:meth:`forward` for a caller that has already checked ``x`` (N, d_model) and finite."""
        n = x.shape[0]
        if self.needs_task:
            if task is None:
                raise ValueError(f"{type(self).__name__} routes by task: pass task=(N,) task ids")
            task = _per_token("task", task, n)
        if self.needs_token_ids:
            if token_ids is None:
                raise ValueError(f"{type(self).__name__} routes by token id: pass token_ids=(N,) ids")
            token_ids = _per_token("token_ids", token_ids, n)
        routing = self.route(x, task=task, token_ids=token_ids, generator=generator)
        check_routing(routing, self, num_tokens=n, num_experts=self.num_experts, device=x.device,
                      values=not type(self).trusted)
        return routing

    def route(self, x: Tensor, *, task: Tensor | None, token_ids: Tensor | None,
              generator: torch.Generator | None) -> Routing:  # pragma: no cover - abstract
        """Route ``x (N, d_model)``; return a :class:`Routing`. The one method a router must write.

        Inputs (checked by the caller): ``x`` finite, on the router's device; ``task`` (N,) long
        task ids when ``needs_task`` (else None); ``token_ids`` (N,) long when
        ``needs_token_ids`` (else None); ``generator``: the only source of randomness allowed
        (None in tests and eval; draw with :func:`noise` / :func:`uniform`). ``self.training``
        says whether to add training-only noise.

        The returned :class:`Routing` (checked by :func:`check_routing`, errors name the router):

        * ``token``, ``expert``, ``rank``: (A,) integer tensors, ``weight`` (A,) floating
          point, all of one length A (any A >= 0, the same or not from one call to the next);
          ``token`` in [0, N), ``expert`` in [0, E), ``rank`` >= 0 (0 for a token's first
          choice: capacity keeps lower ranks first).
        * ``weight``: the combine weight of each assignment, differentiable when the router
          learns (the task loss reaches the router only through it).
        * ``probs``, ``logits``: (N, E). ``probs`` is a distribution over experts per token
          (the balancing loss, entropies and pathway maps read it), ``logits`` feed the z-loss.
        * ``kind``: ``"token_choice"`` (the layer applies capacity) or ``"expert_choice"``
          (the router already filled every expert; no capacity is applied).
        * ``aux_losses``: the router's own unweighted losses, added to ``MoEStats.aux_losses``.

        :func:`token_choice` builds it from per-token choices ``expert, weight (N, k)``.
        """
        raise NotImplementedError

    def fused_gate(self) -> "FusedGate | None":
        """What the one-node top-k layer (:mod:`pwlab.fused`) needs to route in this router's
        place — a :class:`FusedGate` — when this router's routing is exactly its plain linear
        softmax-then-top-k gate; None (the default) when the router must route itself."""
        return None

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, d_model={self.d_model}, num_experts={self.num_experts}"


class FusedGate(NamedTuple):
    """A router that routes as ``softmax(x · weightᵀ)`` then top-``k`` (weights renormalised to
    sum to one for k > 1 when ``renormalize``), for the one-node layer (:meth:`Router.fused_gate`)."""

    weight: Tensor
    k: int
    renormalize: bool


@dataclass(frozen=True)
class RouterDescription:
    """What a router class offers, for config, the playground and FLOP counting (:meth:`Router.describe`).

    Attributes:
        name: the class name.
        top_k: the constructor takes ``top_k`` (experts per token); the others fix it themselves.
        noise: the constructor argument (and attribute) setting routing noise, or None.
        temperature: the constructor argument (and attribute) setting a temperature, or None.
        kind: the :attr:`Routing.kind` it returns.
        owns_capacity: the router fills every expert itself (expert choice): the layer's
            capacity factor does not apply.
        needs_task / needs_token_ids: forward needs per-token task ids / token ids.
        num_tasks: the constructor takes ``num_tasks``.
        trusted: the layer skips the value-range checks of its routings.
    """

    name: str
    top_k: bool
    noise: str | None
    temperature: str | None
    kind: str
    owns_capacity: bool
    needs_task: bool
    needs_token_ids: bool
    num_tasks: bool
    trusted: bool


def _per_token(name: str, ids: Tensor, n: int) -> Tensor:
    ids = _checks.integer_ids(name, ids)
    if ids.dim() != 1 or ids.shape[0] != n:
        raise ValueError(f"{name} must have shape (N,)=({n},), got {tuple(ids.shape)}")
    return ids.long()


def softmax_experts(logits: Tensor) -> Tensor:
    """Softmax over experts of ``logits (N, E)``.

    Computed on the transposed (E, N) view: the same values, but PyTorch's CPU softmax over a
    short last dimension (E = 8) is several times slower than over the first one.
    """
    return logits.t().softmax(0).t()


def noise(shape, *, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise drawn only from ``generator`` (on the generator's device)."""
    dev = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def uniform(shape, *, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) noise drawn only from ``generator`` (on the generator's device)."""
    dev = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


class LinearGate(Router):
    """A router whose logits are a learned linear map ``x·W_g`` (no bias), in float32.

    :meth:`build` creates ``self.gate`` (``nn.Linear(d_model, num_experts, bias=False)``);
    :meth:`logits` applies it. A subclass that adds parameters calls ``super().build()`` first.
    """

    trusted = True

    def build(self) -> None:
        self.gate = nn.Linear(self.d_model, self.num_experts, bias=False)
        nn.init.normal_(self.gate.weight, std=self.d_model ** -0.5)

    def logits(self, x: Tensor) -> Tensor:
        return self.gate(x.float()) if x.dtype != self.gate.weight.dtype else self.gate(x)
