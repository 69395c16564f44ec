"""Live figures: a ``go.FigureWidget`` whose data are replaced in place by a new ``go.Figure``.

Apps build each figure with a :mod:`pwlab.viz` function, then copy it into the same widget
inside ``batch_update()`` (one message to the browser, no widget rebuilt). Traces are updated
one for one when the structure is unchanged (the common case: new values, same traces);
otherwise the trace list is replaced, still in the same widget.
"""
from __future__ import annotations

import asyncio
import time

import plotly.graph_objects as go

from pwlab._checks import positive_int
from pwlab.widgets._common import running_loop

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


class PlayLoop:
    """Play / Pause / run for an app that trains in ticks (RoutingPlayground, SenseRoutingLive).

    Play starts an asyncio task on the kernel's running event loop that runs
    :meth:`_play_tick` after :meth:`_play_tick` until ``trainer.step_count`` reaches
    ``max_steps``, yielding (``await asyncio.sleep(0)``) between ticks so that clicks and slider
    moves are handled while it trains; it redraws when it stops. Without a running loop (a
    script, a test) :meth:`play` returns False and :meth:`run` does the same synchronously.

    The app provides ``trainer``, ``max_steps``, ``tick()``, ``redraw()`` and ``_update_status()``.
    """

    _task: asyncio.Task | None = None

    def _play_tick(self) -> None:
        """One tick of Play (default: :meth:`tick`)."""
        self.tick()

    @property
    def playing(self) -> bool:
        """True while Play's task is ticking on the event loop."""
        return self._task is not None and not self._task.done()

    def run(self, ticks: int) -> None:
        """``ticks`` ticks synchronously (what Play does, for scripts and tests), then a redraw."""
        for _ in range(positive_int("ticks", ticks)):
            if self.trainer.step_count >= self.max_steps:
                break
            self.tick()
        self.redraw()

    def play(self) -> bool:
        """Start ticking on the running event loop; False when there is none (then use :meth:`run`)."""
        if self.playing:
            return True
        loop = running_loop()
        if loop is None:
            return False
        self._task = loop.create_task(self._loop())
        self._update_status()
        return True

    async def _loop(self) -> None:
        try:
            while self.trainer.step_count < self.max_steps:
                self._play_tick()
                await asyncio.sleep(0)          # let the kernel handle UI events between ticks
        finally:
            self.redraw()

    def pause(self) -> None:
        """Stop after the current tick."""
        if self.playing:
            self._task.cancel()
        self._task = None
        self._update_status()
