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
    layer = MoE(d, h, bench.NUM_EXPERTS, TopK(k=bench.TOP_K), capacity_factor=1.0).double()
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
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
