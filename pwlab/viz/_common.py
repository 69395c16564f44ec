"""Shared helpers of the figures: plain arrays from tensors, expert colours, empty figures.

No torch import: tensors are read through ``.tolist()``, so every function here also takes
numpy arrays and nested lists.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import get_colorscale, qualitative

from pwlab.history import EvalRecord, StepRecord, from_dict

#: one colour per expert (cycled past 20 experts); the same in every figure
EXPERT_COLORS = tuple(qualitative.D3) + tuple(qualitative.Pastel)
#: colours of the four senses, in the order of pwlab.senses.SENSES
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


def scale(name: str) -> list[list]:
    """A named plotly.py colorscale as an explicit list: plotly.js reads some names reversed
    (``"Greys"``, ``"Blues"``), and figures built without validation pass names through as is."""
    return [list(x) for x in get_colorscale(name)]


def expert_colorscale(num_experts: int) -> list[list]:
    """A stepwise colorscale giving integer ``z = e`` exactly expert ``e``'s colour (zmin=-0.5, zmax=E-0.5)."""
    n = max(int(num_experts), 1)
    scale = []
    for e in range(n):
        c = expert_color(e)
        scale += [[e / n, c], [(e + 1) / n, c]]
    return scale


def figure(data: list[dict], layout: dict) -> go.Figure:
    """A ``go.Figure`` from plain trace and layout dicts.

    Built in one go from dicts rather than through ``make_subplots`` / ``add_trace``, which
    validate every property path and cost tens of milliseconds per figure: too slow for a
    figure redrawn on every slider move. The tests validate every figure's JSON instead.
    """
    try:
        return go.Figure(dict(data=data, layout=layout), _validate=False)
    except TypeError:                     # a plotly without the switch: validate, slower but correct
        return go.Figure(dict(data=data, layout=layout))


def grid(rows: int, cols: int, *, titles: Sequence[str] | None = None, hspace: float = 0.08, vspace: float = 0.12,
         row_heights: Sequence[float] | None = None,
         shared_x: bool = False) -> tuple[dict, list[list[tuple[str, str]]]]:
    """Axes of a rows × cols grid: a layout dict and ``axes[r][c] = ("x2", "y2")`` for the traces.

    Row 0 is the top row; ``titles`` (row-major) go above each cell; ``shared_x`` ties every
    x axis to the bottom-left one (zoom together) and hides the tick labels above it.
    """
    width = (1 - hspace * (cols - 1)) / cols
    heights = list(row_heights) if row_heights else [1.0] * rows
    scale = (1 - vspace * (rows - 1)) / sum(heights)
    layout: dict = {"annotations": []}
    axes, top = [], 1.0
    for r in range(rows):
        h = heights[r] * scale
        row = []
        for c in range(cols):
            i = r * cols + c + 1
            xa, ya = ("x", "y") if i == 1 else (f"x{i}", f"y{i}")
            x0 = c * (width + hspace)
            bottom_left = (rows - 1) * cols + 1
            layout[f"xaxis{'' if i == 1 else i}"] = dict(domain=[x0, x0 + width], anchor=ya)
            layout[f"yaxis{'' if i == 1 else i}"] = dict(domain=[max(top - h, 0.0), top], anchor=xa)
            if shared_x and i != bottom_left:
                layout[f"xaxis{'' if i == 1 else i}"].update(matches=f"x{'' if bottom_left == 1 else bottom_left}",
                                                             showticklabels=r == rows - 1)
            if titles and i - 1 < len(titles) and titles[i - 1]:
                layout["annotations"].append(dict(text=titles[i - 1], x=x0 + width / 2, y=top, xref="paper",
                                                  yref="paper", xanchor="center", yanchor="bottom", showarrow=False,
                                                  font=dict(size=14)))
            row.append((xa, ya))
        axes.append(row)
        top -= h + vspace
    return layout, axes


def axis_key(ref: str) -> str:
    """``"x2"`` → ``"xaxis2"``, ``"y"`` → ``"yaxis"``: the layout key of an axis reference."""
    return f"{ref[0]}axis{ref[1:]}"


def empty_figure(note: str, title: str | None = None, height: int = 300) -> go.Figure:
    """A figure with no data and ``note`` written in its middle (what every viz returns for no input)."""
    return figure([], dict(title=dict(text=title) if title else None, height=height,
                           xaxis=dict(visible=False), yaxis=dict(visible=False),
                           annotations=[dict(text=note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                                             font=dict(size=14, color="grey"))]))


def _records(history) -> list:
    """Typed records of a history; flat-key dicts are rebuilt, anything else is left out."""
    out = []
    for r in history or ():
        try:
            out.append(from_dict(r))
        except ValueError:
            continue
    return out


def train_records(history: Sequence | None) -> list[StepRecord]:
    """The training records of a Trainer history (skipped steps and evaluations left out)."""
    return [r for r in _records(history) if isinstance(r, StepRecord)]


def eval_records(history: Sequence | None) -> list[EvalRecord]:
    return [r for r in _records(history) if isinstance(r, EvalRecord)]


def moe_blocks(records: Sequence[StepRecord]) -> list[int]:
    """MoE block indices with a recorded expert load, sorted."""
    return sorted({b for r in records for b, s in r.blocks.items() if s.load is not None})


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` values (window 1: unchanged)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v.tolist()
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    return ((c[idx] - c[lo]) / (idx - lo)).tolist()
