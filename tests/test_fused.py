"""The one-node top-k MoE path (pwlab.fused) against the general path, gradcheck and by hand."""
from __future__ import annotations

import pytest
import torch

from pwlab import expert_kernels, fused
from pwlab.moe import MoE
from pwlab.routing import NoisyTopK, TopK

D, H, E = 8, 12, 5


def _twins(**kw):
    """The same layer twice, in float64: one may take the fused path, one is forced onto the general one."""
    fast = MoE(D, H, E, TopK(top_k=kw.pop("k", 2), renormalize=kw.pop("renormalize", True)), **kw).double()
    general = MoE(D, H, E, TopK(top_k=fast.top_k, renormalize=fast.router.renormalize), **kw).double()
    general.load_state_dict(fast.state_dict())
    general.fused = False
    return fast, general


def _loss(y, s):
    """Every output the layer hands back takes part, so every branch of the backward is exercised."""
    return ((y ** 2).sum() + s.aux_loss + 0.3 * s.aux_losses["load_balancing"] + 0.7 * s.aux_losses["z_loss"]
            + (s.proposed.probs ** 3).sum() + s.proposed.logits.sin().sum() + (s.proposed.weight ** 2).sum())


@pytest.mark.parametrize("k,cf,renormalize,activation", [
    (2, 1.0, True, "gelu"), (1, None, True, "relu"), (2, 0.5, False, "silu"), (3, 1.25, True, "gelu"),
    (2, 0.25, True, "gelu"), (4, None, True, "silu"),
])
def test_fused_equals_general_path(k, cf, renormalize, activation):
    """Values, every gradient, counts, kept mask and losses agree (float64, 1e-12)."""
    torch.manual_seed(k * 10 + int(renormalize))
    fast, general = _twins(k=k, renormalize=renormalize, capacity_factor=cf, activation=activation)
    x = torch.randn(37, D, dtype=torch.float64)
    results = []
    for layer in (fast, general):
        xi = x.clone().requires_grad_()
        y, s = layer(xi)
        _loss(y, s).backward()
        results.append((y.detach(), xi.grad, {n: p.grad for n, p in layer.named_parameters()}, s))
    (y1, gx1, gp1, s1), (y2, gx2, gp2, s2) = results
    assert torch.allclose(y1, y2, atol=1e-12)
    assert torch.allclose(gx1, gx2, atol=1e-12)
    for name in gp1:
        assert torch.allclose(gp1[name], gp2[name], atol=1e-12), name
    assert torch.equal(s1.counts, s2.counts) and torch.equal(s1.proposed_counts, s2.proposed_counts)
    for name in ("load_balancing", "z_loss"):
        assert torch.allclose(s1.aux_losses[name], s2.aux_losses[name], atol=1e-12)
    # the same assignments, whatever their order: the fused routing is rank-major
    def kept_set(s):
        r = s.routing
        return sorted(zip(r.token.tolist(), r.expert.tolist(), r.rank.tolist(), [round(w, 9) for w in r.weight.tolist()]))
    assert kept_set(s1) == kept_set(s2)
    assert float(s1.dropped_fraction) == pytest.approx(float(s2.dropped_fraction))


def test_fused_group_entropies_equal_the_general_path():
    """LIMoE's per-group entropies join the fused node's losses exactly as on the general path."""
    torch.manual_seed(4)
    fast, general = _twins(k=2, capacity_factor=1.0, num_groups=3,
                           aux_weights={"entropy_local": 0.05, "entropy_global": 0.02})
    x, groups = torch.randn(30, D, dtype=torch.float64), torch.arange(30) % 3
    grads, stats = [], []
    for layer in (fast, general):
        xi = x.clone().requires_grad_()
        y, s = layer(xi, groups=groups)
        (y.sum() + s.aux_loss).backward()
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
        stats.append(s)
    assert set(stats[0].aux_losses) == set(stats[1].aux_losses) >= {"entropy_local", "entropy_global"}
    for name in stats[1].aux_losses:
        assert torch.allclose(stats[0].aux_losses[name], stats[1].aux_losses[name], atol=1e-12), name
    assert torch.allclose(stats[0].aux_loss, stats[1].aux_loss, atol=1e-12)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-12)


def test_fused_path_is_taken_only_where_it_applies(monkeypatch):
    calls = []
    real = fused.topk_moe
    monkeypatch.setattr(fused, "topk_moe", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    x = torch.randn(10, D)
    MoE(D, H, E, TopK(top_k=2))(x)
    assert len(calls) == 1
    layer = MoE(D, H, E, TopK(top_k=2))
    for variant in (MoE(D, H, E, TopK(top_k=2), drop_policy="probability"), MoE(D, H, E, TopK(top_k=2), dispatch="loop"),
                    MoE(D, H, E, TopK(top_k=2, order="topk_softmax")), MoE(D, H, E, NoisyTopK(top_k=2))):
        variant(x)
    layer(x[:0])                                               # an empty batch
    assert len(calls) == 1


@pytest.mark.parametrize("cf", [None, 0.5, 1.0])
def test_fused_ablation_equals_general_ablation(cf):
    fast, general = _twins(k=2, capacity_factor=cf)
    x = torch.randn(40, D, dtype=torch.float64)
    outs = []
    for layer in (fast, general):
        xi = x.clone().requires_grad_()
        with layer.disabled([1, 3]):
            y, s = layer(xi)
        _loss(y, s).backward()
        outs.append((y.detach(), xi.grad, s))
    (y1, g1, s1), (y2, g2, s2) = outs
    assert torch.allclose(y1, y2, atol=1e-12) and torch.allclose(g1, g2, atol=1e-12)
    assert torch.equal(s1.counts, s2.counts) and s1.counts[[1, 3]].sum() == 0
    assert float(s1.dropped_fraction) == pytest.approx(float(s2.dropped_fraction))


def test_rank_major_layout_names_its_assignments():
    layer = MoE(D, H, E, TopK(top_k=3), capacity_factor=None)
    x = torch.randn(6, D)
    _, s = layer(x)
    r = s.proposed
    assert r.token.tolist() == list(range(6)) * 3
    assert r.rank.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    ref = layer.router(x)                                      # the router alone: token-major
    assert torch.equal(r.expert.view(3, 6).t(), ref.expert.view(6, 3))
    assert torch.allclose(r.weight.view(3, 6).t(), ref.weight.view(6, 3))


def test_gradcheck():
    """The hand-written backward against finite differences, for every differentiable input."""
    torch.manual_seed(3)
    n, d, h, e, k = 9, 4, 5, 3, 2
    x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(*shape, dtype=torch.float64, requires_grad=True)
              for shape in ((e, d), (e, d, h), (e, h), (e, h, d), (e, d))]

    def run(x, wg, w1, b1, w2, b2):
        y, logits, probs, weight, lb, z, aux, *_ = fused.topk_moe(
            x, wg, w1, b1, w2, b2, k=k, renormalize=True, capacity=5, activation="gelu", w_lb=0.3, w_z=0.2)
        return y, logits, probs, weight, lb, z, aux

    assert torch.autograd.gradcheck(run, (x, *params), atol=1e-6)


def test_position_priority_and_capacity_by_hand():
    """4 tokens, all with expert 0 first and expert 1 second; C = 3 by hand."""
    layer = MoE(2, 3, 3, TopK(top_k=2), capacity_factor=1.0, capacity_convention="tokens")   # C = ceil(4/3) = 2
    with torch.no_grad():
        layer.router.gate.weight.copy_(torch.tensor([[3.0, 0.0], [2.0, 0.0], [0.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    _, s = layer(x)
    assert s.capacity == 2
    # expert 0 keeps the first choices of tokens 0 and 1; expert 1 the second choices of 0 and 1
    kept = sorted(zip(s.routing.token.tolist(), s.routing.expert.tolist()))
    assert kept == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert s.proposed_counts.tolist() == [4, 4, 0] and s.counts.tolist() == [2, 2, 0]


def test_second_derivatives_are_refused_not_wrong():
    layer = MoE(D, H, E, TopK(top_k=2)).double()
    x = torch.randn(6, D, dtype=torch.float64, requires_grad=True)
    y, s = layer(x)
    (g,) = torch.autograd.grad(y.sum() + s.aux_loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match="does not require grad"):
        g.sum().backward()
    half = MoE(D, H, E, TopK(top_k=2)).bfloat16()
    assert half.backend_for(torch.randn(6, D, dtype=torch.bfloat16)) != "fused"


def test_non_finite_input_is_an_error():
    layer = MoE(D, H, E, TopK(top_k=2))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(5, D)
        x[3, 2] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            layer(x)


# -- the unpadded dropless layout (MoE.dropless_layout) ------------------------------------

@pytest.mark.parametrize("k,activation,renormalize", [(2, "gelu", True), (1, "relu", True), (3, "silu", False)])
def test_grouped_dropless_equals_general_path(k, activation, renormalize):
    """Dropless on the unpadded layout: values and every gradient equal the general path (float64)."""
    torch.manual_seed(20 + k)
    fast, general = _twins(k=k, renormalize=renormalize, capacity_factor=None, activation=activation)
    fast.dropless_layout = "grouped"
    x = torch.randn(41, D, dtype=torch.float64)
    results = []
    for layer in (fast, general):
        xi = x.clone().requires_grad_()
        y, s = layer(xi)
        _loss(y, s).backward()
        results.append((y.detach(), xi.grad, {n: p.grad for n, p in layer.named_parameters()}, s))
    (y1, gx1, gp1, s1), (y2, gx2, gp2, s2) = results
    assert torch.allclose(y1, y2, atol=1e-12) and torch.allclose(gx1, gx2, atol=1e-12)
    for name in gp1:
        assert torch.allclose(gp1[name], gp2[name], atol=1e-12), name
    assert torch.equal(s1.counts, s2.counts) and bool(s1.kept.all()) and s1.capacity is None


def test_grouped_and_padded_layouts_agree_in_float32():
    """float32 takes torch._grouped_mm where it runs: the two dropless layouts agree to 1e-5."""
    torch.manual_seed(5)
    layer = MoE(16, 24, 6, TopK(top_k=2))
    x = torch.randn(300, 16)
    out = {}
    for layout in ("grouped", "padded"):
        layer.dropless_layout = layout
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        y, s = layer(xi)
        (y.pow(2).sum() + s.aux_loss).backward()
        out[layout] = [y.detach(), xi.grad] + [p.grad.clone() for p in layer.parameters()]
    for a, b in zip(out["grouped"], out["padded"]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_row_layout_by_hand():
    """Rank-major choices of 3 tokens (k = 2) over 3 experts, sorted by expert, priority kept."""
    expert_t = torch.tensor([[2, 0, 2], [0, 1, 0]])        # first choices, then second choices
    counts, lay = expert_kernels.row_layout(expert_t, 3)
    assert counts.tolist() == [3, 1, 2]
    # rows: expert 0 takes (token 1, first), (token 0, second), (token 2, second); expert 1 token 1;
    # expert 2 tokens 0 and 2 (first choices)
    assert lay.row_token.tolist() == [1, 0, 2, 1, 0, 2]
    assert lay.row_expert.tolist() == [0, 0, 0, 1, 2, 2]
    assert lay.bounds == (3, 4, 6) and lay.offs.tolist() == [3, 4, 6]
    # assignment a = j·N + n sits in row lay.row[a]
    assert lay.row.tolist() == [4, 0, 5, 1, 3, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grouped_matmuls_equal_one_matmul_per_expert(dtype):
    """grouped_mm / grouped_mm_t (torch._grouped_mm where it runs, else a loop) against naive
    per-expert products, an expert without rows included."""
    torch.manual_seed(6)
    counts = torch.tensor([3, 0, 5, 2])
    ends = counts.cumsum(0)
    lay = expert_kernels.RowLayout(row_token=torch.arange(10), row=torch.arange(10),
                          row_expert=torch.repeat_interleave(torch.arange(4), counts),
                          bounds=tuple(ends.tolist()), offs=ends.to(torch.int32))
    a, b, g = torch.randn(10, 8, dtype=dtype), torch.randn(4, 8, 12, dtype=dtype), torch.randn(10, 12, dtype=dtype)
    starts = (ends - counts).tolist()
    ref = torch.cat([a[s:s + c] @ b[e] for e, (s, c) in enumerate(zip(starts, counts.tolist()))])
    ref_t = torch.stack([a[s:s + c].t() @ g[s:s + c] for s, c in zip(starts, counts.tolist())])
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(expert_kernels.grouped_mm(a, b, lay), ref, atol=tol)
    assert torch.allclose(expert_kernels.grouped_mm_t(a, g, lay), ref_t, atol=tol)
    assert torch.equal(expert_kernels.grouped_mm_t(a, g, lay)[1], torch.zeros(8, 12, dtype=dtype))


def test_gradcheck_grouped_dropless():
    """The unpadded dropless backward against finite differences."""
    torch.manual_seed(7)
    n, d, h, e, k = 9, 4, 5, 3, 2
    x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(*shape, dtype=torch.float64, requires_grad=True)
              for shape in ((e, d), (e, d, h), (e, h), (e, h, d), (e, d))]

    def run(x, wg, w1, b1, w2, b2):
        y, logits, probs, weight, lb, z, aux, *_ = fused.topk_moe(
            x, wg, w1, b1, w2, b2, k=k, renormalize=True, capacity=None, activation="gelu", w_lb=0.3, w_z=0.2,
            grouped=True)
        return y, logits, probs, weight, lb, z, aux

    assert torch.autograd.gradcheck(run, (x, *params), atol=1e-6)


def test_dropless_layout_is_checked_and_auto_follows_rows_per_expert():
    layer = MoE(D, H, 4, TopK(top_k=2))
    assert not layer._grouped(fused.GROUPED_MIN_ROWS * 2 - 1)     # N·k / E just below the threshold
    assert layer._grouped(fused.GROUPED_MIN_ROWS * 2)
    with pytest.raises(ValueError, match="dropless_layout must be one of"):
        layer.dropless_layout = "sideways"
    assert layer.dropless_layout == "auto"                     # a refused value changes nothing


# -- the expert FFN's forward and backward, once per layout (pwlab.expert_kernels) --------------

class _KernelFFN(torch.autograd.Function):
    """The kernel forward with the kernel backward, for gradcheck (``layout`` None: padded)."""

    @staticmethod
    def forward(ctx, buf, w1, b1, w2, b2, activation, layout):
        if layout is None:
            out, pre, h = expert_kernels.padded_forward(buf, w1, b1, w2, b2, activation)
        else:
            out, pre, h = expert_kernels.grouped_forward(buf, layout, w1, b1, w2, b2, activation)
        ctx.save_for_backward(buf, pre, h, w1, w2)
        ctx.activation, ctx.layout = activation, layout
        return out

    @staticmethod
    def backward(ctx, g):
        buf, pre, h, w1, w2 = ctx.saved_tensors
        if ctx.layout is None:
            grads = expert_kernels.padded_backward(g.contiguous(), buf, pre, h, w1, w2, ctx.activation, True)
        else:
            grads = expert_kernels.grouped_backward(g.contiguous(), ctx.layout, buf, pre, h, w1, w2, ctx.activation,
                                                    True)
        return (*grads, None, None)


@pytest.mark.parametrize("layout", ["padded", "grouped"])
@pytest.mark.parametrize("activation", ["gelu", "relu", "silu"])
def test_expert_kernels_equal_the_bank_and_pass_gradcheck(layout, activation):
    """Each layout's forward equals ExpertBank.forward_expert row by row; its hand-written
    backward passes gradcheck (an expert without rows included in the grouped layout)."""
    from pwlab.experts import ExpertBank
    torch.manual_seed(8)
    e, d, h = 3, 4, 5
    bank = ExpertBank(e, d, h, activation).double()
    ws = [p.detach().clone().requires_grad_() for p in bank.weight_parameters()]
    if layout == "padded":
        buf = torch.randn(e, 3, d, dtype=torch.float64, requires_grad=True)
        lay, experts_of_rows = None, torch.arange(e).repeat_interleave(3)
        rows = buf.reshape(-1, d)
    else:
        _, lay = expert_kernels.row_layout(torch.tensor([[2, 0, 2, 0], [0, 2, 0, 2]]), e)     # expert 1: no rows
        buf = torch.randn(8, d, dtype=torch.float64, requires_grad=True)
        experts_of_rows, rows = lay.row_expert, buf
    out = _KernelFFN.apply(buf, *ws, activation, lay).reshape(-1, d)
    for i, ex in enumerate(experts_of_rows.tolist()):
        assert torch.allclose(out[i], bank.forward_expert(ex, rows[i:i + 1])[0], atol=1e-12)
    assert torch.autograd.gradcheck(lambda b, *w: _KernelFFN.apply(b, *w, activation, lay), (buf, *ws))


# -- who may take the one-node path: the router and the bank say so --------------------------------

def test_routers_and_banks_declare_whether_the_fused_node_can_run_in_their_place():
    from pwlab.experts import ExpertBank, GatedExpertBank
    from pwlab.swat.experts import SwatExpertBank
    plain = TopK(top_k=2).bind(D, E)
    gate = plain.fused_gate()
    assert gate.weight is plain.gate.weight and gate.k == 2 and gate.renormalize
    for other in (TopK(top_k=2, order="topk_softmax"), TopK(top_k=2, gate="sigmoid"), TopK(top_k=2, bias_update_rate=0.1),
                  NoisyTopK(top_k=2)):
        assert other.bind(D, E).fused_gate() is None, other
    bank = ExpertBank(E, D, H)
    assert all(a is b for a, b in zip(bank.plain_ffn(), (bank.w1, bank.b1, bank.w2, bank.b2)))
    assert GatedExpertBank(E, D, H).plain_ffn() is None and SwatExpertBank(E, D, H).plain_ffn() is None


class _ReversedTopK(TopK):
    """Routes otherwise (each token's last-ranked choices first): must not be routed by the node."""

    def route(self, x, *, task, token_ids, generator):
        r = super().route(x, task=task, token_ids=token_ids, generator=generator)
        return r.select(torch.arange(r.num_assignments - 1, -1, -1))


class _SameTopK(TopK):
    """A subclass that changes nothing of the routing: the node may route for it."""


def test_a_router_subclass_takes_the_node_only_if_it_routes_as_topk():
    torch.manual_seed(9)
    x = torch.randn(12, D, dtype=torch.float64)
    same, reversed_ = MoE(D, H, E, _SameTopK(top_k=2)).double(), MoE(D, H, E, _ReversedTopK(top_k=2)).double()
    assert same.backend_for(x) == "fused" and reversed_.backend_for(x) == "fast"
    general = MoE(D, H, E, _SameTopK(top_k=2)).double()
    general.load_state_dict(same.state_dict())
    general.fused = False
    (y1, _), (y2, _) = same(x), general(x)
    assert torch.allclose(y1, y2, atol=1e-12)


@pytest.mark.parametrize("k,renormalize,activation,capacity,enabled", [
    (1, True, "relu", None, None),                       # top-1 keeps the raw probability; padded dropless
    (3, False, "silu", 4, torch.tensor([True, False, True])),   # ablation with capacity
])
def test_gradcheck_router_and_losses_other_settings(k, renormalize, activation, capacity, enabled):
    """The node's hand-written router, load-balancing and z-loss backward against finite
    differences beyond test_gradcheck's setting: top-1, top-3 without renormalisation, ablation."""
    torch.manual_seed(11)
    n, d, h, e = 7, 4, 5, 3
    x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(*shape, dtype=torch.float64, requires_grad=True)
              for shape in ((e, d), (e, d, h), (e, h), (e, h, d), (e, d))]

    def run(x, wg, w1, b1, w2, b2):
        y, logits, probs, weight, lb, z, aux, *_ = fused.topk_moe(
            x, wg, w1, b1, w2, b2, k=k, renormalize=renormalize, capacity=capacity, activation=activation,
            w_lb=0.3, w_z=0.2, enabled=enabled, grouped=False)
        return y, logits, probs, weight, lb, z, aux

    assert torch.autograd.gradcheck(run, (x, *params), atol=1e-6)


@pytest.mark.parametrize("activation", ["gelu", "relu", "silu"])
def test_activation_backward_in_place_equals_the_out_of_place_ops(activation):
    """act_backward_ writes into the gradient it is given, bit-equal to the out-of-place aten ops."""
    torch.manual_seed(3)
    pre = torch.randn(6, 7)
    pre[0, :3] = 0.0                                           # relu's kink: gradient 0 at 0
    grad = torch.randn(6, 7)
    ref = {"gelu": lambda: torch.ops.aten.gelu_backward(grad, pre),
           "silu": lambda: torch.ops.aten.silu_backward(grad, pre),
           "relu": lambda: grad * (pre > 0).to(grad.dtype)}[activation]()
    work = grad.clone()
    out = expert_kernels.act_backward_(activation, work, pre)
    assert out.data_ptr() == work.data_ptr()
    assert torch.equal(out, ref)
