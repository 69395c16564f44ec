"""TaskMixExplorer: task mix and routing level → per-task accuracy and interference.

Two controls describe a multi-task run: the sampling temperature ``T`` of the task mix
(``p_i ∝ n_i^(1/T)``, :func:`pwlab.tasks.mixing_probabilities`; ``T < 1`` favours the large
tasks, ``T = 1`` is proportional, large ``T`` tends to uniform) and the routing level
(``token``: each token picks its experts; ``task``: the router reads only the task id,
Kudugunta et al. 2021). Moving them redraws at once the mix (the sampling probability of each
task) and highlights the trained run they describe, if any; nothing trains. "Train" trains a
fresh model from the seed with those settings, ``steps`` steps in ticks of ``steps_per_tick``
(a progress line after each), evaluates it and adds its per-task accuracy to the bars. With
given single-task accuracies, each bar is labelled with its *interference*: single-task
accuracy minus this run's, in points (positive: the task lost by sharing).

With a running event loop (a Jupyter kernel) training runs as an asyncio task that yields
between ticks, so the controls stay live; without one (a script, a test) :meth:`train` runs
to the end before it returns.
"""
from __future__ import annotations

import asyncio

import ipywidgets as W
import plotly.graph_objects as go

from pwlab._checks import positive_int
from pwlab.config import Config
from pwlab.tasks import mixing_probabilities
from pwlab.train import Trainer
from pwlab.viz._common import figure
from pwlab.widgets._common import model_args, running_loop
from pwlab.widgets._live import live_figure, sync

ROUTING = ("token", "task")
_PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880")
#: temperature slider range, as powers of ten (0.1 … 10)
_LOG_T = (-1.0, 1.0)


def _check_temperature(temperature) -> float:
    lo, hi = _LOG_T
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not 10 ** lo <= temperature <= 10 ** hi:
        raise ValueError(f"temperature must be a number in [{10 ** lo:g}, {10 ** hi:g}], got {temperature!r}")
    return float(temperature)


def _key(temperature: float, routing: str) -> tuple:
    # the slider's values are rounded to 3 significant digits: equal settings give equal keys
    return float(f"{temperature:.3g}"), routing


class TaskMixExplorer:
    """Sampling temperature and routing level of a multi-task run → per-task accuracy.

    Args:
        tasks: task names or Task objects (default: one task per sense).
        config: a :class:`pwlab.config.Config` or preset name (default ``"tiny"``) with a
            token-level router; "task" routing swaps in a learned task router, top-k kept.
        seed: seeds every trained model and its sampler (each run starts from the same init);
            default: the config's ``train.seed``.

    It trains a fresh model for every setting it shows, so, alone of the model apps, it takes
    no ``trainer=`` (a Trainer passed as ``tasks`` is refused with that explanation).
        steps: training steps per "Train".
        steps_per_tick: steps between two progress updates (and two UI events, while playing).
        single: task name → single-task accuracy (a fraction, as ``Trainer.evaluate`` gives),
            to label the bars with interference; None leaves them unlabelled.
        max_examples: test examples per task in each evaluation (None: all).
        temperature: the slider's start value (0.1 … 10).

    ``.widget`` is the app; :meth:`set` moves the controls, :meth:`train` presses "Train".
    """

    def __init__(self, tasks=None, config=None, *, seed: int | None = None, steps: int = 100, steps_per_tick: int = 2,
                 single: dict | None = None, max_examples: int | None = 256, temperature: float = 1.0):
        a = model_args("TaskMixExplorer", tasks, config, seed=seed, reuses_trainer=False)
        self.tasks, base, seed = a.tasks, a.config, a.seed
        if base.model.router == "task":
            raise ValueError("config must use a token-level router; the routing toggle switches to the task router")
        self.base, self.seed = base, seed
        self.steps = positive_int("steps", steps)
        self.steps_per_tick = positive_int("steps_per_tick", steps_per_tick)
        self.max_examples = None if max_examples is None else positive_int("max_examples", max_examples)
        names = [t.name for t in self.tasks]
        self.single = dict(single) if single is not None else None
        if self.single is not None and set(self.single) != set(names):
            raise ValueError(f"single must give an accuracy for exactly the tasks {names}, got {sorted(self.single)}")
        lo, hi = _LOG_T
        _check_temperature(temperature)
        self.sizes = [len(t.y_train) for t in self.tasks]
        self.results: dict[tuple, dict] = {}      # (temperature, routing) → accuracies, in training order
        self.trainer: Trainer | None = None
        self._task: asyncio.Task | None = None
        style = dict(description_width="110px")
        self.temperature = W.FloatLogSlider(value=float(temperature), base=10, min=lo, max=hi, step=0.05,
                                            description="temperature T", style=style, readout_format=".2f",
                                            continuous_update=False)
        self.routing = W.ToggleButtons(options=list(ROUTING), value="token", description="routing", style=style)
        self.train_button = W.Button(description="Train", icon="play", button_style="success")
        self.progress = W.HTML()
        self.mix = live_figure(self.mix_figure())
        self.bars = live_figure(self.accuracy_figure())
        self.temperature.observe(lambda _: self.redraw(), names="value")
        self.routing.observe(lambda _: self.redraw(), names="value")
        self.train_button.on_click(lambda _: self.train())
        self.redraw()
        self.widget = W.VBox([W.HBox([W.VBox([self.temperature, self.routing]),
                                      W.VBox([self.train_button, self.progress])]),
                              W.HBox([self.mix, self.bars])])

    # -- configuration -----------------------------------------------------------------
    def key(self) -> tuple:
        """(temperature, routing) of the controls, the key of a trained run in :attr:`results`."""
        return _key(float(self.temperature.value), self.routing.value)

    def config(self) -> Config:
        """The :class:`pwlab.config.Config` the controls describe."""
        temperature, routing = self.key()
        cfg = self.base
        if routing == "task":
            cfg = cfg.with_model(router="task", router_kwargs={"mode": "learned"})
        return cfg.with_train(seed=self.seed, sampling="temperature", temperature=temperature)

    def probabilities(self) -> list[float]:
        """Sampling probability of each task at the slider's temperature."""
        return mixing_probabilities(self.sizes, "temperature", self.key()[0]).tolist()

    def set(self, temperature: float | None = None, routing: str | None = None) -> None:
        """Move the controls (what a person does); the figures follow, nothing trains."""
        if routing is not None and routing not in ROUTING:
            raise ValueError(f"routing must be one of {list(ROUTING)}, got {routing!r}")
        if temperature is not None:
            self.temperature.value = float(_check_temperature(temperature))
        if routing is not None:
            self.routing.value = routing

    # -- training ----------------------------------------------------------------------
    @property
    def training(self) -> bool:
        """True while a "Train" runs on the event loop."""
        return self._task is not None and not self._task.done()

    def train(self) -> bool:
        """The "Train" button: train a fresh model with the controls' settings.

        Returns True when training started on the running event loop (it finishes later) or
        finished here (no loop); False when a run is already in progress.
        """
        if self.training:
            return False
        key, cfg = self.key(), self.config()
        self.trainer = Trainer(self.tasks, cfg)
        loop = running_loop()
        if loop is None:
            while self.trainer.step_count < self.steps:
                self._tick()
            self._finish(key)
            return True
        self.train_button.disabled = True
        self._task = loop.create_task(self._train_async(key))
        return True

    def _tick(self) -> None:
        n = min(self.steps_per_tick, self.steps - self.trainer.step_count)
        self.trainer.step(n)
        self.progress.value = (f"training {self._label(self.key_of_trainer())}: "
                               f"step {self.trainer.step_count} / {self.steps}")

    def key_of_trainer(self) -> tuple:
        """(temperature, routing) of the model being (or last) trained."""
        cfg = self.trainer.config
        return _key(cfg.train.temperature, "task" if cfg.model.router == "task" else "token")

    async def _train_async(self, key: tuple) -> None:
        try:
            while self.trainer.step_count < self.steps:
                self._tick()
                await asyncio.sleep(0)              # let the kernel handle UI events between ticks
            self._finish(key)
        finally:
            self.train_button.disabled = False

    def _finish(self, key: tuple) -> None:
        acc = self.trainer.evaluate(max_examples=self.max_examples, record=False)
        self.results.pop(key, None)                 # a retrained setting moves to the end
        self.results[key] = {t.name: float(acc[t.name]) for t in self.tasks}
        self.progress.value = f"trained {self._label(key)}: {self.steps} steps"
        self.redraw()

    # -- drawing -----------------------------------------------------------------------
    @staticmethod
    def _label(key: tuple) -> str:
        return f"{key[1]} routing, T={key[0]:g}"

    def mix_figure(self) -> go.Figure:
        """The task mix at the slider's temperature: one bar per task."""
        names = [t.name for t in self.tasks]
        p = self.probabilities()
        data = [dict(type="bar", x=names, y=[round(v, 4) for v in p], text=[f"{v:.2f}" for v in p],
                     textposition="outside", marker=dict(color="#636efa"), name="sampling probability",
                     customdata=self.sizes,
                     hovertemplate="%{x}: p = %{y:.3f} (%{customdata} examples)<extra></extra>")]
        uniform = 1 / len(names)
        layout = dict(title=dict(text=f"Task mix at T = {self.key()[0]:g}"),
                      yaxis=dict(title=dict(text="share of each step"), range=[0, 1.05]),
                      shapes=[dict(type="line", xref="paper", x0=0, x1=1, y0=uniform, y1=uniform,
                                   line=dict(dash="dot", color="grey"))],
                      annotations=[dict(xref="paper", x=0, y=uniform, text="uniform", showarrow=False,
                                        xanchor="left", yanchor="bottom")],
                      height=330, width=360, margin=dict(l=10, r=10, t=50, b=10), showlegend=False)
        return figure(data, layout)

    def accuracy_figure(self) -> go.Figure:
        """Per-task accuracy of every trained run; the run of the controls' settings in full colour."""
        names = [t.name for t in self.tasks]
        current = self.key()
        data = []
        for i, (key, acc) in enumerate(self.results.items()):
            bar = dict(type="bar", x=names, y=[round(acc[n], 4) for n in names], name=self._label(key),
                       marker=dict(color=_PALETTE[i % len(_PALETTE)]), opacity=1.0 if key == current else 0.3)
            if self.single is not None:              # interference in points: positive = lost by sharing
                bar.update(text=[f"{100 * (self.single[n] - acc[n]):+.0f}" for n in names], textposition="outside")
            data.append(bar)
        if self.single is not None:
            data.append(dict(type="scatter", x=names, y=[self.single[n] for n in names], mode="markers",
                             name="single-task", marker=dict(symbol="line-ew-open", size=36, color="black",
                                                             line=dict(width=2))))
        if not self.results:
            title = "Press Train to train a model with these settings"
        elif current in self.results:
            acc = self.results[current]
            title = f"{self._label(current)}: mean accuracy {sum(acc.values()) / len(acc):.3f}"
            if self.single is not None:
                inter = sum(100 * (self.single[n] - acc[n]) for n in names) / len(names)
                title += f", mean interference {inter:+.1f} points"
        else:
            title = f"{self._label(current)}: not trained yet (press Train)"
        layout = dict(title=dict(text=title), barmode="group",
                      yaxis=dict(title=dict(text="test accuracy"), range=[0, 1.12]),
                      height=330, margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.15))
        return figure(data, layout)

    def redraw(self) -> None:
        """Refresh both figures in place from the controls and the trained runs."""
        sync(self.mix, self.mix_figure())
        sync(self.bars, self.accuracy_figure())
