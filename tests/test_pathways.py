"""Pathway maps, mutual information, ablation, subnetwork extraction, per-example routing."""
from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import mutual_info_score

import pwlab.tasks as tasks
from pwlab import pathways as P
from pwlab.config import ModelConfig
from pwlab.model import PathwaysModel
from pwlab.senses import SENSES
from pwlab.tasks.base import TaskBatch
from pwlab.train import evaluate_model

NAMES = ["digits", "digit_words", "wine", "mmoe_a"]


@pytest.fixture(scope="module")
def task_list():
    return tasks.load(NAMES)


def _model(task_list, **kw):
    torch.manual_seed(0)
    base = dict(d_model=16, num_heads=2, num_experts=4, d_hidden=16, num_layers=2, moe_layers="all")
    base.update(kw)
    return PathwaysModel(task_list, ModelConfig(**base)).eval()


# -- information measures against hand-built tables ---------------------------------------

def test_mutual_information_of_hand_built_tables():
    # experts × tasks. Each task owns one expert: I = H(T) = 1 bit
    assert P.mutual_information(torch.tensor([[10, 0], [0, 10]])) == pytest.approx(1.0)
    # routing independent of the task: I = 0
    assert P.mutual_information(torch.tensor([[5, 10], [5, 10], [10, 20]])) == pytest.approx(0.0, abs=1e-12)
    # p(e,t) = [[3/8, 1/8], [1/8, 3/8]]: H(E) = 1, H(E|T) = H(3/4, 1/4) = 2 - (3/4)·log2(3)
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert P.mutual_information(torch.tensor([[3, 1], [1, 3]])) == pytest.approx(1 - h)
    assert 1 - h == pytest.approx(0.18872187554086717)
    # three tasks of which one is absent: an empty column changes nothing
    assert P.mutual_information(torch.tensor([[3, 1, 0], [1, 3, 0]])) == pytest.approx(1 - h)
    assert P.mutual_information(torch.zeros(3, 2)) == 0.0


def test_mutual_information_agrees_with_scikit_learn():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        counts = torch.randint(0, 20, (5, 3), generator=g)
        # sklearn works from label pairs and reports nats
        pairs = [(e, t) for e in range(5) for t in range(3) for _ in range(int(counts[e, t]))]
        nats = mutual_info_score([p[0] for p in pairs], [p[1] for p in pairs])
        assert P.mutual_information(counts) == pytest.approx(nats / math.log(2), abs=1e-9)


def test_entropy():
    assert P.entropy(torch.tensor([1, 1, 1, 1])) == pytest.approx(2.0)
    assert P.entropy(torch.tensor([7, 0, 0])) == 0.0
    assert P.entropy(torch.tensor([1, 3])) == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)))


# -- maps ------------------------------------------------------------------------------------

def test_pathway_map_counts_every_kept_assignment(task_list):
    model = _model(task_list)
    pmap = P.pathway_map(model, task_list, max_examples=30)
    assert pmap.task_counts.shape == (2, 4, len(NAMES)) and pmap.sense_counts.shape == (2, 4, len(SENSES))
    assert pmap.blocks == (0, 1) and pmap.tasks == tuple(NAMES)
    # dropless top-2: every routed token makes exactly two assignments in every block
    for li in range(2):
        assert torch.equal(pmap.task_counts[li].sum(0), 2 * pmap.tokens)
        assert pmap.task_counts[li].sum() == pmap.sense_counts[li].sum()
    # the sense table is the task table summed over each sense's tasks
    sense_of = {t.name: SENSES.index(t.sense) for t in task_list}
    folded = torch.zeros_like(pmap.sense_counts)
    for k, name in enumerate(NAMES):
        folded[:, :, sense_of[name]] += pmap.task_counts[:, :, k]
    assert torch.equal(folded, pmap.sense_counts)
    # tokens per task: 30 examples, each with its task token and its real sense tokens
    wine = task_list[NAMES.index("wine")]
    assert int(pmap.tokens[NAMES.index("wine")]) == 30 * (1 + wine.x_test.shape[1])
    mi = pmap.mutual_information()
    assert len(mi) == 2 and all(0 <= v <= math.log2(len(NAMES)) + 1e-9 for v in mi)


def test_fixed_task_routing_gives_maximal_information(task_list):
    # 4 tasks, 4 experts, k=1, fixed table t -> t: every task owns an expert, I(E;T) = H(T)
    model = _model(task_list, router="task", router_kwargs={"mode": "fixed"}, top_k=1)
    pmap = P.pathway_map(model, task_list, max_examples=20)
    p = pmap.tokens.double() / pmap.tokens.sum()
    h_t = float(-(p * p.log2()).sum())
    assert pmap.mutual_information() == [pytest.approx(h_t)] * 2
    assert P.top_pathway(pmap, "wine", top_k=2) == {0: [2], 1: [2]}
    assert pmap.entropy("wine") == [0.0, 0.0]
    with pytest.raises(ValueError, match="digits"):
        P.top_pathway(pmap, "chess")


# -- ablation --------------------------------------------------------------------------------

def test_ablation_changes_only_the_disabled_experts_outputs(task_list):
    model = _model(task_list)
    moe = model.moe_blocks()[1]
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    y, stats = moe(x)
    with P.disable_experts(model, {1: [2]}):
        y_off, _ = moe(x)
    r = stats.routing
    hit = r.expert == 2
    touched = torch.zeros(50, dtype=torch.bool)
    touched[r.token[hit]] = True
    assert touched.any() and not touched.all()
    torch.testing.assert_close(y_off[~touched], y[~touched], rtol=0, atol=0)
    # the difference on the others is exactly expert 2's weighted output (oracle: the expert alone)
    tok, w = r.token[hit], r.weight[hit]
    own = moe.experts.forward_expert(2, x[tok]) * w[:, None]
    torch.testing.assert_close(y[tok] - y_off[tok], own, atol=1e-5, rtol=1e-5)
    y_back, _ = moe(x)                              # the context restores the expert
    torch.testing.assert_close(y_back, y, rtol=0, atol=0)


def test_ablation_in_the_model_touches_only_the_tasks_routed_there(task_list):
    model = _model(task_list, router="task", router_kwargs={"mode": "fixed"}, top_k=1)
    batches = [TaskBatch(task=t.name, task_index=i, sense=t.sense, x=t.x_test[:8], y=t.y_test[:8])
               for i, t in enumerate(task_list)]
    with torch.no_grad():
        before = model(batches).predictions
        with P.disable_experts(model, {0: [2], 1: [2]}):      # expert 2 is wine's (t -> t mod 4)
            after = model(batches).predictions
    for name in NAMES:
        same = torch.equal(before[name], after[name])
        assert same == (name != "wine"), name
    with pytest.raises(ValueError, match="MoE block"):
        with P.disable_experts(model, {5: [0]}):
            pass


# -- subnetworks -----------------------------------------------------------------------------

def test_extracted_task_subnetwork_is_smaller_and_predicts_the_same(task_list):
    # task-level routing (Kudugunta et al. 2021): all of a task's tokens take the same 2 experts,
    # renormalised over the two, so the 2-expert subnetwork computes exactly what the model did
    model = _model(task_list, router="task", router_kwargs={"mode": "learned"}, top_k=2)
    small, kept = P.extract_subnetwork(model, "digits")
    assert all(len(v) == 2 for v in kept.values())
    assert P.parameter_count(small) < P.parameter_count(model)
    assert small.moe_blocks()[0].num_experts == 2
    t = task_list[0]
    b = [TaskBatch(task="digits", task_index=0, sense="image", x=t.x_test[:40], y=t.y_test[:40])]
    with torch.no_grad():
        torch.testing.assert_close(small(b).predictions["digits"], model(b).predictions["digits"])
    assert evaluate_model(small, [t]) == evaluate_model(model, [t])


def test_extracted_token_routed_subnetwork_keeps_used_experts(task_list):
    # top-k renormalises over the chosen experts: keeping every used expert is exact
    model = _model(task_list)
    pmap = P.pathway_map(model, task_list[2:3], max_examples=None)
    small, kept = P.extract_subnetwork(model, "wine", pmap)
    used = {blk: [int(e) for e in torch.nonzero(pmap.task_counts[i, :, 2]).flatten()]
            for i, blk in enumerate(pmap.blocks)}
    assert kept == used
    assert evaluate_model(small, task_list[2:3]) == evaluate_model(model, task_list[2:3])
    # a lossy cut: only experts with over a third of wine's assignments
    cut, kept_cut = P.extract_subnetwork(model, "wine", pmap, min_share=1 / 3)
    assert all(len(kept_cut[b]) <= len(kept[b]) for b in kept)


# -- one example -----------------------------------------------------------------------------

def test_route_example_gives_each_tokens_expert_weights(task_list):
    model = _model(task_list)
    er = P.route_example(model, "digit_words", 3)
    t = task_list[1]
    real = int((t.x_test[3] != 0).sum()) + 1                   # characters + the task token
    assert er.weights.shape == (2, real, 4)
    assert er.token_ids.shape == (real,)
    # top-2, renormalised, dropless: two experts per token, weights summing to one
    assert torch.equal((er.weights > 0).sum(-1), torch.full((2, real), 2))
    torch.testing.assert_close(er.weights.sum(-1), torch.ones(2, real))
    assert er.target == t.y_test[3] and er.prediction.shape == (10,)
    with pytest.raises(ValueError, match="index"):
        P.route_example(model, "digit_words", 10_000)


# -- exact flows between blocks (one observation pass) ----------------------------------------

def _hash_model(task_list, flip: bool):
    """Two hash-routed MoE blocks over 2 experts; block 3 reuses block 1's table (or its flip),
    so each token's expert in the second block is fixed by its expert in the first."""
    model = _model(task_list, router="hash", top_k=1, num_experts=2)
    first, second = model.moe_blocks().values()
    with torch.no_grad():
        second.router.table.copy_(1 - first.router.table if flip else first.router.table)
    return model


@pytest.mark.parametrize("flip", [False, True])
def test_pathway_flows_are_exact_joint_counts_not_an_independence_guess(task_list, flip):
    model = _hash_model(task_list, flip)
    pmap = P.pathway_map(model, task_list, max_examples=12)
    # oracle: recompute every token's first-block expert from its id and the hash table
    table = next(iter(model.moe_blocks().values())).router.table
    c0 = torch.zeros(2, len(NAMES), dtype=torch.long)
    for t in task_list:
        for b in model.batches(t.name, "test", 12):
            _, mask, _, ids, _, _ = model.encode([b])
            ex = table[ids[mask] % table.numel()]
            c0[:, model.task_index[t.name]] += torch.bincount(ex, minlength=2)
    assert torch.equal(pmap.task_counts[0], c0)
    want = torch.zeros(1, 2, 2, len(NAMES), dtype=torch.long)
    for i in range(2):
        want[0, i, 1 - i if flip else i] = c0[i]
    assert torch.equal(pmap.task_flows, want)
    # the independence guess would put tokens on the other edges too: the two differ here
    guess = c0[:, None, :] * pmap.task_counts[1][None] / c0.sum(0).clamp_min(1)
    assert float(guess[0, 1 if not flip else 0].sum()) > 0 and int(want[0, 0, 1 if not flip else 0].sum()) == 0
    # by sense: the same flows summed over each sense's tasks
    for m, sense in enumerate(SENSES):
        ks = [k for k, t in enumerate(task_list) if t.sense == sense]
        assert torch.equal(pmap.sense_flows[..., m], want[..., ks].sum(-1))


def test_observation_flows_match_a_naive_loop_over_top2_routes(task_list):
    from pwlab.observe import observe
    model = _model(task_list, num_layers=3, capacity_factor=1.0)          # top-2 with drops
    obs = observe(model, task_list, n=10, batch_size=7)
    routes = [{} for _ in obs.routes]
    for li, r in enumerate(obs.routes):
        for tok, ex in zip(r.token.tolist(), r.expert.tolist()):
            routes[li].setdefault(tok, set()).add(ex)
    want = torch.zeros(2, 4, 4, len(NAMES), dtype=torch.long)
    for li in range(2):
        for tok, here in routes[li].items():
            for i in here:
                for j in routes[li + 1].get(tok, ()):
                    want[li, i, j, int(obs.token_task[tok])] += 1
    assert torch.equal(obs.flows(), want)
    assert int(want.sum()) > 0
    # per-example losses and scores reduce to the model's own mean loss and metric
    for t in task_list:
        b = next(model.batches(t.name, "test", 7, 7))
        with torch.no_grad():
            out = model([b])
        assert float(obs.losses[t.name][:7].mean()) == pytest.approx(float(out.losses[t.name]), rel=1e-5)
    assert obs.metrics() == evaluate_model(model, task_list, max_examples=10, batch_size=7)


def test_observe_refuses_bad_arguments_and_restores_the_mode(task_list):
    from pwlab.observe import observe
    model = _model(task_list).train()
    for kw, name in [({"n": 0}, "n"), ({"split": "val"}, "split"), ({"tasks": ["nope"]}, "task"),
                     ({"batch_size": 0}, "batch_size"), ({"tasks": ["wine", "wine"]}, "tasks")]:
        with pytest.raises(ValueError, match=name):
            observe(model, **kw)
    with pytest.raises(TypeError, match="model"):
        observe("model")
    obs = observe(model, ["wine"], n=5, joint=True)
    assert model.training and obs.tasks == ("wine",) and obs.example_index.tolist() == list(range(5))
    assert obs.predictions["wine"].shape == (5, 3) and obs.losses["wine"].shape == (5,)
