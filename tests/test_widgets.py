"""pwlab.widgets, kernel side: set widget values programmatically, check the figures in place."""
from __future__ import annotations

import asyncio
import concurrent.futures
import math
import random

import numpy as np
import pytest
import torch

import pwlab.tasks as T
from pwlab.config import tiny
from pwlab.pathways import disable_experts, route_example
from pwlab.train import Trainer, evaluate_model
from pwlab import MoE, Switch, TopK
from pwlab.distributed import a2a_volume
from pwlab.flops import ffn_flops, moe_ffn_flops
from pwlab.moe import expert_capacity
from pwlab.widgets import (AllToAllExplorer, CapacityExplorer, CostExplorer, ExpertAblation, PathwayExplorer,
                           RoutingPlayground, SwatExplorer)
from pwlab.widgets.capacity import CURVE_FACTORS, cluster_data
from pwlab.widgets.cost import LAYERS, dense_ffn

NAMES = ("digits", "digit_words", "wine")          # three senses, quick to load


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs on one torch thread (see conftest's ``one_thread``)."""


@pytest.fixture(scope="module")
def tasks():
    return [T.get(n, seed=0) for n in NAMES]


@pytest.fixture(scope="module")
def cfg():
    return tiny().with_model(d_model=16, d_hidden=16).with_train(batch_size=16, eval_examples=32)


@pytest.fixture(scope="module")
def trained(tasks, cfg):
    tr = Trainer(tasks, cfg)
    tr.step(15)
    return tr


def playground(tasks, cfg, **kw):
    return RoutingPlayground(tasks, cfg, pathway_examples=4, batch_size=None, **kw)


def _losses(history):
    return [r["loss"] for r in history if "loss" in r]


# -- RoutingPlayground --------------------------------------------------------------------
def test_step_fills_the_same_figure_widgets(tasks, cfg):
    pg = playground(tasks, cfg)
    curves, load, paths = pg.curves, pg.load, pg.pathways
    assert len(curves.data) == 0 and len(load.data) == 0            # empty figures with a note
    recs = pg.step()
    assert (pg.curves, pg.load, pg.pathways) == (curves, load, paths)   # updated in place, never rebuilt
    present = sorted(k[5:] for k in recs[0] if k.startswith("loss/"))
    assert sorted(t.name for t in curves.data) == present
    assert [t.name for t in load.data] == [f"expert {e}" for e in range(4)] + ["dropped fraction"]
    assert np.allclose([t.y[-1] for t in load.data[:4]], recs[0]["load/1"], atol=1e-4)
    z = np.array(paths.data[0].z, float)
    assert np.allclose(z.sum(0), 1.0, atol=1e-3)                    # each task's column is a distribution
    pg.step()
    assert list(load.data[0].x) == [1, 2]


def test_structural_knob_resets_and_redraws(tasks, cfg):
    pg = playground(tasks, cfg)
    pg.run(2)
    widget = pg.load
    pg.num_experts.value = 6
    assert pg.trainer.step_count == 0 and pg.trainer.model.moe_blocks()[1].num_experts == 6
    pg.step()
    assert pg.load is widget
    assert sum(t.name.startswith("expert") for t in widget.data) == 6
    pg.num_experts.value = 2
    assert pg.top_k.max == 2 and pg.config().model.top_k <= 2
    pg.step()


def test_live_knobs_apply_to_the_running_model(tasks, cfg):
    pg = playground(tasks, cfg)
    pg.step()
    pg.capacity.value = 0.5
    pg.load_balancing.value = 0.05
    moe = pg.trainer.model.moe_blocks()[1]
    assert moe.capacity_factor == 0.5 and moe.aux_weights["load_balancing"] == 0.05
    assert pg.trainer.step_count == 1                               # not a reset
    rec = pg.step()[0]
    # C = ceil(0.5·k·N/E) slots: at most half of the k·N assignments fit
    assert rec["dropped/1"] >= 0.5 - 1e-6
    dropped = [t for t in pg.load.data if t.name == "dropped fraction"][0]
    assert math.isclose(dropped.y[-1], rec["dropped/1"], abs_tol=1e-4)
    pg.router.value = "noisy_topk"
    assert not pg.noise.disabled
    pg.noise.value = 0.3
    assert pg.trainer.model.moe_blocks()[1].router.noise_eps == 0.3
    pg.router.value = "hash"
    assert pg.noise.disabled and pg.top_k.disabled


def test_same_seed_same_state_and_copy_as_code_reproduces_it(tasks, cfg):
    a, b = playground(tasks, cfg, seed=3), playground(tasks, cfg, seed=3)
    a.capacity.value = 1.5
    b.capacity.value = 1.5
    a.run(3), b.run(3)
    assert _losses(a.trainer.history) == _losses(b.trainer.history)
    first = _losses(a.trainer.history)
    a.reset()
    a.run(3)
    assert _losses(a.trainer.history) == first
    code = a.show_code()
    scope = {}
    exec(code, scope)
    assert scope["trainer"].config.to_dict() == a.config().to_dict()
    assert _losses(scope["trainer"].history) == first
    other = playground(tasks, cfg, seed=4)
    other.run(3)
    assert _losses(other.trainer.history) != first


def test_play_ticks_on_the_event_loop_and_handles_events_between_ticks(tasks, cfg):
    pg = playground(tasks, cfg, refresh_s=0.0)
    seen = []

    async def main():
        assert pg.play()
        for _ in range(3):
            await asyncio.sleep(0)
        pg.capacity.value = 1.0                                      # a UI event while playing
        seen.append(pg.trainer.step_count)
        for _ in range(3):
            await asyncio.sleep(0)
        assert pg.playing
        pg.pause()
        stopped = pg.trainer.step_count
        for _ in range(3):
            await asyncio.sleep(0)
        return stopped

    # a fresh thread has no event loop of its own, whatever earlier tests left in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stopped = pool.submit(asyncio.run, main()).result()
    assert 0 < seen[0] < stopped == pg.trainer.step_count
    assert pg.trainer.model.moe_blocks()[1].capacity_factor == 1.0
    assert not pg.playing
    assert pg.play() is False                                         # no running loop: use run()/tick()
    assert len(pg.clock.times) >= stopped                             # refresh_s=0: a redraw per tick


@pytest.mark.slow
def test_a_thousand_random_ui_events_raise_nothing(tasks, cfg):
    pg = playground(tasks, cfg, refresh_s=1e9)                        # ticks never redraw; Step and resets do
    rng = random.Random(0)
    sliders = [pg.capacity, pg.noise, pg.load_balancing, pg.z_loss]
    events = [
        (30, lambda: (lambda s: setattr(s, "value", rng.uniform(s.min, s.max)))(rng.choice(sliders))),
        (8, lambda: pg.tick()),
        (2, lambda: pg.step()),
        (1, lambda: setattr(pg.router, "value", rng.choice(pg.router.options))),
        (1, lambda: setattr(pg.top_k, "value", rng.randint(pg.top_k.min, pg.top_k.max))),
        (1, lambda: setattr(pg.num_experts, "value", rng.randint(2, 6))),
        (1, lambda: setattr(pg.seed, "value", rng.randint(0, 3))),
        (2, lambda: pg.play()), (2, lambda: pg.pause()), (1, lambda: pg.reset()), (1, lambda: pg.code_snippet()),
    ]
    weights = [w for w, _ in events]
    for _ in range(1000):
        rng.choices(events, weights)[0][1]()
    before = [p.detach().clone() for p in pg.trainer.model.parameters()]
    rec = pg.step()[0]
    assert math.isfinite(rec["loss"])
    assert any(not torch.equal(a, p) for a, p in zip(before, pg.trainer.model.parameters()))
    assert sorted(t.name for t in pg.curves.data) == sorted(
        {k[5:] for r in pg.trainer.history for k in r if k.startswith("loss/")})


# -- PathwayExplorer ---------------------------------------------------------------------
def test_explorer_highlights_the_choice_and_colours_the_example(trained):
    ex = PathwayExplorer(trainer=trained, max_examples=16)
    sankey, tokens = ex.sankey, ex.tokens
    ex.select(mode="task", choice="wine")
    link = sankey.data[0].link
    assert all(("180,180,180" in c) != who.startswith("wine") for c, who in zip(link.color, link.customdata))
    ex.select(example=5)
    er = route_example(trained.model, "wine", 5)
    heat = [t for t in tokens.data if t.type == "heatmap"][0]
    top = er.weights[:, 1:].argmax(-1).float()
    top[er.weights[:, 1:].amax(-1) <= 0] = float("nan")
    got = np.array([[np.nan if v is None else v for v in row] for row in heat.z], float)
    assert np.array_equal(got, top.numpy(), equal_nan=True)
    ex.select(mode="sense")
    assert list(ex.choice.options) == ["image", "text", "tabular"]
    assert list(ex.heatmap.data[0].x) == ["image", "text", "tabular"]
    ex.select(mode="example", choice="digits", example=2)
    widths = sankey.data[0].node.line.width
    assert sorted(widths).count(4.0) >= 1 and ex.sankey is sankey


# -- ExpertAblation ----------------------------------------------------------------------
def test_ablation_bars_equal_a_direct_evaluation(trained):
    ab = ExpertAblation(trainer=trained, max_examples=32)
    ab.set_disabled({1: [0, 2]})
    with disable_experts(trained.model, {1: [0, 2]}):
        want = evaluate_model(trained.model, trained.tasks, max_examples=32)
    assert np.allclose(ab.bars.data[1].y, [want[n] for n in NAMES], atol=1e-4)
    assert ab.disabled() == {1: [0, 2]}
    ab.toggles[1][0].value = True
    ab.toggles[1][2].value = True
    assert np.allclose(ab.bars.data[1].y, ab.bars.data[0].y)           # all on again: the baseline


# -- SwatExplorer ------------------------------------------------------------------------
def test_swat_sliders_update_mask_flops_and_tradeoff(trained):
    sw = SwatExplorer(trainer=trained, retrain_steps=2, max_examples=16)
    dense = sw.dense_flops
    sw.act_sparsity.value = 0.0
    sw.weight_sparsity.value = 0.75
    z = np.array(sw.mask.data[0].z, dtype=object)
    assert math.isclose(float((z != None).mean()), 0.25, abs_tol=0.02)   # noqa: E711
    flops75 = float(sw.flops.value.split("<b>")[1].split("</b>")[0])
    sw.weight_sparsity.value = 0.0
    assert (np.array(sw.mask.data[0].z, dtype=object) != None).all()   # noqa: E711
    flops0 = float(sw.flops.value.split("<b>")[1].split("</b>")[0])
    assert flops75 < flops0 <= dense * 1.01
    res = sw.retrain()
    assert 0.0 <= res["accuracy"] <= 1.0 and res["weight_sparsity"] == 0.0
    assert list(sw.tradeoff.data[0].x) == [0.0]


def test_live_pathway_map_equals_pathway_map(tasks, cfg):
    from pwlab.pathways import pathway_map
    pg = playground(tasks, cfg)
    pg.run(2)
    live, ref = pg._live_map(), pathway_map(pg.trainer.model, max_examples=4)
    assert torch.equal(live.task_counts, ref.task_counts) and torch.equal(live.sense_counts, ref.sense_counts)
    assert torch.equal(live.tokens, ref.tokens) and live.blocks == ref.blocks


# -- CostExplorer (notebook 01) -----------------------------------------------------------
def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_cost_sliders_update_the_bars_in_place_to_the_flop_counts():
    app = CostExplorer(tokens=16, repeats=1)
    fig = app.figure
    params, flops = fig.data[0], fig.data[1]
    assert list(params.x) == list(LAYERS)
    app.num_experts.value = 16
    app.d_hidden.value = 64
    app.top_k.value = 3
    assert app.figure is fig and fig.data[0] is params                 # the same widget and traces, new values
    d, h, e, k = 64, 64, 16, 3
    # oracles: pwlab.flops for the FLOPs, the modules' own parameter counts for the parameters
    assert list(flops.y) == [moe_ffn_flops(1, d, h, e, k).forward, ffn_flops(1, d, e * h).forward,
                             ffn_flops(1, d, k * h).forward]
    assert list(params.y) == [_numel(MoE(d, h, e, TopK(top_k=k))), _numel(dense_ffn(d, e * h)), _numel(dense_ffn(d, k * h))]
    # the MoE holds the wide layer's parameters (plus its router) at about k/E of its FLOPs
    assert params.y[0] > params.y[1] and flops.y[0] / flops.y[1] == pytest.approx(k / e + 2 * d * e / flops.y[1])


def test_cost_timing_runs_on_change_for_small_layers_and_on_measure_for_large_ones():
    app = CostExplorer(tokens=8, repeats=1, live_timing_params=200_000)
    timed = app.figure.data[2]
    assert list(timed.x) == [LAYERS[0], LAYERS[2]] and all(v > 0 for v in timed.y)
    app.num_experts.value = 4                                          # 4 experts: ~66k parameters, timed at once
    assert app._timed_at == app.setting() and "measured on 8 tokens" in app.status.value
    app.num_experts.value = 32                                         # ~530k parameters: not timed on change
    assert list(app.figure.data[2].x) == [] and "press <b>Measure</b>" in app.status.value
    ms = app.measure()
    assert list(app.figure.data[2].y) == [round(ms[LAYERS[0]], 3), round(ms[LAYERS[2]], 3)]
    app.num_experts.value = 2                                          # top-k follows the number of experts
    assert app.top_k.max == 2 and app.top_k.value <= 2


def test_cost_explorer_rejects_bad_settings():
    with pytest.raises(ValueError, match="top_k"):
        CostExplorer(num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="tokens"):
        CostExplorer(tokens=0)
    with pytest.raises(ValueError, match=r"d_model must be in \[16, 256\]"):
        CostExplorer(d_model=512)


# -- CapacityExplorer (notebook 03) -------------------------------------------------------
@pytest.fixture(scope="module")
def capacity_app():
    return CapacityExplorer(steps=5, tokens=128, eval_tokens=256)


def test_capacity_slider_redraws_the_load_from_one_call_at_that_capacity(capacity_app):
    app = capacity_app
    load, curves = app.load, app.curves
    layer = app.layer()
    for cf in (0.5, 1.25, 0.0):
        app.capacity.value = cf
        assert app.load is load and app.curves is curves
        # oracle: the trained layer called directly at this capacity
        layer.capacity_factor = cf or None
        with torch.no_grad():
            want = layer(app.eval_x)[1]
        layer.capacity_factor = None
        total = float(want.proposed_counts.sum())
        kept = [t for t in load.data if t.name == "kept"][0]
        proposed = [t for t in load.data if t.name == "proposed"][0]
        assert np.allclose(kept.y, (want.counts.float() / total).numpy(), atol=1e-4)
        assert np.allclose(proposed.y, (want.proposed_counts.float() / total).numpy(), atol=1e-4)
        cap = expert_capacity(len(app.eval_x), app.num_experts, 1, cf or None)
        if cap is not None:
            assert int(want.counts.max()) <= cap
        marker = curves.data[-1]
        assert (list(marker.x), list(marker.y)) == (([cf], [round(float(want.dropped_fraction), 4)]) if cf else ([], []))
        assert f"dropped <b>{float(want.dropped_fraction):.1%}</b>" in app.status.value
        assert f"router entropy <b>{float(want.router_entropy):.2f}</b>" in app.status.value
    assert layer.capacity_factor is None                               # the capacity applies to the call only


def test_capacity_loss_weights_retrain_from_the_seed(capacity_app):
    app = capacity_app
    app.capacity.value = 1.0
    app.load_balancing.value = 1e-1
    app.z_loss.value = 1e-3
    # oracle: the same training written out: Switch layer, Adam, MSE + weighted aux losses
    x, y = cluster_data(128, seed=0)
    torch.manual_seed(0)
    ref = MoE(16, 32, 8, Switch(), aux_weights={"load_balancing": 1e-1, "z_loss": 1e-3})
    opt = torch.optim.Adam(ref.parameters(), lr=3e-2)
    for _ in range(5):
        out, stats = ref(x)
        loss = (out - y).pow(2).mean() + stats.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    got = app.layer()
    assert all(torch.allclose(a, b) for a, b in zip(got.parameters(), ref.parameters()))
    assert torch.equal(app.stats.proposed_counts, call_counts(ref, app.eval_x))
    names = [t.name for t in app.curves.data]
    assert "balance 0.1, z 0.001" in names and "balance 0, z 0" in names          # one curve per trained pair
    mine = app.curves.data[names.index("balance 0.1, z 0.001")]
    assert list(mine.x) == list(CURVE_FACTORS) and mine.y == tuple(round(v, 4) for v in app.curve())
    assert all(a >= b for a, b in zip(mine.y, mine.y[1:]))             # more slots never drop more
    app.load_balancing.value, app.z_loss.value = 0.0, 0.0
    assert app.layer() is app._layers[(0.0, 0.0)]                      # a pair is trained once


def call_counts(moe, x):
    with torch.no_grad():
        return moe(x)[1].proposed_counts


def test_capacity_explorer_rejects_bad_settings():
    with pytest.raises(ValueError, match="load_balancing"):
        CapacityExplorer(load_balancing=0.5, steps=0)
    with pytest.raises(ValueError, match="capacity_factor"):
        CapacityExplorer(capacity_factor=5.0, steps=0)
    with pytest.raises(ValueError, match="data"):
        CapacityExplorer(data=torch.zeros(4, 16), steps=0)


# -- AllToAllExplorer (notebook 09) -------------------------------------------------------
MEASURED = dict(tokens=1024, d_model=64, top_k=2, num_experts=8, world_size=2, bytes=1_081_408)


def test_a2a_sliders_update_bytes_and_time_to_the_cost_model():
    app = AllToAllExplorer(measured=MEASURED)
    fig = app.figure
    model, now, measured, times = fig.data[0], fig.data[1], fig.data[2], fig.data[3]
    assert list(measured.x) == [2] and list(measured.y) == [1.081408]     # the run's setting: its marker shows
    app.tokens.value = 4096
    app.d_model.value = 128
    app.top_k.value = 1
    app.world_size.value = 4
    app.bandwidth.value = 100.0
    assert app.figure is fig and fig.data[0] is model
    assert list(model.x) == [1, 2, 4, 8]                                   # P must divide E = 8
    want = [a2a_volume(4096, 128, 1, 8, p)["total"] for p in (1, 2, 4, 8)]
    assert np.allclose(model.y, [w / 1e6 for w in want], rtol=1e-5, atol=0)
    # time: each device sends its share, total / P, at 100 GB/s
    assert np.allclose(times.y, [1e3 * w / p / 100e9 for w, p in zip(want, (1, 2, 4, 8))], rtol=1e-5, atol=0)
    assert list(now.x) == [4] and now.y[0] == pytest.approx(want[2] / 1e6, rel=1e-5)
    assert list(measured.x) == []                                          # the measured run does not apply here
    app.tokens.value, app.d_model.value, app.top_k.value = 1024, 64, 2
    assert list(measured.x) == [2]
    app.precision.value = 2                                                # bfloat16: half the row bytes
    half = a2a_volume(1024, 64, 2, 8, 2, bytes_per_element=2)["total"]
    assert list(measured.x) == [] and model.y[1] == pytest.approx(half / 1e6, rel=1e-5)


def test_a2a_keeps_experts_a_multiple_of_the_devices():
    app = AllToAllExplorer()
    app.world_size.value = 32
    assert app.num_experts.value == 32 and list(app.figure.data[0].x) == [1, 2, 4, 8, 16, 32]
    app.num_experts.value = 16
    assert app.world_size.value == 16


def test_a2a_explorer_rejects_bad_settings():
    with pytest.raises(ValueError, match="measured"):
        AllToAllExplorer(measured=dict(tokens=1024))
    with pytest.raises(ValueError, match="world_size"):
        AllToAllExplorer(world_size=3)
    with pytest.raises(ValueError, match="num_experts"):
        AllToAllExplorer(world_size=16, num_experts=8)


def test_new_apps_figures_are_valid_plotly(capacity_app):
    import plotly.graph_objects as go
    # the apps build their figures unvalidated (for speed): plotly must accept every property
    for fig in (CostExplorer(tokens=8, repeats=1).figure, capacity_app.load, capacity_app.curves,
                AllToAllExplorer(measured=MEASURED).figure):
        go.Figure(fig.to_plotly_json())


def test_new_apps_send_no_figure_update_before_they_are_shown():
    # JupyterLab drew an empty plot for a FigureWidget that was sent an update before its first
    # view: the apps build their figures whole and leave them alone until a control moves
    cap = CapacityExplorer(steps=1, tokens=32, eval_tokens=64)
    figs = [CostExplorer(tokens=8, repeats=1).figure, cap.load, cap.curves, AllToAllExplorer().figure]
    assert all(f._last_trace_edit_id == 0 and f._last_layout_edit_id == 0 for f in figs)
    assert all(len(f.data) > 0 for f in figs)
    cap.capacity.value = 0.5
    assert cap.load._last_trace_edit_id > 0                            # a control's move does send updates
