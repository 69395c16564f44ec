"""Routers: every algorithm behind one contract (:class:`Routing`, :class:`Router`).

``ROUTERS`` maps the names a :class:`pwlab.config.ModelConfig` accepts to router classes;
:func:`register_router` adds one of your own. A router author needs :class:`Router` (or
:class:`LinearGate`, a learned linear gate), :class:`Routing` and :func:`token_choice`, and
may use :func:`softmax_experts`, :func:`noise` and :func:`uniform`; :func:`check_routing` is
what the MoE layer checks. :mod:`pwlab.routing.examples` holds a complete custom router.

Where each part lives: :mod:`~pwlab.routing.contract` (:class:`Routing`, :func:`token_choice`,
:func:`check_routing`), :mod:`~pwlab.routing.base` (:class:`Router`, :class:`LinearGate` and the
helpers; it re-exports the contract), one module per router, and :mod:`~pwlab.routing.registry`
(``ROUTERS`` and the calls that change it). This package re-exports them all.
"""
from pwlab.routing.base import LinearGate, Router, RouterDescription, noise, softmax_experts, uniform
from pwlab.routing.contract import ROUTING_KINDS, Routing, check_routing, token_choice
from pwlab.routing.expert_choice import ExpertChoice
from pwlab.routing.gshard import GShardTop2
from pwlab.routing.hash import HashRouter
from pwlab.routing.noisy import NoisyTopK
from pwlab.routing.registry import ROUTERS, make_router, register_router, router_class, unregister_router
from pwlab.routing.switch import Switch
from pwlab.routing.task import TaskRouter
from pwlab.routing.topk import TopK

__all__ = ["Router", "Routing", "RouterDescription", "ROUTING_KINDS", "LinearGate", "token_choice",
           "softmax_experts", "noise", "uniform", "check_routing", "TopK", "NoisyTopK", "Switch", "GShardTop2",
           "ExpertChoice", "HashRouter", "TaskRouter", "ROUTERS", "make_router", "register_router",
           "unregister_router", "router_class"]
