"""Live figures: a ``go.FigureWidget`` whose data are replaced in place by a new ``go.Figure``.

Apps build each figure with a :mod:`pwlab.viz` function, then copy it into the same widget
inside ``batch_update()`` (one message to the browser, no widget rebuilt). Traces are updated
one for one when the structure is unchanged (the common case: new values, same traces);
otherwise the trace list is replaced, still in the same widget.
"""
from __future__ import annotations

import time

import plotly.graph_objects as go

#: layout arrays replaced whole (an absent one is cleared, so a removed highlight disappears)
_ARRAYS = ("shapes", "annotations", "images")


def live_figure(fig: go.Figure) -> go.FigureWidget:
    """The FigureWidget an app keeps and updates with :func:`sync`."""
    return go.FigureWidget(fig)


def sync(widget: go.FigureWidget, fig: go.Figure) -> go.FigureWidget:
    """Make ``widget`` show ``fig``: data and layout updated in place within one batch."""
    new = fig.to_plotly_json()
    data, layout = new.get("data", []), dict(new.get("layout", {}))
    with widget.batch_update():
        same = len(widget.data) == len(data) and all(t.type == d.get("type", "scatter")
                                                     for t, d in zip(widget.data, data))
        if same:
            for trace, d in zip(widget.data, data):
                trace.update({k: v for k, v in d.items() if k != "type"}, overwrite=True)
        else:
            widget.data = ()
            if data:
                widget.add_traces(list(fig.data))
        for key in _ARRAYS:
            layout.setdefault(key, [])
        layout.pop("template", None)            # the template never changes: keep it out of the diff
        widget.layout.update(layout, overwrite=True)
    return widget


class Clock:
    """Timestamps of figure refreshes (for the refresh interval the benchmark reports)."""

    def __init__(self):
        self.times: list[float] = []

    def mark(self) -> None:
        self.times.append(time.perf_counter())

    def max_interval(self) -> float:
        t = self.times
        return max((b - a for a, b in zip(t, t[1:])), default=0.0)
