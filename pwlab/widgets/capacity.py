"""CapacityExplorer: capacity factor and auxiliary-loss weights → dropped tokens, load and entropy.

A tiny MoE layer (Switch top-1 routing, as in notebook 03) trains ``steps`` steps on one fixed,
seeded batch of the notebook's clustered task, with the chosen load-balancing and z-loss
weights; training is dropless, as in the notebook. The capacity factor then applies to the
trained layer's call on a fixed evaluation batch: moving it only re-runs that call (a few
milliseconds), and the figures show what each expert kept and what its router proposed, the
dropped fraction and the router's entropy. The loss weights change the training itself: a new
pair of weights trains a new layer from the same seed (a fraction of a second; each pair is
trained once and kept, so going back to it is immediate). The second figure draws, for every
trained pair, the dropped fraction against the capacity factor, with the current point marked.
"""
from __future__ import annotations

import math
import time

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import torch

from pwlab import _checks, viz
from pwlab.moe import MoE
from pwlab.routing import Switch
from pwlab.viz._common import figure
from pwlab.widgets._live import live_figure, sync

#: the choices of the two loss-weight sliders (0: off; the papers use 1e-2 and 1e-3)
LOAD_BALANCING_WEIGHTS = (0.0, 1e-3, 1e-2, 3e-2, 1e-1)
Z_LOSS_WEIGHTS = (0.0, 1e-4, 1e-3, 1e-2)
#: capacity factors of the dropped-fraction curves
CURVE_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)


def cluster_data(n: int, d_model: int = 16, clusters: int = 8, *, seed: int = 0, task_seed: int = 0):
    """``n`` tokens of notebook 03's task: inputs around ``clusters`` centres, each cluster with its
    own target ``tanh(x·M_c)``. ``task_seed`` fixes the centres and maps, ``seed`` the sample."""
    g = torch.Generator().manual_seed(task_seed)
    centers = torch.randn(clusters, d_model, generator=g)
    maps = torch.randn(clusters, d_model, d_model, generator=g) / d_model ** 0.5
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, clusters, (n,), generator=g)
    x = centers[c] + 0.3 * torch.randn(n, d_model, generator=g)
    return x, torch.tanh(torch.einsum("nd,nde->ne", x, maps[c]))


def train_layer(x: torch.Tensor, y: torch.Tensor, *, num_experts: int, d_hidden: int, load_balancing: float,
                z_loss: float, steps: int, lr: float, seed: int) -> MoE:
    """A Switch MoE layer trained ``steps`` Adam steps on the one batch ``(x, y)`` (MSE plus the
    weighted auxiliary losses), dropless, from ``seed``; returned in eval mode."""
    torch.manual_seed(seed)
    moe = MoE(x.shape[1], d_hidden, num_experts, Switch(),
              aux_weights={"load_balancing": load_balancing, "z_loss": z_loss})
    opt = torch.optim.Adam(moe.parameters(), lr=lr)
    for _ in range(steps):
        out, stats = moe(x)
        loss = (out - y).pow(2).mean() + stats.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return moe.eval()


def call_with_capacity(moe: MoE, x: torch.Tensor, capacity_factor: float | None):
    """The stats of ``moe(x)`` at ``capacity_factor`` (None: dropless); the layer's own setting is kept."""
    before = moe.capacity_factor
    moe.capacity_factor = capacity_factor
    try:
        with torch.no_grad():
            return moe(x)[1]
    finally:
        moe.capacity_factor = before


def _label(lb: float, z: float) -> str:
    return f"balance {lb:g}, z {z:g}"


def dropped_curves(curves: dict, current: tuple, cf: float | None, dropped: float) -> go.Figure:
    """Dropped fraction against the capacity factor, one line per trained weight pair, the current
    pair bold, the current capacity factor marked."""
    data = []
    for key, ys in curves.items():
        bold = key == current
        data.append(dict(type="scatter", mode="lines+markers" if bold else "lines", x=list(CURVE_FACTORS),
                         y=[round(v, 4) for v in ys], name=_label(*key),
                         line=dict(width=3 if bold else 1, color=None if bold else "rgba(120,120,120,0.6)")))
    data.append(dict(type="scatter", mode="markers", x=[cf] if cf else [], y=[round(dropped, 4)] if cf else [],
                     name="capacity factor now", marker=dict(size=14, color="crimson", symbol="x")))
    layout = dict(title=dict(text="Dropped fraction vs capacity factor (each trained pair of weights)"), height=320,
                  xaxis=dict(title=dict(text="capacity factor (k_tokens: C = ceil(cf·k·N/E))")),
                  yaxis=dict(title=dict(text="fraction of assignments dropped"), range=[0, 1]),
                  margin=dict(l=10, r=10, t=60, b=10), legend=dict(font=dict(size=10)))
    return figure(data, layout)


class CapacityExplorer:
    """Capacity factor, load-balancing weight and z-loss weight against drops, load and entropy.

    Args:
        data: the training batch ``(x, y)`` (default: ``tokens`` tokens of :func:`cluster_data`).
        eval_x: the tokens the capacity applies to (default: ``eval_tokens`` more of the same task).
        num_experts, d_hidden: the layer (Switch top-1 routing; d_model is the data's width).
        steps, lr: Adam steps on the fixed batch for each pair of loss weights, and their rate.
        capacity_factor: the starting capacity factor (0 or None: dropless).
        load_balancing, z_loss: the starting weights (one of :data:`LOAD_BALANCING_WEIGHTS`,
            :data:`Z_LOSS_WEIGHTS`).
        seed: seeds the data and every training run (the same seed for every pair of weights).

    ``.widget`` is the app; ``.load`` and ``.curves`` its FigureWidgets; ``.stats`` the MoE
    stats on show; :meth:`layer` the trained layer of a pair of weights.
    """

    def __init__(self, data=None, *, eval_x=None, num_experts: int = 8, d_hidden: int = 32, steps: int = 20,
                 lr: float = 3e-2, capacity_factor: float | None = 1.0, load_balancing: float = 0.0,
                 z_loss: float = 0.0, tokens: int = 256, eval_tokens: int = 1024, seed: int = 0):
        self.seed = int(seed)
        self.num_experts = _checks.positive_int("num_experts", num_experts)
        self.d_hidden = _checks.positive_int("d_hidden", d_hidden)
        self.steps = _checks.positive_int("steps", steps, minimum=0)
        self.lr = _checks.positive_float("lr", lr)
        if data is None:
            data = cluster_data(_checks.positive_int("tokens", tokens), seed=self.seed)
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise ValueError("data must be a pair (x, y) of tensors")
        self.x, self.y = data
        if eval_x is None:
            eval_x = cluster_data(_checks.positive_int("eval_tokens", eval_tokens), self.x.shape[1],
                                  seed=self.seed + 1)[0]
        self.eval_x = eval_x
        cf = float(capacity_factor or 0.0)
        if not 0.0 <= cf <= 3.0:
            raise ValueError(f"capacity_factor must be None or in [0, 3], got {capacity_factor!r}")
        for name, value, options in (("load_balancing", load_balancing, LOAD_BALANCING_WEIGHTS),
                                     ("z_loss", z_loss, Z_LOSS_WEIGHTS)):
            if value not in options:
                raise ValueError(f"{name} must be one of {options}, got {value!r}")
        style = dict(description_width="150px")
        lay = W.Layout(width="420px")
        self.capacity = W.FloatSlider(value=cf, min=0.0, max=3.0, step=0.05, description="capacity factor (0=∞)",
                                      style=style, layout=lay)
        self.load_balancing = W.SelectionSlider(options=[(f"{v:g}", v) for v in LOAD_BALANCING_WEIGHTS],
                                                value=load_balancing, description="w load balancing",
                                                style=style, layout=lay, continuous_update=False)
        self.z_loss = W.SelectionSlider(options=[(f"{v:g}", v) for v in Z_LOSS_WEIGHTS], value=z_loss,
                                        description="w z-loss", style=style, layout=lay, continuous_update=False)
        self.status = W.HTML()
        self._layers: dict[tuple, MoE] = {}
        self._curves: dict[tuple, list[float]] = {}
        self.train_s: dict[tuple, float] = {}     # seconds each pair of weights took to train
        self.stats = call_with_capacity(self.layer(), self.eval_x, self.capacity_factor())
        self.load = live_figure(viz.expert_load(self.stats))
        # built whole and not updated before they are shown: a FigureWidget updated before its first
        # view drew an empty plot in JupyterLab
        self.curves = live_figure(dropped_curves(self._curves, self.weights(), self.capacity_factor(),
                                                 float(self.stats.dropped_fraction)))
        self._update_status()
        self.capacity.observe(lambda _: self.redraw(curves=False), names="value")
        self.load_balancing.observe(lambda _: self.redraw(), names="value")
        self.z_loss.observe(lambda _: self.redraw(), names="value")
        sliders = W.VBox([self.capacity, self.load_balancing, self.z_loss], layout=W.Layout(min_width="440px"))
        self.widget = W.VBox([W.HBox([sliders, self.status]),
                              W.HBox([self.load, self.curves])])

    def weights(self) -> tuple[float, float]:
        """(load-balancing weight, z-loss weight) of the sliders."""
        return float(self.load_balancing.value), float(self.z_loss.value)

    def capacity_factor(self) -> float | None:
        """The slider's capacity factor, None for dropless (0)."""
        return float(self.capacity.value) or None

    def layer(self, load_balancing: float | None = None, z_loss: float | None = None) -> MoE:
        """The layer trained with these weights (default: the sliders'); trained on first request."""
        lb, z = self.weights()
        key = (lb if load_balancing is None else float(load_balancing), z if z_loss is None else float(z_loss))
        if key not in self._layers:
            t0 = time.perf_counter()
            self._layers[key] = train_layer(self.x, self.y, num_experts=self.num_experts, d_hidden=self.d_hidden,
                                            load_balancing=key[0], z_loss=key[1], steps=self.steps, lr=self.lr,
                                            seed=self.seed)
            self._curves[key] = [float(call_with_capacity(self._layers[key], self.eval_x, cf).dropped_fraction)
                                 for cf in CURVE_FACTORS]
            self.train_s[key] = time.perf_counter() - t0
        return self._layers[key]

    def redraw(self, curves: bool = True) -> None:
        """Call the current layer at the current capacity; refresh both figures in place.

        ``curves=False`` (a capacity change: the curves stay) moves only the curve figure's marker.
        """
        layer = self.layer()
        cf = self.capacity_factor()
        self.stats = s = call_with_capacity(layer, self.eval_x, cf)
        dropped = float(s.dropped_fraction)
        sync(self.load, viz.expert_load(s, title="Load per expert"))
        if curves:
            sync(self.curves, dropped_curves(self._curves, self.weights(), cf, dropped))
        else:
            marker = self.curves.data[-1]
            with self.curves.batch_update():
                marker.x, marker.y = ([cf], [round(dropped, 4)]) if cf else ([], [])
            self.curves._pwlab_last = (None, None)   # the next full sync must not diff against a stale marker
        self._update_status()

    def _update_status(self) -> None:
        s = self.stats
        dropped, entropy = float(s.dropped_fraction), float(s.router_entropy)
        share = s.proposed_counts.float() / max(int(s.proposed_counts.sum()), 1)
        cv = float(share.std(unbiased=False) / share.mean())
        dead = int((s.proposed_counts == 0).sum())
        cap = "dropless" if s.capacity is None else f"capacity C = {s.capacity} slots per expert"
        self.status.value = (f"<b>{_label(*self.weights())}</b>, {self.steps} steps "
                             f"(trained in {self.train_s[self.weights()]:.2f} s)<br>{cap} for {len(self.eval_x)} tokens<br>"
                             f"dropped <b>{dropped:.1%}</b> · router entropy <b>{entropy:.2f}</b> nats "
                             f"(uniform: {math.log(self.num_experts):.2f}) · load CV {cv:.2f} · "
                             f"experts without tokens: {dead}")

    def curve(self, load_balancing: float | None = None, z_loss: float | None = None) -> np.ndarray:
        """Dropped fraction at each of :data:`CURVE_FACTORS` for a pair of weights (default: the sliders')."""
        lb, z = self.weights()
        key = (lb if load_balancing is None else float(load_balancing), z if z_loss is None else float(z_loss))
        self.layer(*key)
        return np.array(self._curves[key])
