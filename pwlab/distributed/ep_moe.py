"""Expert parallelism: the MoE layer with its experts sharded over the ranks of a group.

Index legend: P ranks, E experts, L = E/P experts per rank, N tokens on this rank,
D d_model, A kept assignments on this rank, R assignments received from all ranks.

Each rank holds experts ``[r·L, (r+1)·L)`` and its own tokens (data parallel). As in GShard
(Lepikhin et al. 2020, §2.2) and the Pathways system's sharded dataflow (Barham et al. 2022),
a rank routes its tokens with the replicated router, applies capacity to *its* tokens (each
rank is one GShard "group"), and sends every kept assignment's token to the rank owning its
expert with an all-to-all; the experts run; a second all-to-all brings the results back to
be combined. So on rank r the layer computes exactly what the single-process
:class:`~pwlab.moe.MoE` computes on rank r's tokens with the full expert bank — values and
gradients; only the place where each expert runs changes.

Statistics. ``counts``, ``proposed_counts``, ``load``, ``dropped_fraction`` and
``router_entropy`` are global (all-reduced over the group), so pathway maps built from them
see every rank's tokens. ``aux_losses``/``aux_loss`` are local (this rank's tokens, as the
single-process layer on them; data-parallel gradient averaging combines them). ``routing`` is
local (token indices are this rank's); :func:`gather_routing` assembles the global one.
``capacity`` is this rank's C; ``local_counts`` are this rank's (see :class:`ExpertParallelStats`).
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, fields
from functools import cached_property

import torch
import torch.distributed as dist
from torch import Tensor

from pwlab import losses
from pwlab.dispatch import Backend, Kept
from pwlab.distributed.exchange import all_to_all, exchange_counts
from pwlab.experts import ExpertBank, GatedExpertBank, expert_kind, make_experts
from pwlab.moe import MoE
from pwlab.moe_stats import MoEStats
from pwlab.routing.contract import Routing
from pwlab.swat.experts import is_swat_bank, swat_settings


@dataclass(frozen=True, eq=False)
class ExpertParallelStats(MoEStats):
    """:class:`~pwlab.moe.MoEStats` of an expert-parallel call.

    Global over the group: ``counts``, ``proposed_counts``, ``load``, ``dropped_fraction``,
    ``router_entropy``. Local to this rank: ``aux_losses``, ``aux_loss``, ``proposed``,
    ``kept``, ``routing`` (token indices are this rank's), ``capacity``, and
    ``local_counts`` / ``local_proposed_counts`` (E,).
    """

    local_counts: Tensor | None = None
    local_proposed_counts: Tensor | None = None
    global_totals: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)   # tokens, Σ entropy, dropped, total
    world_size: int = 1
    rank: int = 0

    @cached_property
    def dropped_fraction(self) -> Tensor:
        _, _, dropped, total = self.global_totals
        return torch.tensor(dropped / total if total else 0.0)

    @cached_property
    def router_entropy(self) -> Tensor:
        tokens, entropy_sum, _, _ = self.global_totals
        return torch.tensor(entropy_sum / tokens if tokens else 0.0)


def _agree(config: dict | None, error: Exception | None, group) -> None:
    """Every rank learns every rank's configuration and error; all raise if any is wrong.

    One ``all_gather_object`` whatever happened locally, so no rank is left waiting in a
    collective the others skipped."""
    world = dist.get_world_size(group)
    key = hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest() if config else None
    gathered: list = [None] * world
    mine = (key, config, None if error is None else f"{type(error).__name__}: {error}")
    dist.all_gather_object(gathered, mine, group=group)
    problems = [f"rank {r}: {msg}" for r, (_, _, msg) in enumerate(gathered) if msg is not None]
    if not problems and len({k for k, _, _ in gathered}) > 1:
        first = gathered[0][1]
        for r, (_, cfg, _) in enumerate(gathered[1:], start=1):
            diff = [f"{name}={cfg[name]} (rank 0: {first[name]})" for name in first if cfg[name] != first[name]]
            if diff:
                problems.append(f"rank {r} has a different configuration from rank 0: {', '.join(diff)}")
        problems.append("every rank must build the same layer")
    if problems:
        raise ValueError("ExpertParallelMoE: " + "; ".join(problems)) from error


def gather_routing(stats: MoEStats, group=None) -> Routing:
    """Every rank's kept routing in one :class:`Routing` (detached; collective).

    Rank r's tokens are numbered after those of ranks 0..r-1, so pathway maps over the result
    count every token of the step once."""
    r = stats.routing
    mine = {k: getattr(r, k).detach().cpu() for k in ("token", "expert", "weight", "rank", "probs", "logits")}
    parts: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, mine, group=group)
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + part["probs"].shape[0])
    cat = {k: torch.cat([p[k] + (off if k == "token" else 0) for p, off in zip(parts, offsets)])
           for k in mine}
    dev = r.token.device
    return Routing(**{k: v.to(dev) for k, v in cat.items()}, kind=r.kind)


class ExpertParallelDispatch(Backend):
    """The expert-parallel backend: ``y = backend(x, routing, kept, experts)`` with ``experts``
    this rank's shard (experts ``[rank·L, (rank+1)·L)`` of ``num_experts``) of a bank sharded
    over ``group`` (default: the world).

    Every kept assignment's token goes to the rank owning its expert (all-to-all), the local
    experts run through a padded (L, C', D) buffer (``experts.forward_padded``, so any bank
    kind), and a second all-to-all brings the results back to be combined. Collective: every
    rank of the group calls it, with or without assignments. :meth:`finish` all-reduces the
    counts into :class:`ExpertParallelStats`."""

    name = "expert_parallel"

    def __init__(self, num_experts: int, group=None):
        self.group, self.num_experts = group, num_experts
        self.world_size, self.rank = dist.get_world_size(group), dist.get_rank(group)
        if num_experts % self.world_size:
            raise ValueError(f"num_experts must be divisible by the world size {self.world_size} "
                             f"(each rank holds num_experts/world experts), got num_experts={num_experts}")
        self.num_local_experts = num_experts // self.world_size

    def __repr__(self) -> str:
        return f"ExpertParallelDispatch(num_experts={self.num_experts}, world_size={self.world_size}, rank={self.rank})"

    def __call__(self, x: Tensor, routing: Routing, kept: Kept, experts) -> Tensor:
        routing = routing.select(kept.mask)
        routing = routing.select(torch.argsort(routing.expert, stable=True))  # grouped by expert, so by rank
        n, d = x.shape
        p, local = self.world_size, self.num_local_experts
        sent = torch.bincount(routing.expert, minlength=self.num_experts)     # (E,) = (P, L) by destination
        received = exchange_counts(sent, self.group).view(p, local)             # (P, L) by source
        send_splits = sent.view(p, local).sum(1).tolist()
        recv_splits = received.sum(1).tolist()
        x_recv = all_to_all(x.index_select(0, routing.token), send_splits, recv_splits, self.group)  # (R, D)
        out = self._run_local_experts(x_recv, received, experts)
        y_a = all_to_all(out, recv_splits, send_splits, self.group)            # (A, D), in sending order
        y_a = y_a * routing.weight.to(y_a.dtype).unsqueeze(-1)
        return x.new_zeros(n, d).index_add(0, routing.token, y_a)

    def _run_local_experts(self, x_recv: Tensor, received: Tensor, experts) -> Tensor:
        """Rows from each source, grouped by local expert, through a padded (L, C', D) buffer."""
        r, d = x_recv.shape
        local = self.num_local_experts
        if r == 0:
            # nothing to run here, but this rank must still join both backward exchanges: keep
            # the received (empty) rows and the expert weights in the graph
            return x_recv.new_zeros(0, d) + 0 * (x_recv.sum() + sum(w.sum() for w in experts.weight_parameters()))
        expert = torch.arange(local, device=x_recv.device).repeat(received.shape[0])
        expert = expert.repeat_interleave(received.flatten())                   # (R,) local expert per row
        order = torch.argsort(expert, stable=True)
        per_expert = received.sum(0)                                             # (L,)
        starts = torch.cumsum(per_expert, 0) - per_expert
        slots = int(per_expert.max())
        slot = torch.empty_like(order)
        slot[order] = expert[order] * slots + torch.arange(r, device=x_recv.device) - starts[expert[order]]
        src = torch.full((local * slots,), r, dtype=torch.long, device=x_recv.device)   # empty slots: zero row
        src[slot] = torch.arange(r, device=x_recv.device)
        buf = torch.cat([x_recv, x_recv.new_zeros(1, d)]).index_select(0, src).view(local, slots, d)
        return experts.forward_padded(buf).view(local * slots, d).index_select(0, slot)

    def finish(self, stats: MoEStats) -> "ExpertParallelStats":
        """Local aux losses (this rank's tokens, as the single-process layer); counts all-reduced."""
        e, proposed = self.num_experts, stats.proposed
        n = proposed.num_tokens
        local_counts, local_proposed = stats.counts, stats.proposed_counts
        if proposed.kind == "expert_choice":
            dropped, total = n - int(torch.unique(proposed.token[stats.kept]).numel()), n
        else:
            dropped, total = proposed.num_assignments - int(stats.kept.sum()), proposed.num_assignments
        entropy = float(losses.router_entropy(proposed.probs.detach(), check_finite=False)) * n
        pack = torch.cat([local_counts.double(), local_proposed.double(),
                          torch.tensor([n, entropy, dropped, total], dtype=torch.float64, device=local_counts.device)])
        dist.all_reduce(pack, group=self.group)            # one small collective per layer call
        base = {f.name: getattr(stats, f.name) for f in fields(MoEStats)}
        base.update(counts=pack[:e].round().long(), proposed_counts=pack[e:2 * e].round().long())
        return ExpertParallelStats(**base, local_counts=local_counts, local_proposed_counts=local_proposed,
                                   global_totals=tuple(pack[2 * e:].tolist()), world_size=self.world_size,
                                   rank=self.rank)


class ExpertParallelMoE(MoE):
    """:class:`~pwlab.moe.MoE` with the expert bank sharded over ``group`` (default: the world):
    the single-process layer whose backend is :class:`ExpertParallelDispatch` (the forward is
    :class:`~pwlab.moe.MoE`'s own); this class only builds and shards it.

    Takes the same arguments as :class:`~pwlab.moe.MoE` (``dispatch`` is always the padded
    one) plus ``group``. Construction is collective: every rank of the group must build the
    layer with the same configuration; a bad argument on any rank, ``num_experts`` not
    divisible by the group size, or differing configurations raise ``ValueError`` on every
    rank. Weights are initialised as the single-process layer would be (so the same seed
    gives the same weights), then each rank keeps its shard; the router is broadcast from
    the group's first rank so it is replicated. The expert kind (``expert="ffn"`` or
    ``"swiglu"``) shards the same way, every weight of the bank split on its expert axis;
    shared experts (``num_shared_experts``) run on every token, so they are replicated like the
    router (broadcast here, their gradients synchronised as the other replicated parameters).
    """

    def __init__(self, d_model: int, d_hidden: int, num_experts: int, router=None, *,
                 capacity_factor: float | None = None, capacity_convention: str = "k_tokens",
                 drop_policy: str = "position", aux_weights: dict[str, float] | None = None,
                 activation: str | None = None, num_groups: int | None = None, group=None,
                 expert: str = "ffn", num_shared_experts: int = 0):
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("ExpertParallelMoE needs an initialised torch.distributed process group "
                             "(launch with torchrun, or pwlab.distributed.run_local)")
        world = dist.get_world_size(group)
        error, config = None, None
        try:
            super().__init__(d_model, d_hidden, num_experts, router, capacity_factor=capacity_factor,
                             capacity_convention=capacity_convention, drop_policy=drop_policy, dispatch="fast",
                             aux_weights=aux_weights, activation=activation, num_groups=num_groups,
                             expert=expert, num_shared_experts=num_shared_experts)
            if num_experts % world:
                raise ValueError(f"num_experts must be divisible by the world size {world} "
                                 f"(each rank holds num_experts/world experts), got num_experts={num_experts}")
            config = self._config()
        except ValueError as exc:
            error = exc
        _agree(config, error, group)
        self.backend = ExpertParallelDispatch(num_experts, group)
        self.group, self.world_size, self.rank = group, world, dist.get_rank(group)
        self.num_local_experts = num_experts // world
        src = dist.get_global_rank(group, 0) if group is not None else 0
        nccl = dist.get_backend(group) == "nccl"            # NCCL moves only CUDA tensors
        replicated = [*self.router.state_dict().values(),
                      *(self.shared_experts.state_dict().values() if self.shared_experts is not None else ())]
        for t in replicated:                                # router, shared experts (detached views)
            buf = t.cuda() if nccl and not t.is_cuda else t
            dist.broadcast(buf, src, group=group)
            if buf is not t:
                t.copy_(buf)
        if getattr(self.router, "expert_bias", None) is not None and hasattr(self.router, "sync_loads"):
            # the balancing bias is replicated like the router: every rank updates it from the
            # group's loads (pwlab.routing.TopK), so the replicas never drift apart
            self.router.sync_loads(group)
        full = self.experts
        self.experts = make_experts(expert, self.num_local_experts, d_model, d_hidden, activation)
        self._load_shard(full)

    def _swatify_shard(self, source) -> None:
        """Make this rank's bank a SWAT bank with ``source``'s settings (top-K over the shard)."""
        shard = self.experts
        self.experts = type(source)(self.num_local_experts, self.d_model, self.d_hidden, source.activation,
                                    **swat_settings(source)).to(shard.w1.device)
        with torch.no_grad():
            for mine, theirs in zip(self.experts.weight_parameters(), shard.weight_parameters()):
                mine.copy_(theirs)

    # -- construction helpers ----------------------------------------------------------
    def _config(self) -> dict:
        r = self.router
        return {"d_model": self.d_model, "d_hidden": self.d_hidden, "num_experts": self.num_experts,
                "router": f"{type(r).__name__}({r.extra_repr()})", "capacity_factor": self.capacity_factor,
                "capacity_convention": self.capacity_convention, "drop_policy": self.drop_policy,
                "aux_weights": repr(sorted(self.aux_weights.items())), "activation": self.experts.activation,
                "num_groups": self.num_groups, "expert": self.expert_kind,
                "num_shared_experts": self.num_shared_experts}

    @property
    def expert_range(self) -> tuple[int, int]:
        """The global indices ``[lo, hi)`` of this rank's experts."""
        return self.rank * self.num_local_experts, (self.rank + 1) * self.num_local_experts

    @torch.no_grad()
    def _load_shard(self, full: ExpertBank | GatedExpertBank) -> None:
        lo, hi = self.expert_range
        for mine, whole in zip(self.experts.weight_parameters(), full.weight_parameters()):
            mine.copy_(whole[lo:hi])

    @classmethod
    def from_moe(cls, moe: MoE, group=None) -> "ExpertParallelMoE":
        """The expert-parallel copy of a single-process layer: same router and shared experts,
        this rank's shard of every weight of the expert bank (of the layer's kind)."""
        if moe.shared_gate is not None:
            raise ValueError("moe has a shared_gate (Qwen-MoE's gated shared experts), which the expert-parallel "
                             "layer does not replicate; use the single-process layer")
        with torch.random.fork_rng(devices=[]):      # the throw-away init must not move the global RNG
            layer = cls(moe.d_model, moe.d_hidden, moe.num_experts, copy.deepcopy(moe.router),
                        capacity_factor=moe.capacity_factor, capacity_convention=moe.capacity_convention,
                        drop_policy=moe.drop_policy, aux_weights=dict(moe.aux_weights),
                        activation=moe.experts.activation, num_groups=moe.num_groups, group=group,
                        expert=expert_kind(moe.experts), num_shared_experts=moe.num_shared_experts)
        layer._load_shard(moe.experts)
        if is_swat_bank(moe.experts):
            layer._swatify_shard(moe.experts)
        if moe.shared_experts is not None:
            layer.shared_experts.load_state_dict(moe.shared_experts.state_dict())
        layer.granularity = moe.granularity
        layer.enabled.copy_(moe.enabled)
        layer._all_enabled = bool(layer.enabled.all())
        return layer.to(moe.enabled.device)

    def gather_experts(self) -> tuple[Tensor, ...]:
        """The full ``weight_parameters()`` of all E experts — (w1, b1, w2, b2), or (w1, w3, w2)
        for the gated kind — on every rank (detached; collective). For a SWAT bank these are the
        dense parameters; :meth:`gather_effective_weights` gives the masked ones."""
        return self._gather(self.experts.weight_parameters())

    def gather_effective_weights(self) -> tuple[Tensor, ...]:
        """The weights all E experts compute with (SWAT: masked by each rank's top-K), on every
        rank (detached; collective)."""
        return self._gather(self.experts.effective_weights())

    def _gather(self, weights) -> tuple[Tensor, ...]:
        out = []
        for w in weights:
            parts = [torch.empty_like(w) for _ in range(self.world_size)]
            dist.all_gather(parts, w.detach().contiguous(), group=self.group)
            out.append(torch.cat(parts))
        return tuple(out)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", world_size={self.world_size}, local_experts={self.expert_range}"
