"""``pwlab bench moe``: what it prints, and that its einsum baseline computes our layer's output."""
from __future__ import annotations

import json

import pytest
import torch

from pwlab.bench import moe as bench


def test_einsum_baseline_is_the_same_layer():
    # the GShard-style one-hot dispatch must compute what our layer computes, or the
    # einsum_over_moe ratio compares different work
    torch.manual_seed(0)
    n, d, h = 96, 16, 24
    from pwlab.moe import MoE
    from pwlab.routing import TopK
    layer = MoE(d, h, bench.NUM_EXPERTS, TopK(top_k=bench.TOP_K), capacity_factor=1.0).double()
    x = torch.randn(n, d, dtype=torch.float64)
    y, stats = layer(x)
    assert 0 < float(stats.dropped_fraction) < 1          # capacity binds, so dropping is compared too
    assert torch.allclose(bench._EinsumMoE(layer)(x), y, atol=1e-12)


def test_dense_baseline_spends_the_same_active_flops():
    n, d, h = bench.SIZES["tiny"]
    dense = bench._DenseFFN(d, bench.TOP_K * h)
    assert dense.fc1.weight.shape == (bench.TOP_K * h, d) and dense.fc2.weight.shape == (d, bench.TOP_K * h)


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_prints_one_json_line_per_size_with_consistent_ratios(capsys, keep_threads):
    assert bench.main(["--sizes", "tiny", "--repeats", "2", "--threads", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 1
    r = lines[0]
    assert (r["size"], r["tokens"], r["d_model"], r["d_hidden"], r["threads"]) == ("tiny", 512, 64, 128, 1)
    assert r["moe_ms"] > 0 and r["dense_ms"] > 0 and r["einsum_ms"] > 0
    assert r["moe_over_dense"] == pytest.approx(r["moe_ms"] / r["dense_ms"], rel=0.01)
    assert r["einsum_over_moe"] == pytest.approx(r["einsum_ms"] / r["moe_ms"], rel=0.01)


def test_bad_threads_are_refused(capsys, keep_threads):
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "tiny", "--threads", "0"])
    assert "argument --threads: must be an integer >= 1, got '0'" in capsys.readouterr().err


def _layer(n=96, d=16, h=24, seed=0):
    from pwlab.moe import MoE
    from pwlab.routing import TopK
    torch.manual_seed(seed)
    layer = MoE(d, h, bench.NUM_EXPERTS, TopK(top_k=bench.TOP_K), capacity_factor=1.0).double()
    return layer, torch.randn(n, d, dtype=torch.float64)


def test_experts_only_side_is_the_layer_s_expert_part():
    # the breakdown's routing_ms = moe_ms − experts_ms only means something if the experts side
    # computes what the layer computes, with the routing taken as fixed
    layer, x = _layer()
    y, stats = layer(x)
    assert 0 < float(stats.dropped_fraction) < 1          # capacity binds: dropped tokens read zeros
    part = bench._ExpertsWithFixedRouting(layer, x)
    assert torch.allclose(part(x), y, atol=1e-12)
    gy = torch.randn_like(y)
    bank = layer.experts
    params = (bank.w1, bank.b1, bank.w2, bank.b2)
    want = torch.autograd.grad(y, params, gy)             # expert weights get gradient from y alone
    got = torch.autograd.grad(part(x), params, gy)
    for g_want, g_got in zip(want, got):
        assert torch.allclose(g_got, g_want, atol=1e-12)


def test_experts_only_backward_passes_gradcheck():
    layer, x = _layer(n=24, d=6, h=5)
    part = bench._ExpertsWithFixedRouting(layer, x)
    bank = layer.experts
    inputs = (x.clone().requires_grad_(), bank.w1, bank.b1, bank.w2, bank.b2)
    assert torch.autograd.gradcheck(lambda *a: bench._ExpertsOnly.apply(*a, part.routing), inputs)


def test_breakdown_adds_the_experts_side(capsys, keep_threads):
    assert bench.main(["--sizes", "tiny", "--repeats", "2", "--threads", "1", "--breakdown"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["experts_ms"] > 0
    assert r["experts_over_dense"] == pytest.approx(r["experts_ms"] / r["dense_ms"], rel=0.01)
    assert r["routing_ms"] == pytest.approx(r["moe_ms"] - r["experts_ms"], abs=0.002)


def test_breakdown_needs_the_one_node_path():
    layer, x = _layer()
    layer.fused = False
    with pytest.raises(ValueError, match="one-node path"):
        bench._ExpertsWithFixedRouting(layer, x)


def test_dropless_and_peer_columns(capsys, keep_threads):
    """The dropless side and transformers' Mixtral block (when installed) join every line."""
    pytest.importorskip("transformers", reason="the peer side needs the extra: pip install 'pwlab[hf]'")
    assert bench.main(["--sizes", "tiny", "--repeats", "2", "--threads", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["dropless_over_capacity"] == pytest.approx(r["dropless_ms"] / r["moe_ms"], rel=0.01)
    assert r["hf_over_pwlab_capacity"] == pytest.approx(r["hf_ms"] / r["moe_ms"], rel=0.01)
    assert r["hf_over_pwlab_dropless"] == pytest.approx(r["hf_ms"] / r["dropless_ms"], rel=0.01)


def test_peer_spends_our_active_flops_and_is_a_top2_moe():
    """Gated experts of width round(2H/3): three D×(2H/3) matmuls per expert ≈ our two D×H (within
    rounding); and the block is a top-2 of 8 MoE, equal to its pwlab import."""
    pytest.importorskip("transformers", reason="the peer side needs the extra: pip install 'pwlab[hf]'")
    from pwlab.interop import moe_from_hf
    for size, (n, d, h) in bench.SIZES.items():
        block = bench._Peer(d, h, seed=0).block
        per_expert = sum(p.numel() for p in block.experts.parameters()) / bench.NUM_EXPERTS
        assert abs(per_expert - 2 * d * h) <= 3 * d, size           # 3·D·round(2H/3) vs 2·D·H
    peer = bench._Peer(16, 24, seed=1)
    ours = moe_from_hf(peer.block)
    x = torch.randn(40, 16)
    assert ours.top_k == bench.TOP_K and ours.num_experts == bench.NUM_EXPERTS
    assert torch.allclose(peer(x), ours(x)[0], atol=1e-5)


def test_without_transformers_the_peer_columns_are_left_out_with_a_how_to(capsys, keep_threads, monkeypatch):
    monkeypatch.setattr(bench, "peer_available", lambda: False)
    assert bench.main(["--sizes", "tiny", "--repeats", "2", "--threads", "1"]) == 0
    out = capsys.readouterr()
    r = json.loads(out.out)
    assert "hf_ms" not in r and "dropless_over_capacity" in r
    assert "pip install 'pwlab[hf]'" in out.err


def test_dropless_layouts_compute_the_same_layer():
    """Both dropless layouts the benchmark can time are the same maths (float64)."""
    layer, x = _layer()
    layer.capacity_factor = None
    ys = []
    for layout in ("grouped", "padded"):
        layer.dropless_layout = layout
        ys.append(layer(x)[0])
    assert torch.allclose(ys[0], ys[1], atol=1e-12)
