"""The routing contract: the :class:`Routing` every router returns, and the check that refuses one
that breaks it.

Index legend: N tokens, E experts, A assignments, k experts per token (token choice),
C capacity per expert.

A :class:`Routing` is token→expert assignments as flat tensors of length A (``token``,
``expert``, ``weight``, ``rank``) plus the router's ``probs (N, E)`` and ``logits (N, E)``;
:func:`token_choice` builds one from per-token ``(N, k)`` choices. :func:`check_routing` is what
the MoE layer runs on every routing (through :meth:`pwlab.routing.base.Router.route_checked`):
a router that breaks the contract gets an error naming it, not an ``IndexError`` deep in
dispatch.

Separate from :mod:`pwlab.routing.base` (the :class:`~pwlab.routing.base.Router` class) because
the representation and its check are read by every consumer of a routing — capacity, dispatch,
losses, the pathway maps — and by no router's parameters; ``pwlab.routing.base`` re-exports
these names, so they import from either place.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

#: the two kinds of :class:`Routing`: how the MoE layer treats it
ROUTING_KINDS = ("token_choice", "expert_choice")


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


def check_routing(routing, router, *, num_tokens: int, num_experts: int, device: torch.device | None = None,
                  values: bool = True) -> None:
    """Refuse a :class:`Routing` that breaks the contract of :meth:`Router.route`, naming the router.

    Shapes, dtypes, lengths, the kind and the device are checked always (attribute reads, no
    synchronisation); with ``values`` also the ranges of ``token``, ``expert`` and ``rank``
    (one reduction and one device→host copy). A ``TypeError`` for a wrong type or dtype, a
    ``ValueError`` for a wrong shape, kind or value.
    """
    who = router if isinstance(router, str) else type(router).__name__
    where = f"{who}.route returned"
    if not isinstance(routing, Routing):
        raise TypeError(f"{where} a {type(routing).__name__}; a router must return a pwlab.routing.Routing "
                        f"(pwlab.routing.token_choice builds one from per-token (N, k) choices)")
    if routing.kind not in ROUTING_KINDS:
        raise ValueError(f"{where} a Routing with kind={routing.kind!r}; kind must be one of "
                         f"{', '.join(map(repr, ROUTING_KINDS))}")
    flat = {name: getattr(routing, name) for name in ("token", "expert", "weight", "rank")}
    for name, t in flat.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{where} a Routing whose {name} is a {type(t).__name__}, not a torch.Tensor")
        if t.dim() != 1:
            raise ValueError(f"{where} a Routing whose {name} has shape {tuple(t.shape)}; token, expert, weight "
                             f"and rank must be 1-D (A,), one entry per assignment")
    lengths = {name: t.shape[0] for name, t in flat.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where} a Routing whose token, expert, weight and rank differ in length ({lengths}); "
                         f"they must all have length A, one entry per assignment")
    for name in ("token", "expert", "rank"):
        dt = flat[name].dtype
        if dt == torch.bool or dt.is_floating_point or dt.is_complex:
            raise TypeError(f"{where} a Routing whose {name} has dtype {dt}; it must be an integer dtype "
                            f"(torch.long)")
    if not routing.weight.is_floating_point():
        raise TypeError(f"{where} a Routing whose weight has dtype {routing.weight.dtype}; it must be floating "
                        f"point (the combine weights)")
    for name in ("probs", "logits"):
        t = getattr(routing, name)
        if not isinstance(t, Tensor):
            raise TypeError(f"{where} a Routing whose {name} is a {type(t).__name__}, not a torch.Tensor")
        if tuple(t.shape) != (num_tokens, num_experts):
            raise ValueError(f"{where} a Routing whose {name} has shape {tuple(t.shape)}; it must be "
                             f"(N, E) = ({num_tokens}, {num_experts})")
    if device is not None:
        for name, t in flat.items():
            if t.device != device:
                raise ValueError(f"{where} a Routing whose {name} is on {t.device}; the tokens are on {device}")
    if not values or lengths["token"] == 0:
        return
    lo_hi = torch.stack([routing.token.min(), routing.token.max(), routing.expert.min(), routing.expert.max(),
                         routing.rank.min()]).tolist()      # one synchronisation for all ranges
    t_lo, t_hi, e_lo, e_hi, r_lo = lo_hi
    if e_lo < 0 or e_hi >= num_experts:
        bad = e_lo if e_lo < 0 else e_hi
        raise ValueError(f"{where} expert id {bad}; expert ids must be in [0, num_experts={num_experts})")
    if t_lo < 0 or t_hi >= num_tokens:
        bad = t_lo if t_lo < 0 else t_hi
        raise ValueError(f"{where} token id {bad}; token ids must be in [0, N={num_tokens}) (indices into the "
                         f"routed tokens)")
    if r_lo < 0:
        raise ValueError(f"{where} rank {r_lo}; ranks must be >= 0 (0 for a token's first choice)")
