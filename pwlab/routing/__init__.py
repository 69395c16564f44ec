"""Routers: every algorithm behind one contract (:class:`Routing`, :class:`Router`)."""
from pwlab.routing.base import Router, Routing
from pwlab.routing.expert_choice import ExpertChoice
from pwlab.routing.gshard import GShardTop2
from pwlab.routing.hash import HashRouter
from pwlab.routing.noisy import NoisyTopK
from pwlab.routing.switch import Switch
from pwlab.routing.task import TaskRouter
from pwlab.routing.topk import TopK

ROUTERS = {
    "topk": TopK,
    "noisy_topk": NoisyTopK,
    "switch": Switch,
    "gshard": GShardTop2,
    "expert_choice": ExpertChoice,
    "hash": HashRouter,
    "task": TaskRouter,
}

__all__ = ["Router", "Routing", "TopK", "NoisyTopK", "Switch", "GShardTop2", "ExpertChoice", "HashRouter",
           "TaskRouter", "ROUTERS", "make_router"]


def make_router(name: str, **kwargs) -> Router:
    """A router by name (``ROUTERS``), e.g. ``make_router("topk", k=2)``."""
    if name not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(map(repr, ROUTERS))}; got {name!r}")
    return ROUTERS[name](**kwargs)
