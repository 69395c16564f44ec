"""The router registry: the names a :class:`pwlab.config.ModelConfig` accepts, and the calls that
add and remove one.

``ROUTERS`` maps a name to a router class; :func:`make_router` builds one by name,
:func:`router_class` looks one up, :func:`register_router` / :func:`unregister_router` change the
registry at run time (the built-in names are fixed). Checkpoints, the playground's router list
and the config read the same dict.

Separate from :mod:`pwlab.routing.base` (what a router is) and from the router modules (one
algorithm each) because it is the one place that knows them all; ``pwlab.routing`` re-exports
every name here.
"""
from pwlab.routing.base import Router
from pwlab.routing.contract import ROUTING_KINDS
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
_BUILT_IN = dict(ROUTERS)


def make_router(name: str, **kwargs) -> Router:
    """A router by name (``ROUTERS``), e.g. ``make_router("topk", top_k=2)``."""
    return router_class(name)(**kwargs)


def router_class(name: str) -> type[Router]:
    """The router class registered as ``name``; a ``ValueError`` naming the known ones otherwise."""
    if name not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(map(repr, ROUTERS))}, or a name given to "
                         f"pwlab.register_router(name, cls); got {name!r}")
    return ROUTERS[name]


def register_router(name: str, cls: type[Router], *, replace: bool = False) -> type[Router]:
    """Make ``cls`` available as ``ModelConfig(router=name)`` (and so to the Trainer, the playground's
    router list and checkpoints); returns ``cls``, so it also works as a decorator's body.

    Registration lives in the process: a checkpoint names the router, and loading it in a
    new process needs the same ``register_router`` call first (importing the module that
    makes it is enough). Registering the same class again, or a class of the same module and
    name (a module or notebook cell run twice), is allowed; another class under a taken name
    needs ``replace=True``, and the built-in names cannot be replaced.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Python identifier such as 'top_p', got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Router)):
        raise TypeError(f"cls must be a subclass of pwlab.routing.Router, got {cls!r}")
    if cls.kind not in ROUTING_KINDS:
        raise ValueError(f"{cls.__name__}.kind must be one of {', '.join(map(repr, ROUTING_KINDS))}, got {cls.kind!r}")
    old = ROUTERS.get(name)
    if old is not None and old is not cls:
        if name in _BUILT_IN:
            raise ValueError(f"name {name!r} is a built-in router ({old.__name__}); choose another name")
        same = (old.__module__, old.__qualname__) == (cls.__module__, cls.__qualname__)
        if not (same or replace):
            raise ValueError(f"name {name!r} is already registered to {old.__module__}.{old.__qualname__}; "
                             f"pass replace=True to register {cls.__module__}.{cls.__qualname__} instead")
    ROUTERS[name] = cls
    return cls


def unregister_router(name: str) -> None:
    """Remove a router registered with :func:`register_router` (the built-in ones stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"name {name!r} is a built-in router and cannot be unregistered")
    if name not in ROUTERS:
        raise ValueError(f"no router is registered as {name!r}; registered: {', '.join(map(repr, ROUTERS))}")
    del ROUTERS[name]
