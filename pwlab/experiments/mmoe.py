"""Claim 4 — per-task gates help when tasks disagree (MMoE, Ma et al. KDD 2018, sec. 3.2 and 5).

Two small torch models on the synthetic pair (:mod:`pwlab.tasks.synthetic`):

- :class:`SharedBottom`: one shared ReLU layer feeds both task towers (Caruana 1997);
- :class:`MMoE`: ``NUM_EXPERTS`` shared ReLU experts, one softmax gate per task over the
  experts (a linear map of the input, MMoE eq. 4–5), task towers on the gated mixture.

As in the paper, the shared bottom is as wide as makes both models hold about the same
number of parameters. Design (fixed before running): for each task correlation p in
{1.0, 0.5, 0.1}, both models train ``STEPS`` Adam steps on the sum of the two tasks' MSE
with the same seed and batches; the measurement is the mean of the two tasks' test MSE.

Held when MMoE's advantage (shared-bottom loss − MMoE loss, mean over seeds) grows as p
falls: advantage(0.1) > advantage(0.5) > advantage(1.0).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pwlab.experiments import common
from pwlab.tasks.synthetic import mmoe_pair

CORRELATIONS = (1.0, 0.5, 0.1)
NUM_EXPERTS = 8
EXPERT_HIDDEN = 16
TOWER_HIDDEN = 8
BATCH = 128
LR = 1e-3
STEPS = {"quick": 1500, "full": 3000}


class _Tower(nn.Module):
    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h).squeeze(-1)


class SharedBottom(nn.Module):
    """x (B, F) → shared ReLU layer (B, H) → one tower per task → [(B,), (B,)]."""

    def __init__(self, num_features: int, hidden: int, num_tasks: int = 2, tower_hidden: int = TOWER_HIDDEN):
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU())
        self.towers = nn.ModuleList(_Tower(hidden, tower_hidden) for _ in range(num_tasks))

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.bottom(x)
        return [tower(h) for tower in self.towers]


class MMoE(nn.Module):
    """x (B, F) → E experts (B, E, H); per task k: gate softmax(x·W_k) (B, E) mixes the
    experts, ``f_k(x) = Σ_e g_k(x)_e · expert_e(x)`` (MMoE eq. 4), then task k's tower."""

    def __init__(self, num_features: int, num_experts: int = NUM_EXPERTS, hidden: int = EXPERT_HIDDEN,
                 num_tasks: int = 2, tower_hidden: int = TOWER_HIDDEN):
        super().__init__()
        self.w = nn.Parameter(torch.randn(num_experts, num_features, hidden) * num_features ** -0.5)
        self.b = nn.Parameter(torch.zeros(num_experts, hidden))
        self.gates = nn.ModuleList(nn.Linear(num_features, num_experts) for _ in range(num_tasks))
        self.towers = nn.ModuleList(_Tower(hidden, tower_hidden) for _ in range(num_tasks))

    def forward(self, x: Tensor) -> list[Tensor]:
        experts = F.relu(torch.einsum("bf,efh->beh", x, self.w) + self.b)          # (B, E, H)
        outs = []
        for gate, tower in zip(self.gates, self.towers):
            g = gate(x).softmax(-1)                                                   # (B, E)
            outs.append(tower(torch.einsum("be,beh->bh", g, experts)))
        return outs


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_bottom_width(num_features: int, target: int, num_tasks: int = 2, tower_hidden: int = TOWER_HIDDEN) -> int:
    """The shared-bottom width whose model has the parameter count closest to ``target``."""
    def count(h: int) -> int:
        return (num_features + 1) * h + num_tasks * ((h + 1) * tower_hidden + tower_hidden + 1)
    return min(range(1, 4 * target), key=lambda h: abs(count(h) - target))


def train_pair(model: nn.Module, task_a, task_b, steps: int, seed: int) -> float:
    """Adam on the summed MSE of both tasks; returns the mean test MSE of the two tasks."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    xa, ya, yb = task_a.x_train, task_a.y_train, task_b.y_train      # same x for both tasks
    n = len(ya)
    model.train()
    for _ in range(steps):
        idx = torch.randint(n, (BATCH,), generator=gen)
        pa, pb = model(xa[idx])
        loss = task_a.loss(pa, ya[idx]) + task_b.loss(pb, yb[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pa, pb = model(task_a.x_test)
        return 0.5 * (float(task_a.loss(pa, task_a.y_test)) + float(task_b.loss(pb, task_b.y_test)))


def run(seed: int = 0, quick: bool = False) -> dict:
    """Test MSE ``shared_bottom/<p>`` and ``mmoe/<p>`` and ``advantage/<p>`` for each p."""
    steps = STEPS["quick" if quick else "full"]
    out: dict = {"seed": seed, "steps": steps}
    for p in CORRELATIONS:
        a, b = mmoe_pair(seed, p=p)
        f = a.x_train.shape[1]
        torch.manual_seed(seed)
        mmoe = MMoE(f)
        torch.manual_seed(seed)
        shared = SharedBottom(f, matched_bottom_width(f, parameter_count(mmoe)))
        out[f"mmoe/{p}"] = train_pair(mmoe, a, b, steps, seed)
        out[f"shared_bottom/{p}"] = train_pair(shared, a, b, steps, seed)
        out[f"advantage/{p}"] = out[f"shared_bottom/{p}"] - out[f"mmoe/{p}"]
        out["params/mmoe"], out["params/shared_bottom"] = parameter_count(mmoe), parameter_count(shared)
    return out


def _grows(adv: dict) -> bool:
    ps = sorted(CORRELATIONS)                       # 0.1, 0.5, 1.0: advantage must fall along
    return all(adv[lo] > adv[hi] for lo, hi in zip(ps, ps[1:]))


def summarize(runs: list[dict]) -> dict:
    parts, numbers = [], {}
    for p in CORRELATIONS:
        sb, mm = common.collect(runs, f"shared_bottom/{p}"), common.collect(runs, f"mmoe/{p}")
        adv = common.collect(runs, f"advantage/{p}")
        numbers.update({f"shared_bottom/{p}": sb, f"mmoe/{p}": mm, f"advantage/{p}": adv})
        parts.append(f"p={p:g}: shared {common.fmt(sb, 3)} vs MMoE {common.fmt(mm, 3)}")
    held = _grows({p: numbers[f"advantage/{p}"]["mean"] for p in CORRELATIONS})
    return {"measured": "test MSE " + "; ".join(parts), "held": held,
            "seeds_held": sum(_grows({p: r[f"advantage/{p}"] for p in CORRELATIONS}) for r in runs),
            "numbers": numbers}


#: what :func:`headline` measures (the row's mean ± sd in ``pwlab bench claims``)
HEADLINE = "advantage(0.1) − advantage(1.0), test MSE (> 0 needed)"


def headline(run: dict) -> float:
    """The criterion's main quantity in one run (one seed)."""
    return float(run["advantage/0.1"]) - float(run["advantage/1.0"])
