"""Nothing wrong passes silently: evaluation sizes, checkpoint integrity and temp files, sampler
state, non-finite gradients and skips, task and preset names, GPU checkpoints on a CPU machine."""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.serialization

import pwlab
import pwlab.tasks as tasks
from pwlab import config
from pwlab.checkpoint import CheckpointIntegrityError, clean_stale_temps, payload_digest
from pwlab.tasks import MultiTaskSampler
from pwlab.train import NonFiniteGradientError, NonFiniteLossError, Trainer, evaluate_model

NAMES = ["wine", "digit_words", "mmoe_a"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def task_list():
    return tasks.load(NAMES)


def _cfg(**train):
    model = config.ModelConfig(d_model=16, num_heads=2, num_experts=4, d_hidden=16, router="noisy_topk", dropout=0.1)
    return config.Config(model, config.TrainConfig(batch_size=24, lr=3e-3, **train), name="test")


def _params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- 1. evaluate(max_examples) --------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1, -5, 2.5, True, "5"])
def test_evaluate_refuses_max_examples_that_is_not_a_positive_int(task_list, bad):
    tr = Trainer(task_list, _cfg())
    with pytest.raises(ValueError, match=r"max_examples must be an integer >= 1 or None \(every example\) or .config."):
        tr.evaluate(max_examples=bad)
    assert tr.history == []             # no record of a non-evaluation
    with pytest.raises(ValueError, match="max_examples"):
        evaluate_model(tr.model, task_list, max_examples=bad)


def test_evaluate_max_examples_one_scores_exactly_the_first_example(task_list):
    tr = Trainer(task_list[:1], _cfg())
    got = tr.evaluate(max_examples=1, record=False)["wine"]
    # oracle: the model's prediction on the first test example alone, in eval mode
    tr.model.eval()
    with torch.no_grad():
        (b,) = list(tr.model.batches("wine", "test", 1))
        pred = tr.model([b]).predictions["wine"].argmax(-1)
    assert got == float(pred[0] == task_list[0].y_test[0])
    assert tr.evaluate(record=False) == tr.evaluate(max_examples=tr.config.train.eval_examples, record=False)


# -- 2. checkpoint integrity and temporary files ---------------------------------------------

def _flip_in_largest_record(path: Path) -> None:
    """Invert one byte in the middle of the largest stored record (tensor data) of the zip file."""
    data = bytearray(path.read_bytes())
    info = max(zipfile.ZipFile(path).infolist(), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checkpoint_with_a_flipped_byte_in_tensor_data_is_refused(task_list, tmp_path):
    tr = Trainer(task_list, _cfg())
    tr.step(1)
    tr.save(tmp_path / "c.pt")
    _flip_in_largest_record(tmp_path / "c.pt")
    # the flipped file still unpickles: only the digest tells it apart
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["digest"] != payload_digest(raw)
    before, hist = _params(tr), list(tr.history)
    with pytest.raises(CheckpointIntegrityError, match="failed its integrity check"):
        tr.restore(tmp_path / "c.pt")
    assert _same(before, _params(tr)) and tr.history == hist
    with pytest.raises(ValueError, match="changed or damaged after it was written"):
        Trainer.load(tmp_path / "c.pt")


def test_checkpoint_with_an_edited_value_is_refused(task_list, tmp_path):
    tr = Trainer(task_list, _cfg())
    tr.save(tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", state["digest"]) and state["digest"] == payload_digest(state)
    state["step"] = 7
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(CheckpointIntegrityError):
        Trainer.load(tmp_path / "edited.pt")
    state["step"] = 0
    state["digest"] = 12345
    torch.save(state, tmp_path / "bad_digest.pt")
    with pytest.raises(CheckpointIntegrityError):
        Trainer.load(tmp_path / "bad_digest.pt")


def test_payload_digest_changes_with_any_value_and_ignores_key_order():
    a = {"format": "x", "w": torch.zeros(4), "h": [{"loss": 1.0}], "n": 3}
    base = payload_digest(a)
    assert payload_digest({"n": 3, "h": [{"loss": 1.0}], "w": torch.zeros(4), "format": "x"}) == base
    w = torch.zeros(4)
    w[2] = -0.0                                        # one sign bit
    assert payload_digest({**a, "w": w}) != base
    assert payload_digest({**a, "w": torch.zeros(4, dtype=torch.float64)}) != base
    assert payload_digest({**a, "w": torch.zeros(2, 2)}) != base
    assert payload_digest({**a, "h": [{"loss": 1.0000001}]}) != base
    assert payload_digest({**a, "n": 3.0}) != base
    assert payload_digest({**a, "digest": "anything"}) == base


def test_checkpoint_written_before_digests_loads_with_a_warning(task_list, tmp_path):
    tr = Trainer(task_list, _cfg())
    tr.step(2)
    tr.save(tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    del state["digest"]
    torch.save(state, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="no integrity digest"):
        again = Trainer.load(tmp_path / "old.pt", task_list)
    assert again.step_count == 2 and _same(_params(again), _params(tr))


_KILLED_SAVE = textwrap.dedent("""
    import os, sys
    import pwlab.tasks as tasks
    from pwlab import config
    from pwlab.train import Trainer
    cfg = config.Config(config.ModelConfig(d_model=16, num_heads=2, num_experts=4, d_hidden=16),
                        config.TrainConfig(batch_size=8), name="test")
    tr = Trainer(tasks.load(["wine"]), cfg)
    os.fsync = lambda fd: os._exit(9)      # the process dies after writing, before the rename
    tr.save(sys.argv[1])
""")


def test_a_killed_save_leaves_a_temp_file_that_the_next_load_and_save_remove(task_list, tmp_path):
    target = tmp_path / "checkpoint.pt"
    tr = Trainer(task_list[:1], _cfg())
    tr.save(target)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(target)], env=env, capture_output=True, timeout=300)
    assert done.returncode == 9, done.stderr.decode()[-2000:]
    (left,) = [p for p in tmp_path.iterdir() if p.name != "checkpoint.pt"]
    assert re.fullmatch(r"\.checkpoint\.pt\.\d+\.\w+\.tmp", left.name) and left.stat().st_size > 0
    Trainer.load(target, task_list[:1])                 # a load removes it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    left.write_bytes(b"partial")                        # the same leftover again (its process is gone)
    tr.save(target)                                     # a save removes it too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_temp_files_of_running_saves_are_kept_until_stale(tmp_path):
    target = tmp_path / "c.pt"
    live = tmp_path / f".c.pt.{os.getppid()}.abc123.tmp"        # the parent process is running
    legacy = tmp_path / ".c.pt.k2j4h5_x.tmp"                    # an older pwlab's name, no process id
    mine = tmp_path / f".c.pt.{os.getpid()}.zzz.tmp"            # this process is not saving it
    other = tmp_path / ".other.pt.123.abc.tmp"                  # another checkpoint's: never touched
    unrelated = tmp_path / "notes.tmp"
    for p in (live, legacy, mine, other, unrelated):
        p.write_bytes(b"x")
    assert clean_stale_temps(target) == [mine]
    old = time.time() - 2 * 3600
    for p in (live, legacy, other, unrelated):
        os.utime(p, (old, old))
    assert sorted(clean_stale_temps(target)) == sorted([live, legacy])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, unrelated.name])


# -- 3. sampler state --------------------------------------------------------------------------

def _sampler(task_list):
    return MultiTaskSampler(task_list, batch_size=16, seed=3)


@pytest.mark.parametrize("entry,value,match", [
    ("pos", 1000, r"state\['pos'\]\[0\] \(task 'wine'\) must be an integer in \[0, "),
    ("pos", -1, r"state\['pos'\]\[0\]"),
    ("pos", 2.0, r"state\['pos'\]\[0\]"),
    ("pos", "3", r"state\['pos'\]\[0\]"),
    ("pos", True, r"state\['pos'\]\[0\]"),
    ("epoch", -2, r"state\['epoch'\]\[0\]"),
    ("perm", torch.zeros(3, dtype=torch.int64), r"state\['perm'\]\[0\] \(task 'wine'\) must be a 1-D int64"),
    ("perm", "dup", r"state\['perm'\]\[0\] \(task 'wine'\) is not a permutation"),
])
def test_sampler_refuses_a_tampered_state_and_stays_as_it_was(task_list, entry, value, match):
    s, twin = _sampler(task_list), _sampler(task_list)
    s.sample(), twin.sample()
    state = s.state_dict()
    if value == "dup":
        value = state["perm"][0].clone()
        value[1] = value[0]
    state[entry][0] = value
    with pytest.raises(ValueError, match=match):
        s.load_state_dict(state)
    a, b = s.sample(), twin.sample()                  # unchanged: the same stream as an untouched twin
    assert [(x.task, x.y.tolist()) for x in a] == [(x.task, x.y.tolist()) for x in b]
    assert sum(len(x.y) for x in a) == 16


def test_sampler_refuses_wrong_lengths_and_types(task_list):
    s = _sampler(task_list)
    good = s.state_dict()
    for bad, match in (({**good, "pos": good["pos"][:2]}, "list of 3 entries"),
                       ({**good, "steps": -1}, r"state\['steps'\]"),
                       ({k: v for k, v in good.items() if k != "perm"}, "missing"),
                       ({**good, "generator": torch.zeros(3)}, "uint8"),
                       ([1, 2], "must be a dict")):
        with pytest.raises(ValueError, match=match):
            s.load_state_dict(bad)
    s.load_state_dict(good)                           # positions at the very end of an epoch are fine
    state = s.state_dict()
    state["pos"][0] = len(task_list[0].y_train)
    s.load_state_dict(state)
    assert sum(len(b.y) for b in s.sample()) == 16


def test_checkpoint_with_a_tampered_sampler_position_is_refused_even_with_a_fresh_digest(task_list, tmp_path):
    tr = Trainer(task_list, _cfg())
    tr.step(1)
    tr.save(tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    state["sampler"]["pos"][0] = len(task_list[0].y_train) + 1000
    torch.save(state, tmp_path / "stale_digest.pt")
    with pytest.raises(CheckpointIntegrityError):
        tr.restore(tmp_path / "stale_digest.pt")
    state["digest"] = payload_digest(state)            # re-signed: the sampler check still refuses it
    torch.save(state, tmp_path / "resigned.pt")
    with pytest.raises(ValueError, match=r"does not fit this trainer: sampler state\['pos'\]\[0\]"):
        tr.restore(tmp_path / "resigned.pt")
    assert sum(v for k, v in tr.step()[0].items() if k.startswith("n/")) == 24


# -- 4. non-finite gradients, losses and skips ----------------------------------------------

TRUNK = "blocks.0.attn.qkv.weight"        # used by every task in every step


def _infinite_grad(trainer, name=TRUNK):
    """A hook that replaces the gradient of one parameter by +inf (the loss stays finite)."""
    p = dict(trainer.model.named_parameters())[name]
    return p.register_hook(lambda g: torch.full_like(g, float("inf")))


def test_an_infinite_gradient_is_not_applied_and_names_step_tasks_and_parameter(task_list):
    tr = Trainer(task_list, _cfg())
    tr.step(2)
    _infinite_grad(tr)
    before, opt = _params(tr), {k: v.clone() for k, v in tr.optimizer.state_dict()["state"][0].items()}
    with pytest.raises(NonFiniteGradientError, match=rf"gradient \(global norm inf\) at step 3 in tasks? .*"
                                                    rf"first in parameter '{re.escape(TRUNK)}'") as err:
        tr.step()
    e = err.value
    assert isinstance(e, NonFiniteLossError) and e.step == 3 and e.where == TRUNK and e.value == float("inf")
    assert e.tasks and set(e.tasks) <= set(NAMES)
    # nothing applied: the weights are the same finite numbers, the optimizer state is untouched
    after = _params(tr)
    assert _same(before, after) and all(bool(torch.isfinite(v).all()) for v in after.values())
    assert all(torch.equal(v, tr.optimizer.state_dict()["state"][0][k]) for k, v in opt.items())
    assert tr.step_count == 2 and len(tr.history) == 2


def test_skipped_nonfinite_gradients_warn_are_counted_and_stop_after_max_consecutive_skips(task_list):
    tr = Trainer(task_list, _cfg(skip_nonfinite=True), max_consecutive_skips=3)
    tr.step(1)
    handle = _infinite_grad(tr)
    before = _params(tr)
    for i in (1, 2, 3):
        with pytest.warns(RuntimeWarning, match=rf"skipped step 2 \({i} in a row, at most 3\).*{re.escape(TRUNK)}"):
            (rec,) = tr.step()
        assert rec == {"step": 1, "skipped": True, "nonfinite": "gradient", "where": TRUNK, "skipped_in_a_row": i}
    assert tr.skipped_steps == 3 and tr.consecutive_skips == 3 and tr.step_count == 1
    with pytest.raises(NonFiniteGradientError, match="3 steps in a row were skipped") as err:
        tr.step()
    assert err.value.skipped == 3 and len(tr.history) == 4 and _same(before, _params(tr))
    handle.remove()                                     # the gradient is finite again: training goes on
    (rec,) = tr.step()
    assert "loss" in rec and rec["step"] == 2 and tr.consecutive_skips == 0 and tr.skipped_steps == 3


def test_gradient_norm_and_clipping_without_the_torch_2_6_helpers_give_the_same_steps(task_list, monkeypatch):
    ref = Trainer(task_list, _cfg(grad_clip=0.01))
    ref_recs = ref.step(2)
    monkeypatch.delattr(torch.nn.utils, "get_total_norm")
    monkeypatch.delattr(torch.nn.utils, "clip_grads_with_norm_")
    old = Trainer(task_list, _cfg(grad_clip=0.01))
    recs = old.step(2)
    assert all(abs(a["grad_norm"] - b["grad_norm"]) <= 1e-5 * b["grad_norm"] for a, b in zip(recs, ref_recs))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_params(old).values(), _params(ref).values()))
    assert ref_recs[0]["grad_norm"] > 0.01             # the clip was active


def test_max_consecutive_skips_must_be_a_positive_integer(task_list):
    for bad in (0, -1, 1.5, None):
        with pytest.raises(ValueError, match="max_consecutive_skips"):
            Trainer(task_list, _cfg(), max_consecutive_skips=bad)


def test_diverged_weights_are_named_with_step_and_tasks_not_blamed_on_the_input(task_list):
    tr = Trainer(task_list, _cfg())
    tr.step(2)
    with torch.no_grad():
        dict(tr.model.named_parameters())[TRUNK].fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=rf"at step 3 in tasks? .*parameter '{re.escape(TRUNK)}' holds NaN"
                                                 r"/Inf \(the model diverged") as err:
        tr.step()
    assert err.value.step == 3 and err.value.where == TRUNK and set(err.value.tasks) <= set(NAMES)
    assert "input must be finite" not in str(err.value) and tr.step_count == 2


def test_nonfinite_loss_from_a_poisoned_head_names_the_parameter(task_list):
    tr = Trainer(task_list, _cfg())
    with torch.no_grad():
        tr.model.heads["wine"].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss nan at step 1 in task 'wine': parameter 'heads.wine.weight'"):
        tr.step()


def test_nonfinite_training_input_is_named_as_the_input_of_its_task(task_list):
    x = task_list[0].x_train.clone()
    x[:] = float("nan")
    broken = replace(task_list[0], x_train=x)
    tr = Trainer([broken], _cfg())
    with pytest.raises(NonFiniteLossError, match=r"non-finite input at step 1 in task 'wine': the training inp") as err:
        tr.step()
    assert "remove the NaN/Inf values from the task's data" in str(err.value) and err.value.where == "input"


# -- 5. task names and preset names -------------------------------------------------------------

def test_trainer_takes_task_names_and_a_preset_name():
    tr = Trainer(["wine"], config="tiny")
    assert [t.name for t in tr.tasks] == ["wine"] and tr.config == config.tiny()
    assert torch.equal(tr.tasks[0].x_train, tasks.get("wine").x_train)
    assert [t.name for t in Trainer("wine", "tiny").tasks] == ["wine"]


def test_trainer_refuses_unknown_names_with_the_allowed_ones(task_list):
    with pytest.raises(ValueError, match="preset must be one of 'tiny', 'small'"):
        Trainer(["wine"], config="huge")
    with pytest.raises(TypeError, match="config must be a pwlab Config or a preset name"):
        Trainer(["wine"], config=3)
    with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: digits"):
        Trainer(["nope"])
    with pytest.raises(TypeError, match="item 1 is int"):
        Trainer([task_list[0], 3])
    with pytest.raises(ValueError, match="at least one task"):
        Trainer([])


# -- 6. a checkpoint saved for CUDA on a machine without it ----------------------------------------

def _as_if_saved_on_cuda(trainer, path, monkeypatch):
    """Write ``trainer``'s checkpoint as a CUDA run would (simulated on any machine): the config
    says device "cuda", every tensor's storage is tagged "cuda:0", and the routing generator
    state is a CUDA (Philox) state of 16 bytes."""
    from pwlab.checkpoint import trainer_state
    state = trainer_state(trainer)
    state["config"]["train"]["device"] = "cuda"
    state["rng"]["generator"] = torch.tensor([1234, 0], dtype=torch.int64).view(torch.uint8)
    state["digest"] = payload_digest(state)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(state, path)


def test_a_checkpoint_simulated_as_saved_on_cuda_loads_on_a_cpu_only_machine(task_list, tmp_path, monkeypatch):
    tr = Trainer(task_list, _cfg())
    tr.step(2)
    _as_if_saved_on_cuda(tr, tmp_path / "gpu.pt", monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA"):     # the simulation is real: a plain load fails here
        torch.load(tmp_path / "gpu.pt", weights_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = Trainer.load(tmp_path / "gpu.pt", task_list)
    messages = [str(w.message) for w in caught]
    assert any("saved for device 'cuda'" in m and "onto 'cpu'" in m for m in messages)
    assert any("generator is reseeded" in m for m in messages)
    assert again.device == torch.device("cpu") and again.config.train.device == "cpu"
    assert again.step_count == 2 and _same(_params(again), _params(tr))
    again.step(1)                                        # and it trains on
    with pytest.warns(UserWarning, match="generator is reseeded"):
        explicit = Trainer.load(tmp_path / "gpu.pt", task_list, device="cpu")
    assert explicit.config.train.device == "cpu"
    with pytest.warns(UserWarning, match="generator is reseeded"):
        tr.restore(tmp_path / "gpu.pt")                  # into a CPU trainer, too
    assert tr.step_count == 2
    with pytest.raises(ValueError, match="no CUDA device"):
        Trainer(task_list, _cfg(device="cuda"))


# -- 7. exports ----------------------------------------------------------------------------------

def test_the_new_error_types_are_exported():
    assert pwlab.NonFiniteGradientError is NonFiniteGradientError
    assert pwlab.CheckpointIntegrityError is CheckpointIntegrityError
    assert {"NonFiniteGradientError", "CheckpointIntegrityError", "NonFiniteLossError"} <= set(pwlab.__all__)
    assert issubclass(NonFiniteGradientError, NonFiniteLossError) and issubclass(NonFiniteLossError, FloatingPointError)
    assert issubclass(CheckpointIntegrityError, ValueError)
