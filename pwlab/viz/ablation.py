"""Expert ablation bars: each task's metric with all experts and with some switched off."""
from __future__ import annotations

import plotly.graph_objects as go

from pwlab.viz._common import empty_figure, figure


def ablation_bars(baseline: dict | None, ablated: dict | None = None, metric: dict | None = None,
                  disabled: dict | None = None) -> go.Figure:
    """Grouped bars per task: the full model and the ablated one.

    Args:
        baseline / ablated: task → metric value (ablated defaults to baseline).
        metric: task → metric name ("accuracy", "MSE"); disabled: block → experts switched off.
    """
    if not baseline:
        return empty_figure("no tasks to evaluate", "Expert ablation")
    names = list(baseline)
    ablated = {t: (ablated or baseline).get(t, float("nan")) for t in names}
    metric, disabled = metric or {t: "accuracy" for t in names}, disabled or {}
    off = ", ".join(f"block {b}: {sorted(e)}" for b, e in disabled.items() if e) or "none"
    data = [dict(type="bar", x=names, y=[round(baseline[t], 4) for t in names], name="all experts",
                 marker=dict(color="#bbbbbb"), text=[f"{baseline[t]:.2f}" for t in names], textposition="outside"),
            dict(type="bar", x=names, y=[round(ablated[t], 4) for t in names], name="with experts off",
                 marker=dict(color="#d62728"), text=[f"{ablated[t]:.2f}" for t in names], textposition="outside")]
    kinds = " / ".join(sorted(set(metric.values())))
    return figure(data, dict(title=dict(text=f"Per-task {kinds} with experts off ({off})"), barmode="group",
                             height=380, yaxis=dict(title=dict(text=kinds), rangemode="tozero"),
                             margin=dict(l=10, r=10, t=60, b=10)))
