"""pwlab.viz: hand-computed figure data, empty and single-task input, stored snapshots."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from pwlab import viz
from pwlab.pathways import ExampleRouting, PathwayMap
from pwlab.senses import SENSES

SNAPSHOTS = Path(__file__).parent / "snapshots"


def make_map(task_counts, tasks, task_sense, blocks=None) -> PathwayMap:
    """A PathwayMap from (L, E, K) counts; each task's tokens are of its one sense."""
    tc = torch.as_tensor(task_counts, dtype=torch.long)
    nl, ne, _ = tc.shape
    mc = torch.zeros(nl, ne, len(SENSES), dtype=torch.long)
    for k, s in enumerate(task_sense):
        mc[:, :, SENSES.index(s)] += tc[:, :, k]
    return PathwayMap(tc, mc, tuple(blocks or range(1, 2 * nl, 2)), tuple(tasks), SENSES, tc[0].sum(0))


EMPTY_MAP = PathwayMap(torch.zeros(0, 0, 2, dtype=torch.long), torch.zeros(0, 0, 4, dtype=torch.long), (),
                       ("a", "b"), SENSES, torch.zeros(2, dtype=torch.long))

# two blocks, three experts, two tasks
COUNTS = [[[6, 0], [2, 1], [0, 3]],
          [[4, 2], [4, 0], [0, 2]]]
TWO = make_map(COUNTS, ("digits", "wine"), ("image", "tabular"))
ONE = make_map([[[3], [1]]], ("digits",), ("image",), blocks=(1,))


def _note(fig: go.Figure) -> str:
    return " ".join(a.text for a in fig.layout.annotations)


# -- empty and single-task input ----------------------------------------------------------
EMPTY_CALLS = {
    "sankey None": lambda: viz.pathway_sankey(None),
    "sankey no blocks": lambda: viz.pathway_sankey(EMPTY_MAP),
    "heatmaps": lambda: viz.expert_heatmaps(EMPTY_MAP, by="sense"),
    "sense bars": lambda: viz.sense_bars(None),
    "example None": lambda: viz.example_routing(None),
    "example dense": lambda: viz.example_routing(ExampleRouting("digits", 0, "image", torch.zeros(5),
                                                                torch.zeros(0, 5, 0), (), torch.zeros(10),
                                                                torch.tensor(3))),
    "curves": lambda: viz.task_curves([]),
    "curves None": lambda: viz.task_curves(None),
    "load": lambda: viz.load_over_training([]),
    "load dense": lambda: viz.load_over_training([{"step": 1, "loss": 1.0, "loss/a": 1.0}]),
    "mask": lambda: viz.weight_mask(None),
    "tradeoff": lambda: viz.sparsity_tradeoff([]),
    "ablation": lambda: viz.ablation_bars({}),
}


@pytest.mark.parametrize("name", list(EMPTY_CALLS))
def test_empty_input_gives_an_empty_figure_with_a_note(name):
    fig = EMPTY_CALLS[name]()
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 0
    assert _note(fig)


def test_single_task_map_draws_every_pathway_figure():
    s = viz.pathway_sankey(ONE)
    link = s.data[0].link
    # digits → expert 0 (3/4 of its tokens), → expert 1 (1/4), then each expert → the digits head
    assert list(link.source) == [0, 0, 1, 2]
    assert list(link.target) == [1, 2, 3, 3]
    assert np.allclose(link.value, [0.75, 0.25, 0.75, 0.25])
    h = viz.expert_heatmaps(ONE)
    assert np.allclose(h.data[0].z, [[0.75], [0.25]])
    assert "0.00 bits" in h.layout.annotations[0].text       # one task: no information about it
    b = viz.sense_bars(ONE)
    assert [t.name for t in b.data] == ["image"] and np.allclose(b.data[0].y, [75, 25])


# -- hand-computed values ---------------------------------------------------------------
def test_sankey_links_are_token_shares_and_columns_sum_to_one():
    fig = viz.pathway_sankey(TWO, min_share=0.0)
    link = fig.data[0].link
    src, dst, val = np.array(link.source), np.array(link.target), np.array(link.value)
    ns, ne = 2, 3
    # digits has 6+2+0 = 8 of the 12 first-block assignments, wine 0+1+3 = 4
    w = np.array([8 / 12, 4 / 12])
    p0 = np.array(COUNTS[0], float) / np.array(COUNTS[0]).sum(0)
    p1 = np.array(COUNTS[1], float) / np.array(COUNTS[1]).sum(0)
    first = src < ns
    assert np.isclose(val[first].sum(), 1.0)
    # digits → block-1 expert 0 carries w_digits · p_0(e0 | digits) = (8/12)(6/8)
    i = np.flatnonzero((src == 0) & (dst == ns + 0))
    assert np.isclose(val[i].sum(), w[0] * p0[0, 0])
    # expert 1 of block 1 → expert 0 of block 3, for wine: w · p0(e1|wine) · p1(e0|wine)
    wine = np.array([c.startswith("wine") for c in link.customdata])
    i = np.flatnonzero((src == ns + 1) & (dst == ns + ne + 0) & wine)
    assert np.isclose(val[i].sum(), w[1] * p0[1, 1] * p1[0, 1])
    between = (src >= ns) & (src < ns + ne)
    assert np.isclose(val[between].sum(), 1.0)
    heads = dst >= ns + 2 * ne
    assert np.isclose(val[heads].sum(), 1.0)


def test_sankey_draws_exact_flows_between_blocks_when_the_map_has_them():
    # one task, two blocks of two experts; every token stays on its expert (diagonal flows)
    counts = [[[2], [2]], [[2], [2]]]
    flat = make_map(counts, ("digits",), ("image",))
    flows = torch.tensor([[[2], [0]], [[0], [2]]]).view(1, 2, 2, 1)
    mod = torch.zeros(1, 2, 2, len(SENSES), dtype=torch.long)
    mod[..., SENSES.index("image")] = flows[..., 0]
    exact = PathwayMap(flat.task_counts, flat.sense_counts, flat.blocks, flat.tasks, SENSES, flat.tokens,
                       flows, mod)
    ns, ne = 1, 2

    def between(fig):
        link = fig.data[0].link
        src, dst, val = np.array(link.source), np.array(link.target), np.array(link.value)
        out = np.zeros((ne, ne))
        for a, b, v in zip(src, dst, val):
            if ns <= a < ns + ne and ns + ne <= b < ns + 2 * ne:
                out[a - ns, b - ns - ne] += v
        return out

    # exact: half the tokens 0 → 0, half 1 → 1, nothing crosses
    for by in ("task", "sense"):
        assert np.allclose(between(viz.pathway_sankey(exact, by, min_share=0.0)), [[0.5, 0.0], [0.0, 0.5]])
    # counts alone: the independence guess spreads a quarter on each edge
    assert np.allclose(between(viz.pathway_sankey(flat, min_share=0.0)), np.full((2, 2), 0.25))


def test_sankey_highlight_greys_other_tasks_and_outlines_experts():
    fig = viz.pathway_sankey(TWO, highlight="wine", experts={3: [2]})
    link = fig.data[0].link
    for c, who in zip(link.color, link.customdata):
        assert ("rgba(180,180,180" in c) == who.startswith("digits")
    widths = fig.data[0].node.line.width
    assert widths[2 + 3 + 2] == 4.0 and sorted(widths).count(4.0) == 1
    with pytest.raises(ValueError, match="highlight"):
        viz.pathway_sankey(TWO, highlight="nope")
    with pytest.raises(ValueError, match="by"):
        viz.expert_heatmaps(TWO, by="modality")          # the lab's word is "sense"


def test_heatmap_columns_are_task_shares_and_sense_bars_percentages():
    fig = viz.expert_heatmaps(TWO, highlight="digits")
    assert np.allclose(fig.data[1].z, np.array(COUNTS[1]) / np.array(COUNTS[1]).sum(0), atol=1e-4)
    assert len(fig.layout.shapes) == 2                              # the column outlined in both blocks
    bars = viz.sense_bars(TWO)
    tab = [t for t in bars.data if t.name == "tabular"]
    assert np.allclose(tab[0].y, [0, 25, 75]) and np.allclose(tab[1].y, [50, 0, 50])


def test_example_routing_colours_tokens_by_top_expert():
    w = torch.zeros(1, 5, 3)                                         # task token + 4 text characters
    w[0, 0, 2] = 1
    w[0, 1, 0], w[0, 1, 1] = 0.3, 0.7
    w[0, 2, 0] = 1.0
    w[0, 4, 2] = 1.0                                                 # token 3: dropped
    er = ExampleRouting("digit_words", 7, "text", torch.arange(5), w, (1,), torch.zeros(10), torch.tensor(1))
    fig = viz.example_routing(er, labels=list("abcd"))
    heat = [t for t in fig.data if t.type == "heatmap"][0]
    assert list(heat.z[0]) == [1, 0, None, 2]
    assert list(heat.text[0]) == list("abcd")
    assert "task token → block 1: e2" in fig.layout.title.text
    img = ExampleRouting("digits", 0, "image", torch.arange(17), torch.rand(2, 17, 4), (1, 3), torch.zeros(10),
                         torch.tensor(0))
    fig = viz.example_routing(img, np.random.default_rng(0).random((8, 8)))
    grids = [t for t in fig.data if t.type == "heatmap" and t.opacity is not None]
    assert len(grids) == 2 and np.array(grids[0].z).shape == (4, 4)
    assert np.array_equal(np.array(grids[1].z, float).ravel(), img.weights[1, 1:].argmax(-1).numpy())


def test_task_curves_and_load_figures_from_records():
    hist = [{"step": s, "loss": 1.0, "loss/a": float(s), "loss/b": 2.0 * s, "load/1": [0.25, 0.75],
             "dropped/1": 0.1 * s} for s in range(1, 5)]
    hist.append({"step": 4, "eval": True, "split": "test", "acc/a": 0.5, "acc/b": 0.75})
    fig = viz.task_curves(hist, smooth_window=2)
    assert np.allclose(fig.data[0].y, [1, 1.5, 2.5, 3.5])           # moving average over 2 steps
    assert [t.name for t in fig.data[2:]] == ["acc/a", "acc/b"]
    assert len(viz.task_curves(hist[:-1]).data) == 2                 # no evaluation panel without evaluations
    load = viz.load_over_training(hist)
    assert np.allclose(load.data[1].y, [0.75] * 4) and np.allclose(load.data[2].y, [0.1, 0.2, 0.3, 0.4])
    long = [{"step": s, "loss": 1.0, "load/1": [s % 2, 1 - s % 2], "dropped/1": 0.0} for s in range(1000)]
    thin = viz.load_over_training(long, max_points=100)
    assert len(thin.data[0].x) == 100 and np.allclose(thin.data[0].y, 0.5)   # bins average the alternation


def test_weight_mask_and_tradeoff():
    w = np.arange(-6, 6, dtype=float).reshape(3, 4)
    m = np.abs(w) >= 3
    fig = viz.weight_mask(w, m, name="fc")
    z = np.array(fig.data[0].z, dtype=object)
    assert (z[~m] == None).all() and np.allclose(z[m].astype(float), w[m])   # noqa: E711
    assert f"{m.mean():.0%} kept" in fig.layout.title.text
    with pytest.raises(ValueError, match="mask"):
        viz.weight_mask(w, m[:2])
    pts = [dict(weight_sparsity=s, act_sparsity=s, accuracy=1 - s, train_flops=10 * (1 - s)) for s in (0.0, 0.5)]
    fig = viz.sparsity_tradeoff(pts, current=1)
    assert list(fig.data[0].x) == [0.0, 0.5] and list(fig.data[1].x) == [10.0, 5.0]
    assert fig.data[2].x == (0.5,)


def test_ablation_bars_follow_the_dicts():
    fig = viz.ablation_bars({"a": 0.9, "b": 0.8}, {"a": 0.1, "b": 0.8}, disabled={1: [2]})
    assert list(fig.data[1].y) == [0.1, 0.8] and "block 1: [2]" in fig.layout.title.text


# -- snapshots ---------------------------------------------------------------------------
def _seeded_map() -> PathwayMap:
    rng = np.random.default_rng(0)
    return make_map(rng.integers(0, 50, size=(2, 4, 3)), ("digits", "dtmf", "wine"), ("image", "audio", "tabular"))


SNAPSHOT_FIGURES = {
    "sankey": lambda: viz.pathway_sankey(_seeded_map(), highlight="dtmf"),
    "heatmaps": lambda: viz.expert_heatmaps(_seeded_map(), by="sense"),
}


def _plain(fig: go.Figure) -> dict:
    d = json.loads(fig.to_json())
    d["layout"].pop("template", None)               # plotly's theme: not ours to pin
    return d


@pytest.mark.parametrize("name", list(SNAPSHOT_FIGURES))
def test_figure_json_matches_stored_snapshot(name):
    path = SNAPSHOTS / f"{name}.json"
    got = _plain(SNAPSHOT_FIGURES[name]())
    if os.environ.get("PWLAB_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert path.exists(), f"{path} missing: run with PWLAB_UPDATE_SNAPSHOTS=1 once and commit it"
    assert got == json.loads(path.read_text())


def test_every_figure_is_valid_plotly():
    # figures are assembled from dicts without plotly's per-property validation (for speed):
    # validating their JSON here catches a misspelt property
    hist = [{"step": s, "loss": 1.0, "loss/a": 1.0, "load/1": [0.5, 0.5], "dropped/1": 0.0} for s in range(1, 4)]
    hist.append({"step": 3, "eval": True, "split": "test", "acc/a": 0.5})
    img = ExampleRouting("digits", 0, "image", torch.arange(17), torch.rand(2, 17, 4), (1, 3), torch.zeros(10),
                         torch.tensor(0))
    aud = ExampleRouting("dtmf", 0, "audio", torch.arange(9), torch.rand(1, 9, 4), (1,), torch.zeros(10),
                         torch.tensor(0))
    figs = [viz.pathway_sankey(TWO, highlight="wine", experts={1: [0]}), viz.pathway_sankey(TWO, by="sense"),
            viz.expert_heatmaps(TWO, highlight="wine"), viz.sense_bars(TWO), viz.example_routing(img, np.ones((8, 8))),
            viz.example_routing(aud, np.sin(np.arange(1000.0))), viz.task_curves(hist), viz.load_over_training(hist),
            viz.weight_mask(np.ones((3, 3))), viz.ablation_bars({"a": 1.0}),
            viz.sparsity_tradeoff([dict(weight_sparsity=0.5, accuracy=0.9, train_flops=1e6)], current=0)]
    figs += [f() for f in EMPTY_CALLS.values()]
    for fig in figs:
        go.Figure(fig.to_plotly_json())                  # raises ValueError on an invalid property


def test_expert_load_bars_are_the_kept_and_proposed_shares_of_one_moe_call():
    from pwlab import MoE, TopK
    torch.manual_seed(0)
    moe = MoE(8, 16, 4, router=TopK(top_k=1), capacity_factor=0.5)
    _, stats = moe(torch.randn(32, 8))
    fig = viz.expert_load(stats)
    kept, proposed = fig.data[0], fig.data[1]
    total = float(stats.proposed_counts.sum())                     # 32 tokens x k=1
    assert total == 32
    np.testing.assert_allclose(kept.y, (stats.counts.float() / total).numpy(), atol=1e-4)
    np.testing.assert_allclose(proposed.y, (stats.proposed_counts.float() / total).numpy(), atol=1e-4)
    assert all(k <= p + 1e-9 for k, p in zip(kept.y, proposed.y))  # capacity only removes
    assert max(kept.y) <= 4 / 32 + 1e-9                            # C = ceil(0.5 * 32 / 4) = 4 slots
    assert fig.layout.shapes[0].y0 == 0.25                         # balanced level 1/E


def test_expert_load_of_an_empty_call_is_a_note():
    from pwlab import MoE
    _, stats = MoE(8, 16, 4)(torch.randn(0, 8))
    assert "no assignments" in _note(viz.expert_load(stats))


def test_sweep_figure_marks_the_paper_point_and_the_criterion():
    from pwlab.experiments import common
    row = {"title": "Sparse beats dense at equal compute",
           "sweep": {"knob": "num_experts", "metric": "step ratio", "paper_value": 32, "threshold": 1.0,
                     "paper_number": 7.0, "points": {"2": common.spread([1.0, 1.5]), "32": common.spread([2.0, 2.0])}}}
    fig = viz.sweep_figure(row)
    go.Figure(fig.to_plotly_json())                              # raises ValueError on an invalid property
    tr = fig.data[0]
    assert list(tr.x) == ["2", "32"] and list(tr.y) == [1.25, 2.0]
    assert list(tr.error_y.array) == pytest.approx([0.125 ** 0.5, 0.0])   # sample sd of (1, 1.5): sqrt(2 · 0.25² / 1)
    assert list(tr.marker.color) == ["#1f77b4", "#d62728"]      # the paper-like point in red
    assert sorted(s.y0 for s in fig.layout.shapes) == [1.0, 7.0]
    assert "num_experts" in fig.layout.title.text
    # the bare sweep dict works too; no sweep gives the empty figure with a note
    assert list(viz.sweep_figure(row["sweep"]).data[0].y) == [1.25, 2.0]
    empty = viz.sweep_figure({"title": "x", "sweep": {}})
    assert not empty.data and "no sweep" in empty.layout.annotations[0].text
