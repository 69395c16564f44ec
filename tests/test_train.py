"""Trainer: determinism, bit-identical resume, checkpoint rejection, non-finite losses, interrupts."""
from __future__ import annotations

import math
import os
import pickle
import random

import pytest
import torch

import pwlab.tasks as tasks
from pwlab import config
from pwlab.train import NonFiniteLossError, Trainer

NAMES = ["wine", "digit_words", "mmoe_a"]


@pytest.fixture(scope="module")
def task_list():
    return tasks.load(NAMES)


def _cfg(**model):
    # noisy top-k and dropout draw random numbers: resume must restore the generators too
    base = dict(d_model=16, num_heads=2, num_experts=4, d_hidden=16, router="noisy_topk", dropout=0.1)
    base.update(model)
    return config.Config(config.ModelConfig(**base), config.TrainConfig(batch_size=24, lr=3e-3), name="test")


def _strip(history):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in history]


def _params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _same_params(a, b):
    return all(torch.equal(a[k].nan_to_num(7.0), b[k].nan_to_num(7.0)) for k in a)


def test_history_records_have_the_documented_keys(task_list):
    tr = Trainer(task_list, _cfg())
    (rec,) = tr.step()
    assert rec["step"] == 1 and tr.step_count == 1
    assert {"loss", "task_loss", "aux_loss", "grad_norm", "time_s", "lr", "load/1", "dropped/1", "entropy/1",
            "aux/importance_load", "aux/z_loss"} <= set(rec)
    assert math.isclose(rec["loss"], rec["task_loss"] + rec["aux_loss"], rel_tol=1e-5)
    present = [k[5:] for k in rec if k.startswith("loss/")]
    assert present and set(present) <= set(NAMES) and sum(rec[f"n/{t}"] for t in present) == 24
    assert len(rec["load/1"]) == 4 and math.isclose(sum(rec["load/1"]), 1.0, rel_tol=1e-6)
    ev = tr.evaluate(max_examples=20)
    last = tr.history[-1]
    assert last["eval"] is True and last["step"] == 1
    assert set(last) == {"step", "eval", "split", "acc/wine", "acc/digit_words", "mse/mmoe_a"}
    assert 0 <= ev["wine"] <= 1 and ev["mmoe_a"] >= 0
    # records are plain: ints, floats, strings, bools, lists of floats
    for r in tr.history:
        for v in r.values():
            assert isinstance(v, (int, float, str, bool, list))


def test_same_seed_same_history_other_seed_differs(task_list):
    a, b = Trainer(task_list, _cfg()), Trainer(task_list, _cfg())
    a.step(4)
    b.step(4)
    assert _strip(a.history) == _strip(b.history)
    assert _same_params(_params(a), _params(b))
    c = Trainer(task_list, _cfg().with_train(seed=1))
    c.step(4)
    assert _strip(c.history) != _strip(a.history)


@pytest.mark.parametrize("how", ["load", "restore"])
def test_resume_is_bit_identical(task_list, tmp_path, how):
    full = Trainer(task_list, _cfg())
    full.step(6)
    part = Trainer(task_list, _cfg())
    part.step(3)
    part.save(tmp_path / "c.pt")
    part.step(2)                                  # diverge, then come back from the file
    if how == "load":
        resumed = Trainer.load(tmp_path / "c.pt", task_list)
    else:
        resumed = Trainer(task_list, _cfg().with_train(steps=99))   # steps may differ
        resumed.restore(tmp_path / "c.pt")
    assert resumed.step_count == 3
    resumed.step(3)
    assert _strip(resumed.history) == _strip(full.history)
    assert _same_params(_params(resumed), _params(full))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]          # no temporary file left behind


def test_load_rebuilds_the_tasks_by_name(task_list, tmp_path):
    tr = Trainer(task_list, _cfg())
    tr.step(1)
    tr.save(tmp_path / "c.pt")
    again = Trainer.load(tmp_path / "c.pt")
    assert [t.name for t in again.tasks] == NAMES
    assert torch.equal(again.tasks[0].x_train, task_list[0].x_train)


def _rejects(trainer, path, match):
    before, hist, sampler = _params(trainer), list(trainer.history), trainer.sampler.state_dict()
    with pytest.raises(ValueError, match=match):
        trainer.restore(path)
    assert _same_params(before, _params(trainer)) and trainer.history == hist
    assert torch.equal(trainer.sampler.state_dict()["generator"], sampler["generator"])


def test_checkpoint_of_another_configuration_is_rejected(task_list, tmp_path):
    other = Trainer(task_list, _cfg(d_hidden=8))
    other.save(tmp_path / "other.pt")
    tr = Trainer(task_list, _cfg())
    tr.step(1)
    _rejects(tr, tmp_path / "other.pt", r"another configuration(.|\n)*d_hidden")
    fewer = Trainer(task_list[:2], _cfg())
    fewer.save(tmp_path / "fewer.pt")
    _rejects(tr, tmp_path / "fewer.pt", "tasks")
    lr = Trainer(task_list, _cfg().with_train(lr=1e-2))
    lr.save(tmp_path / "lr.pt")
    _rejects(tr, tmp_path / "lr.pt", "train.lr")


def test_corrupt_and_foreign_files_are_rejected(task_list, tmp_path):
    tr = Trainer(task_list, _cfg())
    tr.save(tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    _rejects(tr, tmp_path / "truncated.pt", "not a readable pwlab checkpoint")
    (tmp_path / "noise.pt").write_bytes(random.Random(0).randbytes(1000))     # the same noise every run
    _rejects(tr, tmp_path / "noise.pt", "not a readable pwlab checkpoint")
    (tmp_path / "text.pt").write_text("hello")
    _rejects(tr, tmp_path / "text.pt", "not a readable pwlab checkpoint")
    torch.save({"weights": torch.ones(3)}, tmp_path / "dict.pt")
    _rejects(tr, tmp_path / "dict.pt", "not a pwlab checkpoint")
    torch.save(tr.model.state_dict(), tmp_path / "state_dict.pt")
    _rejects(tr, tmp_path / "state_dict.pt", "not a pwlab checkpoint")
    state = torch.load(tmp_path / "good.pt", weights_only=True)
    state["version"] = 99
    torch.save(state, tmp_path / "future.pt")
    _rejects(tr, tmp_path / "future.pt", "version 99")
    _rejects(tr, tmp_path / "missing.pt", "is not a file")
    with pytest.raises(ValueError, match="not a readable"):
        Trainer.load(tmp_path / "noise.pt")


class _Payload:
    """Unpickling this would create a file: the loader must refuse before running it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_file_that_runs_code_on_load_is_refused_and_runs_nothing(task_list, tmp_path):
    marker = tmp_path / "ran"
    tr = Trainer(task_list, _cfg())
    for name, obj in (("torch.pt", {"format": "pwlab-checkpoint", "x": _Payload(marker)}),):
        torch.save(obj, tmp_path / name)
        _rejects(tr, tmp_path / name, "not a readable pwlab checkpoint")
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(_Payload(marker), f)
    _rejects(tr, tmp_path / "plain.pkl", "not a readable pwlab checkpoint")
    assert not marker.exists()


def _poison_head(trainer, task):
    with torch.no_grad():
        trainer.model.heads[task].weight.fill_(float("nan"))


def test_nonfinite_loss_names_step_and_task_and_applies_nothing(task_list):
    tr = Trainer(task_list, _cfg())
    tr.step(2)
    _poison_head(tr, "wine")
    before, sampler = _params(tr), tr.sampler.state_dict()
    # 24 examples over 3 tasks: wine is in step 3 (a miss has probability (2/3)^24)
    with pytest.raises(NonFiniteLossError, match="step 3 in task 'wine'") as err:
        tr.step()
    assert err.value.task == "wine" and err.value.step == 3
    # the failing step changed nothing: parameters, sampler, step count, history
    assert tr.step_count == 2 and tr.history[-1]["step"] == 2 and len(tr.history) == 2
    assert _same_params(before, _params(tr))
    assert torch.equal(tr.sampler.state_dict()["generator"], sampler["generator"])


def test_skip_nonfinite_skips_the_batch(task_list):
    tr = Trainer(task_list, _cfg().with_train(skip_nonfinite=True))
    _poison_head(tr, "wine")
    skip_warning = r"skipped step \d+ \(\d+ in a row, at most 10\): non-finite loss nan"
    with pytest.warns(RuntimeWarning, match=skip_warning) as caught:
        tr.step(5)
    assert "(1 in a row" in str(caught[0].message)
    skipped = [r for r in tr.history if r.get("skipped")]
    applied = [r for r in tr.history if "loss" in r]
    assert skipped and all(r["nonfinite"] == "wine" and r["where"] == "heads.wine.weight" for r in skipped)
    assert all("loss/wine" not in r for r in applied)
    assert tr.step_count == len(applied) and tr.skipped_steps == len(skipped)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == len(skipped)


def test_interrupt_in_a_callback_leaves_a_resumable_trainer(task_list):
    full = Trainer(task_list, _cfg())
    full.fit(5, progress=False)

    def stop_at_2(trainer, record):
        if record["step"] == 2:
            raise KeyboardInterrupt

    tr = Trainer(task_list, _cfg(), callbacks=[stop_at_2])
    with pytest.raises(KeyboardInterrupt):
        tr.fit(5, progress=False)
    assert tr.step_count == 2 and len(tr.history) == 2
    tr.callbacks = []
    tr.fit(3, progress=False)
    assert _strip(tr.history) == _strip(full.history)


def test_interrupt_inside_a_step_applies_nothing(task_list, monkeypatch):
    full = Trainer(task_list, _cfg())
    full.step(4)
    tr = Trainer(task_list, _cfg())
    tr.step(2)
    real_forward, calls = tr.model.forward, []

    def interrupted(*a, **kw):
        real_forward(*a, **kw)              # draws routing noise and dropout, then Ctrl-C
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(tr.model, "forward", interrupted)
    before = _params(tr)
    with pytest.raises(KeyboardInterrupt):
        tr.fit(2, progress=False)
    assert calls and tr.step_count == 2 and _same_params(before, _params(tr))
    monkeypatch.undo()
    tr.step(2)
    assert _strip(tr.history) == _strip(full.history)


def test_ctrl_c_during_the_update_lands_after_the_step_is_whole(task_list, monkeypatch):
    import signal
    full = Trainer(task_list, _cfg())
    full.step(4)
    tr = Trainer(task_list, _cfg())
    tr.step(1)
    real_step = tr.optimizer.step

    def step_with_ctrl_c(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)     # Ctrl-C arrives in the middle of the update
        return real_step(*a, **kw)

    monkeypatch.setattr(tr.optimizer, "step", step_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        tr.fit(3, progress=False)
    # the update finished, was recorded, and then the interrupt was delivered
    assert tr.step_count == 2 and [r["step"] for r in tr.history] == [1, 2]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    tr.step(2)
    assert _strip(tr.history) == _strip(full.history)


def test_callbacks_observe_copies(task_list):
    seen = []

    def scribble(trainer, record):
        seen.append(record["step"])
        record["loss"] = "changed"

    tr = Trainer(task_list, _cfg(), callbacks=[scribble])
    tr.step(2)
    tr.evaluate(max_examples=8)
    assert seen == [1, 2, 2]
    assert all(isinstance(r.get("loss", 0.0), float) for r in tr.history)


@pytest.mark.parametrize("opt,sampling", [("sgd", "proportional"), ("adamw", "temperature")])
def test_optimizer_and_sampling_are_configurable_and_training_learns(task_list, opt, sampling):
    cfg = _cfg(router="topk", dropout=0.0).with_train(optimizer=opt, sampling=sampling, lr=0.05 if opt == "sgd" else 1e-2)
    tr = Trainer(task_list[:1], cfg)         # wine alone: quick to fit
    assert type(tr.optimizer).__name__.lower() == opt
    before = tr.evaluate(split="train", record=False)["wine"]
    tr.step(30)
    after = tr.evaluate(split="train", record=False)["wine"]
    first = sum(r["loss"] for r in tr.history[:5]) / 5
    last = sum(r["loss"] for r in tr.history[-5:]) / 5
    assert last < first and after > before and after > 0.8


def test_strategy_must_be_a_step_strategy():
    from pwlab.train import StepStrategy

    with pytest.raises(TypeError, match="strategy must be a pwlab.train.StepStrategy, got str"):
        Trainer(["wine"], strategy="distributed")
    assert type(Trainer(["wine"]).strategy) is StepStrategy


def test_make_optimizer_builds_the_configured_optimizer_over_given_params(task_list):
    """The public factory checkpoint loading uses: config's optimizer and lr, the model's
    parameters by default, stand-in tensors when given; the trainer's own optimizer untouched."""
    tr = Trainer(task_list, _cfg().with_train(optimizer="sgd", lr=0.02))
    own = tr.optimizer
    opt = tr.make_optimizer()
    assert isinstance(opt, torch.optim.SGD) and opt is not own and tr.optimizer is own
    assert opt.param_groups[0]["lr"] == 0.02
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in tr.model.parameters()]
    dummy = [torch.zeros_like(p) for p in tr.model.parameters()]
    stand_in = tr.make_optimizer(dummy)
    assert all(a is b for a, b in zip(stand_in.param_groups[0]["params"], dummy))
    assert isinstance(Trainer(task_list, _cfg()).make_optimizer(), torch.optim.AdamW)
    assert not hasattr(tr, "_make_optimizer")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_checkpoint_gets_the_mode_a_plain_open_would_give(task_list, tmp_path, umask):
    """The atomic write starts from mkstemp's 0600 and ends at 0666 less the umask, as open() does."""
    import stat
    old = os.umask(umask)
    try:
        Trainer(task_list, _cfg()).save(tmp_path / "c.pt")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "c.pt").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
