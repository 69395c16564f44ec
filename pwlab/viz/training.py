"""Training figures from :class:`pwlab.train.Trainer` history records (keys: see :mod:`pwlab.train`).

``task_curves``: per-task training loss and evaluation metrics; ``load_over_training``: the
load of each expert and the dropped fraction of each MoE block over the steps. Long histories
are thinned to at most ``max_points`` points per curve by averaging consecutive records, so a
live figure costs the same after 10 or 10,000 steps.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pwlab.viz._common import (block_keys, empty_figure, eval_records, expert_color, smooth, train_records)


def _thin(x: Sequence[float], y: np.ndarray, max_points: int) -> tuple[list, np.ndarray]:
    """Average consecutive points into at most ``max_points`` bins (y may be (n,) or (n, E))."""
    n = len(x)
    if n <= max_points:
        return list(x), y
    edges = np.linspace(0, n, max_points + 1).astype(int)
    xs = [x[hi - 1] for hi in edges[1:]]
    ys = np.stack([y[lo:hi].mean(0) for lo, hi in zip(edges[:-1], edges[1:])])
    return xs, ys


def task_curves(history: Sequence[dict] | None, *, smooth_window: int = 10, max_points: int = 300) -> go.Figure:
    """Training loss per task (moving average over ``smooth_window`` of its steps), and the
    evaluation metrics (accuracy or MSE per task) when the history has evaluations."""
    train, evals = train_records(history), eval_records(history)
    if not train and not evals:
        return empty_figure("no training steps yet: press Step or Play", "Training curves")
    tasks = sorted({k[5:] for r in train for k in r if k.startswith("loss/")})
    metrics = sorted({k for r in evals for k in r if k.startswith(("acc/", "mse/"))})
    cols = 2 if metrics else 1
    fig = make_subplots(rows=1, cols=cols, horizontal_spacing=0.12,
                        subplot_titles=["training loss per task"] + (["evaluation"] if metrics else []))
    for i, t in enumerate(sorted(tasks)):
        pts = [(r["step"], r[f"loss/{t}"]) for r in train if f"loss/{t}" in r]
        xs, ys = _thin([p[0] for p in pts], np.asarray(smooth([p[1] for p in pts], smooth_window)), max_points)
        fig.add_trace(go.Scatter(x=xs, y=np.round(ys, 5).tolist(), name=t, mode="lines", legendgroup=t,
                                 line=dict(color=_task_color(i))), row=1, col=1)
    for k in metrics:
        pts = [(r["step"], r[k]) for r in evals if k in r]
        t = k.split("/", 1)[1]
        i = tasks.index(t) if t in tasks else len(tasks) + metrics.index(k)
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[round(p[1], 5) for p in pts], name=k, mode="lines+markers",
                                 legendgroup=t, line=dict(color=_task_color(i), dash="dot")), row=1, col=2)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", type="log", row=1, col=1)
    fig.update_layout(title="Per-task training curves", height=340, margin=dict(l=10, r=10, t=60, b=10))
    return fig


def _task_color(i: int) -> str:
    from plotly.colors import qualitative
    palette = qualitative.Set2 + qualitative.Dark2
    return palette[i % len(palette)]


def load_over_training(history: Sequence[dict] | None, *, max_points: int = 300) -> go.Figure:
    """Per MoE block: each expert's share of the kept assignments (lines) and the fraction of
    assignments dropped by capacity (dashed black) over the training steps.

    Perfect balance is 1/E for every expert (dotted line); Switch Transformer's aux loss
    (eq. 4) pushes the load there, capacity drops what exceeds C slots.
    """
    train = train_records(history)
    blocks = block_keys(train, "load")
    if not blocks:
        note = "no training steps yet" if not train else "dense model: no expert load to show"
        return empty_figure(note, "Load per expert and dropped fraction")
    fig = make_subplots(rows=len(blocks), cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=[f"block {b}" for b in blocks])
    for li, b in enumerate(blocks):
        recs = [r for r in train if f"load/{b}" in r]
        steps = [r["step"] for r in recs]
        ne = max(len(r[f"load/{b}"]) for r in recs)
        load = np.array([list(r[f"load/{b}"]) + [0.0] * (ne - len(r[f"load/{b}"])) for r in recs])   # (steps, E)
        dropped = np.array([r.get(f"dropped/{b}", 0.0) for r in recs])
        xs, ys = _thin(steps, np.concatenate([load, dropped[:, None]], 1), max_points)
        for e in range(ne):
            fig.add_trace(go.Scatter(x=xs, y=np.round(ys[:, e], 4).tolist(), mode="lines", name=f"expert {e}",
                                     legendgroup=f"e{e}", showlegend=li == 0, line=dict(color=expert_color(e))),
                          row=li + 1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=np.round(ys[:, ne], 4).tolist(), mode="lines", name="dropped fraction",
                                 legendgroup="dropped", showlegend=li == 0, line=dict(color="black", dash="dash")),
                      row=li + 1, col=1)
        fig.add_hline(y=1 / ne, line=dict(color="grey", dash="dot", width=1), row=li + 1, col=1)
        fig.update_yaxes(title_text="fraction", rangemode="tozero", row=li + 1, col=1)
    fig.update_xaxes(title_text="step", row=len(blocks), col=1)
    fig.update_layout(title="Load per expert and dropped fraction", height=180 + 170 * len(blocks),
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig
