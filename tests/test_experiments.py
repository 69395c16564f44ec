"""The claim experiments' plumbing and measurement math (never whether a paper effect holds).

Oracles: hand-made curves for steps-to-target and speed-ups, hand-computed mean and sample
standard deviation, a hand-counted parameter match for the MMoE pair, and tiny runs (a few
steps) that check each experiment returns plain finite numbers and its row is well formed.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from pwlab.experiments import CLAIMS, common, names


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: a second thread only adds contention on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- measurement math -------------------------------------------------------------------------

def test_steps_to_target_on_a_hand_made_curve():
    steps = [0, 10, 20, 30, 40]
    loss = [2.0, 1.5, 1.1, 0.9, 0.95]
    assert common.steps_to_target(steps, loss, 1.1) == 20        # "at or below" counts the equal value
    assert common.steps_to_target(steps, loss, 1.0) == 30
    assert common.steps_to_target(steps, loss, 2.5) == 0
    assert common.steps_to_target(steps, loss, 0.5) is None
    with pytest.raises(ValueError, match="same length"):
        common.steps_to_target(steps, loss[:-1], 1.0)


def test_speedup_and_its_bound_when_never_reached():
    assert common.speedup(300, 100, 300) == 3.0
    assert common.speedup(300, 0, 300) == 300.0          # reached at step 0: counted as 1 step
    # never reached within 300 steps: 300/300 = 1, never a success
    assert common.speedup(300, None, 300) == 1.0
    with pytest.raises(ValueError):
        common.speedup(0, 10, 300)


def test_final_value_averages_the_tail():
    assert common.final_value([5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(2.0)
    assert common.final_value([7.0]) == 7.0
    with pytest.raises(ValueError):
        common.final_value([])


def test_spread_matches_hand_computed_statistics():
    s = common.spread([1.0, 2.0, 6.0])
    assert s["mean"] == pytest.approx(3.0)
    # sample variance: ((1-3)^2 + (2-3)^2 + (6-3)^2) / 2 = 14 / 2 = 7
    assert s["std"] == pytest.approx(math.sqrt(7.0))
    assert (s["min"], s["max"], s["n"]) == (1.0, 6.0, 3)
    one = common.spread([4.2])
    assert one["std"] == 0.0 and one["mean"] == 4.2
    with pytest.raises(ValueError):
        common.spread([])
    with pytest.raises(ValueError):
        common.spread([1.0, float("nan")])


def test_fmt_shows_spread_only_for_several_seeds():
    assert common.fmt(common.spread([1.0, 3.0]), 1) == "2.0 ± 1.4"
    assert common.fmt(common.spread([2.0]), 2) == "2.00"


def test_validation_loss_is_the_mean_of_per_task_losses():
    import pwlab.tasks as T
    from pwlab.config import tiny
    from pwlab.model import PathwaysModel
    from pwlab.tasks import batches
    from torch.nn import functional as F

    tasks = T.load(["wine", "mmoe_a"], seed=0)
    torch.manual_seed(0)
    model = PathwaysModel(tasks, tiny().model)
    got = common.validation_loss(model, tasks, max_examples=20)
    expected = []
    model.eval()
    with torch.no_grad():
        for t in tasks:
            b = next(iter(batches(t, split="test", batch_size=20, task_index=model.task_index[t.name])))
            out = model([b])
            p, y = out.predictions[t.name], out.targets[t.name]
            expected.append(float(F.mse_loss(p, y)) if t.kind == "regression" else float(F.cross_entropy(p, y)))
    assert got == pytest.approx(sum(expected) / 2, rel=1e-5)
    # the model's mode is restored, whichever it was
    common.validation_loss(model, tasks, max_examples=8)
    assert not model.training
    model.train()
    common.validation_loss(model, tasks, max_examples=8)
    assert model.training


def test_train_curve_records_start_and_every_interval():
    import pwlab.tasks as T
    from pwlab.config import tiny
    from pwlab.train import Trainer

    tr = Trainer(T.load(["wine"], seed=0), tiny().with_train(batch_size=8))
    xs, ys = common.train_curve(tr, 5, 2, max_examples=16)
    assert xs == [0, 2, 4, 5]
    assert len(ys) == 4 and all(math.isfinite(y) for y in ys)


# -- the MMoE pair's models ---------------------------------------------------------------------

def test_mmoe_gates_are_per_task_softmaxes_and_the_bottom_is_parameter_matched():
    from pwlab.experiments import mmoe

    m = mmoe.MMoE(16)
    x = torch.randn(5, 16)
    outs = m(x)
    assert len(outs) == 2 and all(o.shape == (5,) for o in outs)
    # hand count: experts 8·(16·16 + 16), gates 2·(16·8 + 8), towers 2·((16·8 + 8) + (8 + 1))
    assert mmoe.parameter_count(m) == 8 * (16 * 16 + 16) + 2 * (16 * 8 + 8) + 2 * (16 * 8 + 8 + 8 + 1)
    h = mmoe.matched_bottom_width(16, mmoe.parameter_count(m))
    sb = mmoe.SharedBottom(16, h)
    assert abs(mmoe.parameter_count(sb) - mmoe.parameter_count(m)) <= 17 + 2 * 8   # one unit of width
    # with all gate weights zero, both tasks mix the experts uniformly: task outputs differ only by tower
    with torch.no_grad():
        for g in m.gates:
            g.weight.zero_(), g.bias.zero_()
        m.towers[1].load_state_dict(m.towers[0].state_dict())
    a, b = m(x)
    torch.testing.assert_close(a, b)


def test_mmoe_advantage_rule():
    from pwlab.experiments import mmoe

    assert mmoe._grows({0.1: 0.3, 0.5: 0.2, 1.0: 0.1})
    assert not mmoe._grows({0.1: 0.3, 0.5: 0.05, 1.0: 0.1})
    assert not mmoe._grows({0.1: 0.1, 0.5: 0.1, 1.0: 0.1})


# -- every experiment, a few steps ----------------------------------------------------------------

@pytest.fixture
def few_steps(monkeypatch):
    """Every experiment at a handful of steps: plumbing only."""
    from pwlab.experiments import (ablation, expert_choice, many_tasks, mmoe, modality_experts, sparse_vs_dense,
                                   swat, task_subnetworks)
    for mod in (ablation, expert_choice, many_tasks, modality_experts, sparse_vs_dense, task_subnetworks):
        monkeypatch.setattr(mod, "STEPS", {"quick": 3, "full": 3})
    monkeypatch.setattr(sparse_vs_dense, "EVAL_EVERY", 1)
    monkeypatch.setattr(expert_choice, "EVAL_EVERY", 1)
    monkeypatch.setattr(mmoe, "STEPS", {"quick": 3, "full": 3})
    monkeypatch.setattr(swat, "STEPS", {"quick": 3, "full": 3})
    monkeypatch.setattr(swat, "SETTINGS", dict(swat.SETTINGS, hidden=16))
    monkeypatch.setattr(common, "VAL_EXAMPLES", 16)


def _plain(x) -> bool:
    if isinstance(x, bool) or isinstance(x, int) or isinstance(x, str):
        return True
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, (list, tuple)):
        return all(_plain(v) for v in x)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("name", names())
def test_each_experiment_returns_plain_numbers_and_a_row(name, few_steps):
    mod = CLAIMS[name].module()
    runs = [mod.run(seed=s, quick=True) for s in (0, 1)]
    for r in runs:
        assert all(_plain(v) for v in r.values()), r
        json.dumps(r)
    assert runs[0]["seed"] == 0 and runs[1]["seed"] == 1
    row = mod.summarize(runs)
    assert isinstance(row["held"], bool) and isinstance(row["measured"], str) and row["measured"]
    assert 0 <= row["seeds_held"] <= 2
    for s in row["numbers"].values():
        assert s["n"] == 2 and s["min"] <= s["mean"] <= s["max"]


@pytest.mark.slow
def test_same_seed_same_numbers(few_steps):
    from pwlab.experiments import ablation
    a, b = ablation.run(seed=3, quick=True), ablation.run(seed=3, quick=True)
    assert a == b


@pytest.mark.slow
def test_task_subnetwork_expert_fraction_is_counted_from_the_banks(few_steps):
    from pwlab.experiments import task_subnetworks
    r = task_subnetworks.run(seed=0, quick=True)
    # task routing, top-2 of 8 in each block: the subnetwork keeps exactly 2 of 8 experts per block
    for n in task_subnetworks.TASKS:
        assert r[f"fraction/{n}"] == pytest.approx(2 / 8)


# -- the registry and the CLI --------------------------------------------------------------------

def test_registry_numbers_the_eight_claims():
    assert [CLAIMS[n].number for n in names()] == list(range(1, 9))
    for c in CLAIMS.values():
        assert c.statement and c.reference and c.criterion and c.title
        mod = c.module()
        assert callable(mod.run) and callable(mod.summarize)


def test_cli_json_rows_and_table(few_steps, capsys):
    from pwlab.bench import claims
    assert claims.main(["--json", "--quick", "--only", "mmoe", "--jobs", "1", "--regime", "default"]) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.strip()]
    assert len(lines) == 1
    row = lines[0]
    assert {"claim", "measured", "reference", "held"} <= set(row)
    assert row["number"] == 4 and row["seeds"] == 1 and isinstance(row["held"], bool)
    assert row["regime"] == "default" and row["criterion"] == CLAIMS["mmoe"].criterion
    text = claims.table([row])
    assert text.splitlines()[2].startswith("| 4 | Per-task gates help when tasks disagree | default | ")


def test_cli_reports_a_failing_experiment_as_not_measured(monkeypatch, capsys):
    from pwlab.bench import claims
    from pwlab.experiments import mmoe

    def boom(seed=0, quick=False):
        raise RuntimeError("broken on purpose")
    monkeypatch.setattr(mmoe, "run", boom)
    assert claims.main(["--quick", "--only", "mmoe", "--jobs", "1", "--regime", "default"]) == 1
    out = capsys.readouterr().out
    assert "not measured: RuntimeError: broken on purpose" in out and "| no |" in out


def test_cli_rejects_unknown_claims_and_bad_seeds():
    from pwlab.bench import claims
    with pytest.raises(SystemExit):
        claims.main(["--only", "no_such_claim"])
    with pytest.raises(SystemExit):
        claims.main(["--seeds", "0"])
