"""LMExplorer: a text coloured by the expert each character went to, per MoE layer and router.

Two figures over :mod:`pwlab.lm`: :func:`expert_text` draws the text as a grid of characters
(one row per line) with each cell in its expert's colour; :func:`class_shares` shows, per
expert, what share of its characters is lowercase, uppercase, digit, punctuation or space
(the ST-MoE view of expert specialisation). The explorer routes the text once per model, so
picking a layer or a router only recolours the figures in place.
"""
from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as W
import plotly.graph_objects as go

from pwlab import lm
from pwlab.pathways import mutual_information
from pwlab.viz._common import empty_figure, expert_color, expert_colorscale, figure
from pwlab.widgets._live import live_figure, sync

#: how a few characters are drawn in the grid
_SHOWN = {" ": "·", "\n": "⏎"}
#: a colour per token class, in the order of pwlab.lm.CLASSES
CLASS_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#bab0ac")


def _rows(text: str, columns: int) -> list[list[int]]:
    """Positions of the characters of ``text`` per grid row: a row per line, long lines wrapped."""
    rows, row = [], []
    for i, ch in enumerate(text):
        row.append(i)
        if ch == "\n" or len(row) == columns:
            rows.append(row)
            row = []
    if row:
        rows.append(row)
    return rows


def _grid_z(rows: list[list[int]], experts: list[int], columns: int) -> list[list]:
    """The grid's colour values: each character's expert, None (white) where unrouted or past a line's end."""
    return [[(experts[i] if experts[i] >= 0 else None) for i in r] + [None] * (columns - len(r)) for r in rows]


def expert_text(text: str, experts, num_experts: int, *, title: str = "", columns: int = 72) -> go.Figure:
    """``text`` as a grid of characters coloured by expert (``experts (len(text),)``; −1: unrouted, white)."""
    e = [int(v) for v in (experts.tolist() if hasattr(experts, "tolist") else experts)]
    if len(e) != len(text):
        raise ValueError(f"experts must hold one expert per character ({len(text)}), got {len(e)}")
    if not text:
        return empty_figure("no text", title)
    rows = _rows(text, columns)
    z = _grid_z(rows, e, columns)
    chars = [[_SHOWN.get(text[i], text[i]) for i in r] + [""] * (columns - len(r)) for r in rows]
    legend = [dict(type="scatter", x=[None], y=[None], mode="markers", name=f"expert {k}", hoverinfo="skip",
                   marker=dict(symbol="square", size=12, color=expert_color(k))) for k in range(num_experts)]
    heat = dict(type="heatmap", z=z, text=chars, texttemplate="%{text}", textfont=dict(size=11, family="monospace"),
                hovertemplate="%{text} → expert %{z}<extra></extra>", colorscale=expert_colorscale(num_experts),
                zmin=-0.5, zmax=num_experts - 0.5, showscale=False, xgap=1, ygap=1)
    return figure([heat] + legend, dict(
        title=dict(text=title, font=dict(size=13)), height=60 + 17 * len(rows), margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(visible=False), yaxis=dict(visible=False, autorange="reversed"), plot_bgcolor="white",
        legend=dict(orientation="h", y=-0.02, yanchor="top", x=0)))


def class_shares(counts, classes, *, title: str = "") -> go.Figure:
    """Per expert, the share of its characters in each class (``counts (E, K)``, as :func:`pwlab.lm.class_counts`)."""
    c = counts.tolist() if hasattr(counts, "tolist") else [list(r) for r in counts]
    if not c:
        return empty_figure("no experts", title)
    totals = [max(sum(r), 1) for r in c]
    names = [f"e{k} ({sum(r)})" for k, r in enumerate(c)]
    data = [dict(type="bar", x=names, y=[r[j] / t for r, t in zip(c, totals)], name=cls,
                 marker=dict(color=CLASS_COLORS[j % len(CLASS_COLORS)]),
                 hovertemplate=f"%{{x}}: %{{y:.0%}} {cls}<extra></extra>") for j, cls in enumerate(classes)]
    return figure(data, dict(barmode="stack", title=dict(text=title, font=dict(size=13)), height=300,
                             yaxis=dict(title="share of the expert's characters", tickformat=".0%", range=[0, 1]),
                             xaxis=dict(title="expert (characters it took)"), margin=dict(l=60, r=10, t=40, b=50)))


class LMExplorer:
    """Pick a router (among trained models) and a MoE layer; the text recolours in place.

    Args:
        models: name → :class:`pwlab.lm.CharMoELM` (e.g. the same model trained with different routers).
        text: the text to colour (characters of the models' vocabulary).
        columns: characters per grid row.

    ``.widget`` is the app; :meth:`select` sets the choice programmatically.
    """

    def __init__(self, models: Mapping, text: str, *, columns: int = 72):
        if not isinstance(models, Mapping) or not models:
            raise ValueError("models must be a non-empty dict of name -> pwlab.lm.CharMoELM")
        self.models, self.text, self.columns = dict(models), text, int(columns)
        self.experts, self.counts, self.mi = {}, {}, {}
        for name, m in self.models.items():
            # route once per model: a choice only recolours
            self.experts[name] = lm.char_experts(m, text)                            # (L, N)
            classes = m.tokenizer.classes()[m.tokenizer.encode(text)]
            self.counts[name] = [lm.class_counts(e, classes, m.num_experts) for e in self.experts[name]]
            self.mi[name] = [mutual_information(c) for c in self.counts[name]]
        self.classes = lm.CLASSES
        names = list(self.models)
        self.router = W.Dropdown(options=names, value=names[0], description="router")
        self.layer = W.Dropdown(options=list(range(len(self.experts[names[0]]))), value=0, description="layer")
        self._rows = _rows(text, self.columns)
        self.grid = live_figure(self._grid_figure())
        self._grid_experts = self.models[names[0]].num_experts      # the grid's colorscale is for this many
        self.bars = live_figure(self._bars_figure())
        self.router.observe(self._on_router, names="value")
        self.layer.observe(lambda _: self.redraw(), names="value")
        self.widget = W.VBox([W.HBox([self.router, self.layer]), self.grid, self.bars])

    def _on_router(self, _change) -> None:
        layers = list(range(len(self.experts[self.router.value])))
        if list(self.layer.options) != layers:
            value = min(self.layer.value, layers[-1])
            self.layer.options = layers
            self.layer.value = value
        self.redraw()

    def select(self, router: str | None = None, layer: int | None = None) -> None:
        """Set the choice (what the dropdowns do)."""
        if router is not None:
            self.router.value = router
        if layer is not None:
            self.layer.value = layer

    def _grid_title(self) -> str:
        return f"{self.router.value}, layer {self.layer.value}: each character in the colour of its first-choice expert"

    def _grid_figure(self) -> go.Figure:
        name, li = self.router.value, int(self.layer.value)
        return expert_text(self.text, self.experts[name][li], self.models[name].num_experts, columns=self.columns,
                           title=self._grid_title())

    def _bars_figure(self) -> go.Figure:
        name, li = self.router.value, int(self.layer.value)
        return class_shares(self.counts[name][li], self.classes,
                            title=f"{name}, layer {li}: what each expert takes · I(expert; class) = "
                                  f"{self.mi[name][li]:.2f} bits")

    def redraw(self) -> None:
        """Recolour both figures in place for the current choice."""
        name, li = self.router.value, int(self.layer.value)
        if self.models[name].num_experts == self._grid_experts:
            # only the colours change: send the new z alone, not the characters again
            # (a full sync copies and diffs the text grid too, several times the cost)
            with self.grid.batch_update():
                self.grid.data[0].z = _grid_z(self._rows, self.experts[name][li].tolist(), self.columns)
                self.grid.layout.title.text = self._grid_title()
        else:
            sync(self.grid, self._grid_figure())
        self._grid_experts = self.models[name].num_experts
        sync(self.bars, self._bars_figure())
