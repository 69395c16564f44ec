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
    widget = go.FigureWidget(fig)
    widget._pwlab_last = (None, None)
    return widget


def sync(widget: go.FigureWidget, fig: go.Figure) -> go.FigureWidget:
    """Make ``widget`` show ``fig``: data and layout updated in place within one batch.

    Only what differs from the last synced figure is sent (a live figure's layout rarely
    changes between refreshes, and most traces of an explorer keep their data).
    """
    new = fig.to_plotly_json()
    data, layout = new.get("data", []), dict(new.get("layout", {}))
    layout.pop("template", None)            # the template never changes: keep it out of the diff
    for key in _ARRAYS:
        layout.setdefault(key, [])
    old_data, old_layout = getattr(widget, "_pwlab_last", (None, None))
    with widget.batch_update():
        same = len(widget.data) == len(data) and all(t.type == d.get("type", "scatter")
                                                     for t, d in zip(widget.data, data))
        if same:
            for i, (trace, d) in enumerate(zip(widget.data, data)):
                if old_data is None or i >= len(old_data) or old_data[i] != d:
                    trace.update({k: v for k, v in d.items() if k != "type"}, overwrite=True)
        else:
            widget.data = ()
            if data:
                widget.add_traces(list(fig.data))
        if layout != old_layout:
            widget.layout.update(layout, overwrite=True)
    widget._pwlab_last = (data, layout)      # what the widget shows now, to diff the next figure against
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
