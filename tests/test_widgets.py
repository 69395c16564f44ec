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
from pwlab.widgets import ExpertAblation, PathwayExplorer, RoutingPlayground, SwatExplorer

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
    ex = PathwayExplorer(trained, max_examples=16)
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
    ab = ExpertAblation(trained, max_examples=32)
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
    assert torch.equal(live.task_counts, ref.task_counts) and torch.equal(live.modality_counts, ref.modality_counts)
    assert torch.equal(live.tokens, ref.tokens) and live.blocks == ref.blocks
