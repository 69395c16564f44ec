"""The routing contract shared by every router.

Index legend: N tokens, E experts, A assignments, k experts per token (token choice),
C capacity per expert.

A router maps tokens ``x (N, D)`` to a :class:`Routing`: flat assignment tensors of length
A (``token``, ``expert``, ``weight``), plus the router's ``probs (N, E)`` and ``logits (N, E)``.
Token-choice top-k gives A = N·k; expert choice gives A = E·C. The same representation serves
capacity, dispatch, losses and the pathway maps, whatever the router.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from pwlab import _checks


@dataclass(frozen=True)
class Routing:
    """Token→expert assignments as flat tensors.

    Attributes:
        token:  (A,) long, index of the token of each assignment.
        expert: (A,) long, index of the expert of each assignment.
        weight: (A,) float, combine weight of each assignment (differentiable).
        rank:   (A,) long, 0 for a token's first choice, 1 for its second, ... (expert choice: 0).
        probs:  (N, E) router probabilities (softmax of ``logits`` unless the router says otherwise).
        logits: (N, E) router logits.
        kind:   ``"token_choice"`` or ``"expert_choice"`` (experts already exactly full).
        aux_losses: router-specific losses, e.g. Shazeer's importance+load (unweighted scalars).
    """

    token: Tensor
    expert: Tensor
    weight: Tensor
    rank: Tensor
    probs: Tensor
    logits: Tensor
    kind: str = "token_choice"
    aux_losses: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return self.probs.shape[0]

    @property
    def num_experts(self) -> int:
        return self.probs.shape[1]

    @property
    def num_assignments(self) -> int:
        return self.token.shape[0]

    def select(self, keep: Tensor) -> "Routing":
        """The sub-routing of the assignments where ``keep (A,)`` is true (or at indices ``keep``)."""
        return replace(self, token=self.token[keep], expert=self.expert[keep], weight=self.weight[keep], rank=self.rank[keep])

    def counts(self) -> Tensor:
        """(E,) long: assignments per expert."""
        return torch.bincount(self.expert, minlength=self.num_experts)


class Router(nn.Module):
    """Base class: ``router(x (N, D), *, task=None, token_ids=None, generator=None) -> Routing``.

    Routers can be created before the layer that owns them knows its sizes
    (``MoE(..., router=TopK(k=2))``): the layer calls :meth:`bind` with ``d_model`` and
    ``num_experts``, which creates the parameters. Given both sizes up front, a router is
    bound at once. Randomness comes only from the explicit ``generator``; in eval mode every
    router is deterministic.
    """

    #: whether the router needs ``task`` ids / ``token_ids`` in forward
    needs_task: bool = False
    needs_token_ids: bool = False

    def __init__(self, *, top_k: int = 1, d_model: int | None = None, num_experts: int | None = None):
        super().__init__()
        self.top_k = _checks.positive_int("top_k", top_k)
        self.d_model: int | None = None
        self.num_experts: int | None = None
        if d_model is not None or num_experts is not None:
            if d_model is None or num_experts is None:
                raise ValueError("give both d_model and num_experts to bind a router at construction, or neither")
            self.bind(d_model, num_experts)

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
        self._build()
        return self

    def _check_top_k(self, num_experts: int) -> None:
        if self.top_k > num_experts:
            raise ValueError(f"top_k must be between 1 and num_experts={num_experts}, got top_k={self.top_k}")

    def _build(self) -> None:
        """Create parameters once ``self.d_model`` and ``self.num_experts`` are known."""

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
        return self.route(x, task=task, token_ids=token_ids, generator=generator)

    def route(self, x: Tensor, *, task: Tensor | None, token_ids: Tensor | None,
              generator: torch.Generator | None) -> Routing:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, d_model={self.d_model}, num_experts={self.num_experts}"


def _per_token(name: str, ids: Tensor, n: int) -> Tensor:
    ids = _checks.integer_ids(name, ids)
    if ids.dim() != 1 or ids.shape[0] != n:
        raise ValueError(f"{name} must have shape (N,)=({n},), got {tuple(ids.shape)}")
    return ids.long()


def token_choice(probs: Tensor, logits: Tensor, expert: Tensor, weight: Tensor, **kw) -> Routing:
    """Build a token-choice :class:`Routing` from per-token choices ``expert, weight (N, k)``.

    Assignments are laid out token-major: assignment ``a = n·k + j`` is token n's j-th choice.
    """
    n, k = expert.shape
    token, rank = _layout(n, k, expert.device)
    return Routing(token=token, expert=expert.reshape(-1), weight=weight.reshape(-1), rank=rank,
                   probs=probs, logits=logits, **kw)


@functools.lru_cache(maxsize=64)
def _layout(n: int, k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Token and rank of each assignment in the token-major layout (cached: they only depend on n, k)."""
    token = torch.arange(n, device=device).repeat_interleave(k)
    rank = torch.arange(k, device=device).repeat(n)
    return token, rank


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
    dev = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


class LinearGate(Router):
    """A router whose logits are a learned linear map ``x·W_g`` (no bias), in float32."""

    def _build(self) -> None:
        self.gate = nn.Linear(self.d_model, self.num_experts, bias=False)
        nn.init.normal_(self.gate.weight, std=self.d_model ** -0.5)

    def logits(self, x: Tensor) -> Tensor:
        return self.gate(x.float()) if x.dtype != self.gate.weight.dtype else self.gate(x)
