"""SenseRoutingLive: LIMoE-style per-sense routing bars, live over training.

Each bar is the share of one sense's assignments that go to one expert, per MoE block
(:func:`pwlab.viz.sense_bars`, after Mustafa et al. 2022, fig. 5): an expert whose bars are
all one colour would be a sense expert. Step trains ``steps_per_tick`` steps and redraws;
Play runs one step after another as an asyncio task on the kernel's event loop, yielding between
ticks (as :class:`pwlab.widgets.RoutingPlayground` does), so Pause and the other buttons are
handled while it trains; Reset rebuilds the untrained model from the seed. Next to the bars,
``I(E; M)`` (bits) per block over the steps drawn so far says how much the routing depends on
the sense.
"""
from __future__ import annotations

import time

import ipywidgets as W
import plotly.graph_objects as go

from pwlab import viz
from pwlab._checks import positive_int
from pwlab.history import StepRecord
from pwlab.train import Trainer
from pwlab.viz._common import figure
from pwlab.widgets._common import live_pathway_map, model_args
from pwlab.widgets._live import Clock, PlayLoop, live_figure, sync


class SenseRoutingLive(PlayLoop):
    """Train a multi-sense MoE and watch each sense's share of every expert.

    Args:
        tasks: task names or Task objects (default: one task per sense).
        config: a :class:`pwlab.config.Config` or preset name (default ``"tiny"``).
        trainer: continue this :class:`pwlab.train.Trainer` instead (``tasks``, ``config`` and
            ``seed`` are then taken from it); Reset rebuilds its untrained model from its config.
        seed: seeds the model and its training (default: the config's ``train.seed``).
        steps_per_tick: training steps per Step (Play trains one step per tick).
        refresh_s: least time between two redraws while playing (Step always redraws).
        pathway_examples: test examples per task behind the bars.
        max_steps: Play stops here.

    ``.widget`` is the app; :meth:`step`, :meth:`run`, :meth:`play`, :meth:`pause` and
    :meth:`reset` are its buttons.
    """

    def __init__(self, tasks=None, config=None, *, trainer=None, seed: int | None = None, steps_per_tick: int = 5,
                 refresh_s: float = 0.5, pathway_examples: int = 32, max_steps: int = 300):
        a = model_args("SenseRoutingLive", tasks, config, trainer=trainer, seed=seed)
        self.tasks, self.cfg, self.seed = a.tasks, a.config, a.seed
        self.steps_per_tick = positive_int("steps_per_tick", steps_per_tick)
        self.refresh_s = float(refresh_s)
        self.pathway_examples = positive_int("pathway_examples", pathway_examples)
        self.max_steps = positive_int("max_steps", max_steps)
        self.trainer = a.trainer if a.trainer is not None else Trainer(self.tasks, self.cfg)
        self.clock = Clock()
        self.mi: list[tuple[int, list[float]]] = []     # (step, I(E;M) per block) at every redraw
        self._task = None
        self._last_draw = 0.0
        self.play_button = W.Button(description="Play", icon="play", button_style="success")
        self.pause_button = W.Button(description="Pause", icon="pause")
        self.step_button = W.Button(description="Step", icon="step-forward")
        self.reset_button = W.Button(description="Reset", icon="refresh", button_style="warning")
        self.status = W.HTML()
        self.pmap = None
        self.bars = live_figure(viz.sense_bars(None))
        self.curve = live_figure(self.mi_figure())
        self.play_button.on_click(lambda _: self.play())
        self.pause_button.on_click(lambda _: self.pause())
        self.step_button.on_click(lambda _: self.step())
        self.reset_button.on_click(lambda _: self.reset())
        self.redraw()
        buttons = W.HBox([self.play_button, self.pause_button, self.step_button, self.reset_button])
        self.widget = W.VBox([buttons, self.status, W.HBox([self.bars, self.curve])])

    # -- training (Play / Pause / run: PlayLoop) --------------------------------------------
    def tick(self, force_redraw: bool = False, steps: int | None = None) -> None:
        """``steps`` steps (default ``steps_per_tick``; fewer at ``max_steps``), then a redraw when one is due."""
        n = min(self.steps_per_tick if steps is None else steps, self.max_steps - self.trainer.step_count)
        if n > 0:
            self.trainer.step(n)
        if force_redraw or time.perf_counter() - self._last_draw >= self.refresh_s:
            self.redraw()

    def _play_tick(self) -> None:
        self.tick(steps=1)              # one step per tick: a click waits for one step at most

    def step(self) -> None:
        """The Step button: one tick, figures redrawn."""
        self.tick(force_redraw=True)

    def reset(self) -> None:
        """Back to the untrained model of the seed; clears the I(E; M) curve."""
        self.pause()
        self.trainer = Trainer(self.tasks, self.cfg)
        self.mi = []
        self.redraw()

    # -- drawing -----------------------------------------------------------------------
    def mi_figure(self) -> go.Figure:
        """I(E; M) per MoE block at every redraw so far."""
        steps = [s for s, _ in self.mi]
        data = [dict(type="scatter", x=steps, y=[round(v[i], 4) for _, v in self.mi], mode="lines+markers",
                     name=f"block {b}") for i, b in enumerate(self.trainer.model.moe_blocks())]
        layout = dict(title=dict(text="I(E; sense), bits"), xaxis=dict(title=dict(text="training step")),
                      yaxis=dict(title=dict(text="bits"), rangemode="tozero"), height=350, width=380,
                      margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.2))
        return figure(data, layout)

    def redraw(self) -> None:
        """Count the pathway map of the current model and refresh both figures in place."""
        self.pmap = live_pathway_map(self.trainer.model, self.pathway_examples)
        mi = [float(v) for v in self.pmap.mutual_information("sense")]
        step = self.trainer.step_count
        if not self.mi or self.mi[-1][0] != step:
            self.mi.append((step, mi))
        fig = viz.sense_bars(self.pmap)
        fig.update_layout(title=f"step {step}: % of each sense's assignments per expert")
        sync(self.bars, fig)
        sync(self.curve, self.mi_figure())
        self._last_draw = time.perf_counter()
        self.clock.mark()
        self._update_status()

    def _update_status(self) -> None:
        h = [r for r in self.trainer.history if isinstance(r, StepRecord)]
        loss = f"loss {h[-1].loss:.3f}" if h else "untrained"
        mi = ", ".join(f"block {b} {v:.2f}" for b, v in zip(self.trainer.model.moe_blocks(), self.mi[-1][1])) \
            if self.mi else ""
        state = "playing" if self.playing else "paused"
        self.status.value = f"<b>step {self.trainer.step_count}</b> · {loss} · {state} · I(E; sense) bits: {mi}"
