"""The MoE layer: fast vs reference dispatch, capacity against a naive loop, properties, errors."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pwlab.dispatch import _FusedExperts, slot_positions
from pwlab.moe import MoE, expert_capacity
from pwlab.routing import TopK
from tests.routing_cases import ROUTER_CASES, moe_case, route_inputs

D, H, E = 8, 12, 4


def _pair(name, capacity_factor=None, **kw):
    """Two MoE layers with identical weights: fast and loop dispatch. The capacity factor goes
    through the layer (under expert choice it is the router's own: one factor per layer)."""
    fast, loop = (moe_case(name, D, H, E, capacity_factor, dispatch=dispatch, **kw) for dispatch in ("fast", "loop"))
    loop.load_state_dict(fast.state_dict())
    return fast, loop


def _naive_keep(routing, capacity, policy):
    """Capacity by hand: walk the assignments in priority order, fill each expert's slots."""
    a = routing.num_assignments
    if policy == "position":
        key = lambda i: (int(routing.rank[i]), int(routing.token[i]))
    else:
        key = lambda i: (int(routing.rank[i]), -float(routing.weight[i].detach()), i)
    used = [0] * routing.num_experts
    keep = [False] * a
    for i in sorted(range(a), key=key):
        e = int(routing.expert[i])
        if capacity is None or used[e] < capacity:
            keep[i] = True
            used[e] += 1
    return torch.tensor(keep, dtype=torch.bool)


CAPACITIES = [None, 0.5, 1.0, 1.25]


@pytest.mark.parametrize("cf", CAPACITIES)
@pytest.mark.parametrize("name", list(ROUTER_CASES))
def test_fast_dispatch_equals_loop_reference(name, cf):
    """Values and gradients (input, router, experts) agree within 1e-5 for every router."""
    fast, loop = _pair(name, capacity_factor=cf)
    x = torch.randn(37, D)
    inputs = route_inputs(37)
    outs = []
    for layer in (fast, loop):
        xi = x.clone().requires_grad_()
        y, stats = layer(xi, generator=torch.Generator().manual_seed(7), **inputs)
        (y.pow(2).sum() + stats.aux_loss).backward()
        outs.append((y.detach(), xi.grad, {n: p.grad for n, p in layer.named_parameters()}, stats))
    (y1, gx1, gp1, s1), (y2, gx2, gp2, s2) = outs
    assert torch.allclose(y1, y2, atol=1e-5)
    assert torch.allclose(gx1, gx2, atol=1e-5)
    for n in gp1:
        if gp1[n] is None:
            assert gp2[n] is None
        else:
            assert torch.allclose(gp1[n], gp2[n], atol=1e-5), n
    assert torch.equal(s1.counts, s2.counts)


@pytest.mark.parametrize("policy", ["position", "probability"])
@pytest.mark.parametrize("cf", [0.25, 0.5, 1.0, None])
@pytest.mark.parametrize("name", ["topk2", "topk1", "gshard", "noisy_topk2", "hash", "task_learned_token"])
def test_capacity_matches_a_naive_loop(name, cf, policy):
    layer = moe_case(name, D, H, E, cf, drop_policy=policy)
    x = torch.randn(50, D)
    _, stats = layer(x, generator=torch.Generator().manual_seed(3), **route_inputs(50))
    cap = expert_capacity(50, E, layer.top_k, cf)
    assert torch.equal(stats.kept, _naive_keep(stats.proposed, cap, policy))


def test_capacity_conventions_by_hand():
    # k_tokens: C = ceil(cf·k·N/E); tokens: C = ceil(cf·N/E)
    assert expert_capacity(100, 8, 2, 1.0, "k_tokens") == 25
    assert expert_capacity(100, 8, 2, 1.0, "tokens") == 13
    assert expert_capacity(100, 8, 2, 1.25, "k_tokens") == 32      # 31.25 → 32
    assert expert_capacity(64, 8, 2, 1.0, "k_tokens") == 16          # exact: no off-by-one from float error
    assert expert_capacity(100, 8, 2, None) is None
    layer = MoE(D, H, E, TopK(top_k=2), capacity_factor=1.0, capacity_convention="tokens")
    assert layer.capacity(40) == 10


def test_position_policy_prefers_first_choices_and_early_tokens():
    """Hand-built routing: 4 tokens all choose expert 0 first, capacity 2."""
    from pwlab.routing.base import token_choice
    expert = torch.tensor([[0, 1], [0, 1], [0, 1], [1, 0]])
    weight = torch.tensor([[0.6, 0.4], [0.9, 0.1], [0.7, 0.3], [0.8, 0.2]])
    probs = torch.zeros(4, E)
    r = token_choice(probs, probs, expert, weight)
    pos, counts = slot_positions(r, "position")
    # expert 0 queue: first choices of tokens 0,1,2, then token 3's second choice
    assert pos.view(4, 2)[:, 0].tolist() == [0, 1, 2, 0]
    assert pos.view(4, 2)[:, 1].tolist() == [1, 2, 3, 3]
    assert counts.tolist() == [4, 4, 0, 0]
    pos_p, _ = slot_positions(r, "probability")
    # by weight among first choices of expert 0: token1 (.9), token2 (.7), token0 (.6)
    assert pos_p.view(4, 2)[:, 0].tolist() == [2, 0, 1, 0]


@given(n=st.integers(1, 40), cf=st.sampled_from(CAPACITIES), name=st.sampled_from(list(ROUTER_CASES)),
       policy=st.sampled_from(["position", "probability"]), seed=st.integers(0, 10_000))
def test_routing_properties(n, cf, name, policy, seed):
    torch.manual_seed(seed)
    layer = moe_case(name, D, H, E, cf, drop_policy=policy)
    y, s = layer(torch.randn(n, D), generator=torch.Generator().manual_seed(seed), **route_inputs(n, seed))
    kept, proposed = s.routing, s.proposed
    assert y.shape == (n, D) and bool(torch.isfinite(y).all())
    assert bool((kept.weight >= 0).all())
    # kept ⊆ proposed: every kept (token, expert) pair was proposed
    prop = set(zip(proposed.token.tolist(), proposed.expert.tolist()))
    assert set(zip(kept.token.tolist(), kept.expert.tolist())) <= prop
    assert torch.equal(s.counts, kept.counts())
    if proposed.kind == "expert_choice":
        assert len(set(s.counts.tolist())) == 1        # every expert exactly full
        assert s.capacity is None
    else:
        per_token = torch.bincount(kept.token, minlength=n)
        assert int(per_token.max()) <= layer.top_k     # ≤ k experts per token
        if s.capacity is not None:
            assert int(s.counts.max()) <= s.capacity   # every expert ≤ capacity
        else:
            assert kept.num_assignments == proposed.num_assignments   # dropless drops nothing
            assert float(s.dropped_fraction) == 0.0
    assert 0.0 <= float(s.dropped_fraction) <= 1.0
    assert math.isclose(float(s.load.sum()), 1.0, abs_tol=1e-5) or kept.num_assignments == 0


def test_dropped_fraction_by_hand():
    layer = MoE(D, H, E, TopK(top_k=1), capacity_factor=None)
    with torch.no_grad():                      # all tokens prefer expert 2
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[2, 0] = 10.0
    x = torch.randn(16, D).abs() + 0.1
    layer.capacity_factor = 1.0                # C = ceil(1·1·16/4) = 4 of 16 kept
    _, s = layer(x)
    assert s.counts.tolist() == [0, 0, 4, 0]
    assert math.isclose(float(s.dropped_fraction), 12 / 16)
    assert s.kept.nonzero().flatten().tolist() == [0, 1, 2, 3]    # by position: the first four tokens


def test_dropped_tokens_get_zero_output():
    layer = MoE(D, H, E, TopK(top_k=1), capacity_factor=0.25)
    y, s = layer(torch.randn(32, D))
    dropped = torch.ones(32, dtype=torch.bool)
    dropped[s.routing.token] = False
    assert int(dropped.sum()) > 0
    assert bool((y[dropped] == 0).all())


def test_disabled_experts_change_only_their_tokens():
    layer = MoE(D, H, E, TopK(top_k=1)).eval()
    x = torch.randn(40, D)
    y, s = layer(x)
    with layer.disabled([1, 3]):
        y2, s2 = layer(x)
    assert s2.counts[1] == 0 and s2.counts[3] == 0
    hit = torch.isin(s.routing.expert, torch.tensor([1, 3]))
    hit_tokens = s.routing.token[hit]
    other = torch.ones(40, dtype=torch.bool)
    other[hit_tokens] = False
    assert torch.allclose(y[other], y2[other], atol=1e-6)   # batched matmul shapes differ: rounding only
    assert bool((y2[hit_tokens] == 0).all())
    y3, _ = layer(x)                           # restored on exit
    assert torch.equal(y, y3)
    with pytest.raises(ValueError, match="experts"):
        with layer.disabled([E]):
            pass


def test_fused_expert_function_gradcheck():
    torch.manual_seed(1)
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    slot_token = torch.randint(0, 9, (2 * 5,))
    slot_weight = torch.rand(10, dtype=torch.float64, requires_grad=True)
    w = [torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True),
         torch.randn(2, 4, dtype=torch.float64, requires_grad=True),
         torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True),
         torch.randn(2, 3, dtype=torch.float64, requires_grad=True)]
    for act in ("gelu", "relu", "silu"):
        assert torch.autograd.gradcheck(lambda x, sw, *ws: _FusedExperts.apply(x, slot_token, sw, act, *ws),
                                        (x, slot_weight, *w))


def test_leading_dims_and_padding_mask():
    layer = MoE(D, H, E, TopK(top_k=2)).eval()
    x = torch.randn(3, 5, D)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    y, s = layer(x, mask=mask)
    assert y.shape == (3, 5, D)
    assert bool((y[0, 3:] == 0).all())
    assert s.proposed.num_tokens == 13                     # padding is not routed
    y_flat, _ = layer(x[mask])
    assert torch.allclose(y[mask], y_flat, atol=1e-6)


def test_empty_batch_returns_empty_output():
    layer = MoE(D, H, E, TopK(top_k=2), capacity_factor=1.0)
    y, s = layer(torch.randn(0, D))
    assert y.shape == (0, D)
    assert s.counts.tolist() == [0] * E


@pytest.mark.parametrize("kwargs, match", [
    ({"num_experts": 0}, "num_experts"),
    ({"capacity_factor": 0.0}, "capacity_factor"),
    ({"capacity_factor": -1.0}, "capacity_factor"),
    ({"capacity_factor": float("nan")}, "capacity_factor"),
    ({"router": TopK(top_k=5)}, "top_k"),
    ({"drop_policy": "random"}, "drop_policy"),
    ({"capacity_convention": "mine"}, "capacity_convention"),
    ({"dispatch": "magic"}, "dispatch"),
    ({"aux_weights": {"nope": 1.0}}, "aux_weights"),
    ({"router": "topk"}, "router"),
])
def test_bad_arguments_name_the_parameter(kwargs, match):
    args = {"d_model": D, "d_hidden": H, "num_experts": E, **kwargs}
    with pytest.raises(ValueError, match=match):
        MoE(**args)


def test_bad_input_names_the_problem():
    layer = MoE(D, H, E)
    with pytest.raises(ValueError, match="d_model"):
        layer(torch.randn(4, D + 2))
    x = torch.randn(4, D)
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(x)
    with pytest.raises(ValueError, match="task"):
        MoE(D, H, E, ROUTER_CASES["task_fixed"]())(torch.randn(4, D))


@pytest.mark.parametrize("fused", [True, False])
def test_non_finite_routed_tokens_raise_and_padding_is_not_checked(fused):
    layer = MoE(D, H, E, TopK(top_k=2))
    layer.fused = fused
    x = torch.randn(2, 5, D)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    x[1, 4] = float("nan")                              # padding: never routed
    y, _ = layer(x, mask=mask)
    assert bool(torch.isfinite(y).all()) and bool((y[1, 3:] == 0).all())
    x[0, 2, 1] = float("inf")                           # a real token
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(x, mask=mask)


def test_aux_loss_is_the_weighted_sum():
    layer = MoE(D, H, E, TopK(top_k=2), aux_weights={"load_balancing": 0.5, "z_loss": 0.25})
    _, s = layer(torch.randn(30, D))
    expected = 0.5 * s.aux_losses["load_balancing"] + 0.25 * s.aux_losses["z_loss"]
    assert torch.allclose(s.aux_loss, expected)
