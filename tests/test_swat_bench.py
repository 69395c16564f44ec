"""Smoke tests of the SWAT benchmarks' --quick paths: output fields only, never timings."""
import json

import pytest

from pwlab.bench import swat, swat_accuracy


def _rows(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_bench_swat_quick_prints_one_json_row_per_setting(capsys):
    assert swat.main(["--quick", "--repeats", "1"]) == 0
    rows = _rows(capsys)
    assert len(rows) == 1
    row = rows[0]
    assert {"layer", "batch", "sparsity", "swat_over_dense_time"} <= set(row)
    assert row["layer"] == "256x256" and row["batch"] == 32 and row["sparsity"] == 0.9
    assert row["swat_over_dense_time"] > 0 and row["weight_kernel"] in ("csr", "dense")
    assert {"swat_refresh_ms", "swat_ms_between_refreshes", "topk_period"} <= set(row)


def test_bench_swat_windows_each_hold_exactly_one_refresh_at_their_first_step():
    """The refresh cost is inside the timed windows: one refresh per topk_period steps, first."""
    import torch

    from pwlab.swat import SwatLinear
    layer = SwatLinear(32, 32, weight_sparsity=0.5, act_sparsity=0.5, topk_period=3, kernel="dense")
    x, g = torch.randn(8, 32), torch.randn(8, 32)
    swat._window(layer, x, g, 3)                                # warm-up window: steps 1-3
    for first in (4, 7):
        thresholds = []
        for _ in range(3):
            swat._window(layer, x, g, 1)
            thresholds.append(layer.act_threshold)
        assert layer._refreshed_at == first and layer.step == first + 2
        assert thresholds[1] is thresholds[0] and thresholds[2] is thresholds[0]


@pytest.mark.slow
def test_bench_swat_accuracy_quick_json_rows(capsys):
    assert swat_accuracy.main(["--quick", "--json"]) == 0
    rows = _rows(capsys)
    assert [(r["variant"], r["sparsity"]) for r in rows] == [("dense", 0.0), ("SWAT-U", 0.8), ("SWAT-U", 0.9),
                                                            ("SWAT-ERK", 0.9)]
    for r in rows:
        assert {"task", "variant", "sparsity", "accuracy", "train_flops", "flop_reduction", "accuracy_drop"} <= set(r)
        assert r["task"] == "digits" and 0 <= r["accuracy"] <= 1
    assert rows[0]["flop_reduction"] == 1.0 and rows[0]["accuracy_drop"] == 0.0
    assert rows[1]["flop_reduction"] == pytest.approx(5.0, rel=1e-3)
    assert rows[2]["flop_reduction"] == pytest.approx(10.0, rel=1e-3)
    assert rows[2]["train_flops"] < rows[0]["train_flops"]


def test_bench_swat_accuracy_table_quick(capsys):
    assert swat_accuracy.main(["--quick", "--tasks", "breast_cancer", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "SWAT-ERK" in out and "breast_cancer" in out


@pytest.mark.parametrize("kernel,piece", [("sparse", "grad_W CSR matmul"), ("dense", "W * mask")])
def test_bench_swat_components_name_the_pieces_of_the_chosen_path(capsys, kernel, piece):
    assert swat.main(["--quick", "--repeats", "1", "--components", "--kernel", kernel]) == 0
    parts = _rows(capsys)[0]["components_ms"]
    assert piece in parts and "refresh: activation threshold" in parts
    assert all(v >= 0 for v in parts.values())
