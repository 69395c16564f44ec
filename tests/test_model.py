"""PathwaysModel and the config presets: shapes, loss oracles, masking, routers, FLOP matching."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import pwlab.tasks as tasks
from pwlab import config
from pwlab.config import Config, ModelConfig, TrainConfig
from pwlab.flops import ffn_flops, linear_flops, moe_ffn_flops
from pwlab.model import ModelOutput, PathwaysModel
from pwlab.tasks.base import TaskBatch

NAMES = ["digits", "digit_words", "wine", "mmoe_a"]   # image, text, tabular classification, regression


@pytest.fixture(scope="module")
def task_list():
    return tasks.load(NAMES)


def _batches(task_list, n=5, offset=0):
    return [TaskBatch(task=t.name, task_index=i, sense=t.sense, x=t.x_train[offset:offset + n],
                      y=t.y_train[offset:offset + n]) for i, t in enumerate(task_list)]


def _model(task_list, **kw):
    torch.manual_seed(0)
    return PathwaysModel(task_list, ModelConfig(**kw))


def test_forward_returns_predictions_losses_and_stats_per_block(task_list):
    model = _model(task_list, num_layers=3, moe_layers="every_other")
    out = model(_batches(task_list))
    assert isinstance(out, ModelOutput)
    assert out.predictions["digits"].shape == (5, 10)
    assert out.predictions["mmoe_a"].shape == (5,)
    assert set(out.losses) == set(NAMES)
    assert [s is None for s in out.moe_stats] == [True, False, True]
    # routing indexes the real tokens, whose task/sense ids the output carries
    r = out.moe_stats[1].routing
    n = out.token_task.shape[0]
    assert int(r.token.max()) < n and r.probs.shape[0] == n
    assert out.token_sense.shape == (n,) and out.token_row.shape == (n,)
    # every example starts with its task token (position 0, the task's id)
    first = out.token_pos == 0
    assert int(first.sum()) == 5 * len(NAMES)
    assert torch.equal(out.token_task[first], torch.arange(len(NAMES)).repeat_interleave(5))


def test_loss_is_mean_task_loss_plus_aux(task_list):
    model = _model(task_list)
    out = model(_batches(task_list))
    b = {x.task: x for x in _batches(task_list)}
    expect = {}
    for t in task_list:
        p = out.predictions[t.name]
        expect[t.name] = F.mse_loss(p, b[t.name].y) if t.kind == "regression" else F.cross_entropy(p, b[t.name].y)
        torch.testing.assert_close(out.losses[t.name], expect[t.name])
    aux = sum(s.aux_loss for s in out.moe_stats if s is not None)
    torch.testing.assert_close(out.loss, torch.stack(list(expect.values())).mean() + aux)
    out.loss.backward()
    for name, head in model.heads.items():
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0, name


@pytest.mark.parametrize("pooling", ["mean", "task_token"])
def test_an_example_does_not_depend_on_the_other_tasks_in_the_step(task_list, pooling):
    # padding is masked out of attention, routing and pooling: with dropless token-choice
    # routing, a task alone gives the same predictions as the same task mixed with others
    model = _model(task_list, pooling=pooling, moe_layers="all").eval()
    mixed = model(_batches(task_list))
    for i, t in enumerate(task_list):
        alone = model(_batches(task_list)[i:i + 1])
        torch.testing.assert_close(alone.predictions[t.name], mixed.predictions[t.name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("router,kw", [("task", {"mode": "learned"}), ("hash", {}), ("noisy_topk", {}),
                                       ("switch", {}), ("gshard", {}), ("expert_choice", {})])
def test_every_router_runs_in_the_model(task_list, router, kw):
    model = _model(task_list, router=router, router_kwargs=kw, top_k=1 if router == "task" else 2)
    out = model(_batches(task_list), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_fixed_task_routing_sends_each_task_to_its_experts(task_list):
    model = _model(task_list, router="task", router_kwargs={"mode": "fixed"}, top_k=1, num_experts=4)
    out = model(_batches(task_list))
    r = out.moe_stats[1].routing
    # TaskRouter fixed table with k=1: task t -> expert t mod E
    assert torch.equal(r.expert, out.token_task[r.token] % 4)


def test_unknown_task_lists_the_known_ones(task_list):
    model = _model(task_list)
    t = task_list[0]
    with pytest.raises(ValueError, match="digits.*wine"):
        model([TaskBatch(task="nope", task_index=0, sense=t.sense, x=t.x_train[:2], y=t.y_train[:2])])


def test_dense_baseline_matches_active_flops_per_token():
    sparse = config.tiny()
    dense = config.dense_baseline(sparse)
    m, d = sparse.model, dense.model
    assert d.moe_layer_indices() == () and len(m.moe_layer_indices()) > 0
    tokens = 1000
    moe = moe_ffn_flops(tokens, m.d_model, m.d_hidden, m.num_experts, m.top_k)
    router = linear_flops(tokens, m.d_model, m.num_experts)
    dense_ffn = ffn_flops(tokens, d.d_model, d.ffn_hidden)
    assert moe.forward - router.forward == dense_ffn.forward       # the experts' work equals the dense FFN
    assert d.ffn_hidden == m.top_k * m.d_hidden == m.ffn_hidden     # and sparse dense blocks already matched
    # switch is top-1: its dense twin is one expert wide
    assert config.dense_baseline(sparse.with_model(router="switch")).model.ffn_hidden == m.d_hidden


def test_dense_baseline_model_differs_from_the_sparse_one_only_by_the_router(task_list):
    from pwlab.flops import model_flops
    torch.manual_seed(0)
    sparse = PathwaysModel(task_list, config.tiny().model)
    dense = PathwaysModel(task_list, config.dense_baseline().model)
    tokens = 1000
    fs, fd = model_flops(sparse, tokens), model_flops(dense, tokens)
    m = config.tiny().model
    router = len(m.moe_layer_indices()) * linear_flops(tokens, m.d_model, m.num_experts).forward
    assert fs.forward - fd.forward == router
    # ... while the sparse model holds more parameters (E experts instead of k)
    count = lambda mod: sum(p.numel() for p in mod.parameters())
    assert count(sparse) > count(dense)


def test_dense_model_has_no_moe_stats(task_list):
    torch.manual_seed(0)
    model = PathwaysModel(task_list, config.dense_baseline().model)
    out = model(_batches(task_list))
    assert all(s is None for s in out.moe_stats)
    assert float(out.aux_loss) == 0.0


def test_presets_and_config_round_trip():
    for name in config.PRESETS:
        cfg = config.preset(name)
        again = Config.from_dict(cfg.to_dict())
        assert again == cfg
    with pytest.raises(ValueError, match="'tiny', 'small'"):
        config.preset("huge")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"d_model": 8, "colour": "red"})


@pytest.mark.parametrize("kw,name", [({"num_heads": 3}, "num_heads"), ({"router": "best"}, "router"),
                                     ({"moe_layers": [5]}, "moe_layers"), ({"moe_layers": "some"}, "moe_layers"),
                                     ({"pooling": "max"}, "pooling"), ({"capacity_factor": -1.0}, "capacity_factor")])
def test_bad_model_config_names_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name):
        ModelConfig(**kw)


@pytest.mark.parametrize("kw,name", [({"optimizer": "adam"}, "optimizer"), ({"sampling": "random"}, "sampling"),
                                     ({"lr": 0.0}, "lr"), ({"batch_size": 0}, "batch_size")])
def test_bad_train_config_names_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**kw)


def test_moe_layer_specs():
    assert ModelConfig(num_layers=4, moe_layers="every_other").moe_layer_indices() == (1, 3)
    assert ModelConfig(num_layers=1, moe_layers="every_other").moe_layer_indices() == (0,)
    assert ModelConfig(num_layers=3, moe_layers="all").moe_layer_indices() == (0, 1, 2)
    assert ModelConfig(num_layers=3, moe_layers=[2, 0]).moe_layer_indices() == (0, 2)
    assert ModelConfig(num_layers=3, moe_layers="none").moe_layer_indices() == ()
