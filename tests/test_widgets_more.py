"""The apps of notebooks 00, 04, 05 and 08, kernel side: controls set programmatically, figures
checked in place (the same FigureWidget, its data equal to what the core computes on its own)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import statistics
import time

import numpy as np
import pytest
import torch

import pwlab.tasks as T
from pwlab.config import dense_baseline, tiny
from pwlab.flops import model_flops
from pwlab.pathways import pathway_map, route_example
from pwlab.train import Trainer
from pwlab.widgets import PathwayExplorer, SenseRoutingLive, TaskMixExplorer, TradeoffExplorer

NAMES = ("digits", "digit_words", "wine")          # three senses, quick to load, sizes 1347 / 2000 / 133


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # a tiny model: one thread is faster than two on a shared 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tasks():
    return [T.get(n, seed=0) for n in NAMES]


@pytest.fixture(scope="module")
def cfg():
    return tiny().with_model(d_model=16, d_hidden=16).with_train(batch_size=16, eval_examples=32, seed=0)


@pytest.fixture(scope="module")
def trained(tasks, cfg):
    tr = Trainer(tasks, cfg)
    tr.step(15)
    return tr


def _median_ms(set_value, values) -> float:
    """Median time of ``set_value(v)`` over ``values`` (observers run synchronously: the time to updated figures)."""
    out = []
    for v in values:
        t0 = time.perf_counter()
        set_value(v)
        out.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(out)


def _in_a_fresh_loop(coro):
    # a fresh thread has no event loop of its own, whatever earlier tests left in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# -- 00: PathwayExplorer on the notebook's model (a task and an example) ---------------------
def test_explorer_task_dropdown_and_example_slider_follow_the_core(trained):
    ex = PathwayExplorer(trainer=trained, max_examples=16)
    heatmap, tokens = ex.heatmap, ex.tokens
    ex.choice.value = "digit_words"
    ex.example.value = 3
    assert ex.heatmap is heatmap and ex.tokens is tokens                   # updated in place
    counts = pathway_map(trained.model, max_examples=16).task_counts[0].double()    # (E, K) of block 1
    want = (counts / counts.sum(0, keepdim=True).clamp_min(1)).numpy()
    assert list(heatmap.data[0].x) == list(NAMES)
    assert np.allclose(np.array(heatmap.data[0].z, float), want, atol=1e-4)
    er = route_example(trained.model, "digit_words", 3)
    top = er.weights[:, 1:].argmax(-1).float()
    top[er.weights[:, 1:].amax(-1) <= 0] = float("nan")
    heat = [t for t in tokens.data if t.type == "heatmap"][0]
    got = np.array([[np.nan if v is None else v for v in row] for row in heat.z], float)
    assert np.array_equal(got, top.numpy(), equal_nan=True)
    assert ex.example.max == len(trained.model.task("digit_words").y_test) - 1


# -- 04: TaskMixExplorer ---------------------------------------------------------------------
def _mix(tasks, cfg, **kw):
    kw.setdefault("steps", 4)
    kw.setdefault("max_examples", 32)
    return TaskMixExplorer(tasks, cfg, **kw)


def test_temperature_slider_redraws_the_mix_in_place(tasks, cfg):
    app = _mix(tasks, cfg)
    fig = app.mix
    n = np.array([len(t.y_train) for t in tasks], float)
    for temperature in (0.1, 1.0, 10.0):
        app.temperature.value = temperature
        want = n ** (1 / temperature) / (n ** (1 / temperature)).sum()      # p ∝ n^(1/T), by hand
        assert app.mix is fig
        assert np.allclose(fig.data[0].y, want, atol=1e-4)
    assert app.trainer is None and not app.results                       # a control never trains
    app.temperature.value = 0.1
    assert fig.data[0].y[2] < 1e-3                                       # T=0.1 starves the small task (wine)


def test_train_adds_the_accuracy_of_an_independent_run(tasks, cfg):
    single = {"digits": 0.5, "digit_words": 0.25, "wine": 0.75}
    app = _mix(tasks, cfg, single=single)
    bars = app.bars
    app.set(temperature=0.5, routing="task")
    assert app.train() is True                                           # no event loop: trained here
    oracle = Trainer(tasks, cfg.with_model(router="task", router_kwargs={"mode": "learned"})
                     .with_train(sampling="temperature", temperature=0.5))
    oracle.step(4)
    want = oracle.evaluate(max_examples=32, record=False)
    assert app.bars is bars
    run = [t for t in bars.data if t.type == "bar"]
    assert len(run) == 1 and run[0].name == "task routing, T=0.5"
    assert np.allclose(run[0].y, [want[n] for n in NAMES], atol=1e-4)
    assert list(run[0].text) == [f"{100 * (single[n] - want[n]):+.0f}" for n in NAMES]
    marks = [t for t in bars.data if t.type == "scatter"][0]
    assert list(marks.y) == [single[n] for n in NAMES]
    assert type(app.trainer.model.moe_blocks()[1].router) is type(oracle.model.moe_blocks()[1].router)


def test_routing_toggle_rehighlights_without_training(tasks, cfg):
    app = _mix(tasks, cfg, temperature=2.0)
    app.train()
    app.set(routing="task")
    app.train()
    token, task = [t for t in app.bars.data if t.type == "bar"]
    assert (token.opacity, task.opacity) == (0.3, 1.0)
    trainer, steps = app.trainer, app.trainer.step_count
    app.routing.value = "token"
    assert (token.opacity, task.opacity) == (1.0, 0.3)                  # the same traces, restyled
    assert app.trainer is trainer and trainer.step_count == steps and len(app.results) == 2
    app.temperature.value = 4.0                                          # an untrained setting
    assert (token.opacity, task.opacity) == (0.3, 0.3)
    assert "not trained yet" in app.bars.layout.title.text


def test_train_runs_on_the_event_loop_and_controls_stay_live(tasks, cfg):
    app = _mix(tasks, cfg, steps=6, steps_per_tick=1)
    seen = {}

    async def main():
        assert app.train() and app.training and app.train_button.disabled
        assert app.train() is False                                      # one run at a time
        await asyncio.sleep(0)
        app.temperature.value = 0.2                                      # a UI event while training
        seen["step"] = app.trainer.step_count
        seen["mix"] = list(app.mix.data[0].y)
        while app.training:
            await asyncio.sleep(0)

    _in_a_fresh_loop(main())
    assert 0 < seen["step"] < 6 == app.trainer.step_count
    n = np.array([len(t.y_train) for t in tasks], float)
    assert np.allclose(seen["mix"], n ** 5 / (n ** 5).sum(), atol=1e-4)   # redrawn mid-training
    assert list(app.results) == [(1.0, "token")]                         # the settings of the press
    assert not app.train_button.disabled and "trained token routing, T=1" in app.progress.value


def test_taskmix_refuses_bad_input(tasks, cfg):
    with pytest.raises(ValueError, match="single must give an accuracy for exactly the tasks"):
        _mix(tasks, cfg, single={"digits": 0.5})
    with pytest.raises(ValueError, match="temperature must be a number in"):
        _mix(tasks, cfg, temperature=100.0)
    with pytest.raises(ValueError, match="token-level router"):
        _mix(tasks, cfg.with_model(router="task"))
    app = _mix(tasks, cfg)
    with pytest.raises(ValueError, match="routing must be one of"):
        app.set(routing="expert")


# -- 05: SenseRoutingLive ----------------------------------------------------------------------
def _shares(pmap) -> np.ndarray:
    """(L, E, M) % of each sense's assignments per expert, computed from the core's counts."""
    c = pmap.sense_counts.double()
    return (100 * c / c.sum(1, keepdim=True).clamp_min(1)).numpy()


def test_step_redraws_the_sense_bars_in_place_from_the_pathway_map(tasks, cfg):
    app = SenseRoutingLive(tasks, cfg, steps_per_tick=3, pathway_examples=8)
    bars, curve = app.bars, app.curve
    app.step()
    app.step()
    assert (app.bars, app.curve) == (bars, curve)
    ref = pathway_map(app.trainer.model, max_examples=8)
    share = _shares(ref)
    senses = [s for j, s in enumerate(ref.senses) if ref.sense_counts[:, :, j].sum() > 0]
    assert [t.name for t in bars.data] == senses == ["image", "text", "tabular"]
    for j, trace in enumerate(bars.data):
        assert np.allclose(trace.y, share[0, :, ref.senses.index(trace.name)], atol=0.01)
    assert list(curve.data[0].x) == [0, 3, 6]
    assert np.isclose(curve.data[0].y[-1], ref.mutual_information("sense")[0], atol=1e-4)
    # the same seed and steps as a plain Trainer: the app trains the notebook's model, nothing else
    oracle = Trainer(tasks, cfg)
    oracle.step(6)
    assert [r["loss"] for r in app.trainer.history] == [r["loss"] for r in oracle.history]


def test_reset_goes_back_to_the_untrained_bars(tasks, cfg):
    app = SenseRoutingLive(tasks, cfg, steps_per_tick=2, pathway_examples=8)
    untrained = [list(t.y) for t in app.bars.data]
    app.run(3)
    assert app.trainer.step_count == 6 and [list(t.y) for t in app.bars.data] != untrained
    app.reset()
    assert app.trainer.step_count == 0 and [list(t.y) for t in app.bars.data] == untrained
    assert list(app.curve.data[0].x) == [0]


def test_play_trains_between_ui_events_and_pause_stops(tasks, cfg):
    app = SenseRoutingLive(tasks, cfg, steps_per_tick=1, pathway_examples=4, refresh_s=0.0, max_steps=50)

    async def main():
        assert app.play() and app.playing
        for _ in range(3):
            await asyncio.sleep(0)
        app.pause()
        stopped = app.trainer.step_count
        for _ in range(3):
            await asyncio.sleep(0)
        return stopped

    stopped = _in_a_fresh_loop(main())
    assert 0 < stopped == app.trainer.step_count and not app.playing
    assert app.play() is False                                           # no running loop: use run()
    assert list(app.curve.data[0].x)[-1] == stopped


def test_senselive_continues_a_given_trainer_and_stops_at_max_steps(trained):
    app = SenseRoutingLive(trainer=trained, steps_per_tick=4, pathway_examples=4, max_steps=17)
    assert app.trainer is trained and app.mi[0][0] == 15
    app.run(5)
    assert trained.step_count == 17
    with pytest.raises(ValueError, match="trainer must be a pwlab.train.Trainer"):
        SenseRoutingLive(trainer="tiny")


# -- 08: TradeoffExplorer ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tasks, cfg):
    """Two runs measured by the core: parameters, counted training FLOPs, test metrics."""
    out = []
    for name, c in (("dense", dense_baseline(cfg)), ("MoE", cfg)):
        tr = Trainer(tasks, c)
        batch = tr.sampler.sample()                                      # a batch like the training ones
        flops = model_flops(tr.model, c.train.batch_size, example_input=(batch,)).training
        tr = Trainer(tasks, c)
        tr.step(3)
        out.append({"model": name, "parameters": sum(p.numel() for p in tr.model.parameters()),
                    "train_flops": 3 * flops, "metrics": tr.evaluate(max_examples=32, record=False)})
    return out


def test_tradeoff_controls_move_the_same_scatter(runs, tasks):
    chance = {t.name: T.chance(t) for t in tasks}
    app = TradeoffExplorer(runs, tasks=tasks, chance=chance)
    fig = app.figure
    scatter = fig.data[0]
    mean = [sum(r["metrics"].values()) / 3 for r in runs]                # three classification tasks
    assert np.allclose(scatter.y, mean, atol=1e-4) and list(scatter.x) == [r["train_flops"] for r in runs]
    assert fig.layout.xaxis.type == "log"
    app.task.value = "wine"
    assert app.figure is fig and fig.data[0] is scatter
    assert np.allclose(scatter.y, [r["metrics"]["wine"] for r in runs], atol=1e-4)
    assert np.isclose(fig.layout.shapes[0].y0, chance["wine"])
    app.x_axis.value = "parameters"
    assert list(scatter.x) == [r["parameters"] for r in runs] and fig.layout.xaxis.type == "linear"
    assert runs[1]["parameters"] > runs[0]["parameters"]                  # the MoE holds more
    assert scatter.marker.size[0] > 0 and "FLOPs" in scatter.text[0]
    assert app.values() == [(float(r["parameters"]), float(r["metrics"]["wine"])) for r in runs]


def test_tradeoff_refuses_bad_input(runs, tasks):
    with pytest.raises(ValueError, match=r"runs\[0\] lacks \['train_flops'\]"):
        TradeoffExplorer([{k: v for k, v in runs[0].items() if k != "train_flops"}])
    with pytest.raises(ValueError, match="non-empty list"):
        TradeoffExplorer([])
    with pytest.raises(ValueError, match="chance names tasks the runs do not have"):
        TradeoffExplorer(runs, chance={"mnist": 0.1})
    app = TradeoffExplorer(runs)
    with pytest.raises(ValueError, match="x_axis must be one of"):
        app.select(x_axis="time")
    with pytest.raises(ValueError, match="task must be one of"):
        app.select(task="mnist")


# -- responsiveness: controls that do not train --------------------------------------------
@pytest.mark.slow
def test_controls_that_do_not_train_answer_within_100_ms(tasks, cfg, trained, runs):
    mix = _mix(tasks, cfg)
    mix.train()
    trade = TradeoffExplorer(runs, tasks=tasks)
    ex = PathwayExplorer(trainer=trained, max_examples=64)
    medians = {
        "taskmix_temperature": _median_ms(lambda v: setattr(mix.temperature, "value", v),
                                          [round(0.2 + 0.5 * i, 2) for i in range(15)]),
        "taskmix_routing": _median_ms(lambda v: setattr(mix.routing, "value", v), ["task", "token"] * 7 + ["task"]),
        "tradeoff_task": _median_ms(lambda v: setattr(trade.task, "value", v), (["wine", "digits", "mean"] * 5)),
        "tradeoff_x_axis": _median_ms(lambda v: setattr(trade.x_axis, "value", v),
                                      ["parameters", "training FLOPs"] * 7 + ["parameters"]),
        "explorer_example": _median_ms(lambda v: setattr(ex.example, "value", v), range(1, 16)),
    }
    print({k: round(v, 1) for k, v in medians.items()})
    assert all(v <= 100.0 for v in medians.values()), medians
