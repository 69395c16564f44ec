"""Pathway figures from a :class:`pwlab.pathways.PathwayMap`: Sankey, expert × task heatmaps, sense bars.

Index legend: L MoE blocks, E experts, K tasks (or M senses). Every function takes the plain
map (counts per block, expert and task/sense) and returns a ``go.Figure``; an empty or
missing map gives an empty figure with a note.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from pwlab.viz._common import scale, GREY, SENSE_COLORS, array, axis_key, empty_figure, expert_color, figure, grid, rgba

BY = ("task", "sense")


def _check_by(by: str) -> str:
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(map(repr, BY))}; got {by!r}")
    return by


def _counts(pmap, by: str) -> tuple[np.ndarray, list[str]]:
    """(L, E, S) counts and the S names of the tasks or senses that have any assignments."""
    if pmap is None:
        return np.zeros((0, 0, 0)), []
    counts = array(pmap.task_counts if by == "task" else pmap.sense_counts)
    names = list(pmap.tasks if by == "task" else pmap.senses)
    if counts.ndim != 3 or counts.size == 0:
        return np.zeros((0, 0, 0)), []
    used = [j for j in range(counts.shape[2]) if counts[:, :, j].sum() > 0]
    return counts[:, :, used], [names[j] for j in used]


def _flows(pmap, by: str, counts: np.ndarray) -> np.ndarray | None:
    """(L-1, E, E, S) exact flows between consecutive blocks of the used sources, or None
    when the map holds none (a map built from counts alone)."""
    flows = getattr(pmap, "task_flows" if by == "task" else "sense_flows", None)
    nb, ne, _ = counts.shape
    if flows is None or nb < 2:                # one block: no links between blocks to draw
        return None
    flows = array(flows)
    total = array(pmap.task_counts if by == "task" else pmap.sense_counts)
    used = [j for j in range(total.shape[2]) if total[:, :, j].sum() > 0]
    if flows.shape[:3] != (max(nb - 1, 0), ne, ne):
        raise ValueError(f"pmap's {by}_flows must have shape (L-1, E, E, ·) = ({nb - 1}, {ne}, {ne}, ·), "
                         f"got {flows.shape}")
    return flows[..., used]


def _source_colors(names: Sequence[str], by: str) -> list[str]:
    if by == "sense":
        return [SENSE_COLORS.get(n, "#7f7f7f") for n in names]
    palette = qualitative.Set2 + qualitative.Dark2
    return [palette[i % len(palette)] for i in range(len(names))]


def pathway_sankey(pmap, by: str = "task", *, highlight: str | None = None,
                   experts: Mapping[int, Sequence[int]] | None = None, min_share: float = 0.005) -> go.Figure:
    """Task (or sense) → expert of each MoE block → head; link width = share of all tokens.

    A map from :func:`pwlab.pathways.pathway_map` holds the exact flows between consecutive
    blocks (which expert of block l each token used before block l+1), and the link from
    expert i to expert j of the next block is ``share(task) · f_l(i, j | task)``, the task's
    fraction of token pairs that went that way. A map of per-block counts alone (no
    ``task_flows``) falls back to ``share(task) · p_l(i | task) · p_{l+1}(j | task)``: exact per
    block, independent between blocks within a task. Links keep their task's colour, so each task's pathway can
    be followed; ``highlight`` greys out the other tasks' links, ``experts`` (block → expert
    list, e.g. one example's route) outlines those expert nodes. Links under ``min_share``
    of all tokens are left out to keep the picture readable.
    """
    by = _check_by(by)
    counts, names = _counts(pmap, by)
    if not names:
        return empty_figure("no routed tokens yet (dense model, or nothing evaluated)", "Pathways")
    if highlight is not None and highlight not in names:
        raise ValueError(f"highlight must be one of {', '.join(map(repr, names))} or None; got {highlight!r}")
    nb, ne, ns = counts.shape
    blocks = list(pmap.blocks)
    totals = counts.sum(1)                                                 # (L, S)
    p = counts / np.maximum(totals[:, None, :], 1)                         # (L, E, S): p_l(e | s)
    w = totals[0] / max(totals[0].sum(), 1)                                # (S,) token share of each source
    colors = _source_colors(names, by)
    flows = _flows(pmap, by, counts)
    if flows is not None:                                                  # (L-1, E, E, S): f_l(i, j | s)
        joint = flows / np.maximum(flows.sum((1, 2), keepdims=True), 1)

    def between(li: int, i: int, j: int, s: int) -> float:
        if flows is not None:
            return w[s] * joint[li, i, j, s]
        return w[s] * p[li, i, s] * p[li + 1, j, s]                        # independence between blocks

    # nodes: sources, then E per block, then one head per source
    labels = list(names) + [f"block {b} · expert {e}" for b in blocks for e in range(ne)]
    labels += [f"head: {n}" if by == "task" else f"{n} heads" for n in names]
    node_colors = list(colors) + [expert_color(e) for _ in blocks for e in range(ne)] + list(colors)
    line_widths = [0.5] * len(labels)
    if experts:
        for li, b in enumerate(blocks):
            chosen = {int(e) for e in experts.get(b, ()) if 0 <= int(e) < ne}
            for e in range(ne):
                if e in chosen:
                    line_widths[ns + li * ne + e] = 4.0
                else:                       # fade the experts off the route
                    node_colors[ns + li * ne + e] = rgba(expert_color(e), 0.25)

    def node(li: int, e: int) -> int:
        return ns + li * ne + e

    src, dst, val, col, hover = [], [], [], [], []

    def link(a: int, b: int, v: float, s: int, what: str) -> None:
        if v < min_share:
            return
        alpha = 0.75 if highlight == names[s] else 0.45
        src.append(a), dst.append(b), val.append(float(v)), hover.append(f"{names[s]}: {what}")
        col.append(rgba(colors[s], alpha) if highlight in (None, names[s]) else GREY)

    for s in range(ns):
        for e in range(ne):
            link(s, node(0, e), w[s] * p[0, e, s], s, f"→ expert {e} of block {blocks[0]}")
        for li in range(nb - 1):
            for i in range(ne):
                for j in range(ne):
                    link(node(li, i), node(li + 1, j), between(li, i, j, s), s,
                         f"expert {i} → expert {j} (blocks {blocks[li]}→{blocks[li + 1]})")
        for e in range(ne):
            link(node(nb - 1, e), ns + nb * ne + s, w[s] * p[nb - 1, e, s], s, f"expert {e} → head")
    sankey = dict(type="sankey", arrangement="snap", valueformat=".1%",
                  node=dict(label=labels, color=node_colors, pad=8, thickness=14,
                            line=dict(width=line_widths, color="black")),
                  link=dict(source=src, target=dst, value=val, color=col, customdata=hover,
                            hovertemplate="%{customdata}<br>%{value} of all tokens<extra></extra>"))
    what = "task" if by == "task" else "sense"
    title = f"Pathways: {what} → experts → heads (width = share of tokens)"
    if highlight is not None:
        title += f" — {highlight}"
    return figure([sankey], dict(title=dict(text=title), height=420, margin=dict(l=10, r=10, t=50, b=10),
                                 font=dict(size=11)))


def expert_heatmaps(pmap, by: str = "task", *, highlight: str | None = None) -> go.Figure:
    """Expert × task (or sense) heatmap per MoE block: column = that task's share per expert.

    Subplot titles give I(E;T) in bits (0: every task routes alike; log2 K: disjoint experts).
    ``highlight`` outlines one column in every block.
    """
    by = _check_by(by)
    counts, names = _counts(pmap, by)
    if not names:
        return empty_figure("no routed tokens yet", "Experts per " + ("task" if by == "task" else "sense"))
    nb, ne, ns = counts.shape
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    mi = pmap.mutual_information(by)
    sym = "T" if by == "task" else "M"
    titles = [f"block {b}: I(E;{sym}) = {m:.2f} bits" for b, m in zip(pmap.blocks, mi)]
    layout, axes = grid(1, nb, hspace=0.08, titles=titles)
    data, experts = [], [f"expert {e}" for e in range(ne)]
    for li in range(nb):
        z = share[li].round(4).tolist()
        xa, ya = axes[0][li]
        data.append(dict(type="heatmap", x=names, y=experts, z=z, coloraxis="coloraxis", xaxis=xa, yaxis=ya,
                         text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}",
                         hovertemplate="%{x}, %{y}: %{z:.1%}<extra></extra>"))
        layout[axis_key(ya)]["autorange"] = "reversed"
    shapes = []
    if highlight is not None:
        if highlight not in names:
            raise ValueError(f"highlight must be one of {', '.join(map(repr, names))} or None; got {highlight!r}")
        j = names.index(highlight)
        shapes = [dict(type="rect", xref=xa, yref=ya, x0=j - 0.5, x1=j + 0.5, y0=-0.5, y1=ne - 0.5,
                       line=dict(color="crimson", width=3)) for xa, ya in axes[0]]
    what = "task" if by == "task" else "sense"
    layout.update(title=dict(text=f"Share of each {what}'s assignments per expert"), height=360, shapes=shapes,
                  coloraxis=dict(colorscale=scale("Blues"), cmin=0, cmax=1), margin=dict(l=10, r=10, t=60, b=10))
    return figure(data, layout)


def sense_bars(pmap) -> go.Figure:
    """LIMoE-style bars: % of each sense's assignments that go to each expert, one row per MoE block.

    An expert whose bars are all one sense is modality-specific (Mustafa et al. 2022, Fig. 5).
    """
    counts, names = _counts(pmap, "sense")
    if not names:
        return empty_figure("no routed tokens yet", "Experts per sense")
    nb, ne, ns = counts.shape
    share = 100 * counts / np.maximum(counts.sum(1, keepdims=True), 1)
    layout, axes = grid(nb, 1, vspace=0.12, shared_x=True, titles=[f"block {b}" for b in pmap.blocks])
    data, experts = [], [f"expert {e}" for e in range(ne)]
    for li in range(nb):
        xa, ya = axes[li][0]
        for s, name in enumerate(names):
            data.append(dict(type="bar", x=experts, y=share[li, :, s].round(2).tolist(), name=name, xaxis=xa, yaxis=ya,
                             marker=dict(color=SENSE_COLORS.get(name, "#7f7f7f")), legendgroup=name,
                             showlegend=li == 0, hovertemplate=f"{name}: %{{y:.1f}}% at %{{x}}<extra></extra>"))
        layout[axis_key(ya)].update(title=dict(text="% of sense"), range=[0, 100])
    layout.update(title=dict(text="% of each sense's tokens per expert"), barmode="group", height=180 + 170 * nb,
                  margin=dict(l=10, r=10, t=60, b=10))
    return figure(data, layout)
