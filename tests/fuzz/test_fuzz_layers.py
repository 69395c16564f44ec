"""Fuzz the layers: every router of ``pwlab.routing.ROUTERS`` (alone and inside ``MoE``),
``SoftMoE``, ``ExpertBank``, ``SwatLinear``, ``SwatConv2d`` and ``swatify``.

Constructors get wrong types, zero, negative, non-finite and huge sizes (a huge size must be
refused before anything is allocated); ``forward`` gets non-tensors, integer dtypes, the
``meta`` device, NaN/Inf, a wrong feature dimension or rank, and empty batches. Each probe
must end in a clear error naming the argument or in a finite result of the right shape.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pwlab import ROUTERS, ExpertBank, MoE, SoftMoE, SwatConv2d, SwatLinear, make_router, swatify
from pwlab.routing import ExpertChoice, GShardTop2, HashRouter, NoisyTopK, Switch, TaskRouter, TopK
from tests.fuzz._probe import finite_of_shape, probe
from tests.routing_cases import NUM_TASKS, ROUTER_CASES, route_inputs

D, H, E = 8, 12, 4
HUGE = 10**13                      # any tensor of this many elements is ~40 TB
FEW = settings(max_examples=2, derandomize=True, deadline=None)
SOME = settings(max_examples=12, derandomize=True, deadline=None)


# --- constructors -----------------------------------------------------------------------------
POS_INT_BAD = [0, -1, 1.5, "4", None, True, math.nan, HUGE, [4], torch.tensor(4)]
FRACTION_BAD = [-0.1, 1.0, 1.5, math.nan, math.inf, "0.5", None]
POS_FLOAT_BAD = [0, -1.0, math.nan, math.inf, "2", [2.0]]
NONNEG_FLOAT_BAD = [-1.0, math.nan, math.inf, "0.1", [0.1]]

# constructor, good keyword arguments, {argument: its bad values}
CTORS = {
    "ExpertBank": (ExpertBank, dict(num_experts=E, d_model=D, d_hidden=H),
                   {"num_experts": POS_INT_BAD, "d_model": POS_INT_BAD, "d_hidden": POS_INT_BAD,
                    "activation": ["tanh", 3, None]}),
    "MoE": (MoE, dict(d_model=D, d_hidden=H, num_experts=E),
            {"d_model": POS_INT_BAD, "d_hidden": POS_INT_BAD, "num_experts": POS_INT_BAD,
             "capacity_factor": POS_FLOAT_BAD, "capacity_convention": ["x", 1], "drop_policy": ["x", None],
             "dispatch": ["x", 0], "router": ["topk", 3, nn.Linear(2, 2)], "aux_weights": [{"nope": 1.0},
                                                                                     {"balance": -1.0}],
             "num_groups": [0, -1, 1.5, "2", HUGE]}),
    "SoftMoE": (SoftMoE, dict(d_model=D, d_hidden=H, num_experts=E),
                {"d_model": POS_INT_BAD, "d_hidden": POS_INT_BAD, "num_experts": POS_INT_BAD,
                 "slots_per_expert": POS_INT_BAD, "activation": ["tanh", None]}),
    "SwatLinear": (SwatLinear, dict(in_features=D, out_features=H, weight_sparsity=0.5, act_sparsity=0.5),
                   {"in_features": POS_INT_BAD, "out_features": POS_INT_BAD, "weight_sparsity": FRACTION_BAD,
                    "act_sparsity": FRACTION_BAD, "topk_period": POS_INT_BAD, "kernel": ["x", None]}),
    "SwatConv2d": (SwatConv2d, dict(in_channels=3, out_channels=5, kernel_size=3, weight_sparsity=0.5,
                                    act_sparsity=0.5),
                   {"in_channels": POS_INT_BAD, "out_channels": POS_INT_BAD, "kernel_size": POS_INT_BAD,
                    "stride": POS_INT_BAD, "dilation": POS_INT_BAD, "groups": POS_INT_BAD + [2],
                    "padding": [-1, 1.5, "x", None, math.nan], "weight_sparsity": FRACTION_BAD,
                    "act_sparsity": FRACTION_BAD, "topk_period": POS_INT_BAD}),
    "TopK": (TopK, dict(top_k=2, d_model=D, num_experts=E),
             {"top_k": POS_INT_BAD + [E + 1], "order": ["x", None], "gate": ["x", 1], "d_model": POS_INT_BAD,
              "num_experts": POS_INT_BAD, "bias_update_rate": NONNEG_FLOAT_BAD}),
    "NoisyTopK": (NoisyTopK, dict(top_k=2, d_model=D, num_experts=E),
                  {"top_k": POS_INT_BAD, "noise_eps": NONNEG_FLOAT_BAD, "d_model": POS_INT_BAD}),
    "Switch": (Switch, dict(d_model=D, num_experts=E), {"jitter": NONNEG_FLOAT_BAD, "d_model": POS_INT_BAD}),
    "GShardTop2": (GShardTop2, dict(d_model=D, num_experts=E),
                   {"d_model": POS_INT_BAD, "num_experts": POS_INT_BAD + [1]}),
    "ExpertChoice": (ExpertChoice, dict(capacity_factor=1.5, d_model=D, num_experts=E),
                     {"capacity_factor": POS_FLOAT_BAD + [E + 1, 1e6], "num_experts": POS_INT_BAD}),
    "HashRouter": (HashRouter, dict(num_buckets=64, d_model=D, num_experts=E),
                   {"num_buckets": POS_INT_BAD, "seed": [-1, 1.5, "0", None, 2**70], "d_model": POS_INT_BAD}),
    "TaskRouter": (TaskRouter, dict(num_tasks=NUM_TASKS, top_k=1, d_model=D, num_experts=E),
                   {"num_tasks": POS_INT_BAD, "top_k": POS_INT_BAD, "mode": ["x", None], "num_experts": POS_INT_BAD}),
}
CTOR_CASES = [(c, arg, i) for c, (_, _, bad) in CTORS.items() for arg, values in bad.items()
              for i in range(len(values))]


def test_the_constructor_table_covers_every_router():
    covered = {CTORS[name][0] for name in CTORS}
    assert set(ROUTERS.values()) <= covered


@pytest.mark.parametrize("ctor, arg, i", CTOR_CASES, ids=[f"{c}-{a}-{i}" for c, a, i in CTOR_CASES])
def test_constructor_refuses_a_bad_argument_naming_it(ctor, arg, i):
    cls, good, bad = CTORS[ctor]
    cls(**good)                                         # the good arguments build
    value = bad[arg][i]
    probe(lambda: cls(**dict(good, **{arg: value})), arg, expect="error")


HUGE_PRODUCTS = [   # each size alone is modest, the product is > 1e12 elements
    ("ExpertBank", lambda: ExpertBank(16, 10**6, 10**6), "d_hidden"),
    ("MoE", lambda: MoE(10**6, 10**6, 4), "d_hidden"),
    ("SoftMoE", lambda: SoftMoE(10**6, 10**6, 4), "d_hidden"),
    ("SwatLinear", lambda: SwatLinear(10**6, 10**6 + 1), "out_features"),
    ("SwatConv2d", lambda: SwatConv2d(10**5, 10**5, 101), "kernel_size"),
    ("TopK.bind", lambda: TopK(top_k=1).bind(10**6, 10**6 + 7), "num_experts"),
    ("TaskRouter", lambda: TaskRouter(num_tasks=10**6, d_model=8, num_experts=10**6 + 3), "num_tasks"),
]


@pytest.mark.parametrize("name, build, arg", HUGE_PRODUCTS, ids=[n for n, _, _ in HUGE_PRODUCTS])
def test_huge_sizes_are_refused_before_allocating(name, build, arg):
    probe(build, arg, expect="error", timeout=10)


@pytest.mark.parametrize("name", list(ROUTERS))
@given(kwargs=st.dictionaries(st.sampled_from(["foo", "top_k", "capacity_factor", "num_buckets", "num_tasks"]),
                              st.sampled_from([0, -3, "x", None, 2.5]), min_size=1, max_size=2))
@FEW
def test_make_router_with_wrong_keywords_names_one(name, kwargs):
    probe(lambda: make_router(name, **kwargs), list(kwargs), check=lambda r: None)


@pytest.mark.parametrize("name", ["", "TopK", "top_k", None, 3])
def test_make_router_unknown_name(name):
    probe(lambda: make_router(name), "router", expect="error")


# --- forward ----------------------------------------------------------------------------------
def _layer(kind, name=None):
    """(layer, make_x(n, values), call keywords(n), expected output shape(n))."""
    torch.manual_seed(0)
    if kind == "router":
        return (ROUTER_CASES[name]().bind(D, E), lambda n: torch.randn(n, D), route_inputs, None)
    if kind == "moe":
        return MoE(D, H, E, ROUTER_CASES[name]()), lambda n: torch.randn(n, D), route_inputs, lambda n: (n, D)
    if kind == "soft_moe":
        return SoftMoE(D, H, E), lambda n: torch.randn(2, n, D), lambda n: {}, lambda n: (2, n, D)
    if kind == "swat_linear":
        return (SwatLinear(D, H, weight_sparsity=0.5, act_sparsity=0.5), lambda n: torch.randn(n, D),
                lambda n: {}, lambda n: (n, H))
    if kind == "swat_conv2d":
        return (SwatConv2d(3, 5, 3, weight_sparsity=0.5, act_sparsity=0.5), lambda n: torch.randn(n, 3, 6, 6),
                lambda n: {}, lambda n: (n, 5, 4, 4))
    raise AssertionError(kind)


LAYERS = [("router", n) for n in ROUTER_CASES] + [("moe", n) for n in ROUTER_CASES] + \
    [("soft_moe", None), ("swat_linear", None), ("swat_conv2d", None)]
LAYER_IDS = [f"{k}-{n}" if n else k for k, n in LAYERS]


def _routing_ok(n):
    def check(r):
        for field in ("weight", "probs", "logits"):
            t = getattr(r, field)
            assert bool(torch.isfinite(t).all()), f"routing.{field} is not finite"
        assert r.expert.numel() == 0 or (0 <= int(r.expert.min()) and int(r.expert.max()) < E), "expert range"
        assert r.token.numel() == 0 or (0 <= int(r.token.min()) and int(r.token.max()) < n), "token range"
    return check


def _check(kind, shape, n):
    return _routing_ok(n) if kind == "router" else finite_of_shape(shape(n))


# corruption of x: (name, how, expected: "error" or "result")
def _nan(x):
    x = x.clone()
    x.view(-1)[0] = math.nan
    return x


def _inf(x):
    x = x.clone()
    x.view(-1)[-1] = -math.inf
    return x


def _wrong_features(x):
    dim = 1 if x.dim() == 4 else -1
    return torch.cat([x, x.narrow(dim, 0, 1)], dim=dim)


CORRUPT = {
    "list": (lambda x: x.tolist(), "error"),
    "ndarray": (lambda x: x.numpy(), "error"),
    "str": (lambda x: "tokens", "error"),
    "none": (lambda x: None, "error"),
    "int_scalar": (lambda x: 3, "error"),
    "long": (lambda x: x.long(), "error"),
    "bool": (lambda x: x > 0, "error"),
    "complex": (lambda x: x.to(torch.complex64), "error"),
    "meta": (lambda x: x.to("meta"), "error"),
    "nan": (_nan, "error"),
    "inf": (_inf, "error"),
    "wrong_features": (_wrong_features, "error"),
    "rank0": (lambda x: torch.tensor(1.0), "error"),
    "float64": (lambda x: x.double(), None),                 # converted or refused; never a torch error
    "half": (lambda x: x.half(), None),
    "good": (lambda x: x, "result"),
    "large_values": (lambda x: x * 1e3, "result"),
}


@pytest.mark.parametrize("corruption", list(CORRUPT))
@pytest.mark.parametrize("kind, name", LAYERS, ids=LAYER_IDS)
@given(n=st.integers(1, 6))
@FEW
def test_forward_refuses_bad_x_naming_it(kind, name, corruption, n):
    layer, make_x, kw, shape = _layer(kind, name)
    how, expect = CORRUPT[corruption]
    x = make_x(n)
    probe(lambda: layer(how(x), **kw(n)), "x", check=_check(kind, shape, n), expect=expect)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("kind, name", LAYERS, ids=LAYER_IDS)
def test_forward_on_an_empty_batch_is_a_correct_empty_result(kind, name, train):
    layer, make_x, kw, shape = _layer(kind, name)
    layer.train(train)
    probe(lambda: layer(make_x(0), **kw(0)), "x", check=_check(kind, shape, 0), expect="result")


ID_ROUTERS = [n for n in ROUTER_CASES if n.startswith(("task", "hash"))]
BAD_IDS = {
    "float": lambda ids: ids.float() + 0.5,
    "bool": lambda ids: ids > 0,
    "short": lambda ids: ids[:-1],
    "2d": lambda ids: ids[:, None],
    "str": lambda ids: "ids",
    "none": lambda ids: None,
    "meta": lambda ids: ids.to("meta"),
    "huge": lambda ids: ids + 2**62,
    "negative": lambda ids: ids - 10**6,
}


@pytest.mark.parametrize("bad", list(BAD_IDS))
@pytest.mark.parametrize("kind", ["router", "moe"])
@pytest.mark.parametrize("name", ID_ROUTERS)
def test_bad_ids_are_refused_naming_them(name, kind, bad):
    layer, make_x, kw, shape = _layer(kind, name)
    arg = "token_ids" if name == "hash" else "task"
    n = 5
    ids = kw(n)
    good_ids = ids[arg]
    ids[arg] = BAD_IDS[bad](good_ids)
    # hash ids are any integers (taken mod num_buckets): huge and negative ones route correctly
    expect = "result" if (arg == "token_ids" and bad in ("huge", "negative")) else "error"
    probe(lambda: layer(make_x(n), **ids), arg, check=_check(kind, shape, n), expect=expect)


@pytest.mark.parametrize("bad, expect", [("list", "error"), ("float", "error"), ("short", "error"),
                                         ("meta", "error"), ("all_false", "result")])
@pytest.mark.parametrize("kind", ["moe", "soft_moe"])
def test_bad_mask_is_refused_naming_it(kind, bad, expect):
    layer = MoE(D, H, E) if kind == "moe" else SoftMoE(D, H, E)
    x = torch.randn(2, 3, D)
    mask = torch.ones(2, 3, dtype=torch.bool)
    bad_mask = {"list": mask.tolist(), "float": mask.float() * 0.5, "short": mask[:, :2],
                "meta": mask.to("meta"), "all_false": ~mask}[bad]
    probe(lambda: layer(x, mask=bad_mask), "mask", check=finite_of_shape((2, 3, D)), expect=expect)


@given(n=st.integers(0, 5), data=st.data())
@SOME
def test_expert_bank_forward_padded_and_forward_expert(n, data):
    bank = ExpertBank(E, D, H)
    buf = torch.randn(E, n, D)
    probe(lambda: bank.forward_padded(buf), "buf", check=finite_of_shape((E, n, D)), expect="result")
    e = data.draw(st.sampled_from([0, E - 1, E, -1, 1.5, "0"]))
    expect = "result" if e in (0, E - 1) else "error"
    probe(lambda: bank.forward_expert(e, torch.randn(n, D)), "e", check=finite_of_shape((n, D)), expect=expect)


@pytest.mark.parametrize("model, arg", [("linear_model", None), ("str", "model"), ("none", "model")])
@pytest.mark.parametrize("sparsity, sarg", [(0.5, None), (1.0, "weight_sparsity"), (math.nan, "weight_sparsity"),
                                            ("0.5", "weight_sparsity")])
def test_swatify_refuses_bad_arguments(model, arg, sparsity, sarg):
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) if model == "linear_model" else \
        {"str": "model", "none": None}[model]
    names = [a for a in (arg, sarg) if a]
    if not names:
        out = probe(lambda: swatify(m, sparsity), "model", expect="result")
        assert out(torch.randn(2, 4)).shape == (2, 3)
    else:
        probe(lambda: swatify(m, sparsity), names, expect="error")


@pytest.mark.parametrize("variant", ["x", None, 3])
def test_swatify_unknown_variant(variant):
    probe(lambda: swatify(nn.Linear(4, 4), 0.5, variant=variant), "variant", expect="error")


@pytest.mark.parametrize("generator", ["seed", 0, np.random.default_rng(0)], ids=["str", "int", "numpy"])
@pytest.mark.parametrize("kind", ["router", "moe"])
def test_a_generator_that_is_not_a_torch_generator_is_named(kind, generator):
    layer = NoisyTopK(top_k=2, d_model=D, num_experts=E) if kind == "router" else MoE(D, H, E, NoisyTopK(top_k=2))
    layer.train()
    probe(lambda: layer(torch.randn(3, D), generator=generator), "generator", expect="error")
