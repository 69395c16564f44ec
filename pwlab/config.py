"""Typed configuration and named presets.

A :class:`Config` holds a :class:`ModelConfig` (the network) and a :class:`TrainConfig` (how
it is trained). Both are plain dataclasses whose defaults run on a CPU in seconds, and both
serialise to plain dicts (``to_dict`` / ``from_dict``) so a checkpoint stores them without
pickling any class.

Presets are named functions: :func:`tiny` (every task to useful accuracy in seconds on two
cores), :func:`small` (wider and deeper), and :func:`dense_baseline`, the dense twin of a
sparse config matched in *active* FLOPs per token: a top-k MoE FFN whose experts have hidden
width H runs k expert FFNs per token, the same multiply-adds as one dense FFN of hidden width
k·H (plus the router's D·E, which is small).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, replace

from pwlab import _checks
from pwlab.experts import EXPERT_KINDS
from pwlab.routing import make_router, router_class
from pwlab.experts import ACTIVATIONS

MOE_LAYER_SPECS = ("every_other", "all", "none")
POOLINGS = ("mean", "task_token")
OPTIMIZERS = ("adamw", "sgd")
SAMPLING = ("proportional", "uniform", "temperature")


@dataclass
class ModelConfig:
    """The network: sense encoders → task token → ``num_layers`` blocks → pooling → heads.

    Attributes:
        d_model: token width D, shared by every sense.
        num_layers: trunk blocks (pre-norm attention + FFN).
        num_heads: attention heads (must divide d_model).
        moe_layers: which blocks use an MoE FFN: ``"every_other"`` (blocks 1, 3, ...: GShard and
            Switch replace every other FFN), ``"all"``, ``"none"`` (dense), or a list of indices.
        num_experts: E per MoE layer.
        d_hidden: each expert's hidden width H.
        dense_hidden: hidden width of the dense FFNs; None means ``top_k · d_hidden`` (the
            active width of an MoE layer, so swapping a block's FFN keeps its FLOPs).
        router: a name of :data:`pwlab.routing.ROUTERS`.
        router_kwargs: extra constructor arguments of the router.
        top_k: experts per token for routers that take ``k``.
        capacity_factor: None (dropless) or > 0 (see :mod:`pwlab.moe`). For a router that fills
            every expert itself (expert choice) it is the router's own factor (None: the
            router's default), the one capacity factor of the layer either way.
        aux_weights: weights of the MoE auxiliary losses (missing names take the MoE defaults).
        task_token: prepend a learned token per task (the trunk then knows the task).
        pooling: ``"mean"`` over real tokens, or the ``"task_token"``'s output.
        dropout: dropout after attention and FFN (0 keeps runs deterministic without a seed).
        activation: expert and dense FFN nonlinearity (the ``"swiglu"`` experts are SiLU-gated
            whatever it says; it then applies to the dense FFNs only).
        expert: the expert kind, ``"ffn"`` (two matrices with biases) or ``"swiglu"`` (gated:
            three matrices, no biases). With ``"swiglu"`` the default dense width is
            ``3·top_k·d_hidden/2``, which matches the gated experts' active FLOPs.
    """

    d_model: int = 32
    num_layers: int = 2
    num_heads: int = 2
    moe_layers: str | list[int] = "every_other"
    num_experts: int = 4
    d_hidden: int = 64
    dense_hidden: int | None = None
    router: str = "topk"
    router_kwargs: dict = field(default_factory=dict)
    top_k: int = 2
    capacity_factor: float | None = None
    aux_weights: dict = field(default_factory=dict)
    task_token: bool = True
    pooling: str = "mean"
    dropout: float = 0.0
    activation: str = "gelu"
    expert: str = "ffn"

    def __post_init__(self):
        for name in ("d_model", "num_layers", "num_heads", "num_experts", "d_hidden", "top_k"):
            _checks.positive_int(name, getattr(self, name))
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads must divide d_model={self.d_model}, got num_heads={self.num_heads}")
        if self.dense_hidden is not None:
            _checks.positive_int("dense_hidden", self.dense_hidden)
        _router_description(self.router)     # a known or registered router name
        _checks.one_of("pooling", self.pooling, POOLINGS)
        _checks.one_of("activation", self.activation, ACTIVATIONS)
        _checks.positive_float("capacity_factor", self.capacity_factor, allow_none=True)
        own = self.router_kwargs.get("capacity_factor") if isinstance(self.router_kwargs, dict) else None
        if (_router_description(self.router).owns_capacity and None not in (own, self.capacity_factor)
                and own != self.capacity_factor):
            raise ValueError(f"capacity_factor is set twice: capacity_factor={self.capacity_factor} and "
                             f"router_kwargs['capacity_factor']={own} for router {self.router!r}, which fills every "
                             f"expert itself; set one of them")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.pooling == "task_token" and not self.task_token:
            raise ValueError("pooling='task_token' needs task_token=True")
        self.moe_layer_indices()     # validates moe_layers
        _checks.one_of("expert", self.expert, EXPERT_KINDS)

    def moe_layer_indices(self) -> tuple[int, ...]:
        """The indices of the blocks whose FFN is an MoE layer."""
        spec, n = self.moe_layers, self.num_layers
        if isinstance(spec, str):
            _checks.one_of("moe_layers", spec, MOE_LAYER_SPECS + ("a list of block indices",))
            return {"every_other": tuple(range(1, n, 2)) if n > 1 else (0,),
                    "all": tuple(range(n)), "none": ()}[spec]
        idx = tuple(sorted(set(int(i) for i in spec)))
        if any(i < 0 or i >= n for i in idx):
            raise ValueError(f"moe_layers indices must be in [0, num_layers={n}), got {list(spec)}")
        return idx

    @property
    def active_k(self) -> int:
        """Experts a token runs through: ``top_k``, or what the router fixes (switch 1, gshard 2,
        hash 1, expert choice ceil(capacity factor) on average)."""
        if _router_description(self.router).top_k:
            return self.top_k
        router = make_router(self.router, **self.router_arguments(num_tasks=1))
        # the size check binding would make (e.g. expert choice's capacity_factor <= num_experts),
        # without creating parameters (that would draw from the global random stream)
        router._check_top_k(self.num_experts)
        return router.top_k

    @property
    def ffn_hidden(self) -> int:
        """Hidden width of the dense FFN blocks."""
        return self.dense_hidden if self.dense_hidden is not None else self.active_width

    @property
    def active_width(self) -> int:
        """The dense hidden width with an MoE layer's active FLOPs per token: k·H for
        ``"ffn"`` experts (two D×H matmuls each), 3·k·H/2 (rounded down) for ``"swiglu"`` ones
        (three)."""
        width = self.active_k * self.d_hidden
        return width if self.expert == "ffn" else (3 * width) // 2

    def router_arguments(self, num_tasks: int) -> dict:
        """Constructor keywords for ``make_router(self.router, **...)``."""
        kw = dict(self.router_kwargs)
        about = _router_description(self.router)
        if about.top_k:
            kw.setdefault("top_k", self.top_k)
        if about.num_tasks:
            kw.setdefault("num_tasks", num_tasks)
        if about.owns_capacity and self.capacity_factor is not None:
            kw.setdefault("capacity_factor", self.capacity_factor)    # one capacity factor per layer
        return kw

    def to_dict(self) -> dict:
        d = asdict(self)
        d["moe_layers"] = self.moe_layers if isinstance(self.moe_layers, str) else list(self.moe_layers)
        return copy.deepcopy(d)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**_known(cls, d, "ModelConfig"))


@dataclass
class TrainConfig:
    """How the model is trained.

    Attributes:
        steps: optimizer steps of :meth:`Trainer.fit` when none are given.
        batch_size: examples per step over all tasks (the sampler splits them).
        lr, weight_decay, optimizer (``"adamw"`` or ``"sgd"`` with momentum 0.9), grad_clip
            (max global gradient norm, None for none).
        sampling: the task-sampling strategy of :class:`pwlab.tasks.MultiTaskSampler`;
            temperature: its temperature for ``"temperature"``.
        seed: seeds the model init, the sampler and the routing-noise generator.
        device: ``"cpu"``, ``"cuda"``, ...
        skip_nonfinite: skip a batch whose loss is NaN/Inf instead of raising.
        eval_every: evaluate every this many steps during ``fit`` (0: only when asked).
        eval_examples: at most this many test examples per task in evaluations (None: all).
    """

    steps: int = 300
    batch_size: int = 128
    lr: float = 5e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    grad_clip: float | None = 1.0
    sampling: str = "uniform"
    temperature: float = 2.0
    seed: int = 0
    device: str = "cpu"
    skip_nonfinite: bool = False
    eval_every: int = 0
    eval_examples: int | None = 512

    def __post_init__(self):
        _checks.positive_int("steps", self.steps, minimum=0)
        _checks.positive_int("batch_size", self.batch_size)
        _checks.positive_float("lr", self.lr)
        _checks.non_negative_float("weight_decay", self.weight_decay)
        _checks.one_of("optimizer", self.optimizer, OPTIMIZERS)
        _checks.positive_float("grad_clip", self.grad_clip, allow_none=True)
        _checks.one_of("sampling", self.sampling, SAMPLING)
        _checks.positive_float("temperature", self.temperature)
        _checks.positive_int("eval_every", self.eval_every, minimum=0)
        if self.eval_examples is not None:
            _checks.positive_int("eval_examples", self.eval_examples)
        _checks.positive_int("seed", self.seed, minimum=0, maximum=2**63 - 1)   # the CLI's range
        _checks.device_name("device", self.device)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**_known(cls, d, "TrainConfig"))


#: train-config fields that may differ when resuming (they do not change the trajectory)
RESUMABLE_DIFFERENCES = ("steps", "device", "eval_every", "eval_examples", "skip_nonfinite")


@dataclass
class Config:
    """A model config and a train config, with a name for reports."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "custom"

    def to_dict(self) -> dict:
        return {"name": self.name, "model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        if not isinstance(d, dict) or not {"model", "train"} <= set(d):
            raise ValueError("a Config dict needs the keys 'model' and 'train'")
        return cls(model=ModelConfig.from_dict(d["model"]), train=TrainConfig.from_dict(d["train"]),
                   name=str(d.get("name", "custom")))

    def with_model(self, **changes) -> "Config":
        """A copy with some model fields changed (validated)."""
        return replace(self, model=replace(self.model, **changes))

    def with_train(self, **changes) -> "Config":
        """A copy with some train fields changed (validated)."""
        return replace(self, train=replace(self.train, **changes))


def _router_description(name: str):
    """The :class:`pwlab.routing.RouterDescription` of a router name (built-in or registered); a
    ``ValueError`` naming the known ones and :func:`pwlab.routing.register_router` otherwise."""
    return router_class(name).describe()


def _known(cls, d: dict, what: str) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be built from a dict, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what} fields {unknown}; known: {sorted(names)}")
    return copy.deepcopy(d)


# -- presets ------------------------------------------------------------------------------

def tiny() -> Config:
    """Two blocks, the second an MoE of 4 experts, top-2: all tasks in seconds on 2 cores."""
    return Config(ModelConfig(), TrainConfig(), name="tiny")


def small() -> Config:
    """Four blocks of width 64, MoE in blocks 1 and 3 with 8 experts, top-2."""
    return Config(ModelConfig(d_model=64, num_layers=4, num_heads=4, num_experts=8, d_hidden=128),
                  TrainConfig(steps=1000, lr=2e-3), name="small")


def dense_baseline(cfg: Config | None = None) -> Config:
    """The dense twin of ``cfg`` (default :func:`tiny`) with the same active FLOPs per token.

    Every block gets a dense FFN of hidden width ``top_k · d_hidden``, the width a top-k MoE
    layer activates per token (the router's D·E multiply-adds are the only difference); for
    ``"swiglu"`` experts ``3 · top_k · d_hidden / 2`` (:attr:`ModelConfig.active_width`).
    """
    cfg = cfg if cfg is not None else tiny()
    m = cfg.model
    width = m.active_width
    if m.ffn_hidden != width and len(m.moe_layer_indices()) < m.num_layers:
        raise ValueError(f"dense_hidden={m.dense_hidden} differs from the active width {width}: the dense blocks "
                         "of cfg and its MoE blocks would need different widths in the baseline")
    model = replace(m, moe_layers="none", dense_hidden=width)
    return Config(model, replace(cfg.train), name=f"{cfg.name}-dense")


PRESETS = {"tiny": tiny, "small": small,
           "tiny-dense": lambda: dense_baseline(tiny()), "small-dense": lambda: dense_baseline(small())}


def preset(name: str) -> Config:
    """A preset by name (``PRESETS``); unknown names list the known ones."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(repr, PRESETS))}; got {name!r}")
    return PRESETS[name]()
