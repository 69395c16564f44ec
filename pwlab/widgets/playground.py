"""RoutingPlayground: tweak the routing of a multi-task MoE and watch it train, live.

In the spirit of TensorFlow Playground: every knob is live, Play / Pause / Step / Reset, and
the state is a function of the seed and the knobs (Reset rebuilds the model from the seed).

Knobs that change the network (router, top_k, number of experts) reset the model; knobs that
only change how it trains (capacity factor, routing noise, aux-loss weights) apply to the
running model at the next step. Training runs in ticks of ``Trainer.step(steps_per_tick)``;
with Play, an asyncio task on the kernel's event loop runs tick after tick and yields
(``await asyncio.sleep(0)``) between them, so clicks and slider moves are handled while it
trains. Without a running loop (a script, a test), call :meth:`tick` / :meth:`run` yourself.
Figures refresh at most every ``refresh_s`` seconds while playing, always after Step.

The router list is :data:`pwlab.routing.ROUTERS` when the app is built, so a router made
with :func:`pwlab.register_router` before that is in it; which knobs apply to a router (k,
noise, capacity) comes from its :meth:`~pwlab.routing.Router.describe`, not a list of names.
"""
from __future__ import annotations

import time

import ipywidgets as W

from pwlab import viz
from pwlab._checks import positive_int
from pwlab.config import PRESETS, preset
from pwlab.history import StepRecord
from pwlab.routing import ROUTERS
from pwlab.train import Trainer
from pwlab.widgets._common import live_pathway_map, model_args
from pwlab.widgets._live import Clock, PlayLoop, live_figure, sync


def _about(name: str):
    """What the router registered as ``name`` offers (its :meth:`~pwlab.routing.Router.describe`)."""
    return ROUTERS[name].describe()


def noise_knob(name: str) -> str | None:
    """The noise argument of the router registered as ``name`` (e.g. ``"noise_eps"``), or None."""
    return _about(name).noise


class RoutingPlayground(PlayLoop):
    """Live MoE training with every routing knob.

    Args:
        tasks: task names or Task objects (default: one task per sense).
        config: a :class:`pwlab.config.Config` or preset name (default ``"tiny"``).
        trainer: continue this :class:`pwlab.train.Trainer` (its tasks, config and seed; the knobs
            start at its config, batch size included); a knob that changes the network, or
            Reset, then builds a fresh model from the knobs.
        seed: seeds the model, the sampler and the routing noise (default: the config's ``train.seed``).
        batch_size: examples per step (a knob too); the default 32 keeps a step quick, as a
            playground wants; None takes the config's (with ``trainer=``, always the trainer's).
        steps_per_tick: training steps per tick.
        refresh_s: least time between two figure refreshes while playing.
        pathway_examples: test examples per task behind the live pathway heatmap.
        max_steps: Play stops here.

    ``.widget`` is the app to display.
    """

    def __init__(self, tasks=None, config=None, *, trainer=None, seed: int | None = None, batch_size: int | None = 32,
                 steps_per_tick: int = 1, refresh_s: float = 0.5, pathway_examples: int = 16, max_steps: int = 5000):
        a = model_args("RoutingPlayground", tasks, config, trainer=trainer, seed=seed)
        self.tasks, base, seed = a.tasks, a.config, a.seed
        if a.trainer is not None:
            batch_size = None                    # the knobs start at the trainer's config, batch size included
        self.steps_per_tick = positive_int("steps_per_tick", steps_per_tick)
        self.refresh_s = float(refresh_s)
        self.pathway_examples = positive_int("pathway_examples", pathway_examples)
        self.max_steps = positive_int("max_steps", max_steps)
        self.clock = Clock()
        self._task = None
        self._last_draw = 0.0
        self._tick_s = self._draw_s = 0.0       # the last tick's and the last refresh's durations
        self._quiet = False
        m = base.model
        lb = m.aux_weights.get("load_balancing", 1e-2)
        zl = m.aux_weights.get("z_loss", 1e-3)
        style = dict(description_width="130px")
        lay = W.Layout(width="330px")
        self.router = W.Dropdown(options=list(ROUTERS), value=m.router, description="router", style=style, layout=lay)
        self.top_k = W.IntSlider(value=m.top_k, min=1, max=min(8, m.num_experts), description="top_k", style=style,
                                 layout=lay)
        self.num_experts = W.IntSlider(value=m.num_experts, min=2, max=16, description="experts", style=style,
                                       layout=lay)
        self.capacity = W.FloatSlider(value=m.capacity_factor or 0.0, min=0.0, max=4.0, step=0.25, style=style,
                                      description="capacity (0=∞)", layout=lay)
        self.noise = W.FloatSlider(value=float(m.router_kwargs.get(noise_knob(m.router) or "", 0.0)), min=0.0,
                                   max=1.0, step=0.01, description="noise", style=style, layout=lay)
        self.load_balancing = W.FloatSlider(value=lb, min=0.0, max=0.1, step=0.005, readout_format=".3f",
                                            description="w load balancing", style=style, layout=lay)
        self.z_loss = W.FloatSlider(value=zl, min=0.0, max=0.01, step=0.0005, readout_format=".4f",
                                    description="w z-loss", style=style, layout=lay)
        self.seed = W.IntText(value=seed, description="seed", style=style, layout=lay)
        bs = int(batch_size or base.train.batch_size)
        self.batch_size = W.Dropdown(options=sorted({8, 16, 32, 64, 128, 256, bs}), value=bs, description="batch size",
                                     style=style, layout=lay)
        self.play_button = W.Button(description="Play", icon="play", button_style="success")
        self.pause_button = W.Button(description="Pause", icon="pause")
        self.step_button = W.Button(description="Step", icon="step-forward")
        self.reset_button = W.Button(description="Reset", icon="refresh", button_style="warning")
        self.code_button = W.Button(description="Copy as code", icon="code")
        self.status = W.HTML()
        self.code = W.Output(layout=W.Layout(max_height="220px", overflow="auto"))
        self.controls = (self.router, self.top_k, self.num_experts, self.capacity, self.noise, self.load_balancing,
                         self.z_loss, self.batch_size, self.seed)
        self._base = base
        if a.trainer is not None:
            self.trainer = a.trainer
        else:
            self._build_trainer()
        self.curves = live_figure(viz.task_curves(self.trainer.history))
        self.load = live_figure(viz.load_over_training(self.trainer.history))
        self.pathways = live_figure(viz.expert_heatmaps(None))
        for w in self.controls:
            w.observe(self._on_knob, names="value")
        self.play_button.on_click(lambda _: self.play())
        self.pause_button.on_click(lambda _: self.pause())
        self.step_button.on_click(lambda _: self.step())
        self.reset_button.on_click(lambda _: self.reset())
        self.code_button.on_click(lambda _: self.show_code())
        self._enable_knobs()
        self.redraw()
        buttons = W.HBox([self.play_button, self.pause_button, self.step_button, self.reset_button, self.code_button])
        self.widget = W.VBox([
            buttons, self.status,
            W.HBox([W.VBox(list(self.controls), layout=W.Layout(width="340px")),
                    W.VBox([self.curves, self.load], layout=W.Layout(flex="1"))]),
            self.pathways, self.code])

    # -- configuration -----------------------------------------------------------------
    def config(self):
        """The :class:`pwlab.config.Config` the knobs describe."""
        r = self.router.value
        kw = {}
        if noise_knob(r) is not None:
            kw[noise_knob(r)] = float(self.noise.value)
        aux = dict(self._base.model.aux_weights, load_balancing=float(self.load_balancing.value),
                   z_loss=float(self.z_loss.value))
        e = int(self.num_experts.value)
        cfg = self._base.with_model(router=r, top_k=min(int(self.top_k.value), e), num_experts=e,
                                    capacity_factor=self._capacity_factor(r), router_kwargs=kw,
                                    aux_weights=aux)
        return cfg.with_train(seed=int(self.seed.value), batch_size=int(self.batch_size.value))

    def _capacity_factor(self, router: str) -> float | None:
        """The slider's capacity factor, or None (dropless) at 0; None under a router that owns its
        capacity (the slider is off then, and the router keeps its own factor)."""
        if _about(router).owns_capacity:
            return None
        return float(self.capacity.value) or None

    def code_snippet(self) -> str:
        """A runnable snippet that builds this configuration and trains it as far as the app has."""
        cfg = self.config()
        m, t = cfg.model, cfg.train
        data = [(x.name, int(x.meta.get("seed", 0)) if isinstance(x.meta, dict) else 0) for x in self.tasks]
        knobs = dict(router=m.router, top_k=m.top_k, num_experts=m.num_experts, capacity_factor=m.capacity_factor,
                     router_kwargs=m.router_kwargs, aux_weights=m.aux_weights)
        head = ("import pwlab.tasks as T\nfrom pwlab.config import Config, preset\nfrom pwlab.train import Trainer\n\n"
                f"tasks = [T.get(name, seed=data_seed) for name, data_seed in {data!r}]\n")
        as_preset = cfg.name in PRESETS and preset(cfg.name).with_model(**knobs).with_train(
            seed=t.seed, batch_size=t.batch_size).to_dict() == cfg.to_dict()
        if as_preset:
            args = ",\n    ".join(f"{k}={v!r}" for k, v in knobs.items())
            body = (f"cfg = preset({cfg.name!r}).with_model(\n    {args},\n).with_train(seed={t.seed}, "
                    f"batch_size={t.batch_size})\n")
        else:                                   # not a preset plus knobs: spell out every field
            body = f"cfg = Config.from_dict({cfg.to_dict()!r})\n"
        return head + body + f"trainer = Trainer(tasks, cfg)\ntrainer.step({max(self.trainer.step_count, 1)})\n"

    def show_code(self) -> str:
        """Print the snippet into the app's output area (and return it)."""
        code = self.code_snippet()
        self.code.clear_output()
        with self.code:
            print(code)
        return code

    def _build_trainer(self) -> None:
        self.trainer = Trainer(self.tasks, self.config())

    def _enable_knobs(self) -> None:
        about = _about(self.router.value)
        self.top_k.disabled = not about.top_k
        self.noise.disabled = about.noise is None
        self.capacity.disabled = about.owns_capacity      # e.g. expert choice fixes its own capacity

    def _on_knob(self, change) -> None:
        if self._quiet:
            return
        owner = change["owner"]
        self._enable_knobs()
        if owner is self.num_experts:
            self._quiet = True                   # a router cannot pick more experts than there are
            try:
                self.top_k.max = min(8, self.num_experts.value)
            finally:
                self._quiet = False
        if owner in (self.router, self.top_k, self.num_experts, self.seed, self.batch_size):
            self.reset()
        else:
            # nothing drawn changes until the next step, which uses the new value
            self._apply_live()
            self._update_status()

    def _apply_live(self) -> None:
        """Capacity, noise and aux weights take effect at the next step of the running model."""
        cfg = self.config()
        self.trainer.config = self.trainer.config.with_model(capacity_factor=cfg.model.capacity_factor,
                                                             router_kwargs=cfg.model.router_kwargs,
                                                             aux_weights=cfg.model.aux_weights)
        for moe in self.trainer.model.moe_blocks().values():
            if not moe.router.describe().owns_capacity:
                moe.capacity_factor = cfg.model.capacity_factor
            moe.aux_weights.update({k: float(v) for k, v in cfg.model.aux_weights.items()})
            attr = noise_knob(cfg.model.router)
            if attr is not None and hasattr(moe.router, attr):
                setattr(moe.router, attr, float(self.noise.value))

    # -- training (Play / Pause / run: PlayLoop) --------------------------------------------
    def tick(self, force_redraw: bool = False) -> list[dict]:
        """One tick: ``steps_per_tick`` steps, then a refresh if the next one would come too late.

        The figures refresh when waiting one more tick (plus the refresh itself) could leave
        more than ``refresh_s`` between two refreshes: the gap stays under ``refresh_s`` as
        long as a tick and a refresh take less than 1.5 times the last ones.
        """
        t0 = time.perf_counter()
        recs = self.trainer.step(self.steps_per_tick)
        now = time.perf_counter()
        self._tick_s = now - t0
        # half again the last durations as a margin: ticks and refreshes vary from one to the next
        if force_redraw or now - self._last_draw + 1.5 * (self._tick_s + self._draw_s) >= self.refresh_s:
            self.redraw()
        return recs

    def step(self) -> list[dict]:
        """The Step button: one tick, figures refreshed."""
        return self.tick(force_redraw=True)

    def reset(self) -> None:
        """Rebuild the model from the seed and the knobs; clears the history."""
        self.pause()
        self._build_trainer()
        self.redraw()

    # -- drawing -----------------------------------------------------------------------
    def redraw(self) -> None:
        """Refresh the three figures in place from the history and a small pathway map."""
        t0 = time.perf_counter()
        h = self.trainer.history
        sync(self.curves, viz.task_curves(h))
        sync(self.load, viz.load_over_training(h))
        pmap = self._live_map() if h else None
        sync(self.pathways, viz.expert_heatmaps(pmap))
        self._last_draw = time.perf_counter()
        self._draw_s = self._last_draw - t0
        self.clock.mark()
        self._update_status()

    def _live_map(self):
        """The pathway map of ``pathway_examples`` test examples per task (see :func:`live_pathway_map`)."""
        return live_pathway_map(self.trainer.model, self.pathway_examples)

    def _update_status(self) -> None:
        h = [r for r in self.trainer.history if isinstance(r, StepRecord)][-20:]
        rate = len(h) / sum(r.time_s for r in h) if h else 0.0
        state = "playing" if self.playing else "paused"
        loss = f"loss {h[-1]['loss']:.3f}" if h else "not trained yet"
        self.status.value = (f"<b>step {self.trainer.step_count}</b> · {loss} · {state} · "
                             f"{rate:.0f} steps/s (training only)")
