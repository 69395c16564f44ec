"""CostExplorer: experts, top-k and widths → parameters, FLOPs per token and measured time.

Three layers are compared at every setting, as in notebook 01: the MoE layer (``E`` experts of
hidden width ``H``, top-``k`` routing), a dense FFN with the same parameters (hidden width
``E·H``) and a dense FFN with the same FLOPs (hidden width ``k·H``). Parameters are counted
(the test checks them against the modules' own ``numel``), FLOPs come from
:mod:`pwlab.flops`; both update on every slider change. The third panel is a measured time:
the median of a few forwards of the MoE layer and of the same-FLOPs dense layer on ``tokens``
tokens. Building and timing a layer costs about its parameter count, so it runs on every
change only while the MoE holds at most ``live_timing_params`` parameters; above that the
panel says so and the "Measure" button times it.
"""
from __future__ import annotations

import statistics
import time

import ipywidgets as W
import plotly.graph_objects as go
import torch

from pwlab import _checks
from pwlab.flops import ffn_flops, moe_ffn_flops
from pwlab.moe import MoE
from pwlab.routing import TopK
from pwlab.viz._common import figure
from pwlab.widgets._live import live_figure, sync

#: the three layers compared, in the order of the bars
LAYERS = ("MoE", "dense, same parameters", "dense, same FLOPs")
_COLORS = ("#1f77b4", "#7f7f7f", "#ff7f0e")


def moe_params(d_model: int, d_hidden: int, num_experts: int) -> int:
    """Parameters of ``MoE(d_model, d_hidden, num_experts, TopK(...))``: a bias-free router
    ``D·E`` and ``E`` experts ``D → H → D`` with biases."""
    return d_model * num_experts + num_experts * (2 * d_model * d_hidden + d_hidden + d_model)


def dense_params(d_model: int, width: int) -> int:
    """Parameters of a dense FFN ``D → width → D`` with biases."""
    return 2 * d_model * width + width + d_model


def layer_costs(d_model: int, d_hidden: int, num_experts: int, top_k: int) -> dict[str, dict[str, int]]:
    """Layer name (:data:`LAYERS`) → parameters and forward FLOPs per token."""
    e, k = num_experts, top_k
    return {
        LAYERS[0]: dict(params=moe_params(d_model, d_hidden, e),
                        flops=moe_ffn_flops(1, d_model, d_hidden, e, k).forward),
        LAYERS[1]: dict(params=dense_params(d_model, e * d_hidden), flops=ffn_flops(1, d_model, e * d_hidden).forward),
        LAYERS[2]: dict(params=dense_params(d_model, k * d_hidden), flops=ffn_flops(1, d_model, k * d_hidden).forward),
    }


def dense_ffn(d_model: int, width: int) -> torch.nn.Module:
    """The dense FFN of notebook 01: ``Linear(D, width) → GELU → Linear(width, D)``."""
    return torch.nn.Sequential(torch.nn.Linear(d_model, width), torch.nn.GELU(), torch.nn.Linear(width, d_model))


def _median_ms(layer, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        layer(x)                                        # warm-up: first calls allocate
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            layer(x)
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def cost_figure(costs: dict, times: dict | None) -> go.Figure:
    """Three panels of bars: parameters, forward FLOPs per token, measured forward ms (of the
    layers in ``times``; none when it is None)."""
    names = list(LAYERS)
    # the setting is written in the app's status line, not the title: an unchanged layout is not resent
    data, layout = [], dict(title=dict(text="Dense vs MoE at the sliders' setting"), height=380, showlegend=False,
                            margin=dict(l=10, r=10, t=90, b=10), annotations=[])
    panels = (("params", "parameters", names), ("flops", "forward FLOPs per token", names),
              ("ms", "measured forward, median ms", [n for n in names if times and n in times]))
    for i, (key, title, shown) in enumerate(panels):
        axis = "" if i == 0 else str(i + 1)
        values = [times[n] for n in shown] if key == "ms" else [costs[n][key] for n in shown]
        text = [f"{v:.2f}" if key == "ms" else f"{v:,}" for v in values]
        data.append(dict(type="bar", x=shown, y=[round(v, 3) for v in values], name=title, text=text,
                         textposition="auto", xaxis=f"x{axis}", yaxis=f"y{axis}",
                         marker=dict(color=[_COLORS[names.index(n)] for n in shown])))
        lo = i * 0.36
        layout[f"xaxis{axis}"] = dict(domain=[lo, lo + 0.28], anchor=f"y{axis}", tickangle=-25)
        layout[f"yaxis{axis}"] = dict(anchor=f"x{axis}", rangemode="tozero")
        layout["annotations"].append(dict(text=title, x=lo + 0.14, y=1.02, xref="paper", yref="paper",
                                          xanchor="center", yanchor="bottom", showarrow=False))
    return figure(data, layout)


class CostExplorer:
    """Sliders for E, k, H and D against parameters, FLOPs per token and measured time.

    Args:
        num_experts, top_k, d_hidden, d_model: the starting setting (notebook 01's layer).
        tokens: tokens of the timed forward (small, so that timing stays quick).
        repeats: timed forwards per layer (the median is shown).
        live_timing_params: time on every change while the MoE holds at most this many
            parameters; larger layers are timed by the "Measure" button.
        seed: seeds the timed layers' weights and inputs.

    ``.widget`` is the app; ``.figure`` its FigureWidget; :meth:`measure` times the current setting.
    """

    def __init__(self, *, num_experts: int = 8, top_k: int = 2, d_hidden: int = 128, d_model: int = 64,
                 tokens: int = 128, repeats: int = 3, live_timing_params: int = 1_000_000, seed: int = 0):
        self.tokens = _checks.positive_int("tokens", tokens)
        self.repeats = _checks.positive_int("repeats", repeats)
        self.live_timing_params = _checks.positive_int("live_timing_params", live_timing_params, minimum=0)
        self.seed = int(seed)
        # the sliders' ranges: a value outside would be clamped silently by the slider
        for name, value, lo, hi in (("num_experts", num_experts, 1, 64), ("top_k", top_k, 1, 8),
                                    ("d_hidden", d_hidden, 16, 1024), ("d_model", d_model, 16, 256)):
            _checks.positive_int(name, value)
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
        if top_k > num_experts:
            raise ValueError(f"top_k must be at most num_experts={num_experts}, got {top_k}")
        style = dict(description_width="110px")
        lay = W.Layout(width="460px")               # room for the readout of a 4-digit width
        opts = dict(style=style, layout=lay, continuous_update=False)
        self.num_experts = W.IntSlider(value=num_experts, min=1, max=64,
                                       description="experts E", **opts)
        self.top_k = W.IntSlider(value=top_k, min=1, max=min(8, num_experts), description="top-k", **opts)
        self.d_hidden = W.IntSlider(value=d_hidden, min=16, max=1024, step=16,
                                    description="expert width H", **opts)
        self.d_model = W.IntSlider(value=d_model, min=16, max=256, step=16,
                                   description="d_model D", **opts)
        self.measure_button = W.Button(description="Measure", icon="clock-o",
                                       tooltip="time one forward of the MoE and of the same-FLOPs dense layer")
        self.status = W.HTML()
        self.controls = (self.num_experts, self.top_k, self.d_hidden, self.d_model)
        self.times: dict[str, float] | None = None
        self._timed_at = None
        self._quiet = False
        if self.moe_params() <= self.live_timing_params:
            self._time()
        # built whole and not updated before it is shown: a FigureWidget updated before its first
        # view drew an empty plot in JupyterLab
        self.figure = live_figure(cost_figure(self.costs(), self.times))
        self._update_status()
        for w in self.controls:
            w.observe(self._on_change, names="value")
        self.measure_button.on_click(lambda _: self.measure())
        # a fixed-width column for the sliders: shrunk by the status beside it, they would lose their readouts
        sliders = W.VBox(list(self.controls), layout=W.Layout(min_width="480px"))
        self.widget = W.VBox([W.HBox([sliders, W.VBox([self.measure_button, self.status])]), self.figure])

    def setting(self) -> tuple[int, int, int, int]:
        """(d_model, d_hidden, num_experts, top_k) the sliders describe."""
        return int(self.d_model.value), int(self.d_hidden.value), int(self.num_experts.value), int(self.top_k.value)

    def moe_params(self) -> int:
        d, h, e, _ = self.setting()
        return moe_params(d, h, e)

    def costs(self) -> dict[str, dict[str, int]]:
        """Parameters and forward FLOPs per token of the three layers at the current setting."""
        return layer_costs(*self.setting())

    def _on_change(self, change) -> None:
        if self._quiet:
            return
        if change["owner"] is self.num_experts:
            self._quiet = True                          # a token cannot pick more experts than there are
            try:
                self.top_k.max = min(8, self.num_experts.value)
            finally:
                self._quiet = False
        self.redraw(measure=self.moe_params() <= self.live_timing_params)

    def measure(self) -> dict[str, float]:
        """Time one forward of the MoE and of the same-FLOPs dense layer; redraw; returns ms by layer."""
        self._time()
        self.redraw(measure=False)
        return self.times

    def _time(self) -> None:
        d, h, e, k = self.setting()
        torch.manual_seed(self.seed)
        moe = MoE(d, h, e, TopK(top_k=k))
        dense = dense_ffn(d, k * h)
        x = torch.randn(self.tokens, d, generator=torch.Generator().manual_seed(self.seed))
        self.times = {LAYERS[0]: _median_ms(moe, x, self.repeats), LAYERS[2]: _median_ms(dense, x, self.repeats)}
        self._timed_at = self.setting()

    def redraw(self, measure: bool = False) -> None:
        """Refresh the figure in place (``measure``: time the current setting first)."""
        if measure:
            self.measure()
            return
        current = self._timed_at == self.setting()
        sync(self.figure, cost_figure(self.costs(), self.times if current else None))
        self._update_status()

    def _update_status(self) -> None:
        d, h, e, k = self.setting()
        current = self._timed_at == self.setting()
        costs = self.costs()
        moe, same = costs[LAYERS[0]], costs[LAYERS[1]]
        if current and self.times:
            ratio = self.times[LAYERS[0]] / max(self.times[LAYERS[2]], 1e-9)
            timing = (f"measured on {self.tokens} tokens: MoE {self.times[LAYERS[0]]:.2f} ms, "
                      f"dense same FLOPs {self.times[LAYERS[2]]:.2f} ms (×{ratio:.2f})")
        else:
            timing = "not timed at this setting: press <b>Measure</b>"
        self.status.value = (f"<b>D={d}, H={h}, E={e}, top-{k}</b><br>"
                             f"MoE: {moe['params'] / same['params']:.2f}× the parameters of the wide dense layer, "
                             f"{moe['flops'] / same['flops']:.3f}× its FLOPs per token (k/E = {k / e:.3f})<br>{timing}")
