"""Shared helpers of the figures: plain arrays from tensors, expert colours, empty figures.

No torch import: tensors are read through ``.tolist()``, so every function here also takes
numpy arrays and nested lists.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

#: one colour per expert (cycled past 20 experts); the same in every figure
EXPERT_COLORS = tuple(qualitative.D3) + tuple(qualitative.Pastel)
#: colours of the four senses, in the order of pwlab.senses.MODALITIES
SENSE_COLORS = {"image": "#1f77b4", "audio": "#d62728", "text": "#2ca02c", "tabular": "#9467bd"}
GREY = "rgba(180,180,180,0.35)"


def array(x, dtype=float) -> np.ndarray:
    """A numpy array from a tensor, an array or nested lists (no torch import)."""
    if x is None:
        return np.zeros(0, dtype=dtype)
    if hasattr(x, "detach"):
        x = x.detach().cpu().tolist()
    return np.asarray(x, dtype=dtype)


def expert_color(e: int) -> str:
    return EXPERT_COLORS[int(e) % len(EXPERT_COLORS)]


def rgba(hex_color: str, alpha: float) -> str:
    """``#rrggbb`` (or ``rgb(r,g,b)``) → ``rgba(r,g,b,alpha)``."""
    if hex_color.startswith("#"):
        r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (int(float(v)) for v in hex_color[hex_color.index("(") + 1:hex_color.index(")")].split(",")[:3])
    return f"rgba({r},{g},{b},{alpha})"


def expert_colorscale(num_experts: int) -> list[list]:
    """A stepwise colorscale giving integer ``z = e`` exactly expert ``e``'s colour (zmin=-0.5, zmax=E-0.5)."""
    n = max(int(num_experts), 1)
    scale = []
    for e in range(n):
        c = expert_color(e)
        scale += [[e / n, c], [(e + 1) / n, c]]
    return scale


def empty_figure(note: str, title: str | None = None, height: int = 300) -> go.Figure:
    """A figure with no data and ``note`` written in its middle (what every viz returns for no input)."""
    fig = go.Figure()
    fig.add_annotation(text=note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="grey"))
    fig.update_layout(title=title, height=height, xaxis=dict(visible=False), yaxis=dict(visible=False),
                      template="plotly_white")
    return fig


def train_records(history: Sequence[dict] | None) -> list[dict]:
    """The training records of a Trainer history (skipped steps and evaluations left out)."""
    return [r for r in (history or ()) if "loss" in r and not r.get("eval") and not r.get("skipped")]


def eval_records(history: Sequence[dict] | None) -> list[dict]:
    return [r for r in (history or ()) if r.get("eval")]


def block_keys(records: Sequence[dict], prefix: str) -> list[int]:
    """MoE block indices that appear as ``<prefix>/<block>`` keys, sorted."""
    return sorted({int(k.split("/", 1)[1]) for r in records for k in r if k.startswith(prefix + "/")})


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` values (window 1: unchanged)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v.tolist()
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    return ((c[idx] - c[lo]) / (idx - lo)).tolist()
