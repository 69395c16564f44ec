"""ExpertAblation: switch experts off, per MoE block, and watch each task's accuracy.

Each expert is a toggle; a toggle re-evaluates the model with those experts outputting
nothing (:func:`pwlab.pathways.disable_experts`: their assignments are dropped, the residual
carries the token) on up to ``max_examples`` test examples per task. Tasks that lean on an
expert lose accuracy when it goes; tasks that never use it do not move.
"""
from __future__ import annotations

import ipywidgets as W

from pwlab.pathways import disable_experts
from pwlab.train import evaluate_model
from pwlab.viz import ablation_bars
from pwlab.widgets._common import model_args
from pwlab.widgets._live import live_figure, sync
from pwlab.widgets.explorer import trained_trainer


class ExpertAblation:
    """Toggle experts per MoE block; per-task metric bars update.

    Args:
        tasks: task names or Task objects (default: one task per sense).
        config: a :class:`pwlab.config.Config` or preset name (default ``"tiny"``).
        trainer: ablate this trained :class:`pwlab.train.Trainer` (its tasks, config and seed)
            instead of training one: ``ExpertAblation(trainer=tr)``.
        seed: seeds the model the app trains (default: the config's ``train.seed``).
        pretrain_steps: training steps of that model (with ``trainer=``, none).
        max_examples: test examples per task in each evaluation.
    """

    def __init__(self, tasks=None, config=None, *, trainer=None, seed: int | None = None, pretrain_steps: int = 150,
                 max_examples: int = 64):
        a = model_args("ExpertAblation", tasks, config, trainer=trainer, seed=seed)
        self.seed = a.seed
        self.trainer = a.trainer
        if self.trainer is None:
            self.trainer = trained_trainer(a.tasks, a.config, seed=a.seed, steps=pretrain_steps)
        self.model = self.trainer.model
        self.max_examples = int(max_examples)
        moe = self.model.moe_blocks()
        if not moe:
            raise ValueError("trainer must hold a model with at least one MoE block")
        self.metric = {t.name: ("MSE" if t.kind == "regression" else "accuracy") for t in self.model.tasks}
        self._quiet = False
        self.baseline = evaluate_model(self.model, self.model.tasks, max_examples=self.max_examples)
        self.toggles = {b: [W.ToggleButton(value=True, description=f"e{e}", tooltip=f"block {b}, expert {e}",
                                           layout=W.Layout(width="52px")) for e in range(m.num_experts)]
                        for b, m in moe.items()}
        for row in self.toggles.values():
            for t in row:
                t.observe(self._on_toggle, names="value")
        self.bars = live_figure(ablation_bars(self.baseline, self.baseline, self.metric, {}))
        rows = [W.HBox([W.Label(f"block {b}", layout=W.Layout(width="70px"))] + row) for b, row in self.toggles.items()]
        self.widget = W.VBox([W.HTML("<b>Experts on/off</b> (pressed = on)")] + rows + [self.bars])

    def disabled(self) -> dict[int, list[int]]:
        """Block → experts currently switched off."""
        return {b: [e for e, t in enumerate(row) if not t.value] for b, row in self.toggles.items()}

    def set_disabled(self, experts: dict[int, list[int]]) -> None:
        """Switch exactly these experts off (block → experts); the figure follows."""
        self._quiet = True
        try:
            for b, row in self.toggles.items():
                for e, t in enumerate(row):
                    t.value = e not in set(experts.get(b, ()))
        finally:
            self._quiet = False
        self.redraw()

    def _on_toggle(self, _change) -> None:
        if not self._quiet:
            self.redraw()

    def evaluate(self) -> dict[str, float]:
        """The per-task metric with the current experts off."""
        off = {b: e for b, e in self.disabled().items() if e}
        if not off:
            return dict(self.baseline)
        with disable_experts(self.model, off):
            return evaluate_model(self.model, self.model.tasks, max_examples=self.max_examples)

    def redraw(self) -> None:
        self.ablated = self.evaluate()
        sync(self.bars, ablation_bars(self.baseline, self.ablated, self.metric, self.disabled()))
