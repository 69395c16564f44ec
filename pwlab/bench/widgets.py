"""``pwlab bench widgets``: how live the apps are, kernel side.

Two JSON lines:

- ``slider_to_figure_ms``: median time from a control's value change to its figures updated
  in place (the observers run synchronously, so the time of the assignment is the time to the
  updated FigureWidgets), over the PathwayExplorer's example slider and task dropdown, the
  ExpertAblation toggles, the SwatExplorer sparsity slider, the CostExplorer experts slider
  (the MoE timed at every change), the CapacityExplorer capacity slider and the
  AllToAllExplorer world-size and d_model sliders; per-app medians alongside. A new pair of
  CapacityExplorer loss weights retrains its layer: reported apart as ``capacity_retrain_ms``
  (each pair's first visit), not in the median of slider changes.
- ``steps_per_s``: RoutingPlayground training steps per second while playing (ticks of
  ``Trainer.step``, figures refreshed every ``refresh_s``), with the longest gap between two
  refreshes and the training-only rate, at the playground's default batch size (a knob;
  ``--preset-batch`` adds the preset's own).

The browser's rendering is not included (it runs in another process).
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from pwlab.widgets import (AllToAllExplorer, CapacityExplorer, CostExplorer, ExpertAblation, PathwayExplorer,
                           RoutingPlayground, SwatExplorer, trained_trainer)
from pwlab.widgets.capacity import LOAD_BALANCING_WEIGHTS
from pwlab.commands import _args
from pwlab.history import StepRecord


def _timed(set_value, values) -> list[float]:
    out = []
    for v in values:
        t0 = time.perf_counter()
        set_value(v)
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def slider_to_figure(preset: str, seed: int, repeats: int, train_steps: int) -> dict:
    tr = trained_trainer(config=preset, seed=seed, steps=train_steps)
    ex = PathwayExplorer(trainer=tr, max_examples=64)
    ab = ExpertAblation(trainer=tr)
    sw = SwatExplorer(trainer=tr, retrain_steps=0)
    cost = CostExplorer(seed=seed)
    cap = CapacityExplorer(seed=seed)
    a2a = AllToAllExplorer()
    names = list(ex.choice.options)

    def toggle(i):
        t = ab.toggles[next(iter(ab.toggles))][i % len(ab.toggles[next(iter(ab.toggles))])]
        t.value = not t.value

    per_app = {
        "explorer_example": _timed(lambda v: setattr(ex.example, "value", v), [(i % 40) + 1 for i in range(repeats)]),
        "explorer_task": _timed(lambda v: setattr(ex.choice, "value", v),
                                [names[(i + 1) % len(names)] for i in range(repeats)]),
        "ablation_toggle": _timed(toggle, range(repeats)),
        "swat_sparsity": _timed(lambda v: setattr(sw.weight_sparsity, "value", v),
                                [round(0.05 * ((i % 18) + 1), 2) for i in range(repeats)]),
        "cost_experts": _timed(lambda v: setattr(cost.num_experts, "value", v),
                               [(2, 4, 6, 12, 16, 10)[i % 6] for i in range(repeats)]),
        "capacity_factor": _timed(lambda v: setattr(cap.capacity, "value", v),
                                  [round(0.25 * ((i % 11) + 1), 2) for i in range(repeats)]),
        "a2a_world_size": _timed(lambda v: setattr(a2a.world_size, "value", v),
                                 [(1, 2, 4, 8)[(i + 1) % 4] for i in range(repeats)]),
        "a2a_d_model": _timed(lambda v: setattr(a2a.d_model, "value", v),
                              [(32, 64, 128, 256)[(i + 1) % 4] for i in range(repeats)]),
    }
    every = [t for ts in per_app.values() for t in ts]
    # retraining for a new pair of loss weights: the first visit of each (later ones are cached)
    retrain = _timed(lambda v: setattr(cap.load_balancing, "value", v), LOAD_BALANCING_WEIGHTS[1:])
    return {"metric": "slider_to_figure_ms", "value": round(statistics.median(every), 2), "preset": preset,
            "per_app_median_ms": {k: round(statistics.median(v), 2) for k, v in per_app.items()},
            "changes": len(every), "capacity_retrain_ms": round(statistics.median(retrain), 2)}


def playground_rate(preset: str, seed: int, seconds: float, refresh_s: float, batch_size: int | None = 32) -> dict:
    pg = RoutingPlayground(config=preset, seed=seed, refresh_s=refresh_s, batch_size=batch_size)
    pg.run(3)                                                  # warm-up
    start_steps, start_draws = pg.trainer.step_count, len(pg.clock.times)
    pg.clock.mark()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pg.tick()
    elapsed = time.perf_counter() - t0
    pg.clock.mark()
    steps = pg.trainer.step_count - start_steps
    recs = [r for r in pg.trainer.history[-steps:] if isinstance(r, StepRecord)]
    draws = pg.clock.times[start_draws:]
    return {"metric": "steps_per_s", "value": round(steps / elapsed, 2), "preset": preset, "refresh_s": refresh_s,
            "max_refresh_interval_s": round(max(b - a for a, b in zip(draws, draws[1:])), 3),
            "refreshes": len(draws) - 2, "steps": steps, "seconds": round(elapsed, 2),
            "training_only_steps_per_s": round(len(recs) / sum(r.time_s for r in recs), 2),
            "batch_size": pg.trainer.config.train.batch_size, "tasks": [t.name for t in pg.tasks]}


def main(argv: list[str] | None = None) -> int:
    p = _args.Parser(prog="pwlab bench widgets", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seed", type=_args.seed, default=0)
    # one torch thread: the tiny model's matmuls are too small to split, and on a 2-core machine
    # the other core is left to the browser (and, here, to whoever else shares the machine)
    p.add_argument("--threads", type=_args.positive_int, default=1, help="torch threads (default 1, see above)")
    p.add_argument("--repeats", type=_args.positive_int, default=15, help="value changes per control")
    p.add_argument("--train-steps", type=_args.positive_int, default=30, help="steps of the model the explorers show")
    p.add_argument("--seconds", type=_args.positive_float, default=6.0, help="playground run time")
    p.add_argument("--refresh", type=_args.positive_float, default=0.5, help="playground refresh interval (s)")
    p.add_argument("--preset-batch", action="store_true", help="also run the playground at the preset's batch size")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = [slider_to_figure(args.preset, args.seed, args.repeats, args.train_steps),
             playground_rate(args.preset, args.seed, args.seconds, args.refresh)]
    if args.preset_batch:
        # the same run at the preset's own batch size, for comparison with the playground's default
        at = playground_rate(args.preset, args.seed, args.seconds, args.refresh, batch_size=None)
        lines[1]["at_preset_batch_size"] = {k: at[k] for k in ("value", "batch_size", "max_refresh_interval_s",
                                                                "training_only_steps_per_s")}
    for line in lines:
        line["threads"] = args.threads
        print(json.dumps(line), flush=True)
    return 0
