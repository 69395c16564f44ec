"""Task-level routing (Kudugunta et al. 2021, "Beyond Distillation: Task-level MoE").

All tokens of one task take the same experts, so each task owns a subnetwork that can be
extracted and served alone. Three modes:

- ``"fixed"``: a fixed table, task t → experts ``(t·k + j) mod E`` for j < k (no parameters);
- ``"learned"``: a learned gate on a task embedding only, ``logits = emb(task)``: the
  experts are chosen per task, learned end to end (Task-MoE);
- ``"learned+token"``: ``logits = emb(task) + x·W_g``, a task-conditioned token router.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pwlab import _checks
from pwlab.routing.base import Router, softmax_experts
from pwlab.routing.contract import Routing, token_choice

MODES = ("fixed", "learned", "learned+token")


class TaskRouter(Router):
    """Route by task id (N,) to ``top_k`` experts."""

    trusted = True
    needs_task = True

    def __init__(self, *, num_tasks: int, top_k: int = 1, mode: str = "learned", d_model: int | None = None,
                 num_experts: int | None = None):
        self.num_tasks = _checks.positive_int("num_tasks", num_tasks)
        self.mode = _checks.one_of("mode", mode, MODES)
        super().__init__(top_k=top_k, d_model=d_model, num_experts=num_experts)

    expert_id_tables = ("table",)

    def expert_axis(self, name: str, tensor: Tensor) -> int | None:
        """``task_logits.weight`` is (num_tasks, E): experts on axis 1; the token gate's on 0."""
        if name == "task_logits.weight":
            return 1
        return 0 if name == "gate.weight" else None

    def build(self) -> None:
        e, k = self.num_experts, self.top_k
        _checks.num_elements("the task table", num_tasks=self.num_tasks, num_experts=e)
        if self.mode == "fixed":
            table = (torch.arange(self.num_tasks)[:, None] * k + torch.arange(k)) % e
            self.register_buffer("table", table, persistent=True)
        else:
            self.task_logits = nn.Embedding(self.num_tasks, e)
            nn.init.normal_(self.task_logits.weight, std=1.0)
            if self.mode == "learned+token":
                self.gate = nn.Linear(self.d_model, e, bias=False)
                nn.init.normal_(self.gate.weight, std=self.d_model ** -0.5)

    def route(self, x: Tensor, *, task: Tensor, token_ids, generator) -> Routing:
        if bool((task < 0).any()) or bool((task >= self.num_tasks).any()):
            raise ValueError(f"task ids must be in [0, num_tasks={self.num_tasks}), got {task.unique().tolist()}")
        task = task.to(x.device)
        if self.mode == "fixed":
            expert = self.table[task]                                             # (N, k)
            probs = torch.zeros(x.shape[0], self.num_experts, device=x.device).scatter(1, expert, 1.0 / self.top_k)
            weight = torch.full(expert.shape, 1.0 / self.top_k, device=x.device)
            return token_choice(probs, probs.clamp_min(1e-9).log(), expert, weight)
        logits = self.task_logits(task)
        if self.mode == "learned+token":
            logits = logits + self.gate(x.float())
        probs = softmax_experts(logits)
        weight, expert = probs.topk(self.top_k, dim=-1)
        weight = weight / weight.sum(-1, keepdim=True) if self.top_k > 1 else weight
        return token_choice(probs, logits, expert, weight)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_tasks={self.num_tasks}, mode={self.mode!r}"
