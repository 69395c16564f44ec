"""SWAT figures: the weight mask of a layer, and sparsity vs accuracy vs training FLOPs.

SWAT (Raihan & Aamodt, NeurIPS 2020) keeps the top-K weights by magnitude in the forward
pass; the mask shows which survive. The trade-off plot puts each run's accuracy against its
weight sparsity and its training FLOPs (the paper's Fig. 1 axes).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from pwlab.viz._common import scale, array, empty_figure, figure, grid


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
    heat = dict(type="heatmap", z=np.where(np.isnan(z), None, z).tolist(), colorscale=scale("RdBu"), zmid=0, zmin=-lim,
                zmax=lim, colorbar=dict(title=dict(text="weight")),
                hovertemplate="out %{y}, in %{x}: %{z:.3f}<extra></extra>")
    crop = "" if shown_w.shape == w.shape else f", top-left {shown_w.shape[0]}×{shown_w.shape[1]} shown"
    title = f"Weight mask: {name} {w.shape[0]}×{w.shape[1]}, {density:.0%} kept{crop}"
    return figure([heat], dict(title=dict(text=title), height=380, plot_bgcolor="white",
                               margin=dict(l=10, r=10, t=50, b=10),
                               xaxis=dict(title=dict(text="input"), showgrid=False),
                               yaxis=dict(title=dict(text="output"), autorange="reversed", showgrid=False)))


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
    layout, axes = grid(1, 2, hspace=0.12, titles=["accuracy vs weight sparsity", "accuracy vs training FLOPs"])
    marker = dict(size=11, color=acts, colorscale=scale("Viridis"), cmin=0, cmax=1,
                  colorbar=dict(title=dict(text="activation<br>sparsity"), x=1.02), line=dict(width=1, color="black"))
    common = dict(type="scatter", mode="markers", text=text, hoverinfo="text", showlegend=False, y=acc)
    data = [dict(common, x=ws, marker=marker, xaxis="x", yaxis="y"),
            dict(common, x=fl, marker=dict(marker, showscale=False), xaxis="x2", yaxis="y2")]
    if current is not None and -len(pts) <= current < len(pts):
        ring = dict(size=20, color="rgba(0,0,0,0)", line=dict(width=3, color="crimson"))
        data.append(dict(type="scatter", x=[ws[current]], y=[acc[current]], mode="markers", marker=ring,
                         name="this run", hoverinfo="skip", xaxis="x", yaxis="y"))
        data.append(dict(type="scatter", x=[fl[current]], y=[acc[current]], mode="markers", marker=ring,
                         showlegend=False, hoverinfo="skip", xaxis="x2", yaxis="y2"))
    layout["xaxis"].update(title=dict(text="weight sparsity"), range=[-0.05, 1.0], tickformat=".0%")
    layout["xaxis2"].update(title=dict(text="training FLOPs"), type="log")
    for ya in ("yaxis", "yaxis2"):
        layout[ya].update(title=dict(text="accuracy"), rangemode="tozero")
    layout.update(title=dict(text="SWAT: sparsity vs accuracy vs training FLOPs"), height=360,
                  legend=dict(orientation="h", y=-0.2), margin=dict(l=10, r=10, t=60, b=10))
    return figure(data, layout)
