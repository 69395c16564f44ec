"""A claim's sweep: the headline metric across the knob, mean ± sd over seeds, paper's number marked."""
from __future__ import annotations

import math

import plotly.graph_objects as go

from pwlab.viz._common import empty_figure, figure


def sweep_figure(row: dict | None, title: str | None = None) -> go.Figure:
    """Points with error bars (mean ± sample sd over seeds) per knob value of a paper-regime row.

    Args:
        row: a row of ``pwlab bench claims --json`` (or its ``"sweep"`` dict): ``sweep["points"]``
            maps each knob value to ``{"mean", "std", "n"}``; ``paper_value`` is highlighted,
            ``threshold`` (the held criterion's number) is a dashed line and ``paper_number``
            (the paper's own number, where it is on the same scale) a dotted one.
        title: defaults to the row's title and knob.
    """
    sweep = (row or {}).get("sweep", row) if row and "points" not in row else row
    points = (sweep or {}).get("points") or {}
    if not points:
        return empty_figure("no sweep in this row (the default regime has none)", title or "Sweep")
    xs = [str(v) for v in points]
    mean = [float(points[v]["mean"]) for v in points]
    sd = [float(points[v].get("std", 0.0)) for v in points]
    n = max(int(points[v].get("n", 1)) for v in points)
    paper = str(sweep.get("paper_value"))
    colors = ["#d62728" if x == paper else "#1f77b4" for x in xs]
    data = [dict(type="scatter", mode="markers+lines", x=xs, y=mean, name=f"measured (mean ± sd, {n} seed(s))",
                 error_y=dict(type="data", array=sd, visible=True), marker=dict(size=11, color=colors),
                 line=dict(color="#1f77b4", width=1),
                 hovertemplate="%{x}: %{y:.3f}<extra></extra>")]
    shapes, notes = [], []
    for key, dash, label in (("threshold", "dash", "held criterion"), ("paper_number", "dot", "paper")):
        v = sweep.get(key)
        if v is not None and math.isfinite(float(v)):
            shapes.append(dict(type="line", xref="paper", x0=0, x1=1, yref="y", y0=float(v), y1=float(v),
                               line=dict(dash=dash, color="#555555" if key == "threshold" else "#2ca02c")))
            notes.append(dict(text=f"{label}: {float(v):.3g}", xref="paper", x=1.0, xanchor="right", yref="y",
                              y=float(v), yanchor="bottom", showarrow=False, font=dict(size=11)))
    if title is None:
        head = (row or {}).get("title", "Sweep")
        title = f"{head}: {sweep.get('knob', 'knob')} (red: the paper-like point)"
    return figure(data, dict(title=dict(text=title), height=380, annotations=notes, shapes=shapes,
                             xaxis=dict(title=dict(text=str(sweep.get("knob", ""))), type="category"),
                             yaxis=dict(title=dict(text=str(sweep.get("metric", "")))),
                             margin=dict(l=10, r=10, t=60, b=10), showlegend=False))
