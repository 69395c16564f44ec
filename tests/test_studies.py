"""The paper-like studies' API: regimes in the registry, rows with criterion, mean ± sd and sweep.

Oracles: hand-made runs (stubbed studies, no training) whose mean, sample sd, held verdict
and seeds held are computed by hand; the studies' docstrings and constants checked against
each other; a few-step run of each study for plain numbers (slow).
"""
from __future__ import annotations

import inspect
import json
import math

import pytest
import torch

from pwlab import experiments
from pwlab.experiments import CLAIMS, REGIMES, common, names
from pwlab.experiments.studies import _sweep

STUDY_CONSTANTS = ("REGIME", "KNOB", "VALUES", "QUICK_VALUES", "PAPER_VALUE", "CRITERION", "REGIMES_TRIED",
                   "HEADLINE", "STEPS")


def test_every_claim_has_both_regimes_and_a_documented_study():
    assert REGIMES == ("default", "paper")
    for n in names():
        assert experiments.experiment(n, "default") is CLAIMS[n].module()
        study = experiments.experiment(n, "paper")
        assert study is CLAIMS[n].study()
        for const in STUDY_CONSTANTS:
            assert hasattr(study, const), (n, const)
        doc = study.__doc__
        assert "Paper-like regime" in doc and "Knob" in doc and "Held criterion (fixed before the runs" in doc
        assert f"Regimes tried: {study.REGIMES_TRIED}" in doc
        assert study.PAPER_VALUE in study.VALUES and set(study.QUICK_VALUES) <= set(study.VALUES)
        assert study.REGIMES_TRIED == len(study.VALUES)
        assert experiments.criterion(n, "paper") == study.CRITERION
        assert experiments.criterion(n, "default") == CLAIMS[n].criterion
        assert experiments.setting(n, "paper").startswith("paper: ")


def test_unknown_regime_or_claim_is_named():
    with pytest.raises(ValueError, match="regime must be one of 'default', 'paper'; got 'big'"):
        experiments.experiment("mmoe", "big")
    with pytest.raises(ValueError, match="name must be one of"):
        experiments.criterion("no_such_claim", "paper")


def test_sweep_keys_points_and_spread():
    runs = [{"seed": 0, "sweep/1.0/x": 1.0, "sweep/0.5/x": 2.0, "sweep/0.5/y": 5.0},
            {"seed": 1, "sweep/1.0/x": 3.0, "sweep/0.5/x": 2.0, "sweep/0.5/y": 7.0}]
    assert _sweep.key(0.5, "x") == "sweep/0.5/x"
    assert _sweep.points(runs[0]) == ["1.0", "0.5"]
    sw = _sweep.sweep(runs, "x")
    assert list(sw) == ["1.0", "0.5"]
    assert sw["1.0"]["mean"] == 2.0 and sw["1.0"]["std"] == pytest.approx(math.sqrt(2.0))   # (1, 3): var 2
    assert sw["0.5"]["std"] == 0.0
    assert set(_sweep.numbers(runs)) == {"sweep/1.0/x", "sweep/0.5/x", "sweep/0.5/y"}      # not "seed"
    assert _sweep.sweep(runs, "y") == {"0.5": common.spread([5.0, 7.0])}


def _mmoe_run(seed, a1, a05):
    return {"seed": seed, "steps": 1, "sweep/1.0/mmoe": 0.1, "sweep/1.0/shared_bottom": 0.1 + a1,
            "sweep/1.0/advantage": a1, "sweep/0.5/mmoe": 0.1, "sweep/0.5/shared_bottom": 0.1 + a05,
            "sweep/0.5/advantage": a05}


def test_mmoe_study_rule_on_hand_made_runs():
    from pwlab.experiments.studies import mmoe
    # advantage(0.5) > 0 and > advantage(1.0) in seeds 0 and 2; seed 1 has advantage(0.5) < 0
    runs = [_mmoe_run(0, 0.00, 0.03), _mmoe_run(1, 0.00, -0.01), _mmoe_run(2, 0.01, 0.04)]
    s = mmoe.summarize(runs)
    assert s["held"] is True and s["seeds_held"] == 2          # means: a1 = 0.0033, a05 = 0.02
    assert mmoe.headline(runs[0]) == pytest.approx(0.03)
    assert s["sweep"]["points"]["0.5"]["mean"] == pytest.approx(0.02)
    assert not mmoe.summarize([_mmoe_run(0, 0.05, 0.03)])["held"]      # shared-bottom did not degrade more


def test_sparse_study_needs_the_trend_with_experts():
    from pwlab.experiments.studies import sparse_vs_dense as m

    def r(seed, low, top):
        return {"seed": seed, "steps": 1, "dense_final_loss": 1.0, "sweep/2/step_ratio": low, "sweep/2/final_loss": 1.0,
                "sweep/32/step_ratio": top, "sweep/32/final_loss": 1.0}
    assert m.summarize([r(0, 1.2, 1.5)])["held"]
    assert not m.summarize([r(0, 1.6, 1.5)])["held"]          # sparse wins, but no gain from more experts
    assert not m.summarize([r(0, 0.5, 0.9)])["held"]          # more experts help, but sparse does not win


def test_swat_study_thresholds():
    from pwlab.experiments.studies import swat

    def r(ratio, gap):
        return {"seed": 0, "steps": 1, "sweep/1024/dense_acc": 90.0, "sweep/1024/swat_acc": 90.0 - gap,
                "sweep/1024/gap": gap, "sweep/1024/flop_ratio": ratio}
    assert swat.summarize([r(8.0, 5.0)])["held"]               # both bounds inclusive
    assert not swat.summarize([r(7.9, 0.0)])["held"]
    assert not swat.summarize([r(9.0, 5.1)])["held"]


def test_cli_paper_row_from_a_stubbed_study(monkeypatch, capsys):
    """The JSON row of a paper regime: regime, criterion, headline mean and sample sd, seeds held, sweep."""
    from pwlab.bench import claims
    from pwlab.experiments.studies import mmoe

    hand = {0: (0.0, 0.03), 1: (0.0, -0.01), 2: (0.01, 0.04)}
    monkeypatch.setattr(mmoe, "run", lambda seed=0, quick=False: _mmoe_run(seed, *hand[seed]))
    assert claims.main(["--json", "--only", "mmoe", "--regime", "paper", "--seeds", "3", "--jobs", "1"]) == 0
    rows = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.strip()]
    assert len(rows) == 1
    row = rows[0]
    assert row["regime"] == "paper" and row["criterion"] == mmoe.CRITERION and row["seeds"] == 3
    heads = [0.03, -0.01, 0.03]                                 # advantage(0.5) − advantage(1.0) per seed
    assert row["mean"] == pytest.approx(sum(heads) / 3)
    m = sum(heads) / 3
    assert row["sd"] == pytest.approx(math.sqrt(sum((h - m) ** 2 for h in heads) / 2))
    assert row["held"] is True and row["seeds_held"] == 2 and row["regimes_tried"] == 4
    assert set(row["sweep"]["points"]) == {"1.0", "0.5"} and row["sweep"]["paper_value"] == 0.5
    assert claims.table([row]).splitlines()[2].startswith("| 4 | Per-task gates help when tasks disagree | paper | ")


def test_cli_runs_both_regimes_by_default(monkeypatch, capsys):
    from pwlab.bench import claims
    from pwlab.experiments import mmoe as default_mmoe
    from pwlab.experiments.studies import mmoe

    monkeypatch.setattr(mmoe, "run", lambda seed=0, quick=False: _mmoe_run(seed, 0.0, 0.01))
    d = {"seed": 0, "steps": 1, "params/mmoe": 1, "params/shared_bottom": 1}
    for p, adv in ((1.0, 0.0), (0.5, 0.1), (0.1, 0.2)):
        d.update({f"mmoe/{p}": 0.1, f"shared_bottom/{p}": 0.1 + adv, f"advantage/{p}": adv})
    monkeypatch.setattr(default_mmoe, "run", lambda seed=0, quick=False: dict(d, seed=seed))
    assert claims.main(["--json", "--quick", "--only", "mmoe", "--jobs", "1"]) == 0
    rows = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.strip()]
    assert [(r["regime"], r["held"], r["seeds"]) for r in rows] == [("default", True, 1), ("paper", True, 1)]
    assert rows[0]["mean"] == pytest.approx(0.2) and rows[0]["sd"] == 0.0
    with pytest.raises(SystemExit):
        claims.main(["--regime", "big"])


def test_sweep_values_and_merge():
    assert _sweep.values(None, (1, 2, 3)) == (1, 2, 3)
    assert _sweep.values([3, 1], (1, 2, 3)) == (3, 1)
    for bad in ([], [4], [1, 5]):
        with pytest.raises(ValueError, match=r"values must be a non-empty subset of \[1, 2, 3\]"):
            _sweep.values(bad, (1, 2, 3))
    a = {"seed": 0, "steps": 5, "sweep/1/x": 0.5}
    b = {"seed": 0, "steps": 5, "sweep/2/x": 0.25}
    assert _sweep.merge([a, b]) == {"seed": 0, "steps": 5, "sweep/1/x": 0.5, "sweep/2/x": 0.25}
    assert list(_sweep.merge([b, a])) == ["seed", "steps", "sweep/2/x", "sweep/1/x"]
    with pytest.raises(ValueError, match="the parts disagree on 'steps'"):
        _sweep.merge([a, dict(b, steps=6)])


def test_cli_runs_each_sweep_point_of_each_seed_as_its_own_job(monkeypatch, capsys):
    """A study whose ``run`` takes ``values`` is run one point at a time and merged in sweep order."""
    from pwlab.bench import claims
    from pwlab.experiments.studies import mmoe

    calls = []

    def run(seed=0, quick=False, values=None):
        calls.append((seed, tuple(values)))
        whole = _mmoe_run(seed, 0.0, 0.02 * (seed + 1))
        return {k: v for k, v in whole.items() if not k.startswith("sweep/") or k.split("/")[1] in map(str, values)}
    monkeypatch.setattr(mmoe, "run", run)
    assert claims.main(["--json", "--only", "mmoe", "--regime", "paper", "--seeds", "2", "--jobs", "1"]) == 0
    assert calls == [(s, (v,)) for s in (0, 1) for v in mmoe.VALUES]     # VALUES: 1.0, 0.9, 0.5, 0.1
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["seeds"] == 2 and list(row["sweep"]["points"]) == ["1.0", "0.5"]
    assert row["mean"] == pytest.approx((0.02 + 0.04) / 2)     # advantage(0.5) − advantage(1.0) per seed


@pytest.fixture
def study_few_steps(monkeypatch):
    from pwlab.experiments.studies import (ablation, expert_choice, many_tasks, mmoe, modality_experts,
                                           sparse_vs_dense, swat, task_subnetworks)
    for mod in (ablation, expert_choice, many_tasks, mmoe, modality_experts, sparse_vs_dense, swat, task_subnetworks):
        monkeypatch.setattr(mod, "STEPS", {"quick": 2, "full": 2})
    monkeypatch.setattr(sparse_vs_dense, "EVAL_EVERY", 1)
    monkeypatch.setattr(expert_choice, "EVAL_EVERY", 1)
    monkeypatch.setattr(common, "VAL_EXAMPLES", 16)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("name", names())
def test_each_study_returns_plain_numbers_and_a_row(name, study_few_steps):
    study = experiments.experiment(name, "paper")
    run = study.run(seed=0, quick=True)
    json.dumps(run)
    assert {v for v in _sweep.points(run)} == {str(v) for v in study.QUICK_VALUES}
    for v in run.values():
        assert not isinstance(v, float) or math.isfinite(v)
    row = study.summarize([run])
    assert isinstance(row["held"], bool) and row["measured"] and row["seeds_held"] in (0, 1)
    assert math.isfinite(study.headline(run)) and row["sweep"]["points"]
    if "values" in inspect.signature(study.run).parameters:
        # the points are independent: each measured alone, merged, equals the whole run
        parts = [study.run(seed=0, quick=True, values=[v]) for v in study.QUICK_VALUES]
        assert _sweep.merge(parts) == run and list(_sweep.merge(parts)) == list(run)
    else:
        assert name == "sparse_vs_dense"                          # its points share one dense baseline


def test_cli_from_saved_json_prints_table_and_sweeps(monkeypatch, capsys, tmp_path):
    from pwlab.bench import claims
    from pwlab.experiments.studies import mmoe

    monkeypatch.setattr(mmoe, "run", lambda seed=0, quick=False: _mmoe_run(seed, 0.0, 0.03))
    assert claims.main(["--json", "--only", "mmoe", "--regime", "paper", "--seeds", "2", "--jobs", "1"]) == 0
    saved = tmp_path / "rows.jsonl"
    saved.write_text(capsys.readouterr().out)
    assert claims.main(["--from", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "| 4 | Per-task gates help when tasks disagree | paper |" in out
    # the sweep line: the paper-like point in bold, mean ± sd over the two seeds (both 0.03: sd 0)
    assert "**0.5: 0.030 ± 0.000**" in out and "1.0: 0.000 ± 0.000" in out and "2/2 seeds" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"number": 1}\n')
    with pytest.raises(ValueError, match="line 1 is not a claims row"):
        claims.main(["--from", str(bad)])


def test_saved_full_runs_ship_with_the_package():
    """The saved --json outputs docs/claims.md is made from are package data, readable by name
    (notebooks and their hand-outs read them wherever they run); a wrong name lists the names."""
    from pwlab.bench.claims import saved_rows
    paper = saved_rows("paper_full")
    assert [r["number"] for r in paper] == list(range(1, 9))
    assert all(r["regime"] == "paper" and r["seeds"] == 3 and r["sweep"]["points"] for r in paper)
    assert {r["regime"] for r in saved_rows("default_full")} == {"default"}
    with pytest.raises(ValueError, match="name must be one of"):
        saved_rows("../../etc/passwd")
