"""SwatExplorer: weight and activation sparsity sliders → mask, training FLOPs, accuracy.

A dense model is trained first (``pretrain_steps``). Moving a slider redraws at once the
weight mask SWAT would use on the chosen layer (top-K by magnitude, Raihan & Aamodt 2020
§3) and the training FLOPs per step of the SWAT model (forward and grad-input scale with
the weight density, grad-weight with the activation density, SWAT eq. 1-3). "Retrain" (or
every slider move, with "retrain on change") copies the dense model, swatifies it, trains it
``retrain_steps`` more steps from the same seed and adds its accuracy to the trade-off plot.
"""
from __future__ import annotations

import copy

import ipywidgets as W
import torch
from torch import nn

from pwlab import viz
from pwlab.experts import ExpertBank
from pwlab.flops import model_flops
from pwlab.swat import swatify, weight_mask
from pwlab.tasks import MultiTaskSampler
from pwlab.train import Trainer
from pwlab.widgets._common import model_args
from pwlab.widgets._live import live_figure, sync
from pwlab.widgets.explorer import trained_trainer


def _layers(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Layer label → (module, weight attribute) for every linear layer and expert bank of the trunk."""
    out = {}
    for name, m in model.named_modules():
        if not name.startswith("blocks."):
            continue
        if isinstance(m, ExpertBank):
            out[f"{name}.w1 (expert 0)"] = (m, "w1")
        elif isinstance(m, nn.Linear) and ".router" not in name:
            out[name] = (m, "weight")
    return out


class SwatExplorer:
    """Explore SWAT on a small multi-task model.

    Args:
        tasks: task names or Task objects (default: one per sense).
        config: preset name or Config (default ``"tiny"``).
        trainer: start from this trained :class:`pwlab.train.Trainer` (its tasks, config and
            seed) instead of pretraining one: ``SwatExplorer(trainer=tr)``.
        seed: seeds the dense model, its training and every retraining (default: the config's
            ``train.seed``; with ``trainer=``, the trainer's).
        pretrain_steps: dense training before any sparsity (with ``trainer=``, none).
        retrain_steps: SWAT training steps per "Retrain".
        max_examples: test examples per task in each evaluation.
    """

    def __init__(self, tasks=None, config=None, *, trainer=None, seed: int | None = None, pretrain_steps: int = 100,
                 retrain_steps: int = 30, max_examples: int = 128):
        a = model_args("SwatExplorer", tasks, config, trainer=trainer, seed=seed, need_moe=False)
        self.seed, self.retrain_steps, self.max_examples = a.seed, int(retrain_steps), int(max_examples)
        self.trainer = a.trainer
        if self.trainer is None:
            self.trainer = trained_trainer(a.tasks, a.config, seed=a.seed, steps=pretrain_steps)
        self.tasks = list(self.trainer.tasks)
        self.base = self.trainer.model
        self.layers = _layers(self.base)
        self.tokens_per_step = self._tokens_per_step()
        self.results: list[dict] = []
        self.swat_model = None
        self._swat_key = None
        style = dict(description_width="120px")
        self.weight_sparsity = W.FloatSlider(value=0.5, min=0.0, max=0.95, step=0.05, description="weight sparsity",
                                             style=style, continuous_update=False)
        self.act_sparsity = W.FloatSlider(value=0.5, min=0.0, max=0.95, step=0.05, description="act. sparsity",
                                          style=style, continuous_update=False)
        names = list(self.layers)
        default = next((n for n in names if "ffn" in n), names[0])
        self.layer = W.Dropdown(options=names, value=default, description="layer", style=style)
        self.auto = W.Checkbox(value=False, description="retrain on change")
        self.retrain_button = W.Button(description="Retrain", icon="refresh", button_style="primary")
        self.flops = W.HTML()
        self.mask = live_figure(viz.weight_mask(None))
        self.tradeoff = live_figure(viz.sparsity_tradeoff([]))
        for w in (self.weight_sparsity, self.act_sparsity, self.layer):
            w.observe(self._on_change, names="value")
        self.retrain_button.on_click(lambda _: self.retrain())
        self.dense_flops = self._step_flops(self.base)
        self.redraw()
        self.widget = W.VBox([W.HBox([W.VBox([self.weight_sparsity, self.act_sparsity, self.layer]),
                                      W.VBox([self.auto, self.retrain_button, self.flops])]),
                              W.HBox([self.mask, self.tradeoff])])

    # -- measurements ------------------------------------------------------------------
    def _tokens_per_step(self) -> int:
        """Real tokens in one training batch of the configuration (a fresh sampler: nothing consumed)."""
        tc = self.trainer.config.train
        sampler = MultiTaskSampler(self.trainer.tasks, batch_size=tc.batch_size, strategy=tc.sampling,
                                   temperature=tc.temperature, seed=tc.seed)
        with torch.no_grad():
            _, mask, *_ = self.base.encode(sampler.sample())
        return int(mask.sum())

    def _step_flops(self, model) -> int:
        return model_flops(model, self.tokens_per_step).training

    def _swatified(self):
        return swatify(copy.deepcopy(self.base), float(self.weight_sparsity.value), float(self.act_sparsity.value))

    def current_mask(self):
        """(weight, mask) of the chosen layer at the chosen sparsity (retrained weights when available)."""
        module, attr = self.layers[self.layer.value]
        key = (float(self.weight_sparsity.value), float(self.act_sparsity.value))
        if self.swat_model is not None and self._swat_key == key:
            name = self.layer.value.split(" ")[0].rsplit(".", 1)[0] if attr == "w1" else self.layer.value
            module = self.swat_model.get_submodule(name)
        w = getattr(module, attr).detach()
        if attr == "w1":
            w = w[0].T if w.dim() == 3 else w                         # expert 0: (d_hidden, d_model) as (out, in)
        m = weight_mask(w, key[0])
        return w, m

    # -- actions -----------------------------------------------------------------------
    def _on_change(self, _change) -> None:
        if self.auto.value:
            self.retrain()
        else:
            self.redraw()

    def retrain(self) -> dict:
        """Swatify a copy of the dense model, train it ``retrain_steps`` steps, evaluate; returns the result."""
        torch.manual_seed(self.seed)
        model = self._swatified()
        tr = Trainer(self.trainer.tasks, self.trainer.config, model=model)
        if self.retrain_steps:
            tr.step(self.retrain_steps)
        metrics = tr.evaluate(max_examples=self.max_examples, record=False)
        cls = [metrics[t.name] for t in self.trainer.tasks if t.kind != "regression"]
        flops = self._step_flops(model)
        result = dict(weight_sparsity=float(self.weight_sparsity.value), act_sparsity=float(self.act_sparsity.value),
                      accuracy=sum(cls) / max(len(cls), 1), train_flops=flops * max(self.retrain_steps, 1),
                      step_flops=flops, metrics=metrics)
        self.results.append(result)
        self.swat_model, self._swat_key = model, (result["weight_sparsity"], result["act_sparsity"])
        self.redraw()
        return result

    def redraw(self) -> None:
        w, m = self.current_mask()
        sync(self.mask, viz.weight_mask(w, m, name=self.layer.value))
        flops = self._step_flops(self._swatified())
        self.flops.value = (f"training FLOPs per step: <b>{flops:.3g}</b> "
                            f"(dense {self.dense_flops:.3g}, ×{flops / max(self.dense_flops, 1):.2f})")
        current = len(self.results) - 1 if self.results else None
        sync(self.tradeoff, viz.sparsity_tradeoff(self.results, current=current))
