"""AllToAllExplorer: world size, tokens, width, top-k and bandwidth → the all-to-all cost model.

The bytes are :func:`pwlab.distributed.a2a_volume` (one expert-parallel MoE layer, one
training step, balanced routing, summed over the devices). The time is the bandwidth-only
model: tokens are spread evenly, so each device sends ``bytes / P``, all devices at once, each
over its own link of ``bandwidth`` bytes per second (no latency, no contention; real exchanges
add both). Both are drawn against the world size for the other settings, the current one
marked. Bytes measured by a real run (notebook 09 measures two processes) are drawn as a
marker whenever the sliders match that run's tokens, width, top-k, experts and precision.
"""
from __future__ import annotations

import ipywidgets as W
import plotly.graph_objects as go

from pwlab.distributed.cost import a2a_volume
from pwlab.viz._common import figure
from pwlab.widgets._live import live_figure, sync

WORLD_SIZES = (1, 2, 4, 8, 16, 32, 64)
EXPERTS = (8, 16, 32, 64, 128, 256)
TOKENS = tuple(2 ** i for i in range(8, 21))          # 256 … 1,048,576
D_MODELS = tuple(2 ** i for i in range(4, 14))        # 16 … 8,192
PRECISIONS = (("float32", 4), ("bfloat16", 2))
#: the keys of a measured run (``bytes_per_element`` is optional, default 4)
MEASURED_KEYS = ("tokens", "d_model", "top_k", "num_experts", "world_size", "bytes")


def _check_measured(measured) -> list[dict]:
    if measured is None:
        return []
    runs = [measured] if isinstance(measured, dict) else list(measured)
    out = []
    for r in runs:
        if not isinstance(r, dict) or any(k not in r for k in MEASURED_KEYS):
            raise ValueError(f"measured must be a dict (or a list of dicts) with keys {MEASURED_KEYS} "
                             f"(and optionally bytes_per_element), got {r!r}")
        out.append(dict(r, bytes_per_element=int(r.get("bytes_per_element", 4))))
    return out


def _sig(v: float) -> float:
    """``v`` to 8 significant digits (what the figure carries: enough, and short JSON)."""
    return float(f"{v:.8g}")


def step_seconds(total_bytes: float, world_size: int, bandwidth: float) -> float:
    """Seconds for the exchanges of one step: each of the P devices sends ``total_bytes / P`` over
    its own link of ``bandwidth`` bytes per second, all at once."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0 bytes per second, got {bandwidth!r}")
    return total_bytes / world_size / bandwidth


class AllToAllExplorer:
    """The all-to-all cost model of one MoE layer, live, with measured bytes where they apply.

    Args:
        measured: a measured run (or a list of them): a dict with ``tokens``, ``d_model``,
            ``top_k``, ``num_experts``, ``world_size`` and ``bytes`` (per step, all devices),
            optionally ``bytes_per_element`` (default 4). The sliders start at the first run's
            setting when it is given.
        world_size, tokens, d_model, top_k, num_experts: the starting setting otherwise (each
            must be one of the sliders' values: :data:`WORLD_SIZES`, :data:`TOKENS`,
            :data:`D_MODELS`, 1–8, :data:`EXPERTS`).
        bandwidth_gbps: the starting link bandwidth, GB/s per device.
        bytes_per_element: 4 (float32) or 2 (bfloat16).

    ``.widget`` is the app; ``.figure`` its FigureWidget; :meth:`volume` the model at the sliders.
    """

    def __init__(self, measured=None, *, world_size: int = 2, tokens: int = 1024, d_model: int = 64, top_k: int = 2,
                 num_experts: int = 8, bandwidth_gbps: float = 10.0, bytes_per_element: int = 4):
        self.measured = _check_measured(measured)
        if self.measured:
            m = self.measured[0]
            world_size, tokens, d_model, top_k, num_experts, bytes_per_element = (
                m["world_size"], m["tokens"], m["d_model"], m["top_k"], m["num_experts"], m["bytes_per_element"])
        for name, value, options in (("world_size", world_size, WORLD_SIZES), ("tokens", tokens, TOKENS),
                                     ("d_model", d_model, D_MODELS), ("top_k", top_k, tuple(range(1, 9))),
                                     ("num_experts", num_experts, EXPERTS),
                                     ("bytes_per_element", bytes_per_element, (4, 2))):
            if value not in options:
                raise ValueError(f"{name} must be one of {options}, got {value!r}")
        if num_experts % world_size:
            raise ValueError(f"num_experts must be divisible by world_size={world_size}, got {num_experts}")
        if not 0.1 <= float(bandwidth_gbps) <= 1000:
            raise ValueError(f"bandwidth_gbps must be in [0.1, 1000], got {bandwidth_gbps!r}")
        style = dict(description_width="120px")
        lay = W.Layout(width="420px")
        opts = dict(style=style, layout=lay)
        self.world_size = W.SelectionSlider(options=list(WORLD_SIZES), value=world_size, description="devices P",
                                            **opts)
        self.num_experts = W.SelectionSlider(options=list(EXPERTS), value=num_experts, description="experts E", **opts)
        self.tokens = W.SelectionSlider(options=[(f"{n:,}", n) for n in TOKENS], value=tokens,
                                        description="tokens N", **opts)
        self.d_model = W.SelectionSlider(options=list(D_MODELS), value=d_model, description="d_model D", **opts)
        self.top_k = W.IntSlider(value=top_k, min=1, max=8, description="top-k", **opts)
        self.bandwidth = W.FloatLogSlider(value=float(bandwidth_gbps), base=10, min=-1, max=3, step=0.1,
                                          description="GB/s per device", readout_format=".3g", **opts)
        self.precision = W.ToggleButtons(options=list(PRECISIONS), value=int(bytes_per_element),
                                         description="precision", style=style)
        self.status = W.HTML()
        self.controls = (self.world_size, self.num_experts, self.tokens, self.d_model, self.top_k, self.bandwidth,
                         self.precision)
        self._quiet = False
        # built whole and not updated before it is shown: a FigureWidget updated before its first view
        # drew an empty plot in JupyterLab
        self.figure = live_figure(self.current_figure())
        self._update_status()
        for w in self.controls:
            w.observe(self._on_change, names="value")
        column = W.Layout(min_width="440px")           # the sliders keep their readouts beside the status
        self.widget = W.VBox([W.HBox([W.VBox(list(self.controls[:4]), layout=column),
                                      W.VBox(list(self.controls[4:]) + [self.status], layout=column)]), self.figure])

    def setting(self) -> dict:
        """The sliders' setting, in :func:`a2a_volume`'s names."""
        return dict(num_tokens=int(self.tokens.value), d_model=int(self.d_model.value), top_k=int(self.top_k.value),
                    num_experts=int(self.num_experts.value), world_size=int(self.world_size.value),
                    bytes_per_element=int(self.precision.value))

    def volume(self, world_size: int | None = None) -> dict[str, float]:
        """:func:`a2a_volume` at the sliders' setting (at ``world_size`` when given)."""
        s = self.setting()
        if world_size is not None:
            s["world_size"] = world_size
        return a2a_volume(s.pop("num_tokens"), s.pop("d_model"), s.pop("top_k"), s.pop("num_experts"),
                          s.pop("world_size"), **s)

    def bandwidth_bytes(self) -> float:
        """The slider's bandwidth in bytes per second."""
        return float(self.bandwidth.value) * 1e9

    def applicable_measured(self) -> list[dict]:
        """The measured runs whose tokens, width, top-k, experts and precision match the sliders."""
        s = self.setting()
        return [m for m in self.measured
                if (m["tokens"], m["d_model"], m["top_k"], m["num_experts"], m["bytes_per_element"])
                == (s["num_tokens"], s["d_model"], s["top_k"], s["num_experts"], s["bytes_per_element"])]

    def _on_change(self, change) -> None:
        if self._quiet:
            return
        owner = change["owner"]
        # experts are split over the devices: keep E a multiple of P (both are powers of two)
        self._quiet = True
        try:
            if owner is self.world_size and self.num_experts.value < self.world_size.value:
                self.num_experts.value = max(self.world_size.value, EXPERTS[0])
            elif owner is self.num_experts and self.num_experts.value < self.world_size.value:
                self.world_size.value = self.num_experts.value
        finally:
            self._quiet = False
        self.redraw()

    def current_figure(self) -> go.Figure:
        """Bytes and time against the world size at the sliders' setting, with the markers."""
        s = self.setting()
        p_now, bw = s["world_size"], self.bandwidth_bytes()
        ps = [p for p in WORLD_SIZES if s["num_experts"] % p == 0]
        totals = [self.volume(p)["total"] for p in ps]
        ms = [1e3 * step_seconds(t, p, bw) for t, p in zip(totals, ps)]
        now = self.volume()
        t_now = 1e3 * step_seconds(now["total"], p_now, bw)
        meas = self.applicable_measured()
        curve = dict(type="scatter", mode="lines+markers", x=ps, line=dict(color="#1f77b4"), marker=dict(size=6))
        mark = dict(type="scatter", mode="markers", x=[p_now], marker=dict(size=14, color="crimson", symbol="x"))
        data = [dict(curve, y=[_sig(t / 1e6) for t in totals], name="cost model: MB per step"),
                dict(mark, y=[_sig(now["total"] / 1e6)], name="the sliders' world size"),
                dict(type="scatter", mode="markers", x=[m["world_size"] for m in meas],
                     y=[_sig(m["bytes"] / 1e6) for m in meas], name="measured",
                     marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="green", width=3))),
                dict(curve, y=[_sig(v) for v in ms], name="ms per step at the bandwidth", xaxis="x2", yaxis="y2",
                     line=dict(color="#ff7f0e")),
                dict(mark, y=[_sig(t_now)], name="the sliders' world size", xaxis="x2", yaxis="y2",
                     showlegend=False)]
        axis = dict(type="log", tickvals=list(WORLD_SIZES), title=dict(text="devices P"))
        layout = dict(title=dict(text="All-to-all of one MoE layer, one training step"), height=380,
                      xaxis=dict(axis, domain=[0, 0.44]), yaxis=dict(title=dict(text="MB per step, all devices"),
                                                                      rangemode="tozero"),
                      xaxis2=dict(axis, domain=[0.56, 1], anchor="y2"),
                      yaxis2=dict(title=dict(text="ms per step (bandwidth only)"), anchor="x2", rangemode="tozero"),
                      legend=dict(orientation="h", y=-0.25), margin=dict(l=10, r=10, t=60, b=10))
        return figure(data, layout)

    def redraw(self) -> None:
        """Recompute the model and refresh the figure in place."""
        sync(self.figure, self.current_figure())
        self._update_status()

    def _update_status(self) -> None:
        p_now = int(self.world_size.value)
        now = self.volume()
        t_now = 1e3 * step_seconds(now["total"], p_now, self.bandwidth_bytes())
        meas = self.applicable_measured()
        found = ""
        if meas:
            found = "<br>" + "; ".join(f"measured at P = {m['world_size']}: {m['bytes']:,.0f} bytes "
                                       f"(model / measured = {self.volume(m['world_size'])['total'] / m['bytes']:.3f})"
                                       for m in meas)
        elif self.measured:
            m = self.measured[0]
            found = (f"<br>the measured run applies at N = {m['tokens']:,}, D = {m['d_model']}, k = {m['top_k']}, "
                     f"E = {m['num_experts']}, {dict((b, n) for n, b in PRECISIONS)[m['bytes_per_element']]}")
        self.status.value = (f"<b>P = {p_now}</b>: {now['total'] / 1e6:.3f} MB per step over all devices "
                             f"(counts {now['counts']:,.0f} B, dispatch {now['dispatch'] / 1e6:.3f} MB, "
                             f"combine {now['combine'] / 1e6:.3f} MB), {now['total'] / p_now / 1e6:.3f} MB "
                             f"per device: <b>{t_now:.3f} ms</b> at {self.bandwidth.value:.3g} GB/s{found}")
