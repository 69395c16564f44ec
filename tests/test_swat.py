"""SWAT layers: exactness at sparsity 0, gradcheck with fixed masks, naive references, re-entry."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pwlab import flops
from pwlab.experts import ExpertBank
from pwlab.moe import MoE
from pwlab.routing.topk import TopK
from pwlab.swat import (SwatBmmFunction, SwatConv2d, SwatConv2dFunction, SwatExpertBank, SwatLinear,
                        SwatLinearFunction, erk_densities, swatify, weight_mask)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _grads(module, x):
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
    return y.detach(), x.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 5)])
def test_linear_at_sparsity_zero_equals_nn_linear_exactly(shape):
    ref = nn.Linear(5, 4)
    swat = SwatLinear(5, 4, weight_sparsity=0, act_sparsity=0)
    swat.load_state_dict(ref.state_dict())
    x = torch.randn(*shape)
    for a, b in zip(_grads(ref, x), _grads(swat, x)):
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            assert torch.equal(u, v)


def test_conv_at_sparsity_zero_equals_nn_conv2d_exactly():
    ref = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    swat = SwatConv2d(3, 4, 3, stride=2, padding=1, weight_sparsity=0, act_sparsity=0)
    swat.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 7, 7)
    (ya, gxa, gpa), (yb, gxb, gpb) = _grads(ref, x), _grads(swat, x)
    assert torch.equal(ya, yb) and torch.equal(gxa, gxb)
    assert all(torch.equal(u, v) for u, v in zip(gpa, gpb))


def test_functions_without_masks_equal_the_dense_ops_exactly():
    # the layers short-cut to F.linear / conv at sparsity 0; their autograd nodes with nothing
    # dropped must still be exactly the dense ops (they run so at 0 weight or 0 act sparsity)
    x, w, b = torch.randn(6, 5), torch.randn(4, 5), torch.randn(4)
    xc, wc, bc = torch.randn(2, 3, 7, 7), torch.randn(4, 3, 3, 3), torch.randn(4)
    conv = ([2, 2], [1, 1], [1, 1], 1)
    cases = ((lambda *t: SwatLinearFunction.apply(*t, None, None), F.linear, (x, w, b)),
             (lambda *t: SwatConv2dFunction.apply(*t, None, None, False, conv),
              lambda *t: F.conv2d(*t, stride=2, padding=1), (xc, wc, bc)))
    for swat_fn, dense_fn, args in cases:
        results = []
        for fn in (dense_fn, swat_fn):
            leaves = [t.clone().requires_grad_(True) for t in args]
            y = fn(*leaves)
            y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
            results.append([y.detach()] + [t.grad for t in leaves])
        assert all(torch.equal(u, v) for u, v in zip(*results))


def test_steps_are_counted_at_sparsity_zero_too():
    layer = SwatLinear(5, 4, weight_sparsity=0, act_sparsity=0)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(3):
        layer(torch.randn(2, 5)).sum().backward()
        opt.step()
    layer(torch.randn(2, 5))
    assert layer.step == 4


def test_expert_bank_at_sparsity_zero_equals_expert_bank_exactly():
    ref = ExpertBank(3, 4, 6)
    swat = SwatExpertBank(3, 4, 6, weight_sparsity=0, act_sparsity=0)
    swat.load_state_dict(ref.state_dict())
    buf = torch.randn(3, 5, 4)
    for fa, fb in ((ref.forward_padded, swat.forward_padded), (lambda x: ref.forward_expert(1, x[1]),
                                                                lambda x: swat.forward_expert(1, x[1]))):
        ref.zero_grad(), swat.zero_grad()
        ya, yb = fa(buf), fb(buf)
        assert torch.equal(ya, yb)
        ya.square().sum().backward(), yb.square().sum().backward()
        assert all(torch.equal(p.grad, q.grad) for p, q in zip(ref.parameters(), swat.parameters()))


def _kept_param(w, mask):
    """Gradcheck parametrisation: the kept weights are free, the dropped ones fixed."""
    kept = w[mask].clone().requires_grad_(True)
    return kept, lambda k: w.masked_scatter(mask, k)


def test_linear_gradcheck_float64_with_fixed_mask():
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    mask = weight_mask(w, 0.5)
    kept, full = _kept_param(w, mask)
    # act_sparsity 0: grad_W on the kept entries is the true gradient; grad_x and grad_b always are
    fn = lambda x, k, b: SwatLinearFunction.apply(x, full(k), b, mask, None)
    assert torch.autograd.gradcheck(fn, (x, kept, b))
    # with a sparsified saved activation only grad_x and grad_b are true gradients
    thr = torch.tensor(0.5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x, b: SwatLinearFunction.apply(x, w, b, mask, thr), (x, b))


def test_conv_and_bmm_gradcheck_float64_with_fixed_mask():
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    mask = weight_mask(w, 0.6)
    kept, full = _kept_param(w, mask)
    conv = ([1, 1], [1, 1], [1, 1], 1)
    assert torch.autograd.gradcheck(lambda x, k, b: SwatConv2dFunction.apply(x, full(k), b, mask, None, False, conv),
                                    (x, kept, b))
    xb = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    wb = torch.randn(2, 4, 5, dtype=torch.float64)
    bb = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    mb = weight_mask(wb, 0.5)
    kb, fullb = _kept_param(wb, mb)
    assert torch.autograd.gradcheck(lambda x, k, b: SwatBmmFunction.apply(x, fullb(k), b, mb, None), (xb, kb, bb))


@pytest.mark.parametrize("kernel", ["dense", "sparse"])
def test_linear_matches_naive_swat_reference(kernel):
    layer = SwatLinear(40, 30, weight_sparsity=0.8, act_sparsity=0.7, topk_period=1, kernel=kernel)
    x = torch.randn(16, 40, requires_grad=True)
    g = torch.randn(16, 30)
    y = layer(x)
    y.backward(g)
    w = layer.weight.detach()
    wm = w.abs() > w.abs().flatten().kthvalue(round(0.8 * w.numel())).values          # top-K(|W|)
    xd = x.detach()
    xm = xd.abs() > xd.abs().flatten().kthvalue(round(0.7 * xd.numel())).values       # top-K(|x|), whole batch
    assert torch.equal(layer.weight_mask, wm)
    torch.testing.assert_close(y, xd @ (w * wm).t() + layer.bias.detach())
    torch.testing.assert_close(x.grad, g @ (w * wm))
    torch.testing.assert_close(layer.weight.grad, g.t() @ (xd * xm))                   # dense-shaped
    torch.testing.assert_close(layer.bias.grad, g.sum(0))
    assert bool((layer.weight.grad[~wm] != 0).any())                                    # dropped ones learn


@pytest.mark.parametrize("kernel,layout", [("dense", torch.strided), ("sparse", torch.sparse_csr)])
def test_activation_saved_for_backward_really_is_sparse(kernel, layout):
    layer = SwatLinear(50, 20, weight_sparsity=0.5, act_sparsity=0.9, kernel=kernel)
    x = torch.randn(8, 50)                                      # 400 entries: 40 kept
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: (saved.append(t), t)[1], lambda t: t):
        layer(x).sum().backward()
    acts = [t for t in saved if t.numel() == 400 or t.layout == torch.sparse_csr]
    assert len(acts) == 1 and acts[0].layout == layout
    nnz = acts[0]._nnz() if layout == torch.sparse_csr else int(torch.count_nonzero(acts[0]))
    assert nnz == 40


def test_conv_saves_sparse_activation():
    layer = SwatConv2d(2, 3, 3, weight_sparsity=0.5, act_sparsity=0.75)
    x = torch.randn(2, 2, 6, 6)                                 # 144 entries: 36 kept
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: (saved.append(t), t)[1], lambda t: t):
        layer(x).sum().backward()
    assert [int(torch.count_nonzero(t)) for t in saved if t.shape == x.shape] == [36]


def test_dropped_weight_gets_gradient_and_re_enters_top_k():
    layer = SwatLinear(4, 2, bias=False, weight_sparsity=0.5, act_sparsity=0, topk_period=3, kernel="dense")
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.zeros(1, 4))                                    # first forward: masks computed
    i, j = (int(v) for v in torch.nonzero(~layer.weight_mask)[0])   # a dropped weight W[i, j]
    x = torch.zeros(1, 4)
    x[0, j] = 1.0
    entered_at = None
    for step in range(60):
        opt.zero_grad()
        y = layer(x)
        sign = 1.0 if layer.weight[i, j] >= 0 else -1.0
        (-sign * y[0, i]).backward()                            # pushes |W[i, j]| up
        if step == 0:
            assert y[0, i] == 0 and layer.weight.grad[i, j] != 0   # unused in forward, yet it learns
        opt.step()
        if entered_at is None and bool(layer.weight_mask[i, j]):
            entered_at = layer.step
    assert entered_at is not None and (entered_at - 1) % 3 == 0  # only at a refresh


def test_mask_and_threshold_refresh_every_topk_period_steps():
    layer = SwatLinear(8, 8, weight_sparsity=0.5, act_sparsity=0.5, topk_period=4, kernel="dense")
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    changes = []
    for _ in range(9):
        before = (None if layer.weight_mask is None else layer.weight_mask.clone(), layer.act_threshold)
        opt.zero_grad()
        layer(torch.randn(4, 8) * 5).square().sum().backward()
        opt.step()
        changes.append(before[1] is not layer.act_threshold)
    assert changes == [True, False, False, False, True, False, False, False, True]
    with torch.no_grad():                                       # eval forwards do not count steps
        layer(torch.randn(4, 8))
    assert layer.step == 9


def test_sparse_and_dense_kernels_agree():
    torch.manual_seed(3)
    dense = SwatLinear(64, 48, weight_sparsity=0.9, act_sparsity=0.9, kernel="dense")
    sparse = SwatLinear(64, 48, weight_sparsity=0.9, act_sparsity=0.9, kernel="sparse")
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(32, 64)
    for a, b in zip(_grads(dense, x), _grads(sparse, x)):
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            torch.testing.assert_close(u, v)


def test_auto_kernel_keeps_small_layers_dense():
    layer = SwatLinear(16, 16, weight_sparsity=0.95, act_sparsity=0.95)
    layer(torch.randn(4, 16)).sum().backward()
    assert layer._plans == {4: None}


def test_structured_drops_whole_rows_and_feature_columns():
    layer = SwatLinear(10, 8, weight_sparsity=0.5, act_sparsity=0.6, structured=True)
    x = torch.randn(6, 10)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: (saved.append(t), t)[1], lambda t: t):
        layer(x).sum().backward()
    rows = layer.weight_mask.all(1)
    assert int(rows.sum()) == 4 and bool((layer.weight_mask.any(1) == rows).all())
    xs = [t for t in saved if t.shape == x.shape][0]
    assert int((xs != 0).any(0).sum()) == 4                     # 4 of 10 input features kept


def test_erk_densities_keep_the_budget_and_favour_small_layers():
    shapes = [(64, 256), (256, 256), (256, 10)]
    dens = erk_densities(shapes, 0.1)
    kept = sum(d * a * b for d, (a, b) in zip(dens, shapes))
    assert kept == pytest.approx(0.1 * sum(a * b for a, b in shapes))
    assert dens[1] < dens[0] < dens[2] <= 1.0
    capped = erk_densities([(2, 2), (1000, 1000)], 0.5)
    assert capped[0] == 1.0 and capped[1] == pytest.approx((0.5 * 1000004 - 4) / 1e6)


def test_swatify_first_layer_dense_shares_parameters_and_counts_flops():
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    w2 = net[2].weight
    swatify(net, 0.9, 0.8)
    assert type(net[0]) is nn.Linear and isinstance(net[2], SwatLinear) and isinstance(net[4], SwatLinear)
    assert net[2].weight is w2
    swat = flops.model_flops(net, 10).total(swat_only=True)
    dense = 2 * 10 * (32 * 32 + 32 * 4)
    assert swat.forward == round(dense * 0.1) and swat.grad_weight == round(dense * 0.2)


def test_swatify_converts_moe_expert_banks_and_keeps_fast_loop_parity():
    moe = MoE(8, 16, 4, TopK(top_k=2))
    moe.fused = False           # the general path, which a SWAT expert bank takes too: bit for bit
    x = torch.randn(12, 8)
    y0, _ = moe(x)
    gate = moe.router.gate
    net = nn.Sequential(nn.Linear(8, 8), moe)
    swatify(net, 0.0, 0.0)
    assert isinstance(moe.experts, SwatExpertBank) and moe.router.gate is gate
    assert torch.equal(moe(x)[0], y0)
    swatify(nn.Sequential(nn.Linear(8, 8), MoE(8, 16, 4, TopK(top_k=2))), 0.5)    # idempotent types
    net2 = nn.Sequential(nn.Linear(8, 8), MoE(8, 16, 4, TopK(top_k=2)))
    swatify(net2, 0.75, 0.5)
    m = net2[1]
    yf, _ = m(x)
    yf.square().sum().backward()
    gf = [p.grad.clone() for p in m.experts.parameters()]
    m.zero_grad()
    m.dispatch = "loop"
    yl, _ = m(x)
    yl.square().sum().backward()
    torch.testing.assert_close(yf, yl)
    for a, b in zip(gf, m.experts.parameters()):
        torch.testing.assert_close(a, b.grad)
    assert float(m.experts.w1_mask.float().mean()) == pytest.approx(0.25)
    mf = flops.model_flops(net2, 12)
    assert [k for _, k, _ in mf.layers] == ["linear", "swat_moe"]


def test_swatify_erk_and_structured_variants():
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(16 * 16, 10))
    swatify(net, 0.9, variant="erk")
    assert isinstance(net[2], SwatConv2d) and isinstance(net[4], SwatLinear)
    kept = sum((1 - m.weight_sparsity) * m.weight.numel() for m in (net[2], net[4]))
    assert kept == pytest.approx(0.1 * (net[2].weight.numel() + net[4].weight.numel()))
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    net2 = swatify(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), 0.5, variant="structured")
    assert net2[1].structured


@pytest.mark.parametrize("kwargs,name", [
    (dict(weight_sparsity=1.0), "weight_sparsity"), (dict(weight_sparsity=-0.1), "weight_sparsity"),
    (dict(weight_sparsity=0.5, act_sparsity=1.2), "act_sparsity"),
    (dict(weight_sparsity=0.5, topk_period=0), "topk_period"),
    (dict(weight_sparsity=0.5, variant="swat-x"), "variant"),
    (dict(weight_sparsity=0.5, kernel="coo"), "kernel"),
])
def test_bad_input_raises_value_error_naming_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        swatify(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), **kwargs)


@pytest.mark.parametrize("kwargs,name", [(dict(weight_sparsity=1), "weight_sparsity"),
                                         (dict(act_sparsity=float("nan")), "act_sparsity"),
                                         (dict(topk_period=0.5), "topk_period")])
def test_layer_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SwatLinear(2, 2, **kwargs)
    with pytest.raises(ValueError, match=name):
        SwatConv2d(2, 2, 1, **kwargs)
    with pytest.raises(ValueError, match=name):
        SwatExpertBank(2, 2, 2, **kwargs)


def test_fixed_mask_false_re_masks_every_step_with_the_cached_threshold():
    layer = SwatLinear(6, 6, weight_sparsity=0.5, act_sparsity=0, topk_period=100, fixed_mask=False)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(torch.randn(3, 6))
    thr = layer._wthr["weight_mask"]
    for _ in range(5):
        opt.zero_grad()
        layer(torch.randn(3, 6)).square().sum().backward()
        opt.step()
    layer(torch.randn(3, 6))                                    # step 6: no refresh (period 100)
    assert layer._wthr["weight_mask"] is thr
    assert torch.equal(layer.weight_mask, layer.weight.detach().abs() > thr)
    assert layer._plans == {}                                    # CSR kernels need a fixed mask


def test_bracketed_kth_smallest_is_exact():
    """The fast threshold equals torch.kthvalue on large tensors, ties and skew included."""
    from pwlab.swat.functions import _kth_smallest
    g = torch.Generator().manual_seed(3)
    for x in (torch.randn(300_000, generator=g).abs(), torch.randint(0, 40, (300_000,), generator=g).float(),
              torch.rand(300_000, generator=g) ** 4, torch.rand(20_000, generator=g)):
        for frac in (0.001, 0.5, 0.8, 0.9, 0.99, 0.99999):
            k = max(1, round(frac * x.numel()))
            assert _kth_smallest(x, k) == x.kthvalue(k).values


def test_magnitude_topk_threshold_and_kept_set_are_exact_in_either_storage_order():
    """The kept index set found with the threshold equals a naive top-K, in W's storage order."""
    from pwlab.swat import kernels
    from pwlab.swat.functions import magnitude_topk
    g = torch.Generator().manual_seed(5)
    for score in (torch.rand(512, 600, generator=g),                                  # bracketed search
                  torch.randint(0, 50, (400, 500), generator=g).float(),             # ties
                  torch.rand(30, 20, generator=g)):                                   # small: kthvalue
        for stored in (score, score.t().contiguous().t()):                            # row-major, (in, out)
            for s in (0.3, 0.5, 0.9, 0.99):
                t, kept = magnitude_topk(stored, s)
                assert t == score.flatten().kthvalue(round(s * score.numel())).values
                naive = (kernels.storage_flat(stored) > t).nonzero().squeeze(1)
                assert torch.equal(kept, naive)


@pytest.mark.parametrize("in_out", [False, True])
def test_sparse_plan_reused_structure_equals_masked_weight_as_values_change(in_out):
    """Index sets built once, values gathered each step: both CSRs equal the masked dense W."""
    from pwlab.swat import kernels
    w = torch.randn(40, 30)
    mask = weight_mask(w, 0.8)
    stored = lambda t: t.t().contiguous().t() if in_out else t
    plan = kernels.SparsePlan(kernels.storage_flat(stored(mask)).nonzero().squeeze(1), (40, 30), True, False, in_out)
    for _ in range(3):                                          # the weight moves; the kept set does not
        a, at = plan.weight_csr(stored(w))
        assert torch.equal(a.to_dense(), w * mask) and torch.equal(at.to_dense(), (w * mask).t())
        w = w + torch.randn(40, 30)


def test_activation_csr_and_sparsify_match_naive_top_k():
    from pwlab.swat import kernels, sparsify_activation
    x = torch.randn(16, 24)
    thr = x.abs().flatten().kthvalue(300).values
    naive = x * (x.abs() > thr)
    assert torch.equal(sparsify_activation(x, thr), naive)
    xs = kernels.act_csr_t(x, thr)
    assert xs.layout == torch.sparse_csr and xs._nnz() == 16 * 24 - 300
    assert torch.equal(xs.to_dense(), naive.t())


def _train(layer, steps, seed=0):
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        x = torch.randn(32, layer.in_features, generator=gen, requires_grad=True)
        y = layer(x)
        y.backward(torch.randn(y.shape, generator=gen))
        out.append((y.detach(), x.grad, layer.weight.grad.clone(), layer.bias.grad.clone(), layer.weight_mask.clone()))
        opt.step()
        opt.zero_grad()
    return out


def test_csr_path_with_reused_index_sets_equals_plain_masked_path_over_refreshes():
    """Training steps across three refreshes: CSR kernels (index sets reused between refreshes,
    W re-stored in (in, out) order) give the values and gradients of the masked dense path, whose
    masks are a naive top-K of the weights at each refresh."""
    torch.manual_seed(7)
    dense = SwatLinear(64, 48, weight_sparsity=0.9, act_sparsity=0.8, topk_period=3, kernel="dense")
    sparse = SwatLinear(64, 48, weight_sparsity=0.9, act_sparsity=0.8, topk_period=3, kernel="sparse")
    sparse.load_state_dict(dense.state_dict())
    w_ref = dense.weight.detach().clone()
    runs_d, runs_s = _train(dense, 8), _train(sparse, 8)
    assert sparse._plans[32].weight_sparse and sparse._plans[32].act_sparse
    for step, (d, s) in enumerate(zip(runs_d, runs_s)):
        for u, v in zip(d, s):
            torch.testing.assert_close(u, v)
        if step % 3 == 0:                                       # a refresh: the naive top-K of W now
            naive = w_ref.abs() > w_ref.abs().flatten().kthvalue(round(0.9 * w_ref.numel())).values
            assert torch.equal(d[4], naive)
        else:
            assert torch.equal(d[4], runs_d[step - 1][4])       # kept set fixed between refreshes
        w_ref -= 0.05 * d[2]
    torch.testing.assert_close(sparse.weight, dense.weight)


def test_in_out_storage_keeps_the_parameter_and_its_values_and_avoids_a_gradient_copy():
    from pwlab.swat import kernels
    layer = SwatLinear(64, 48, weight_sparsity=0.9, act_sparsity=0.9, kernel="sparse")
    weight, before = layer.weight, layer.weight.detach().clone()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)           # holds the Parameter from before
    layer(torch.randn(32, 64)).sum().backward()
    assert layer.weight is weight and kernels.in_out_order(weight) and torch.equal(weight, before)
    assert weight.grad.stride() == weight.stride()              # accumulated as is: no transposing copy
    opt.step()
    assert not torch.equal(layer.weight, before)
    assert layer.state_dict()["weight"].shape == (48, 64)
    assert layer.step == 1                                       # the re-store is not counted as a step


def test_no_grad_forward_on_the_csr_path_equals_the_masked_reference():
    layer = SwatLinear(64, 48, weight_sparsity=0.9, act_sparsity=0.9, kernel="sparse")
    layer(torch.randn(32, 64)).sum().backward()                 # masks, plan, (in, out) storage
    x = torch.randn(32, 64)
    with torch.no_grad():
        y = layer(x)
    torch.testing.assert_close(y, x @ (layer.weight * layer.weight_mask).t() + layer.bias)


def test_csr_matmuls_equal_dense_references():
    from pwlab.swat import kernels
    a = torch.randn(12, 9) * (torch.rand(12, 9) > 0.7)
    a_csr, b, x, bias = a.to_sparse_csr(), torch.randn(9, 5), torch.randn(6, 9), torch.randn(12)
    torch.testing.assert_close(kernels.csr_mm(a_csr, b), a @ b)
    torch.testing.assert_close(kernels.csr_mm_t(a_csr, x, bias), x @ a.t() + bias)
    y = kernels.csr_mm_t(a_csr, x)
    assert y.is_contiguous() and y.shape == (6, 12)
    torch.testing.assert_close(y, x @ a.t())


def test_crossover_counts_each_paths_extra_per_step_cost():
    """Equal kernels: the per-refresh work amortized over topk_period decides."""
    from pwlab.swat import kernels
    assert not kernels._faster(lambda: None, lambda: None, sparse_extra=1.0)
    assert kernels._faster(lambda: None, lambda: None, dense_extra=1.0)


def test_swatified_mlp_trains_the_same_on_csr_and_dense_kernels_with_an_optimizer_built_before():
    """swatify + Adam created beforehand: the CSR path (re-stored weights, reused index sets
    across refreshes) follows the masked dense path step by step."""
    import copy
    base = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
    runs = []
    for kernel in ("dense", "sparse"):
        net = copy.deepcopy(base)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        swatify(net, 0.9, 0.8, kernel=kernel, topk_period=2)
        gen = torch.Generator().manual_seed(2)
        losses = []
        for _ in range(6):
            x, y = torch.randn(32, 16, generator=gen), torch.randint(0, 5, (32,), generator=gen)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        runs.append((torch.stack(losses), [p.detach() for p in net.parameters()]))
    (la, pa), (lb, pb) = runs
    torch.testing.assert_close(la, lb)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b)


def test_swatify_first_layer_dense_keeps_every_sense_encoders_input_projection_dense():
    """In a multi-sense model "the first layer" is each encoder's input projection: image and
    audio read their own inputs, so both stay dense; the trunk's layers are all converted."""
    from pwlab import PathwaysModel, tasks, tiny
    ts = tasks.load(["digits", "dtmf", "wine"], seed=0)
    model = PathwaysModel(ts, tiny().model)
    projections = {name for name, m in model.named_modules()
                   if isinstance(m, nn.Linear) and name.startswith("senses.encoders.") and name.endswith("proj")}
    assert len(projections) == 2                                    # image and audio
    swatify(model, 0.9, 0.9)
    kinds = {name: type(m) for name, m in model.named_modules()}
    assert all(kinds[n] is nn.Linear for n in projections)
    converted = [n for n, k in kinds.items() if k in (SwatLinear, SwatExpertBank)]
    assert converted and not any(n.startswith("senses.encoders.") for n in converted)
    assert not any(k is nn.Linear for n, k in kinds.items() if not n.startswith("senses.") and "router" not in n)


# -- the kernel choice: a one-time calibration, never timed in forward -------------------------

def _no_timing(*args, **kwargs):
    raise AssertionError("a kernel was timed")


def test_forward_never_times_an_uncalibrated_auto_layer_runs_the_dense_kernels(monkeypatch):
    """A layer the old in-forward crossover would have timed (2^16 weights, 32 rows, 10% dense):
    forward + backward time nothing and equal the kernel="dense" layer bit for bit."""
    from pwlab.swat import kernels
    monkeypatch.setattr(kernels, "_CACHE", {})
    monkeypatch.setattr(kernels, "_faster", _no_timing)
    monkeypatch.setattr(kernels, "_seconds", _no_timing)
    with pytest.raises(AssertionError, match="timed"):          # the trap is armed for this shape
        kernels.crossover(32, 256, 256, 0.1, 0.1)
    auto = SwatLinear(256, 256, weight_sparsity=0.9, act_sparsity=0.9)
    dense = SwatLinear(256, 256, weight_sparsity=0.9, act_sparsity=0.9, kernel="dense")
    dense.load_state_dict(auto.state_dict())
    x = torch.randn(32, 256)
    (ya, gxa, gpa), (yd, gxd, gpd) = _grads(auto, x), _grads(dense, x)
    assert auto._plans == {32: None}
    assert torch.equal(ya, yd) and torch.equal(gxa, gxd)
    assert all(torch.equal(a, d) for a, d in zip(gpa, gpd))
    assert not kernels.in_out_order(auto.weight)                # the CSR grad_W storage was not taken


def test_calibrated_auto_layer_runs_csr_kernels_with_the_dense_layers_values_and_gradients(monkeypatch):
    from pwlab.swat import calibrate, kernels
    monkeypatch.setattr(kernels, "_CACHE", {})
    monkeypatch.setattr(kernels, "_faster", lambda *args, **kwargs: True)
    auto = SwatLinear(256, 256, weight_sparsity=0.9, act_sparsity=0.8, topk_period=3)
    dense = SwatLinear(256, 256, weight_sparsity=0.9, act_sparsity=0.8, topk_period=3, kernel="dense")
    dense.load_state_dict(auto.state_dict())
    assert calibrate(auto, 32) == [{"layer": "", "rows": 32, "weight_csr": True, "act_csr": True}]
    monkeypatch.setattr(kernels, "_faster", _no_timing)         # from here on nothing may be timed
    monkeypatch.setattr(kernels, "_seconds", _no_timing)
    runs_a, runs_d = _train(auto, 4), _train(dense, 4)          # 4 steps: across a refresh
    plan = auto._plans[32]
    assert plan is not None and plan.weight_sparse and plan.act_sparse
    for a, d in zip(runs_a, runs_d):
        for u, v in zip(a, d):
            torch.testing.assert_close(u, v)
    torch.testing.assert_close(auto.weight, dense.weight)


def test_calibrate_reports_every_auto_layer_and_row_count_and_times_each_key_once(monkeypatch):
    """Report by hand: CSR where eligible and "measured" faster; too few rows (< 16), too small a
    weight (< 2^16), a side with nothing dropped, structured: dense, untimed; kernel="dense" is
    not calibrated. Calibrating again re-uses the recorded timing."""
    from pwlab.swat import calibrate, kernels
    calls = []
    monkeypatch.setattr(kernels, "_CACHE", {})
    monkeypatch.setattr(kernels, "_faster", lambda *args, **kwargs: calls.append(1) or True)
    net = nn.Sequential(SwatLinear(256, 256, weight_sparsity=0.9, act_sparsity=0.9),
                        SwatLinear(256, 256, weight_sparsity=0, act_sparsity=0.9),
                        nn.Sequential(SwatLinear(256, 8, weight_sparsity=0.9, act_sparsity=0.9),
                                      SwatLinear(8, 8, kernel="dense")),
                        SwatLinear(256, 256, structured=True))
    report = calibrate(net, [32, 8])
    row = lambda name, rows, w, a: {"layer": name, "rows": rows, "weight_csr": w, "act_csr": a}
    assert report == [row("0", 32, True, True), row("0", 8, False, False),
                      row("1", 32, False, True), row("1", 8, False, False),
                      row("2.0", 32, False, False), row("2.0", 8, False, False),
                      row("3", 32, False, False), row("3", 8, False, False)]
    assert len(calls) == 3                                      # layer 0: weight and act; layer 1: act
    assert calibrate(net, (32,)) == [r for r in report if r["rows"] == 32]
    assert len(calls) == 3                                      # cached: not timed again
    assert net[0]._kernel_choice == {32: (True, True), 8: (False, False)}


@pytest.mark.parametrize("rows,match", [(0, "rows must be an integer >= 1"), (-4, "rows"), ([32, 0], "rows"),
                                        ([], "rows must name at least one"), ("32", "rows"), (2.5, "rows")])
def test_calibrate_refuses_bad_rows(rows, match):
    from pwlab.swat import calibrate
    with pytest.raises(ValueError, match=match):
        calibrate(SwatLinear(8, 8), rows)


def test_calibrate_refuses_a_module_without_swat_layers_and_fixed_kernel_layers():
    from pwlab.swat import calibrate
    with pytest.raises(ValueError, match="module must hold at least one SwatLinear"):
        calibrate(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), 32)
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        calibrate("model", 32)
    with pytest.raises(ValueError, match="kernel='auto'"):
        SwatLinear(8, 8, kernel="sparse").calibrate_kernels(32)


@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (10, 10), (50, 100), (128, 160), (300, 250)])
@pytest.mark.parametrize("kind", ["continuous", "ties", "in_out_order"])
def test_every_topk_search_gives_kthvalues_threshold_and_kept_set(shape, kind):
    """search="auto" / "bracket" / "kthvalue": the same threshold and kept set as a naive
    torch.kthvalue, below and above the direct-select size, with many ties, in either storage order."""
    from pwlab.swat.topk import SEARCHES, magnitude_threshold, magnitude_topk, storage_flat
    g = torch.Generator().manual_seed(shape[0] * shape[1])
    if kind == "ties":
        score = torch.randint(0, 12, shape, generator=g).float()
    elif kind == "in_out_order":
        score = torch.rand(shape[::-1], generator=g).t()       # (in, out) memory order
    else:
        score = torch.randn(shape, generator=g).abs()
    flat = storage_flat(score)
    for sparsity in (0.1, 0.5, 0.9, 0.99):
        drop = round(sparsity * score.numel())
        if drop == 0:
            continue
        t = flat.kthvalue(drop).values
        kept = (flat > t).nonzero().squeeze(1)
        for search in SEARCHES:
            assert magnitude_threshold(score, sparsity, search=search) == t, (search, sparsity)
            t_k, kept_k = magnitude_topk(score, sparsity, search=search)
            assert t_k == t and torch.equal(kept_k, kept), (search, sparsity)


def test_topk_search_must_be_a_known_option():
    from pwlab.swat.topk import magnitude_threshold, magnitude_topk
    with pytest.raises(ValueError, match="search must be one of 'auto', 'bracket', 'kthvalue'"):
        magnitude_threshold(torch.rand(4, 4), 0.5, search="exact")
    with pytest.raises(ValueError, match="search"):
        magnitude_topk(torch.rand(4, 4), 0.5, search="sample")
