"""Bad input to the layers and routers: a clear error naming the argument, or a correct result.

Every router of :mod:`pwlab.routing` (as enumerated in ``tests/routing_cases.py``) is probed
alone and inside an :class:`~pwlab.moe.MoE`; :class:`~pwlab.soft_moe.SoftMoE` and the SWAT
layers where the same input applies. Each test first runs the good input, so a layer that
fails on everything cannot pass.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pwlab import tasks
from pwlab.config import ModelConfig
from pwlab.moe import MoE
from pwlab.routing import ExpertChoice, HashRouter, TaskRouter
from pwlab.senses import Senses
from pwlab.soft_moe import SoftMoE
from pwlab.swat.layers import SwatConv2d, SwatLinear
from tests.routing_cases import NUM_TASKS, ROUTER_CASES, moe_case, route_inputs

D, H, E, N = 8, 12, 4, 6
ID_ROUTERS = [name for name, make in ROUTER_CASES.items() if make().needs_task or make().needs_token_ids]


def _case(kind: str, name: str | None = None):
    """(layer, good input x, keyword arguments of the call) for one layer under test."""
    torch.manual_seed(0)
    if kind == "router":
        return ROUTER_CASES[name]().bind(D, E), torch.randn(N, D), route_inputs(N)
    if kind == "moe":
        return MoE(D, H, E, ROUTER_CASES[name]()), torch.randn(N, D), route_inputs(N)
    if kind == "soft_moe":
        return SoftMoE(D, H, E), torch.randn(2, N, D), {}
    if kind == "swat_linear":
        return SwatLinear(D, H, weight_sparsity=0.5, act_sparsity=0.5), torch.randn(N, D), {}
    if kind == "swat_conv2d":
        return SwatConv2d(3, 5, 3, weight_sparsity=0.5, act_sparsity=0.5), torch.randn(2, 3, 6, 6), {}
    raise AssertionError(kind)


ROUTED = [("router", n) for n in ROUTER_CASES] + [("moe", n) for n in ROUTER_CASES]
LAYERS = ROUTED + [("soft_moe", None), ("swat_linear", None), ("swat_conv2d", None)]
IDS = [f"{k}-{n}" if n else k for k, n in LAYERS]


# 1. float / bool ids ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool], ids=str)
@pytest.mark.parametrize("kind", ["router", "moe"])
@pytest.mark.parametrize("name", ID_ROUTERS)
def test_float_or_bool_ids_are_refused_not_truncated(name, kind, dtype):
    layer, x, ids = _case(kind, name)
    layer(x, **ids)
    arg = "task" if "task" in name else "token_ids"
    bad_ids = ids[arg].to(dtype)
    if dtype.is_floating_point:
        bad_ids = bad_ids + 0.7                     # truncation would route these as the integer ids
    bad = dict(ids, **{arg: bad_ids})
    with pytest.raises(TypeError, match=rf"{arg} must hold integer ids .*got dtype {dtype}"):
        layer(x, **bad)


def test_moe_refuses_float_groups_and_string_ids():
    layer = MoE(D, H, E, aux_weights={"entropy_local": 1.0}, num_groups=2)
    x = torch.randn(N, D)
    layer(x, groups=torch.arange(N) % 2)
    with pytest.raises(TypeError, match="groups must hold integer ids .*got dtype torch.float32"):
        layer(x, groups=(torch.arange(N) % 2).float())
    with pytest.raises(TypeError, match="task must be a tensor of integer ids, got str"):
        MoE(D, H, E, ROUTER_CASES["task_fixed"]())(x, task="wine")


@pytest.mark.parametrize("name", ID_ROUTERS)
def test_integer_ids_of_any_integer_dtype_or_a_list_route_as_long_ids(name):
    router, x, ids = _case("router", name)
    router.eval()
    ref = router(x, **ids)
    for convert in (lambda t: t.int(), lambda t: t.to(torch.uint8), lambda t: t.tolist()):
        r = router(x, **{k: convert(v) for k, v in ids.items()})
        assert torch.equal(r.expert, ref.expert) and torch.equal(r.token, ref.token)


def test_hash_router_maps_ids_by_the_table():
    # an oracle for the accepted ids: expert = table[id mod num_buckets], by hand
    router = HashRouter(num_buckets=8, d_model=D, num_experts=E)
    ids = torch.tensor([0, 7, 8, 15, -1, 123], dtype=torch.int32)
    r = router(torch.randn(6, D), token_ids=ids)
    assert r.expert.tolist() == [int(router.table[i % 8]) for i in ids.tolist()]


# 2. expert choice capacity factor -----------------------------------------------------------
def test_expert_choice_capacity_factor_above_num_experts_is_refused():
    allowed = rf"capacity_factor must be in \(0, num_experts={E}\]"
    with pytest.raises(ValueError, match=allowed):
        ExpertChoice(capacity_factor=1e6, d_model=D, num_experts=E)
    with pytest.raises(ValueError, match=allowed):
        MoE(D, H, E, ExpertChoice(capacity_factor=E + 0.5))           # bound by the layer
    with pytest.raises(ValueError, match=allowed):
        ModelConfig(num_experts=E, router="expert_choice", router_kwargs={"capacity_factor": 1e6}).active_k


def test_expert_choice_at_num_experts_takes_every_token_for_every_expert():
    router = ExpertChoice(capacity_factor=E, d_model=D, num_experts=E)
    r = router(torch.randn(10, D))
    assert r.num_assignments == 10 * E
    assert sorted(zip(r.expert.tolist(), r.token.tolist())) == [(e, t) for e in range(E) for t in range(10)]
    assert ModelConfig(num_experts=E, router="expert_choice", router_kwargs={"capacity_factor": E}).active_k == E
    assert ModelConfig(num_experts=E, router="expert_choice",
                       router_kwargs={"capacity_factor": 1.5}).active_k == math.ceil(1.5)


# 3. not a tensor ----------------------------------------------------------------------------
@pytest.mark.parametrize("convert, type_name", [(lambda t: t.tolist(), "list"), (lambda t: t.numpy(), "ndarray")])
@pytest.mark.parametrize("kind, name", LAYERS, ids=IDS)
def test_non_tensor_input_is_refused_with_its_type(kind, name, convert, type_name):
    layer, x, kw = _case(kind, name)
    layer(x, **kw)
    with pytest.raises(TypeError, match=f"x must be a torch.Tensor, got {type_name}"):
        layer(convert(x), **kw)


def test_moe_and_soft_moe_refuse_a_list_mask():
    for layer, x in ((MoE(D, H, E), torch.randn(2, 3, D)), (SoftMoE(D, H, E), torch.randn(2, 3, D))):
        with pytest.raises(TypeError, match="mask must be a torch.Tensor, got list"):
            layer(x, mask=[[True] * 3] * 2)


def test_senses_refuse_a_list_naming_x():
    task = tasks.get("wine")
    senses = Senses([task], D)
    senses(task.x_train[:4], task)
    with pytest.raises(ValueError, match="x must be .* got list"):
        senses(task.x_train[:4].tolist(), task)


# 4. device mismatch -------------------------------------------------------------------------
DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind, name", LAYERS, ids=IDS)
def test_input_on_another_device_names_both_devices(kind, name, device):
    layer, x, kw = _case(kind, name)
    layer(x, **kw)
    with pytest.raises(ValueError, match=rf"x is on device {device}.* but the layer is on device cpu"):
        layer(x.to(device), **kw)


# 5. integer input ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool], ids=str)
@pytest.mark.parametrize("kind, name", LAYERS, ids=IDS)
def test_integer_input_asks_for_a_floating_dtype(kind, name, dtype):
    layer, x, kw = _case(kind, name)
    layer(x, **kw)
    with pytest.raises(TypeError, match=f"x must have a floating-point dtype .*got {dtype}"):
        layer(x.to(dtype), **kw)


# 6. empty batches ---------------------------------------------------------------------------
@pytest.mark.parametrize("dispatch", ["fast", "loop"])
@pytest.mark.parametrize("cf", [None, 1.0])
@pytest.mark.parametrize("name", list(ROUTER_CASES))
def test_moe_forward_and_backward_on_an_empty_batch_give_zero_grads(name, cf, dispatch):
    layer = moe_case(name, D, H, E, cf, dispatch=dispatch)
    x = torch.randn(0, D, requires_grad=True)
    y, stats = layer(x, **route_inputs(0))
    assert y.shape == (0, D) and stats.counts.tolist() == [0] * E
    (y.sum() + stats.aux_loss).backward()
    assert x.grad is not None and x.grad.shape == (0, D)
    for p in layer.parameters():
        assert p.grad is None or not bool(p.grad.any())


@pytest.mark.parametrize("name", ["hash", "task_fixed", "topk2"])
def test_moe_with_every_expert_disabled_outputs_zero_and_zero_grads(name):
    # the other way to compute nothing: tokens are there, every assignment is dropped
    layer = MoE(D, H, E, ROUTER_CASES[name]())
    x = torch.randn(N, D, requires_grad=True)
    with layer.disabled(range(E)):
        y, stats = layer(x, **route_inputs(N))
    assert torch.equal(y, torch.zeros(N, D)) and stats.counts.tolist() == [0] * E
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros(N, D))


def test_hash_router_moe_backward_on_an_empty_masked_batch():
    layer = MoE(D, H, E, HashRouter(num_buckets=16))
    x = torch.randn(2, 3, D, requires_grad=True)
    y, _ = layer(x, mask=torch.zeros(2, 3, dtype=torch.bool), token_ids=torch.zeros(2, 3, dtype=torch.long))
    y.sum().backward()
    assert torch.equal(y, torch.zeros(2, 3, D)) and torch.equal(x.grad, torch.zeros(2, 3, D))


@pytest.mark.parametrize("shape", [(0, N, D), (2, 0, D), (0, D)])
def test_soft_moe_forward_and_backward_on_an_empty_batch(shape):
    layer = SoftMoE(D, H, E)
    x = torch.randn(*shape, requires_grad=True)
    y, stats = layer(x)
    assert y.shape == shape and stats.proposed.num_tokens == 0
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros(shape))


# 7. SWAT layers -----------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.0, 0.5])
@pytest.mark.parametrize("shape", [(4, 6), (4, 4), (4, 16), (2, 3, 7), ()])
def test_swat_linear_wrong_in_features_names_it_and_the_input_dim(shape, sparsity):
    layer = SwatLinear(D, H, weight_sparsity=sparsity, act_sparsity=sparsity)
    assert layer(torch.randn(4, D)).shape == (4, H)
    last = shape[-1] if shape else None
    with pytest.raises(ValueError, match=rf"in_features={D}, got shape {re_shape(shape)} \(last dimension {last}\)"):
        layer(torch.randn(shape))


def re_shape(shape) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_swat_conv2d_on_unbatched_input_equals_a_batch_of_one(train, structured):
    torch.manual_seed(0)
    layer = SwatConv2d(3, 5, 3, padding=1, weight_sparsity=0.5, act_sparsity=0.5, structured=structured)
    layer.train(train)
    x = torch.randn(3, 6, 6, requires_grad=True)
    y = layer(x)
    assert y.shape == (5, 6, 6)
    # oracle: the dense convolution with the layer's own mask (what the forward computes)
    mask = layer.weight_mask if layer.weight_mask is not None else torch.ones_like(layer.weight)
    ref = F.conv2d(x.detach()[None], layer.weight.detach() * mask, layer.bias.detach(), padding=1)[0]
    assert torch.allclose(y, ref, atol=1e-5)
    y.square().sum().backward()
    x1 = x.detach()[None].requires_grad_()
    layer(x1).square().sum().backward()
    assert torch.allclose(x.grad, x1.grad[0], atol=1e-5)


def test_swat_conv2d_wrong_channels_or_rank_name_the_problem():
    layer = SwatConv2d(3, 5, 3)
    with pytest.raises(ValueError, match="in_channels=3"):
        layer(torch.randn(2, 4, 6, 6))
    with pytest.raises(ValueError, match=r"x must be \(B, C_in, H, W\) or unbatched \(C_in, H, W\)"):
        layer(torch.randn(6, 6))


# 8. tasks seed and MoE.disabled -------------------------------------------------------------
@pytest.mark.parametrize("seed", [2**70, 2**32, -1])
def test_task_seed_out_of_range_gives_the_allowed_range(seed):
    allowed = r"seed must be an integer in \[0, 2\*\*32 - 1 = 4294967295\]"
    with pytest.raises(ValueError, match=allowed):
        tasks.load(["wine"], seed=seed)
    with pytest.raises(ValueError, match=allowed):
        tasks.get("wine", seed=seed)


def test_task_seed_at_the_top_of_the_range_loads():
    a, b = tasks.get("wine", seed=2**32 - 1), tasks.get("wine", seed=2**32 - 1)
    assert torch.equal(a.x_train, b.x_train)


@pytest.mark.parametrize("experts, error, match", [
    (["a"], TypeError, "not an index: 'a'"),
    ([1.5], TypeError, "not an index: 1.5"),
    ([True], TypeError, "not an index: True"),
    (2, TypeError, r"e.g. \[3\]"),
    ("01", TypeError, "got '01'"),
    (torch.tensor([0.5]), TypeError, "torch.float32 tensor"),
    ([E], ValueError, f"out of range: {E}"),
    ([0, -1], ValueError, "out of range: -1"),
])
def test_moe_disabled_refuses_what_is_not_an_expert_index(experts, error, match):
    layer = MoE(D, H, E)
    with pytest.raises(error, match=rf"experts must be an iterable of expert indices, ints in \[0, num_experts={E}\)"):
        with layer.disabled(experts):
            pass
    with pytest.raises(error, match=match):
        with layer.disabled(experts):
            pass
    assert bool(layer.enabled.all())


@pytest.mark.parametrize("experts", [[1, 3], (1, 3), range(1, 4, 2), torch.tensor([1, 3]), np.array([1, 3])])
def test_moe_disabled_accepts_any_collection_of_indices(experts):
    layer = MoE(D, H, E, ROUTER_CASES["hash"]())
    with layer.disabled(experts):
        assert layer.enabled.tolist() == [True, False, True, False]
        _, stats = layer(torch.randn(40, D), token_ids=torch.arange(40))
    assert stats.counts[1] == 0 and stats.counts[3] == 0 and int(stats.counts.sum()) > 0
    assert bool(layer.enabled.all())


def test_task_router_ids_still_range_checked():
    router = TaskRouter(num_tasks=NUM_TASKS, top_k=1, mode="fixed", d_model=D, num_experts=E)
    with pytest.raises(ValueError, match=f"num_tasks={NUM_TASKS}"):
        router(torch.randn(2, D), task=torch.tensor([0, NUM_TASKS]))
