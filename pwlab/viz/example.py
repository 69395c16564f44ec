"""Routing of one example (a :class:`pwlab.pathways.ExampleRouting`): its tokens coloured by expert.

Image patches are drawn over the image, text characters and audio frames and table features
as a row of cells per MoE block. Each token takes the colour of its top expert (highest combine
weight); a token no expert took (dropped by capacity, or unpicked under expert choice) is left
white. Index legend: L MoE blocks, T tokens, E experts.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from pwlab.viz._common import scale, array, axis_key, empty_figure, expert_color, expert_colorscale, figure, grid


def _top_expert(weights: np.ndarray) -> np.ndarray:
    """(L, T, E) combine weights → (L, T) top expert, NaN where the token was not routed."""
    top = weights.argmax(-1).astype(float)
    top[weights.max(-1) <= 0] = np.nan
    return top


def _hover(weights: np.ndarray, names: Sequence[str]) -> list[list[str]]:
    """Per block and token: 'name: e2 0.63, e0 0.37'."""
    out = []
    for wl in weights:
        row = []
        for t, wt in enumerate(wl):
            picks = [f"e{e} {wt[e]:.2f}" for e in np.argsort(-wt, kind="stable") if wt[e] > 0]
            row.append(f"{names[t]}: " + (", ".join(picks) if picks else "not routed"))
        out.append(row)
    return out


def _legend(num_experts: int) -> list[dict]:
    return [dict(type="scatter", x=[None], y=[None], mode="markers", name=f"expert {e}", hoverinfo="skip",
                 marker=dict(symbol="square", size=12, color=expert_color(e))) for e in range(num_experts)]


def example_routing(er, inputs=None, labels: Sequence[str] | None = None, *, task_token: bool = True) -> go.Figure:
    """Tokens of one example coloured by the expert they went to, one panel (or row) per MoE block.

    Args:
        er: an :class:`~pwlab.pathways.ExampleRouting` (``weights`` (L, T, E)).
        inputs: the example's raw input, for the picture: an image (H, W) (patches drawn over
            it) or an audio waveform (S,) (drawn above the frames); optional.
        labels: one label per content token (e.g. the characters of a text); default: indices.
        task_token: position 0 of the tokens is the model's task token (shown apart).
    """
    if er is None:
        return empty_figure("no example selected", "Routing of one example")
    w = array(er.weights)
    if w.ndim != 3 or w.shape[0] == 0 or w.shape[1] == 0:
        return empty_figure("this model has no MoE block: nothing is routed", "Routing of one example")
    nb, nt, ne = w.shape
    first = 1 if task_token and nt > 1 else 0
    top = _top_expert(w)
    title = f"{er.task} #{er.index} ({er.sense}): tokens coloured by their top expert"
    if first:
        title += "; task token → " + ", ".join(
            f"block {b}: e{int(t)}" if t == t else f"block {b}: —" for b, t in zip(er.blocks, top[:, 0]))
    content, wc = top[:, first:], w[:, first:]
    n = content.shape[1]
    if labels is None or len(labels) != n:
        labels = [str(i) for i in range(n)]
    img = array(inputs) if inputs is not None else None
    side = int(round(n ** 0.5))
    if er.sense == "image" and img is not None and img.ndim == 2 and side * side == n and img.shape[0] % side == 0:
        data, layout = _image_panels(img, content, wc, side, list(er.blocks), ne)
    else:
        data, layout = _token_rows(content, wc, list(labels), list(er.blocks), ne,
                                   wave=img if er.sense == "audio" and img is not None and img.ndim == 1 else None)
    layout.update(title=dict(text=title, font=dict(size=13)), margin=dict(l=10, r=10, t=60, b=40),
                  plot_bgcolor="white", legend=dict(orientation="h", y=0, yanchor="top", x=0))
    return figure(data + _legend(ne), layout)


def _image_panels(img: np.ndarray, top: np.ndarray, w: np.ndarray, side: int, blocks: list, ne: int):
    p = img.shape[0] // side
    layout, axes = grid(1, 1 + len(blocks), hspace=0.04, titles=["input"] + [f"block {b}" for b in blocks])
    picture = dict(type="heatmap", z=img.tolist(), colorscale=scale("Greys"), showscale=False,
                   hoverinfo="skip")
    data = [dict(picture, xaxis="x", yaxis="y")]
    centres = [c * p + (p - 1) / 2 for c in range(side)]
    hover = _hover(w, [f"patch ({r},{c})" for r in range(side) for c in range(side)])
    for li in range(len(blocks)):
        xa, ya = axes[0][li + 1]
        grid_e = top[li].reshape(side, side)
        data.append(dict(picture, xaxis=xa, yaxis=ya))
        data.append(dict(type="heatmap", x=centres, y=centres, z=np.where(np.isnan(grid_e), None, grid_e).tolist(),
                         zmin=-0.5, zmax=ne - 0.5, colorscale=expert_colorscale(ne), showscale=False, opacity=0.55,
                         xgap=1, ygap=1, text=np.array(hover[li], dtype=object).reshape(side, side).tolist(),
                         hoverinfo="text", xaxis=xa, yaxis=ya))
    for xa, ya in axes[0]:
        layout[axis_key(xa)].update(visible=False)
        layout[axis_key(ya)].update(visible=False, autorange="reversed", scaleanchor=xa)
    layout["height"] = 330
    return data, layout


def _token_rows(top: np.ndarray, w: np.ndarray, labels: list[str], blocks: list, ne: int, wave: np.ndarray | None):
    n = top.shape[1]
    rows = 1 + (wave is not None)
    layout, axes = grid(rows, 1, vspace=0.08, shared_x=True, row_heights=[0.4, 0.6] if rows == 2 else None)
    data = []
    if wave is not None:
        # frame f starts at sample f·S/T: draw the waveform in frame units, at most ~2000 points
        stride = max(1, len(wave) // 2000)
        xs = (np.arange(0, len(wave), stride) * n / max(len(wave), 1) - 0.5).round(3)
        data.append(dict(type="scatter", x=xs.tolist(), y=wave[::stride].round(4).tolist(), mode="lines",
                         showlegend=False, line=dict(color="#555", width=1), hoverinfo="skip", xaxis="x", yaxis="y"))
        layout["yaxis"]["visible"] = False
    xa, ya = axes[-1][0]
    hover = _hover(w, labels)
    z = np.where(np.isnan(top), None, top).tolist()
    data.append(dict(type="heatmap", z=z, x=list(range(n)), y=[f"block {b}" for b in blocks], zmin=-0.5,
                     zmax=ne - 0.5, colorscale=expert_colorscale(ne), showscale=False, xgap=2, ygap=2,
                     text=[labels] * len(blocks), texttemplate="%{text}", customdata=hover,
                     hovertemplate="%{customdata}<extra></extra>", xaxis=xa, yaxis=ya))
    layout[axis_key(xa)].update(title=dict(text="token"), showticklabels=False)
    layout[axis_key(ya)].update(autorange="reversed")
    layout["height"] = 200 + 45 * len(blocks) + (140 if wave is not None else 0)
    return data, layout
