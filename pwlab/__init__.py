"""Pathways Lab: sparse activation, many tasks, many senses and SWAT, in a small PyTorch core.

The table of contents (explicit re-exports; nothing here imports plotly or ipywidgets).
"""
from pwlab.experts import ExpertBank
from pwlab.moe import MoE, MoEStats
from pwlab.routing import (ROUTERS, ExpertChoice, GShardTop2, HashRouter, NoisyTopK, Router, Routing, Switch,
                           TaskRouter, TopK, make_router)

__version__ = "0.1.0"

__all__ = [
    "ExpertBank", "MoE", "MoEStats",
    "ROUTERS", "Router", "Routing", "TopK", "NoisyTopK", "Switch", "GShardTop2", "ExpertChoice", "HashRouter",
    "TaskRouter", "make_router",
]
