"""TradeoffExplorer: accuracy vs training FLOPs vs parameters over finished runs.

One point per run (e.g. dense, MoE, MoE + SWAT): y is the chosen task's test metric (or the
mean accuracy), x is the run's counted training FLOPs or its parameters, and the marker's
area grows with the other of the two, so all three quantities are on one chart. Changing the
task or the x axis redraws the same scatter in place; nothing is retrained.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import ipywidgets as W
import plotly.graph_objects as go

from pwlab.viz._common import figure
from pwlab.widgets._live import live_figure, sync

MEAN = "mean"
#: x-axis choices → the run's key and the axis title
X_AXES = {"training FLOPs": ("train_flops", "counted training FLOPs of the run"),
          "parameters": ("parameters", "parameters")}
_COLORS = ["#636efa", "#00cc96", "#ef553b", "#ab63fa", "#ffa15a", "#19d3f3"]
_REQUIRED = ("model", "parameters", "train_flops", "metrics")


class TradeoffExplorer:
    """Pick a task (or the mean) and the x axis; one scatter of the runs updates in place.

    Args:
        runs: one dict per run with ``"model"`` (its name), ``"parameters"``, ``"train_flops"``
            and ``"metrics"`` (task name → test metric, as ``Trainer.evaluate`` returns);
            ``"accuracy"`` (the mean accuracy) is used for "mean" when present.
        tasks: the Task objects behind ``metrics`` (their ``kind`` and ``metric`` name the y
            axis; "mean" averages the classification tasks). Default: every metric is an accuracy.
        chance: task name → chance level, drawn as a dotted line under the chosen task (the
            mean of the given values under "mean").

    ``.widget`` is the app; :meth:`select` moves the controls; :meth:`values` gives the plotted
    (x, y) of each run.
    """

    def __init__(self, runs: Sequence[Mapping], *, tasks: Sequence | None = None,
                 chance: Mapping[str, float] | None = None):
        if isinstance(runs, Mapping) or not isinstance(runs, Sequence) or not runs:
            raise ValueError("runs must be a non-empty list of dicts (one per run)")
        for i, r in enumerate(runs):
            missing = [k for k in _REQUIRED if not isinstance(r, Mapping) or k not in r]
            if missing:
                raise ValueError(f"runs[{i}] lacks {missing}; each run needs the keys {list(_REQUIRED)}")
        self.runs = [dict(r) for r in runs]
        names = list(self.runs[0]["metrics"])
        for r in self.runs[1:]:
            if list(r["metrics"]) != names:
                raise ValueError(f"every run must report the same tasks: {r['model']!r} has {list(r['metrics'])}, "
                                 f"{self.runs[0]['model']!r} has {names}")
        self.kind = {n: "classification" for n in names}
        self.metric = {n: "accuracy" for n in names}
        if tasks is not None:
            by_name = {t.name: t for t in tasks}
            if set(by_name) != set(names):
                raise ValueError(f"tasks must be the runs' tasks {names}, got {sorted(by_name)}")
            self.kind = {n: by_name[n].kind for n in names}
            self.metric = {n: by_name[n].metric for n in names}
        self.chance = dict(chance or {})
        unknown = sorted(set(self.chance) - set(names))
        if unknown:
            raise ValueError(f"chance names tasks the runs do not have: {unknown}")
        self.task = W.Dropdown(options=[MEAN] + names, value=MEAN, description="task")
        self.x_axis = W.ToggleButtons(options=list(X_AXES), value="training FLOPs", description="x axis")
        self.figure = live_figure(self.make_figure())
        self.task.observe(lambda _: self.redraw(), names="value")
        self.x_axis.observe(lambda _: self.redraw(), names="value")
        self.widget = W.VBox([W.HBox([self.task, self.x_axis]), self.figure])

    def select(self, task: str | None = None, x_axis: str | None = None) -> None:
        """Set the controls programmatically (the figure follows)."""
        if task is not None and task not in self.task.options:
            raise ValueError(f"task must be one of {list(self.task.options)}, got {task!r}")
        if x_axis is not None and x_axis not in X_AXES:
            raise ValueError(f"x_axis must be one of {list(X_AXES)}, got {x_axis!r}")
        if task is not None:
            self.task.value = task
        if x_axis is not None:
            self.x_axis.value = x_axis

    def _y(self, run: Mapping) -> float:
        task = self.task.value
        if task != MEAN:
            return float(run["metrics"][task])
        if "accuracy" in run:
            return float(run["accuracy"])
        cls = [n for n, k in self.kind.items() if k == "classification"]
        return sum(float(run["metrics"][n]) for n in cls) / max(len(cls), 1)

    def values(self) -> list[tuple[float, float]]:
        """(x, y) of each run under the current controls."""
        key = X_AXES[self.x_axis.value][0]
        return [(float(r[key]), self._y(r)) for r in self.runs]

    def _y_title(self) -> str:
        task = self.task.value
        if task == MEAN:
            n = sum(k == "classification" for k in self.kind.values())
            return f"mean accuracy, {n} classification tasks"
        lower = " (lower is better)" if self.kind[task] == "regression" else ""
        return f"{task}: test {self.metric[task]}{lower}"

    def _chance(self) -> float | None:
        task = self.task.value
        if task == MEAN:
            cls = [self.chance[n] for n, k in self.kind.items() if k == "classification" and n in self.chance]
            return sum(cls) / len(cls) if cls else None
        return self.chance.get(task)

    def make_figure(self) -> go.Figure:
        """The scatter the controls describe (what :meth:`redraw` puts in the live figure)."""
        xy = self.values()
        by_flops = self.x_axis.value == "training FLOPs"
        other = "parameters" if by_flops else "train_flops"
        biggest = max(float(r[other]) for r in self.runs) or 1.0
        sizes = [14 + 26 * (float(r[other]) / biggest) ** 0.5 for r in self.runs]   # area ∝ the other quantity
        label = (lambda r: f"{r['model']}<br>{r['parameters'] / 1e3:.1f}k parameters") if by_flops else \
            (lambda r: f"{r['model']}<br>{r['train_flops']:.3g} FLOPs")
        data = [dict(type="scatter", x=[x for x, _ in xy], y=[round(y, 4) for _, y in xy], mode="markers+text",
                     text=[label(r) for r in self.runs], textposition="top center", name="runs",
                     marker=dict(size=[round(s, 2) for s in sizes], line=dict(width=1, color="black"),
                                 color=[_COLORS[i % len(_COLORS)] for i in range(len(xy))]),
                     hovertemplate="%{text}<br>x %{x:.3g}, y %{y:.3f}<extra></extra>")]
        chance = self._chance()
        shapes, notes = [], []
        if chance is not None:
            shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=chance, y1=chance,
                               line=dict(dash="dot", color="grey")))
            notes.append(dict(xref="paper", x=1, y=chance, text="chance", showarrow=False, xanchor="right",
                              yanchor="top"))
        task = self.task.value
        regression = task != MEAN and self.kind[task] == "regression"
        ys = [y for _, y in xy] + ([chance] if chance is not None else [])
        top = max(ys) * 1.25 if regression else 1.05
        size_of = "parameters" if by_flops else "training FLOPs"
        title = (f"{'Mean accuracy' if task == MEAN else task} vs {self.x_axis.value} "
                 f"(marker area grows with the {size_of})")
        layout = dict(title=dict(text=title), shapes=shapes, annotations=notes,
                      xaxis=dict(title=dict(text=X_AXES[self.x_axis.value][1]), type="log" if by_flops else "linear"),
                      yaxis=dict(title=dict(text=self._y_title()), range=[0, top]), height=420, showlegend=False,
                      margin=dict(l=10, r=10, t=60, b=10))
        return figure(data, layout)

    def redraw(self) -> None:
        """Refresh the scatter in place."""
        sync(self.figure, self.make_figure())
