"""PathwayExplorer: pick a task, a sense or one example and see its pathway.

The Sankey (task or sense → experts of each MoE block → heads) highlights the choice, the
heatmap outlines its column, and the example panel colours the example's tokens by the
expert they went to (in "example" mode the Sankey also outlines the example's experts).
The pathway map is counted once; a choice only redraws (and routes one example).
"""
from __future__ import annotations

import ipywidgets as W

from pwlab import viz
from pwlab._checks import positive_int
from pwlab.pathways import pathway_map
from pwlab.train import Trainer
from pwlab.widgets._common import example_view, model_args
from pwlab.widgets._live import live_figure, sync

MODES = ("task", "sense", "example")


def trained_trainer(tasks=None, config=None, *, seed: int | None = None, steps: int = 150):
    """A :class:`pwlab.train.Trainer` trained ``steps`` steps from ``seed`` (the apps' default model).

    ``tasks``, ``config`` and ``seed`` as for every model app (:func:`pwlab.widgets._common.model_args`):
    None is one task per sense, ``"tiny"`` and the config's ``train.seed``.
    """
    a = model_args("trained_trainer", tasks, config, seed=seed, need_moe=False)
    tr = Trainer(a.tasks, a.config)
    if positive_int("steps", steps, minimum=0):
        tr.step(steps)
    return tr


class PathwayExplorer:
    """Explore the pathways of a trained model.

    Args:
        tasks: task names or Task objects (default: one task per sense).
        config: a :class:`pwlab.config.Config` or preset name (default ``"tiny"``).
        trainer: show this trained :class:`pwlab.train.Trainer` (its tasks, config and seed) instead
            of training one: ``PathwayExplorer(trainer=tr)``.
        seed: seeds the model the app trains (default: the config's ``train.seed``).
        pretrain_steps: training steps of that model (with ``trainer=``, none).
        max_examples: test examples per task counted in the pathway map.

    ``.widget`` is the app; :meth:`select` sets the choice programmatically.
    """

    def __init__(self, tasks=None, config=None, *, trainer=None, seed: int | None = None, pretrain_steps: int = 150,
                 max_examples: int = 128):
        a = model_args("PathwayExplorer", tasks, config, trainer=trainer, seed=seed)
        self.seed = a.seed
        self.trainer = a.trainer
        if self.trainer is None:
            self.trainer = trained_trainer(a.tasks, a.config, seed=a.seed, steps=pretrain_steps)
        self.model = self.trainer.model
        if not self.model.moe_blocks():
            raise ValueError("trainer must hold a model with at least one MoE block")
        self.pmap = pathway_map(self.model, max_examples=max_examples)
        used = self.pmap.sense_counts.sum((0, 1))                      # (M,) assignments per sense
        self.senses = [s for s, n in zip(self.pmap.senses, used.tolist()) if n]
        names = list(self.model.task_names)
        self.mode = W.ToggleButtons(options=list(MODES), value="task", description="show")
        self.choice = W.Dropdown(options=names, value=names[0], description="task")
        self.example = W.IntSlider(value=0, min=0, max=self._num_examples(names[0]) - 1, description="example",
                                   continuous_update=False)
        self.sankey = live_figure(viz.pathway_sankey(self.pmap, highlight=names[0]))
        self.heatmap = live_figure(viz.expert_heatmaps(self.pmap, highlight=names[0]))
        self.tokens = live_figure(viz.example_routing(None))
        self._quiet = False
        self.mode.observe(self._on_mode, names="value")
        self.choice.observe(lambda _: self._on_choice(), names="value")
        self.example.observe(lambda _: self.redraw(example_only=self.mode.value != "example"), names="value")
        self.redraw()
        self.widget = W.VBox([W.HBox([self.mode, self.choice, self.example]), self.sankey,
                              W.HBox([self.heatmap, self.tokens])])

    def _num_examples(self, task: str) -> int:
        return len(self.model.task(task).y_test)

    def _task_of_choice(self) -> str:
        if self.mode.value == "sense":
            return next(t.name for t in self.model.tasks if t.sense == self.choice.value)
        return self.choice.value

    def _on_mode(self, change) -> None:
        self._quiet = True
        try:
            if change["new"] == "sense":
                self.choice.description, self.choice.options = "sense", self.senses
                self.choice.value = self.senses[0]
            elif change["old"] == "sense":
                self.choice.description, self.choice.options = "task", list(self.model.task_names)
                self.choice.value = self.model.task_names[0]
        finally:
            self._quiet = False
        self._on_choice()

    def _on_choice(self) -> None:
        if self._quiet:
            return
        n = self._num_examples(self._task_of_choice())
        self._quiet = True
        try:
            self.example.max = n - 1
            self.example.value = min(self.example.value, n - 1)
        finally:
            self._quiet = False
        self.redraw()

    def select(self, mode: str | None = None, choice: str | None = None, example: int | None = None) -> None:
        """Set the view programmatically (what the controls do).

        Args:
            mode: what the Sankey and heatmap group by and highlight:

                - ``"task"``: ``choice`` is a task name (``model.task_names``); the figures show
                  the per-task pathway map with that task's flows highlighted.
                - ``"sense"``: ``choice`` is a sense (``"image"``, ``"audio"``, ``"text"``,
                  ``"tabular"``, those the model has); the map is grouped by sense, and the
                  example panel shows an example of the first task of that sense.
                - ``"example"``: ``choice`` is a task name; the highlighted pathway is the one
                  example's own (per block, its two experts with the most combine weight).
            choice: a task name or a sense, as ``mode`` says; changing ``mode`` resets it to
                the first option of the new list.
            example: index into the chosen task's test split (0 .. its size - 1).

        Raises:
            ValueError: from the controls, for a mode, choice or example outside their options.
        """
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if mode is not None:
            self.mode.value = mode
        if choice is not None:
            if choice not in self.choice.options:
                raise ValueError(f"choice must be one of {list(self.choice.options)} in mode {self.mode.value!r}, "
                                 f"got {choice!r}")
            self.choice.value = choice
        if example is not None and not 0 <= example <= self.example.max:
            raise ValueError(f"example must be in 0..{self.example.max} for {self._task_of_choice()!r}, got {example!r}")
        if example is not None:
            self.example.value = example

    def redraw(self, example_only: bool = False) -> None:
        """Refresh the figures in place (``example_only``: just the example panel)."""
        if self._quiet:
            return
        by = "sense" if self.mode.value == "sense" else "task"
        task = self._task_of_choice()
        er, inputs, labels = example_view(self.model, task, int(self.example.value))
        experts = None
        if self.mode.value == "example":
            # the example's pathway: per block, the two experts with the most combine weight over its tokens
            mass = er.weights.sum(1)                                      # (L, E)
            experts = {b: [int(e) for e in mass[li].argsort(descending=True)[:2] if mass[li, e] > 0]
                       for li, b in enumerate(er.blocks)}
        sync(self.tokens, viz.example_routing(er, inputs, labels, task_token=self.model.cfg.task_token))
        if example_only:
            return
        sync(self.sankey, viz.pathway_sankey(self.pmap, by=by, highlight=self.choice.value, experts=experts))
        sync(self.heatmap, viz.expert_heatmaps(self.pmap, by=by, highlight=self.choice.value))
