"""Routers: the shared contract, determinism, gradients, and formulas checked by hand."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pwlab.routing import ExpertChoice, GShardTop2, HashRouter, NoisyTopK, Switch, TaskRouter, TopK, make_router
from pwlab.routing.expert_choice import expert_choice_capacity
from tests.routing_cases import LEARNED, ROUTER_CASES, route_inputs

D, E = 8, 4


def _bound(name):
    return ROUTER_CASES[name]().bind(D, E)


@pytest.mark.parametrize("name", list(ROUTER_CASES))
def test_contract_shapes(name):
    router = _bound(name)
    x = torch.randn(20, D)
    r = router(x, **route_inputs(20))
    a = r.num_assignments
    for t in (r.token, r.expert, r.weight, r.rank):
        assert t.shape == (a,)
    assert r.probs.shape == (20, E) and r.logits.shape == (20, E)
    assert torch.allclose(r.probs.sum(-1), torch.ones(20), atol=1e-5)
    assert bool((r.weight >= 0).all())
    assert bool((r.expert >= 0).all()) and bool((r.expert < E).all())
    assert bool((r.token >= 0).all()) and bool((r.token < 20).all())


@pytest.mark.parametrize("name", list(ROUTER_CASES))
def test_eval_is_deterministic_and_train_follows_generator(name):
    router = _bound(name)
    x = torch.randn(32, D)
    inputs = route_inputs(32)
    router.eval()
    a, b = router(x, **inputs), router(x, **inputs)
    assert torch.equal(a.expert, b.expert) and torch.equal(a.weight, b.weight)
    router.train()
    r1 = router(x, generator=torch.Generator().manual_seed(5), **inputs)
    r2 = router(x, generator=torch.Generator().manual_seed(5), **inputs)
    assert torch.equal(r1.expert, r2.expert) and torch.equal(r1.weight, r2.weight)


def test_noisy_and_gshard_use_the_generator_in_training():
    x = torch.randn(256, D)
    for router in (NoisyTopK(top_k=1, d_model=D, num_experts=E), GShardTop2(d_model=D, num_experts=E)):
        with torch.no_grad():
            if isinstance(router, NoisyTopK):
                router.w_noise.weight.fill_(0.5)        # make the noise large enough to flip choices
        r1 = router(x, generator=torch.Generator().manual_seed(1))
        r2 = router(x, generator=torch.Generator().manual_seed(2))
        assert r1.num_assignments != r2.num_assignments or not torch.equal(r1.expert, r2.expert)


@pytest.mark.parametrize("name", LEARNED)
def test_router_gets_gradient_from_the_task_loss(name):
    """Every learned router, top-1 included, receives gradient through its combine weights."""
    router = _bound(name)
    x = torch.randn(24, D)
    r = router(x, **route_inputs(24))
    r.weight.sum().backward()
    grads = [p.grad for p in router.parameters()]
    assert grads and all(g is not None for g in grads[:1])
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_topk_orders_agree_when_renormalised():
    x = torch.randn(16, D)
    a = TopK(top_k=2, d_model=D, num_experts=E)
    b = TopK(top_k=2, order="topk_softmax", d_model=D, num_experts=E)
    b.load_state_dict(a.state_dict())
    ra, rb = a(x), b(x)
    assert torch.equal(ra.expert, rb.expert)
    assert torch.allclose(ra.weight, rb.weight, atol=1e-6)
    raw = TopK(top_k=2, renormalize=False, d_model=D, num_experts=E)
    raw.load_state_dict(a.state_dict())
    rr = raw(x)
    assert torch.allclose(rr.weight, rr.probs.gather(1, rr.expert.view(16, 2)).reshape(-1))


def test_switch_weight_is_the_argmax_probability():
    r = Switch(d_model=D, num_experts=E).eval()(torch.randn(10, D))
    p, e = r.probs.max(-1)
    assert torch.equal(r.expert, e) and torch.allclose(r.weight, p)


def test_gshard_keeps_second_expert_with_probability_2g2():
    """Empirical keep rate of the second expert vs the formula min(1, 2·g₂), token by token."""
    router = GShardTop2(d_model=D, num_experts=E)
    x = torch.randn(6, D)
    g = torch.Generator().manual_seed(0)
    trials = 4000
    kept = torch.zeros(6)
    for _ in range(trials):
        r = router(x, generator=g)
        kept += torch.bincount(r.token[r.rank == 1], minlength=6).float()
    probs = router.logits(x).softmax(-1).detach()
    top = probs.topk(2, -1).values
    expected = (2 * top[:, 1] / top.sum(-1)).clamp(max=1)
    assert torch.allclose(kept / trials, expected, atol=0.04)


def test_expert_choice_fills_every_expert_exactly():
    router = ExpertChoice(capacity_factor=1.0, d_model=D, num_experts=E)
    r = router(torch.randn(30, D))
    c = expert_choice_capacity(30, E, 1.0)
    assert c == 8
    assert torch.equal(r.counts(), torch.full((E,), c))
    for e in range(E):         # each expert holds distinct tokens: its top-C by score
        toks = r.token[r.expert == e]
        assert toks.unique().numel() == c
        assert torch.equal(toks.sort().values, r.probs[:, e].topk(c).indices.sort().values)


def test_hash_router_is_fixed_balanced_and_parameter_free():
    router = HashRouter(num_buckets=64, seed=3, d_model=D, num_experts=E)
    assert list(router.parameters()) == []
    assert torch.equal(torch.bincount(router.table, minlength=E), torch.full((E,), 16))
    ids = torch.arange(200)
    r1 = router(torch.randn(200, D), token_ids=ids)
    r2 = router(torch.randn(200, D), token_ids=ids)    # different x, same ids → same experts
    assert torch.equal(r1.expert, r2.expert)
    assert torch.equal(r1.expert, router.table[ids % 64])
    with pytest.raises(ValueError, match="token_ids"):
        router(torch.randn(3, D))


def test_task_router_routes_whole_tasks():
    x = torch.randn(40, D)
    task = torch.arange(40) % 3
    fixed = TaskRouter(num_tasks=3, top_k=2, mode="fixed", d_model=D, num_experts=E)
    r = fixed(x, task=task)
    assert torch.equal(r.expert.view(40, 2), fixed.table[task])
    assert torch.equal(fixed.table, torch.tensor([[0, 1], [2, 3], [0, 1]]))
    learned = TaskRouter(num_tasks=3, top_k=1, mode="learned", d_model=D, num_experts=E)
    r = learned(x, task=task)
    for t in range(3):           # all tokens of one task take the same expert
        assert r.expert[task == t].unique().numel() == 1
    with pytest.raises(ValueError, match="task"):
        learned(x)
    with pytest.raises(ValueError, match="num_tasks"):
        learned(x, task=torch.full((40,), 3))


def test_noisy_topk_loss_matches_a_naive_implementation():
    """Shazeer et al. 2017 eq. 8-10, computed element by element in float64."""
    torch.manual_seed(3)
    k, n = 2, 7
    router = NoisyTopK(top_k=k, d_model=D, num_experts=E).double()
    with torch.no_grad():
        router.w_noise.weight.normal_()
    x = torch.randn(n, D, dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    r = router(x, generator=torch.Generator().manual_seed(11))
    eps = torch.randn(n, E, generator=g, dtype=torch.float64)
    clean = (x @ router.gate.weight.t()).detach()
    sigma = torch.nn.functional.softplus(x @ router.w_noise.weight.t()).detach() + router.noise_eps
    noisy = clean + eps * sigma
    gates = torch.zeros(n, E, dtype=torch.float64)
    load = torch.zeros(E, dtype=torch.float64)
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    for i in range(n):
        order = sorted(range(E), key=lambda j: -float(noisy[i, j]))
        top = order[:k]
        w = torch.softmax(noisy[i, top], 0)
        for j, wj in zip(top, w):
            gates[i, j] = wj
        for j in range(E):
            others = sorted((float(noisy[i, m]) for m in range(E) if m != j), reverse=True)
            thr = others[k - 1]          # k-th largest among the other experts
            load[j] += phi((float(clean[i, j]) - thr) / float(sigma[i, j]))
    cv2 = lambda v: v.var(unbiased=False) / v.mean() ** 2
    expected = cv2(gates.sum(0)) + cv2(load)
    assert torch.allclose(r.aux_losses["importance_load"], expected, atol=1e-9)
    assert torch.equal(r.expert.view(n, k), torch.tensor([sorted(range(E), key=lambda j: -float(noisy[i, j]))[:k]
                                                          for i in range(n)]))


@given(st.integers(1, 6), st.integers(1, 6), st.sampled_from(["topk", "noisy_topk", "task"]))
def test_bad_top_k_is_rejected_by_name(num_experts, k, name):
    kwargs = {"num_tasks": 2} if name == "task" else {}
    router = make_router(name, top_k=k, **kwargs)
    if k > num_experts:
        with pytest.raises(ValueError, match="top_k"):
            router.bind(D, num_experts)
    else:
        router.bind(D, num_experts)


@pytest.mark.parametrize("kwargs, match", [
    ({"top_k": 0}, "top_k"), ({"top_k": -1}, "top_k"), ({"top_k": 2, "order": "sideways"}, "order"),
])
def test_bad_router_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TopK(**kwargs)


def test_unknown_router_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="expert_choice"):
        make_router("magic")


def test_router_rejects_wrong_width_and_non_finite_input():
    router = TopK(top_k=2, d_model=D, num_experts=E)
    with pytest.raises(ValueError, match="d_model"):
        router(torch.randn(3, D + 1))
    bad = torch.randn(3, D)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        router(bad)
