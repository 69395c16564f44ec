"""Training figures from :class:`pwlab.train.Trainer` history records (fields: see :mod:`pwlab.history`;
lists of flat-key dicts, as checkpoints and callbacks hold them, are read too).

``task_curves``: per-task training loss and evaluation metrics; ``load_over_training``: the
load of each expert and the dropped fraction of each MoE block over the steps. Long histories
are thinned to at most ``max_points`` points per curve by averaging consecutive records, so a
live figure costs the same after 10 or 10,000 steps.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from pwlab.viz._common import (axis_key, empty_figure, eval_records, expert_color, figure, grid, moe_blocks, smooth,
                               train_records)

_TASK_COLORS = qualitative.Set2 + qualitative.Dark2


def _thin(x: Sequence[float], y: np.ndarray, max_points: int) -> tuple[list, np.ndarray]:
    """Average consecutive points into at most ``max_points`` bins (y may be (n,) or (n, E))."""
    n = len(x)
    if n <= max_points:
        return list(x), y
    edges = np.linspace(0, n, max_points + 1).astype(int)
    xs = [x[hi - 1] for hi in edges[1:]]
    ys = np.stack([y[lo:hi].mean(0) for lo, hi in zip(edges[:-1], edges[1:])])
    return xs, ys


def task_curves(history: Sequence | None, *, smooth_window: int = 10, max_points: int = 300) -> go.Figure:
    """Training loss per task (moving average over ``smooth_window`` of its steps), and the
    evaluation metrics (accuracy or MSE per task) when the history has evaluations."""
    train, evals = train_records(history), eval_records(history)
    if not train and not evals:
        return empty_figure("no training steps yet: press Step or Play", "Training curves")
    tasks = sorted({t for r in train for t in r.task_losses})
    metrics = sorted({(r.metric_key(t), t) for r in evals for t in r.metrics})
    cols = 2 if metrics else 1
    layout, axes = grid(1, cols, hspace=0.12,
                        titles=["training loss per task"] + (["evaluation"] if metrics else []))
    data = []
    for i, t in enumerate(tasks):
        pts = [(r.step, r.task_losses[t]) for r in train if t in r.task_losses]
        xs, ys = _thin([p[0] for p in pts], np.asarray(smooth([p[1] for p in pts], smooth_window)), max_points)
        data.append(dict(type="scatter", x=xs, y=np.round(ys, 5).tolist(), name=t, mode="lines", legendgroup=t,
                         line=dict(color=_TASK_COLORS[i % len(_TASK_COLORS)]), xaxis="x", yaxis="y"))
    for j, (k, t) in enumerate(metrics):
        pts = [(r.step, r.metrics[t]) for r in evals if t in r.metrics and r.metric_key(t) == k]
        i = tasks.index(t) if t in tasks else len(tasks) + j
        xa, ya = axes[0][1]
        data.append(dict(type="scatter", x=[p[0] for p in pts], y=[round(p[1], 5) for p in pts], name=k,
                         mode="lines+markers", legendgroup=t, xaxis=xa, yaxis=ya,
                         line=dict(color=_TASK_COLORS[i % len(_TASK_COLORS)], dash="dot")))
    for xa, ya in axes[0]:
        layout[axis_key(xa)]["title"] = dict(text="step")
    layout["yaxis"].update(title=dict(text="loss"), type="log")
    layout.update(title=dict(text="Per-task training curves"), height=340, margin=dict(l=10, r=10, t=60, b=10))
    return figure(data, layout)


def load_over_training(history: Sequence | None, *, max_points: int = 300) -> go.Figure:
    """Per MoE block: each expert's share of the kept assignments (lines) and the fraction of
    assignments dropped by capacity (dashed black) over the training steps.

    Perfect balance is 1/E for every expert (dotted line); Switch Transformer's aux loss
    (eq. 4) pushes the load there, capacity drops what exceeds C slots.
    """
    train = train_records(history)
    blocks = moe_blocks(train)
    if not blocks:
        note = "no training steps yet" if not train else "dense model: no expert load to show"
        return empty_figure(note, "Load per expert and dropped fraction")
    layout, axes = grid(len(blocks), 1, vspace=0.1, shared_x=True, titles=[f"block {b}" for b in blocks])
    data, shapes = [], []
    for li, b in enumerate(blocks):
        xa, ya = axes[li][0]
        stats = [(r.step, r.blocks[b]) for r in train if b in r.blocks and r.blocks[b].load is not None]
        steps = [step for step, _ in stats]
        ne = max(len(s.load) for _, s in stats)
        load = np.array([list(s.load) + [0.0] * (ne - len(s.load)) for _, s in stats])   # (steps, E)
        dropped = np.array([s.dropped or 0.0 for _, s in stats])
        xs, ys = _thin(steps, np.concatenate([load, dropped[:, None]], 1), max_points)
        for e in range(ne):
            data.append(dict(type="scatter", x=xs, y=np.round(ys[:, e], 4).tolist(), mode="lines", name=f"expert {e}",
                             legendgroup=f"e{e}", showlegend=li == 0, line=dict(color=expert_color(e)),
                             xaxis=xa, yaxis=ya))
        data.append(dict(type="scatter", x=xs, y=np.round(ys[:, ne], 4).tolist(), mode="lines",
                         name="dropped fraction", legendgroup="dropped", showlegend=li == 0,
                         line=dict(color="black", dash="dash"), xaxis=xa, yaxis=ya))
        shapes.append(dict(type="line", xref=f"{xa} domain", yref=ya, x0=0, x1=1, y0=1 / ne, y1=1 / ne,
                           line=dict(color="grey", dash="dot", width=1)))
        layout[axis_key(ya)].update(title=dict(text="fraction"), rangemode="tozero")
    layout[axis_key(axes[-1][0][0])]["title"] = dict(text="step")
    layout.update(title=dict(text="Load per expert and dropped fraction"), height=180 + 170 * len(blocks),
                  shapes=shapes, margin=dict(l=10, r=10, t=60, b=10))
    return figure(data, layout)


def expert_load(stats, *, title: str = "Load per expert") -> go.Figure:
    """One MoE call's load: bars of each expert's kept assignments (share of all kept), the
    assignments its router proposed before capacity (outlined), and the balanced level 1/E.

    ``stats`` is the :class:`~pwlab.moe.MoEStats` of one layer (``y, stats = moe(x)``); an
    expert whose outlined bar rises above its filled one lost assignments to capacity.
    """
    counts = np.asarray(stats.counts.detach().cpu(), dtype=float)                 # (E,) kept
    proposed = np.asarray(stats.proposed_counts.detach().cpu(), dtype=float)      # (E,) before capacity
    ne = counts.shape[0]
    if ne == 0 or proposed.sum() == 0:
        return empty_figure("no assignments to show", title)
    total = proposed.sum()
    experts = [f"expert {e}" for e in range(ne)]
    data = [dict(type="bar", x=experts, y=np.round(counts / total, 4).tolist(), name="kept",
                 marker=dict(color=[expert_color(e) for e in range(ne)])),
            dict(type="bar", x=experts, y=np.round(proposed / total, 4).tolist(), name="proposed",
                 marker=dict(color="rgba(0,0,0,0)", line=dict(color="black", width=1.5)))]
    dropped = float(stats.dropped_fraction)
    layout = dict(barmode="overlay", title=dict(text=f"{title} (dropped {dropped:.1%})"), height=320,
                  yaxis=dict(title=dict(text="share of proposed assignments"), rangemode="tozero"),
                  shapes=[dict(type="line", xref="x domain", yref="y", x0=0, x1=1, y0=1 / ne, y1=1 / ne,
                               line=dict(color="grey", dash="dot", width=1))],
                  margin=dict(l=10, r=10, t=60, b=10))
    return figure(data, layout)
