"""Typed history records: fields, the flat-key view, and exact checkpoint round trips."""
from __future__ import annotations

import math

import pytest
import torch

import pwlab.tasks as tasks
from pwlab import config
from pwlab.history import BlockRecord, EvalRecord, SkippedRecord, StepRecord, from_dict
from pwlab.train import Trainer

NAMES = ["wine", "digit_words", "mmoe_a"]


@pytest.fixture(scope="module")
def task_list():
    return tasks.load(NAMES)


def _cfg(**train):
    model = config.ModelConfig(d_model=16, num_heads=2, num_experts=4, d_hidden=16, router="noisy_topk", dropout=0.1)
    return config.Config(model, config.TrainConfig(batch_size=24, lr=3e-3, **train), name="test")


def test_records_are_typed_and_their_fields_are_what_the_step_computed(task_list):
    tr = Trainer(task_list, _cfg())
    (rec,) = tr.step()
    assert isinstance(rec, StepRecord) and rec.step == 1
    assert math.isclose(rec.loss, rec.task_loss + rec.aux_loss, rel_tol=1e-5)
    assert sum(rec.examples.values()) == 24 and set(rec.task_losses) == set(rec.examples)
    assert math.isclose(rec.task_loss, sum(rec.task_losses.values()) / len(rec.task_losses), rel_tol=1e-5)
    (blk,) = rec.blocks                                   # tiny trunk: one MoE block
    assert len(rec.blocks[blk].load) == 4 and math.isclose(sum(rec.blocks[blk].load), 1.0, rel_tol=1e-6)
    assert 0.0 <= rec.blocks[blk].dropped <= 1.0
    # the flat-key view reads the same values
    assert rec[f"load/{blk}"] == list(rec.blocks[blk].load) and rec["loss"] == rec.loss
    assert {rec[f"loss/{t}"] for t in rec.task_losses} == set(rec.task_losses.values())
    ev = tr.evaluate(max_examples=8)
    last = tr.history[-1]
    assert isinstance(last, EvalRecord) and last.metrics == ev
    assert last.metric_names == {"wine": "acc", "digit_words": "acc", "mmoe_a": "mse"}
    with pytest.raises(TypeError):
        last["acc/wine"] = 0.0                           # read-only view


def test_from_dict_inverts_as_dict_exactly():
    step = StepRecord(step=3, loss=0.1 + 0.2, task_loss=0.25, aux_loss=0.30000000000000004 - 0.25,
                      task_losses={"a": 1 / 3, "b": 2 / 3}, examples={"a": 5, "b": 7}, aux={"z_loss": 1e-9},
                      blocks={1: BlockRecord((0.5, 0.5), 0.0, 0.69), 3: BlockRecord((1.0, 0.0), 0.25, 0.0)},
                      grad_norm=float("inf"), time_s=0.01, lr=3e-3)
    skip = SkippedRecord(step=3, nonfinite="gradient", skipped_in_a_row=2, where="blocks.1.ffn.experts.w1")
    skip_nowhere = SkippedRecord(step=3, nonfinite="a", skipped_in_a_row=1)
    ev = EvalRecord(step=3, split="train", metrics={"a": 0.5, "r": 1.25}, metric_names={"a": "acc", "r": "mse"})
    for r in (step, skip, skip_nowhere, ev):
        d = r.as_dict()
        assert type(d) is dict and from_dict(d) == r and type(from_dict(d)) is type(r)
        assert from_dict(d).as_dict() == d
    assert step.as_dict()["load/3"] == [1.0, 0.0] and skip_nowhere.as_dict().keys() == {
        "step", "skipped", "nonfinite", "skipped_in_a_row"}
    # a partial dict (hand-written, or an earlier version's) keeps exactly its keys
    partial = {"step": 1, "loss": 1.0, "loss/a": 1.0, "load/1": [0.25, 0.75], "custom": "kept"}
    assert from_dict(partial).as_dict() == partial and from_dict(partial).extra == {"custom": "kept"}
    with pytest.raises(ValueError, match="step"):
        from_dict({"loss": 1.0})
    with pytest.raises(ValueError, match="loss"):
        from_dict({"step": 1, "lr": 0.1})


def test_checkpoints_store_plain_dicts_and_load_the_same_typed_records(task_list, tmp_path):
    tr = Trainer(task_list, _cfg())
    tr.step(3)
    tr.evaluate(max_examples=8)
    tr.history.append(SkippedRecord(step=3, nonfinite="gradient", skipped_in_a_row=1, where="x"))
    path = tmp_path / "ckpt.pt"
    tr.save(path)
    raw = torch.load(path, weights_only=True)           # plain containers only: no class is unpickled
    assert all(type(r) is dict for r in raw["history"])
    back = Trainer.load(path)
    assert [type(r) for r in back.history] == [StepRecord, StepRecord, StepRecord, EvalRecord, SkippedRecord]
    assert back.history == tr.history
    for a, b in zip(back.history, tr.history):           # bit-exact floats, field by field
        assert a.as_dict() == b.as_dict()
    assert back.history[0].blocks == tr.history[0].blocks
