"""Expert kinds (plain FFN, gated SwiGLU), shared experts and fine-grained experts on every path.

Oracles: the loop reference dispatch, a naive per-token Mixtral-style layer written here,
hand-computed FLOP and parameter counts, the dense bank for SWAT at sparsity 0, and the
single-process layer for expert parallelism.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pwlab import flops, tasks
from pwlab.config import Config, ModelConfig, TrainConfig, dense_baseline
from pwlab.distributed import ExpertParallelMoE, run_local
from pwlab.experts import ExpertBank, GatedExpertBank, expert_kind, make_experts
from pwlab.model import PathwaysModel
from pwlab.moe import MoE
from pwlab.routing import Switch, TopK
from pwlab.swat import SwatExpertBank, SwatGatedExpertBank, erk_densities, swatify
from pwlab.tasks.base import TaskBatch

D, H, E = 8, 12, 4
TOL = 1e-5


def _pair(**kw):
    """Two float64 layers with identical weights: the fast padded dispatch and the loop reference."""
    fast = MoE(D, kw.pop("d_hidden", H), kw.pop("num_experts", E), TopK(top_k=kw.pop("k", 2)), dispatch="fast", **kw)
    loop = copy.deepcopy(fast)
    loop.dispatch = "loop"
    return fast.double(), loop.double()


def _run(layer, x, target):
    """Output, stats and the gradients of a loss that uses the output and the aux loss."""
    x = x.clone().requires_grad_()
    y, stats = layer(x)
    ((y * target).sum() + stats.aux_loss).backward()
    return y.detach(), stats, x.grad, {n: p.grad for n, p in layer.named_parameters()}


def _assert_same(a, b):
    (y1, s1, gx1, gp1), (y2, s2, gx2, gp2) = a, b
    assert (y1 - y2).abs().max() <= TOL
    assert (gx1 - gx2).abs().max() <= TOL
    assert gp1.keys() == gp2.keys()
    for name in gp1:
        assert gp1[name] is not None and gp2[name] is not None, name
        assert (gp1[name] - gp2[name]).abs().max() <= TOL, name
    assert torch.equal(s1.counts, s2.counts)


def _data(n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=torch.float64), torch.randn(n, D, generator=g, dtype=torch.float64)


# -- the gated bank ---------------------------------------------------------------------------------

def test_gated_bank_interface_and_layout():
    bank = GatedExpertBank(E, D, H)
    assert (bank.num_experts, bank.d_model, bank.d_hidden, bank.activation) == (E, D, H, "silu")
    assert [tuple(w.shape) for w in bank.weights()] == [(E, D, H), (E, D, H), (E, H, D)]
    assert sorted(n for n, _ in bank.named_parameters()) == ["w1", "w2", "w3"]        # no biases
    assert bank.expert_parameters(0) == 3 * D * H == sum(p[0].numel() for p in bank.parameters())
    x = torch.randn(5, D)
    want = (F.silu(x @ bank.w1[2]) * (x @ bank.w3[2])) @ bank.w2[2]
    assert torch.allclose(bank.forward_expert(2, x), want)
    buf = torch.randn(E, 3, D)
    out = bank.forward_padded(buf)
    for e in range(E):
        assert torch.allclose(out[e], bank.forward_expert(e, buf[e]), atol=1e-6)


@pytest.mark.parametrize("cf", [None, 1.0, 0.5])
def test_gated_fast_dispatch_equals_loop_reference(cf):
    fast, loop = _pair(expert="swiglu", capacity_factor=cf)
    assert isinstance(fast.experts, GatedExpertBank) and fast.backend_for(torch.zeros(3, D, dtype=torch.float64)) == "fast"
    x, t = _data(29)
    a, b = _run(fast, x, t), _run(loop, x, t)
    _assert_same(a, b)
    if cf == 0.5:
        assert float(a[1].dropped_fraction) > 0            # capacity really dropped something


def _naive_mixtral(x, gate_w, w1, w3, w2, k):
    """Mixtral's sparse block written out token by token: softmax → top-k → renormalise → Σ w·expert."""
    rows = []
    for n in range(x.shape[0]):
        probs = torch.softmax(x[n] @ gate_w.t(), dim=-1)
        top_p, top_e = probs.topk(k)
        top_p = top_p / top_p.sum()
        y = 0
        for p, e in zip(top_p, top_e.tolist()):
            y = y + p * ((F.silu(x[n] @ w1[e]) * (x[n] @ w3[e])) @ w2[e])
        rows.append(y)
    return torch.stack(rows)


@pytest.mark.parametrize("dispatch", ["fast", "loop"])
def test_gated_layer_equals_naive_mixtral_block(dispatch):
    layer = MoE(D, H, E, TopK(top_k=2), expert="swiglu", dispatch=dispatch).double()
    x, t = _data(17, seed=5)
    params = [layer.router.gate.weight, layer.experts.w1, layer.experts.w3, layer.experts.w2]
    xa = x.clone().requires_grad_()
    y, _ = layer(xa)
    got = torch.autograd.grad((y * t).sum(), [xa, *params])
    xb = x.clone().requires_grad_()
    want_y = _naive_mixtral(xb, *params, k=2)
    want = torch.autograd.grad((want_y * t).sum(), [xb, *params])
    assert (y - want_y).abs().max() <= TOL
    for name, g1, g2 in zip(["x", "gate", "w1", "w3", "w2"], got, want):
        assert (g1 - g2).abs().max() <= TOL, name


def test_fused_path_stays_for_the_plain_bank_only():
    x = torch.zeros(3, D)
    assert MoE(D, H, E, TopK(top_k=2)).backend_for(x) == "fused"
    assert MoE(D, H, E, TopK(top_k=2), num_shared_experts=1).backend_for(x) == "fused"       # shared experts run beside it
    assert MoE(D, H, E, TopK(top_k=2), expert="swiglu").backend_for(x) == "fast"


# -- shared experts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ffn", "swiglu"])
@pytest.mark.parametrize("cf", [None, 0.75])
def test_shared_experts_fast_equals_loop(kind, cf):
    fast, loop = _pair(expert=kind, capacity_factor=cf, num_shared_experts=2)
    fast.fused = loop.fused = False
    x, t = _data(23)
    _assert_same(_run(fast, x, t), _run(loop, x, t))


def test_shared_experts_fused_equals_general_path():
    fused, general = _pair(num_shared_experts=1)
    general.dispatch, general.fused = "fast", False
    x, t = _data(19)
    assert fused.backend_for(x) == "fused" and general.backend_for(x) != "fused"
    _assert_same(_run(fused, x, t), _run(general, x, t))


@pytest.mark.parametrize("kind", ["ffn", "swiglu"])
def test_shared_experts_add_to_the_routed_output_and_leave_the_routing_alone(kind):
    layer = MoE(D, H, E, TopK(top_k=2), expert=kind, num_shared_experts=2).double()
    routed = MoE(D, H, E, TopK(top_k=2), expert=kind).double()
    routed.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("shared_experts.")})
    x, _ = _data(15)
    y, stats = layer(x)
    y0, stats0 = routed(x)
    by_hand = y0 + sum(layer.shared_experts.forward_expert(i, x) for i in range(2))
    assert (y - by_hand).abs().max() <= 1e-12
    assert torch.equal(stats.counts, stats0.counts) and torch.equal(stats.kept, stats0.kept)
    assert stats.counts.shape == (E,)                     # the routing covers the routed experts only
    assert torch.allclose(stats.aux_loss, stats0.aux_loss)
    with layer.disabled(range(E)):                        # ablation switches off routed experts only
        y_off, _ = layer(x)
    assert (y_off - (by_hand - y0)).abs().max() <= 1e-12
    assert "num_shared_experts=2" in repr(layer) and "(shared_experts)" in repr(layer)
    assert type(layer.shared_experts) is type(layer.experts)


def test_shared_experts_are_counted_in_parameters():
    plain = MoE(D, H, E, TopK(top_k=2), expert="swiglu")
    shared = MoE(D, H, E, TopK(top_k=2), expert="swiglu", num_shared_experts=3)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(shared) - n(plain) == 3 * 3 * D * H


# -- fine-grained experts ---------------------------------------------------------------------------

def test_fine_grained_builds_m_times_more_narrower_experts_routed_top_mk():
    layer = MoE.fine_grained(D, H, E, 3, top_k=2, expert="swiglu")
    assert (layer.num_experts, layer.d_hidden, layer.top_k, layer.granularity) == (3 * E, H // 3, 6, 3)
    assert isinstance(layer.experts, GatedExpertBank) and layer.experts.d_hidden == H // 3
    assert "granularity=3" in repr(layer)


@pytest.mark.parametrize("kind", ["ffn", "swiglu"])
def test_fine_grained_fast_equals_loop(kind):
    fast = MoE.fine_grained(D, H, E, 2, top_k=2, expert=kind, capacity_factor=1.0, num_shared_experts=1).double()
    fast.fused = False
    loop = copy.deepcopy(fast)
    loop.dispatch = "loop"
    x, t = _data(21)
    _assert_same(_run(fast, x, t), _run(loop, x, t))


@pytest.mark.parametrize("kind, per_pair", [("ffn", 2), ("swiglu", 3)])
@pytest.mark.parametrize("m", [2, 4])
def test_fine_grained_keeps_expert_flops_and_weights(kind, per_pair, m):
    n, k = 10, 2
    coarse = MoE(D, H, E, TopK(top_k=k), expert=kind)
    fine = MoE.fine_grained(D, H, E, m, top_k=k, expert=kind)
    # hand count: each token runs k experts of `per_pair` D×H matmuls (coarse), or m·k experts of
    # D×(H/m) (fine): the same 2·per_pair·D·H·k per token; the gate is D×E against D×(m·E)
    expert_fwd = 2 * per_pair * D * H * k * n
    counted = {name: flops.model_flops(nn.Sequential(layer), n).total() for name, layer in
               (("coarse", coarse), ("fine", fine))}
    assert counted["coarse"].forward == expert_fwd + 2 * n * D * E
    assert counted["fine"].forward == expert_fwd + 2 * n * D * m * E
    assert counted["fine"].training == 3 * (expert_fwd + 2 * n * D * m * E)
    for name, layer in (("coarse", coarse), ("fine", fine)):
        assert flops.moe_ffn_flops(n, D, layer.d_hidden, layer.num_experts, layer.top_k, expert=kind) \
            == counted[name]
    # the expert weight matrices: the same total; a plain bank's output biases grow m-fold
    weights = lambda layer: sum(p.numel() for p in layer.experts.parameters() if p.dim() == 3)
    assert weights(coarse) == weights(fine) == per_pair * E * D * H
    params = lambda layer: sum(p.numel() for p in layer.experts.parameters())
    assert params(fine) - params(coarse) == (0 if kind == "swiglu" else (m - 1) * E * D)
    assert fine.experts.expert_parameters(0) * m * E == per_pair * E * D * H + (0 if kind == "swiglu"
                                                                                else E * H + m * E * D)


def test_fine_grained_bad_input():
    with pytest.raises(ValueError, match="d_hidden must be divisible by m=5"):
        MoE.fine_grained(D, H, E, 5)
    with pytest.raises(ValueError, match="m must be an integer >= 1"):
        MoE.fine_grained(D, H, E, 0)
    with pytest.raises(ValueError, match="router must take top_k"):
        MoE.fine_grained(D, H, E, 2, router="switch")
    with pytest.raises(TypeError, match="router must be a router name"):
        MoE.fine_grained(D, H, E, 2, router=TopK(top_k=2))
    with pytest.raises(ValueError, match="router must be one of"):
        MoE.fine_grained(D, H, E, 2, router="nope")


# -- errors -----------------------------------------------------------------------------------------

def test_bad_expert_options_name_the_parameter():
    with pytest.raises(ValueError, match="expert must be one of 'ffn', 'swiglu'; got 'glu'"):
        MoE(D, H, E, expert="glu")
    with pytest.raises(ValueError, match="activation must be None or 'silu' for expert='swiglu'"):
        MoE(D, H, E, expert="swiglu", activation="gelu")
    with pytest.raises(ValueError, match="num_shared_experts must be an integer >= 0"):
        MoE(D, H, E, num_shared_experts=-1)
    with pytest.raises(ValueError, match="expert must be one of"):
        ModelConfig(expert="mlp")
    with pytest.raises(TypeError, match="bank must be"):
        expert_kind(nn.Linear(2, 2))
    assert MoE(D, H, E).experts.activation == "gelu"                    # the default kind is unchanged
    assert MoE(D, H, E, activation="relu").experts.activation == "relu"
    assert MoE(D, H, E, expert="swiglu", activation="silu").experts.activation == "silu"


# -- SWAT -------------------------------------------------------------------------------------------

def test_swat_gated_bank_at_sparsity_zero_equals_the_dense_gated_bank():
    dense = MoE(D, H, E, TopK(top_k=2), expert="swiglu", num_shared_experts=1).double()
    net = nn.Sequential(nn.Linear(D, D).double(), copy.deepcopy(dense))
    swatify(net, 0.0, 0.0)
    sw = net[1]
    assert type(sw.experts) is SwatGatedExpertBank and type(sw.shared_experts) is SwatGatedExpertBank
    x, t = _data(25)
    a, b = _run(dense, x, t), _run(sw, x, t)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    for name in a[3]:
        assert torch.equal(a[3][name], b[3][name]), name


def test_swat_gated_bank_masks_all_three_weights_and_keeps_loop_parity():
    layer = MoE(D, H, E, TopK(top_k=2), expert="swiglu").double()
    net = swatify(nn.Sequential(nn.Linear(D, D).double(), layer), 0.5, 0.5)
    bank = net[1].experts
    assert bank.w1 is layer.experts.w1                     # the same Parameters
    w1, w3, w2 = bank.weights()
    for w, full in ((w1, bank.w1), (w3, bank.w3), (w2, bank.w2)):
        assert int((w != 0).sum()) == full.numel() // 2   # top-50 % of each weight
    # one layer, fast then loop: the loop reuses the activation thresholds the first call cached
    x, t = _data(20)
    fast = _run(net[1], x, t)
    fast = (fast[0], fast[1], fast[2], {n: g.clone() for n, g in fast[3].items()})
    net[1].zero_grad()
    net[1].dispatch = "loop"
    _assert_same(fast, _run(net[1], x, t))
    assert bank.act_thresholds[0] is not None and bank.act_thresholds[1] is not None
    ffn = swatify(nn.Sequential(nn.Linear(D, D), MoE(D, H, E)), 0.5)[1]
    assert type(ffn.experts) is SwatExpertBank                           # the plain bank as before
    assert flops.model_flops(net, 10).total().forward < flops.model_flops(
        nn.Sequential(nn.Linear(D, D), MoE(D, H, E, expert="swiglu")), 10).total().forward


# -- FLOPs ------------------------------------------------------------------------------------------

def test_gated_and_shared_flops_hand_counts():
    n, d, h, e, k, s = 10, 8, 12, 4, 2, 1
    assert flops.gated_ffn_flops(n, d, h) == flops.LayerFlops(6 * n * d * h, 6 * n * d * h, 6 * n * d * h)
    assert flops.gated_ffn_flops(n, d, h).training == 18 * n * d * h
    # forward: (k + s) token-expert pairs per token at 6·D·H each, plus the gate 2·D·E
    fwd = 6 * d * h * n * (k + s) + 2 * n * d * e
    assert flops.moe_ffn_flops(n, d, h, e, k, expert="swiglu", num_shared_experts=s).forward == fwd
    layer = MoE(d, h, e, TopK(top_k=k), expert="swiglu", num_shared_experts=s)
    counted = flops.model_flops(nn.Sequential(layer), n).total()
    assert (counted.forward, counted.training) == (fwd, 3 * fwd)
    plain = flops.model_flops(nn.Sequential(MoE(d, h, e, TopK(top_k=k), num_shared_experts=s)), n).total()
    assert plain.forward == 4 * d * h * n * (k + s) + 2 * n * d * e
    assert flops.model_flops(nn.Sequential(Switch().bind(d, e), GatedExpertBank(e, d, h)), n).layers[-1][2].forward \
        == 6 * n * d * h                                                      # a bank alone: N pairs
    with pytest.raises(ValueError, match="expert must be one of"):
        flops.moe_ffn_flops(n, d, h, e, k, expert="glu")


# -- the model configuration ------------------------------------------------------------------------

def test_model_config_expert_reaches_the_layer_and_the_dense_baseline_matches_flops():
    cfg = ModelConfig(expert="swiglu", d_hidden=64, top_k=2)
    task = tasks.load(["mmoe_a"])[0]
    model = PathwaysModel([task], cfg)
    banks = [b.experts for b in model.moe_blocks().values()]
    assert banks and all(type(b) is GatedExpertBank for b in banks)
    out = model([TaskBatch(task=task.name, task_index=0, sense=task.sense, x=task.x_train[:4], y=task.y_train[:4])])
    out.loss.backward()
    assert all(b.w3.grad is not None for b in banks)
    assert ModelConfig.from_dict(cfg.to_dict()).expert == "swiglu"
    assert ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "expert"}).expert == "ffn"
    assert cfg.ffn_hidden == 3 * 2 * 64 // 2 and ModelConfig().ffn_hidden == 2 * 64
    base = dense_baseline(Config(cfg, TrainConfig()))
    assert base.model.dense_hidden == 192
    # the dense FFN (two matmuls of D×192) does what one token's two gated experts do (six of D×64)
    assert 2 * cfg.d_model * 192 == 2 * 3 * cfg.d_model * 64


# -- expert parallelism -----------------------------------------------------------------------------

def _ep_gated_worker(rank: int, world: int) -> dict:
    """Max |EP − single process| of outputs and gradients for a gated layer with a shared expert."""
    torch.manual_seed(0)
    ref = MoE(D, H, E, TopK(top_k=2), expert="swiglu", num_shared_experts=1, capacity_factor=1.0)
    ep = ExpertParallelMoE.from_moe(copy.deepcopy(ref))
    g = torch.Generator().manual_seed(1)
    sizes = [13, 18][:world]
    xs = [torch.randn(n, D, generator=g) for n in sizes]
    ts = [torch.randn(n, D, generator=g) for n in sizes]
    refs = []
    for x, t in zip(xs, ts):
        x = x.clone().requires_grad_()
        y, st = ref(x)
        refs.append((x, y, st, (y * t).sum() + st.aux_loss))
    sum(r[3] for r in refs).backward()
    x = xs[rank].clone().requires_grad_()
    y, st = ep(x)
    ((y * ts[rank]).sum() + st.aux_loss).backward()
    for p in [*ep.router.parameters(), *ep.shared_experts.parameters()]:   # replicated: data-parallel sum
        dist.all_reduce(p.grad)
    x_ref, y_ref, st_ref, _ = refs[rank]
    errs = {"y": float((y - y_ref).abs().max()), "x_grad": float((x.grad - x_ref.grad).abs().max())}
    for name, p in [*ep.router.named_parameters(prefix="router"), *ep.shared_experts.named_parameters(prefix="shared")]:
        q = dict([*ref.router.named_parameters(prefix="router"),
                  *ref.shared_experts.named_parameters(prefix="shared")])[name]
        errs[name] = float((p.grad - q.grad).abs().max())
    for name in ("w1", "w3", "w2"):
        grad = getattr(ep.experts, name).grad
        parts = [torch.empty_like(grad) for _ in range(world)]
        dist.all_gather(parts, grad)
        errs[f"experts.{name}"] = float((torch.cat(parts) - getattr(ref.experts, name).grad).abs().max())
    full = ep.gather_experts()
    errs["weights"] = max(float((a - b).abs().max()) for a, b in zip(full, ref.experts.weights()))
    return {"errors": errs, "kind": type(ep.experts).__name__, "local": ep.experts.num_experts,
            "dropped": float(st.dropped_fraction)}


@pytest.mark.slow
def test_expert_parallel_gated_layer_with_a_shared_expert_equals_single_process():
    results = run_local(_ep_gated_worker, 2, timeout=90)
    for rank, res in enumerate(results):
        assert res["kind"] == "GatedExpertBank" and res["local"] == E // 2
        for what, err in res["errors"].items():
            assert err <= TOL, f"rank {rank}: {what} differs by {err}"
    assert results[0]["dropped"] > 0                      # capacity 1.0 dropped some assignments


def test_make_experts_and_expert_kind_round_trip():
    for kind, cls in (("ffn", ExpertBank), ("swiglu", GatedExpertBank)):
        bank = make_experts(kind, 2, 4, 6)
        assert type(bank) is cls and expert_kind(bank) == kind
    assert expert_kind(SwatGatedExpertBank(2, 4, 6)) == "swiglu" and expert_kind(SwatExpertBank(2, 4, 6)) == "ffn"


def test_swatify_erk_counts_the_gated_bank_as_three_matrices_per_expert():
    net = nn.Sequential(nn.Linear(D, D), nn.Linear(D, D), MoE(D, H, E, TopK(top_k=2), expert="swiglu"))
    swatify(net, 0.5, variant="erk")
    # the first layer stays dense; the rest: one (D, D) matrix and 3·E matrices of (D, H)
    dens = erk_densities([(D, D)] + [(D, H)] * (3 * E), 0.5)
    assert net[1].weight_sparsity == pytest.approx(1 - dens[0])
    assert net[2].experts.weight_sparsity == pytest.approx(1 - dens[1])
    kept = net[1].weight.numel() * dens[0] + 3 * E * D * H * dens[1]
    assert kept == pytest.approx(0.5 * (D * D + 3 * E * D * H))
