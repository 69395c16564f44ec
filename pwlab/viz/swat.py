"""SWAT figures: the weight mask of a layer, and sparsity vs accuracy vs training FLOPs.

SWAT (Raihan & Aamodt, NeurIPS 2020) keeps the top-K weights by magnitude in the forward
pass; the mask shows which survive. The trade-off plot puts each run's accuracy against its
weight sparsity and its training FLOPs (the paper's Fig. 1 axes).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pwlab.viz._common import array, empty_figure


def weight_mask(weight, mask=None, *, name: str = "layer", max_cells: int = 4096) -> go.Figure:
    """The weights (out, in) of one layer with the ones SWAT drops left white.

    ``mask`` (out, in) bool, True = kept (default: all kept). Larger matrices are shown as
    their top-left ``max_cells``-cell corner, so the figure stays light.
    """
    w = array(weight)
    if w.ndim != 2 or w.size == 0:
        return empty_figure("no weight matrix to show", f"Weight mask: {name}")
    m = np.ones_like(w, dtype=bool) if mask is None else array(mask, dtype=bool)
    if m.shape != w.shape:
        raise ValueError(f"mask must have the weight's shape {w.shape}, got {m.shape}")
    density = float(m.mean())
    side = max(1, int(max_cells ** 0.5))
    shown_w, shown_m = w[:side, :side], m[:side, :side]
    z = np.where(shown_m, shown_w.round(4), np.nan)
    lim = float(np.abs(shown_w).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=np.where(np.isnan(z), None, z).tolist(), colorscale="RdBu", zmid=0, zmin=-lim,
                               zmax=lim, colorbar=dict(title="weight"),
                               hovertemplate="out %{y}, in %{x}: %{z:.3f}<extra></extra>"))
    crop = "" if shown_w.shape == w.shape else f", top-left {shown_w.shape[0]}×{shown_w.shape[1]} shown"
    fig.update_layout(title=f"Weight mask: {name} {w.shape[0]}×{w.shape[1]}, {density:.0%} kept{crop}",
                      height=380, plot_bgcolor="white", margin=dict(l=10, r=10, t=50, b=10),
                      xaxis=dict(title="input", showgrid=False), yaxis=dict(title="output", autorange="reversed",
                                                                             showgrid=False))
    return fig


def sparsity_tradeoff(points: Sequence[Mapping] | None, *, current: int | None = None) -> go.Figure:
    """Accuracy vs weight sparsity and vs training FLOPs, one marker per run.

    ``points``: dicts with ``weight_sparsity``, ``act_sparsity``, ``accuracy`` (mean over
    tasks) and ``train_flops``; the marker colour is the activation sparsity. ``current``
    rings one run (the one just trained).
    """
    pts = [p for p in (points or ()) if all(k in p for k in ("weight_sparsity", "accuracy", "train_flops"))]
    if not pts:
        return empty_figure("no run yet: move a slider and retrain", "Sparsity vs accuracy vs training FLOPs")
    ws = [float(p["weight_sparsity"]) for p in pts]
    acts = [float(p.get("act_sparsity", p["weight_sparsity"])) for p in pts]
    acc = [float(p["accuracy"]) for p in pts]
    fl = [float(p["train_flops"]) for p in pts]
    text = [f"weights {a:.0%} sparse, activations {b:.0%}<br>accuracy {c:.3f}<br>{d:.3g} training FLOPs"
            for a, b, c, d in zip(ws, acts, acc, fl)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy vs weight sparsity", "accuracy vs training FLOPs"),
                        horizontal_spacing=0.12)
    marker = dict(size=11, color=acts, colorscale="Viridis", cmin=0, cmax=1,
                  colorbar=dict(title="activation<br>sparsity", x=1.02), line=dict(width=1, color="black"))
    fig.add_trace(go.Scatter(x=ws, y=acc, mode="markers", marker=marker, text=text, hoverinfo="text",
                             showlegend=False), row=1, col=1)
    fig.add_trace(go.Scatter(x=fl, y=acc, mode="markers", marker={**marker, "showscale": False}, text=text,
                             hoverinfo="text", showlegend=False), row=1, col=2)
    if current is not None and -len(pts) <= current < len(pts):
        ring = dict(size=20, color="rgba(0,0,0,0)", line=dict(width=3, color="crimson"))
        fig.add_trace(go.Scatter(x=[ws[current]], y=[acc[current]], mode="markers", marker=ring, name="this run",
                                 hoverinfo="skip"), row=1, col=1)
        fig.add_trace(go.Scatter(x=[fl[current]], y=[acc[current]], mode="markers", marker=ring, showlegend=False,
                                 hoverinfo="skip"), row=1, col=2)
    fig.update_xaxes(title_text="weight sparsity", range=[-0.05, 1.0], tickformat=".0%", row=1, col=1)
    fig.update_xaxes(title_text="training FLOPs", type="log", row=1, col=2)
    fig.update_yaxes(title_text="accuracy", rangemode="tozero")
    fig.update_layout(title="SWAT: sparsity vs accuracy vs training FLOPs", height=360,
                      legend=dict(orientation="h", y=-0.2), margin=dict(l=10, r=10, t=60, b=10))
    return fig
