"""Every router with the constructor arguments the tests use, and the inputs each needs."""
from __future__ import annotations

import torch

from pwlab.moe import MoE
from pwlab.routing import ExpertChoice, GShardTop2, HashRouter, NoisyTopK, Switch, TaskRouter, TopK

NUM_TASKS = 3

ROUTER_CASES = {
    "topk2": lambda: TopK(top_k=2),
    "topk2_topk_softmax": lambda: TopK(top_k=2, order="topk_softmax"),
    "topk2_raw": lambda: TopK(top_k=2, renormalize=False),
    "topk1": lambda: TopK(top_k=1),
    "noisy_topk2": lambda: NoisyTopK(top_k=2),
    "switch": lambda: Switch(jitter=0.01),
    "gshard": lambda: GShardTop2(),
    "expert_choice": lambda: ExpertChoice(capacity_factor=1.5),
    "hash": lambda: HashRouter(num_buckets=64),
    "task_fixed": lambda: TaskRouter(num_tasks=NUM_TASKS, top_k=2, mode="fixed"),
    "task_learned": lambda: TaskRouter(num_tasks=NUM_TASKS, top_k=1, mode="learned"),
    "task_learned_token": lambda: TaskRouter(num_tasks=NUM_TASKS, top_k=2, mode="learned+token"),
}

LEARNED = [name for name in ROUTER_CASES if name not in ("hash", "task_fixed")]


def route_inputs(n: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"task": torch.randint(0, NUM_TASKS, (n,), generator=g),
            "token_ids": torch.randint(0, 1000, (n,), generator=g)}


def moe_case(name: str, d: int, h: int, e: int, capacity_factor=None, **kw) -> MoE:
    """An MoE layer over router case ``name`` with the layer's one capacity factor set (under
    expert choice that is the router's own factor: None keeps the case's 1.5)."""
    layer = MoE(d, h, e, ROUTER_CASES[name](), **kw)
    if capacity_factor is not None or layer.router.kind != "expert_choice":
        layer.capacity_factor = capacity_factor
    return layer
