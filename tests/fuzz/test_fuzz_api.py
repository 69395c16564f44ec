"""Fuzz the functions and the training surface: ``losses``, ``flops``, ``tasks.get/load``,
``MultiTaskSampler``, ``Senses``, ``Config``, ``Trainer``, ``pathway_map`` and checkpoint
loading of garbage files. Each probe ends in a clear error naming the argument or a correct
(finite, right-shaped) result.
"""
from __future__ import annotations

import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pwlab import (CheckpointIntegrityError, ModelConfig, MultiTaskSampler, Senses, Trainer, TrainConfig, flops,
                   losses, pathway_map, preset, tasks)
from tests.fuzz._probe import finite_of_shape, probe

FEW = settings(max_examples=3, derandomize=True, deadline=None)
HUGE = 10**13


@pytest.fixture(scope="module")
def wine():
    return tasks.get("wine")


@pytest.fixture(scope="module")
def trainer(wine):
    cfg = preset("tiny")
    cfg.train.steps, cfg.train.batch_size, cfg.train.eval_examples = 2, 16, 32
    t = Trainer([wine], cfg)
    t.fit(progress=False)
    return t


# --- losses ------------------------------------------------------------------------------------
def _probs(n, e):
    return torch.softmax(torch.randn(n, e), -1)


_IDS = torch.zeros(4, dtype=torch.long)
LOSS_CALLS = {   # name: (call(a (4, E) probs-like tensor, or a corruption of it), argument it names)
    "cv_squared": (lambda t: losses.cv_squared(t), "x"),
    "entropy": (lambda t: losses.entropy(t), "probs"),
    "router_entropy": (lambda t: losses.router_entropy(t), "probs"),
    "z_loss": (lambda t: losses.z_loss(t), "logits"),
    "load_balancing": (lambda t: losses.load_balancing(t, _IDS), "probs"),
    "group_entropies": (lambda t: losses.group_entropies(t, _IDS, 1), "probs"),
    "limoe_entropy_losses": (lambda t: losses.limoe_entropy_losses(t, _IDS, 1), "probs"),
}
BAD_TENSORS = {
    "list": lambda t: t.tolist(),
    "none": lambda t: None,
    "str": lambda t: "probs",
    "long": lambda t: t.long(),
    "meta": lambda t: t.to("meta"),
    "nan": lambda t: torch.full_like(t, math.nan),
    "rank3": lambda t: t[None],
}


def _finite(result):
    values = result.values() if isinstance(result, dict) else (result if isinstance(result, tuple) else (result,))
    for v in values:
        assert isinstance(v, torch.Tensor) and bool(torch.isfinite(v).all()), f"non-finite or not a tensor: {v!r:.80}"


@pytest.mark.parametrize("name", list(LOSS_CALLS))
@given(n=st.integers(1, 6), e=st.integers(1, 5))
@FEW
def test_losses_on_good_input_are_finite(name, n, e):
    call, _ = LOSS_CALLS[name]
    global _IDS
    _IDS = torch.zeros(n, dtype=torch.long)
    try:
        probe(lambda: call(_probs(n, e)), "probs", check=_finite, expect="result")
    finally:
        _IDS = torch.zeros(4, dtype=torch.long)


@pytest.mark.parametrize("bad", list(BAD_TENSORS))
@pytest.mark.parametrize("name", list(LOSS_CALLS))
def test_losses_refuse_bad_tensors_naming_them(name, bad):
    call, arg = LOSS_CALLS[name]
    probe(lambda: call(BAD_TENSORS[bad](_probs(4, 3))), [arg, "probs", "x", "logits", "counts"], check=_finite)


def test_max_entropy_refuses_bad_num_experts():
    assert losses.max_entropy(4) == pytest.approx(math.log(4))
    for bad in (0, -1, 1.5, "4", None):
        probe(lambda: losses.max_entropy(bad), "num_experts", expect="error")


# --- flops -------------------------------------------------------------------------------------
FLOP_CALLS = {
    "linear_flops": (flops.linear_flops, dict(tokens=4, d_in=8, d_out=8)),
    "swat_linear_flops": (flops.swat_linear_flops, dict(tokens=4, d_in=8, d_out=8, weight_sparsity=0.5)),
    "conv2d_flops": (flops.conv2d_flops, dict(batch=2, c_in=3, c_out=4, kernel_size=3, out_hw=(4, 4))),
    "swat_conv2d_flops": (flops.swat_conv2d_flops, dict(batch=2, c_in=3, c_out=4, kernel_size=3, out_hw=(4, 4),
                                                        act_sparsity=0.5)),
    "ffn_flops": (flops.ffn_flops, dict(tokens=4, d_model=8, d_hidden=16)),
    "moe_ffn_flops": (flops.moe_ffn_flops, dict(tokens=4, d_model=8, d_hidden=16, num_experts=4, top_k=2)),
    "attention_flops": (flops.attention_flops, dict(batch=2, seq_len=5, d_model=8)),
}
FLOP_ARGS = [(f, a) for f, (_, kw) in FLOP_CALLS.items() for a in kw]


def _flops_ok(result):
    for field in ("forward", "backward", "total") if hasattr(result, "total") else ():
        v = getattr(result, field)
        assert isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f"{field}={v!r}"


@pytest.mark.parametrize("fn, arg", FLOP_ARGS, ids=[f"{f}-{a}" for f, a in FLOP_ARGS])
@given(bad=st.sampled_from([-1, 1.5, "8", None, math.nan, math.inf, [3]]))
@FEW
def test_flop_counts_refuse_bad_arguments(fn, arg, bad):
    f, good = FLOP_CALLS[fn]
    probe(lambda: f(**good), arg, check=_flops_ok, expect="result")
    if arg in ("weight_sparsity", "act_sparsity") and bad in (1.5,):
        bad = 1.0
    probe(lambda: f(**dict(good, **{arg: bad})), arg, check=_flops_ok, expect="error")


@pytest.mark.parametrize("bad, arg", [("model", "model"), (None, "model")])
def test_model_flops_refuses_what_is_not_a_model(bad, arg):
    probe(lambda: flops.model_flops(bad), arg, expect="error")


# --- tasks, sampler, senses, config ------------------------------------------------------------
@pytest.mark.parametrize("call, arg", [
    (lambda: tasks.get("nope"), "task"), (lambda: tasks.get(3), "task"), (lambda: tasks.get(None), "task"),
    (lambda: tasks.get("wine", seed=-1), "seed"), (lambda: tasks.get("wine", seed=2**70), "seed"),
    (lambda: tasks.get("wine", seed="0"), "seed"), (lambda: tasks.get("wine", test_fraction=2.0), "test_fraction"),
    (lambda: tasks.get("wine", bogus=1), "bogus"), (lambda: tasks.load([]), "names"),
    (lambda: tasks.load(3), "names"), (lambda: tasks.load(["wine", "nope"]), "nope"),
    (lambda: tasks.load("wine", seed=1.5), "seed"),
])
def test_tasks_get_and_load_refuse_bad_arguments(call, arg):
    probe(call, arg, expect="error")


@pytest.mark.parametrize("kw, arg", [
    (dict(batch_size=0), "batch_size"), (dict(batch_size=HUGE), "batch_size"), (dict(batch_size="8"), "batch_size"),
    (dict(strategy="x"), "strategy"), (dict(temperature=0), "temperature"), (dict(temperature=math.nan), "temperature"),
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"),
])
def test_sampler_refuses_bad_arguments(wine, kw, arg):
    probe(lambda: MultiTaskSampler([wine], **kw), arg, expect="error")


@pytest.mark.parametrize("make, arg", [
    (lambda w: Senses("wine", 8), "tasks"), (lambda w: Senses([w], 0), "d_model"),
    (lambda w: Senses([w], HUGE), "d_model"), (lambda w: Senses([w], 8, patch_size=0), "patch_size"),
    (lambda w: Senses([w], "8"), "d_model"), (lambda w: Senses([], 8), "tasks"), (lambda w: Senses(None, 8), "tasks"),
])
def test_senses_constructor_refuses_bad_arguments(wine, make, arg):
    probe(lambda: make(wine), arg, expect="error")


@pytest.mark.parametrize("bad", ["list", "none", "meta", "nan", "long", "wrong_width", "empty"])
def test_senses_forward(wine, bad):
    senses = Senses([wine], 8)
    x = wine.x_train[:4]
    bad_x = {"list": x.tolist(), "none": None, "meta": x.to("meta"), "nan": torch.full_like(x, math.nan),
             "long": x.long(), "wrong_width": x[:, :-1], "empty": x[:0]}[bad]
    if bad == "empty":
        probe(lambda: senses(bad_x, wine).tokens, "x", check=lambda t: finite_of_shape((0, *t.shape[1:]))(t),
              expect="result")
    else:
        probe(lambda: senses(bad_x, wine), "x", expect="error")


@pytest.mark.parametrize("kw, arg", [
    (dict(d_model=0), "d_model"), (dict(d_model=HUGE), "d_model"), (dict(num_heads=3), "num_heads"),
    (dict(num_experts=0), "num_experts"), (dict(router="x"), "router"), (dict(top_k=0), "top_k"),
    (dict(dropout=1.5), "dropout"), (dict(capacity_factor=-1.0), "capacity_factor"), (dict(pooling="x"), "pooling"),
    (dict(moe_layers="x"), "moe_layers"), (dict(activation="x"), "activation"), (dict(d_hidden=1.5), "d_hidden"),
])
def test_model_config_refuses_bad_fields(kw, arg):
    probe(lambda: ModelConfig(**kw), arg, expect="error")


@pytest.mark.parametrize("kw, arg", [
    (dict(steps=-1), "steps"), (dict(batch_size=0), "batch_size"), (dict(lr=math.nan), "lr"), (dict(lr=0), "lr"),
    (dict(optimizer="x"), "optimizer"), (dict(grad_clip=-1.0), "grad_clip"), (dict(sampling="x"), "sampling"),
    (dict(seed=-1), "seed"), (dict(eval_examples=0), "eval_examples"), (dict(device="tpu9"), "device"),
])
def test_train_config_refuses_bad_fields(kw, arg):
    probe(lambda: TrainConfig(**kw), arg, expect="error")


# --- trainer -----------------------------------------------------------------------------------
@pytest.mark.parametrize("make, arg", [
    (lambda w: Trainer(["nope"]), "nope"), (lambda w: Trainer(3), "tasks"), (lambda w: Trainer([w], "huge"), "preset"),
    (lambda w: Trainer([w], 3), "config"), (lambda w: Trainer([w], "tiny", max_consecutive_skips=0),
                                            "max_consecutive_skips"),
    (lambda w: Trainer([], "tiny"), "tasks"), (lambda w: Trainer([w], "tiny", callbacks=[3]), "callbacks"),
])
def test_trainer_constructor_refuses_bad_arguments(wine, make, arg):
    probe(lambda: make(wine), arg, expect="error")


@pytest.mark.parametrize("call, arg", [
    (lambda t: t.step(-1), "n"), (lambda t: t.step("2"), "n"), (lambda t: t.fit(steps=-3, progress=False), "steps"),
    (lambda t: t.evaluate(split="x"), "split"), (lambda t: t.evaluate(max_examples=0), "max_examples"),
    (lambda t: t.evaluate(max_examples=-5), "max_examples"), (lambda t: t.evaluate(max_examples="all"),
                                                              "max_examples"),
])
def test_trainer_methods_refuse_bad_arguments(trainer, call, arg):
    probe(lambda: call(trainer), arg, expect="error")


def test_trainer_evaluate_one_example_is_a_correct_result(trainer):
    probe(lambda: trainer.evaluate(max_examples=1), "max_examples",
          check=lambda r: _finite({k: torch.tensor(v) for k, v in r.items() if isinstance(v, (int, float))}),
          expect="result")


@pytest.mark.parametrize("kw, arg", [
    (dict(split="x"), "split"), (dict(max_examples=0), "max_examples"), (dict(batch_size=0), "batch_size"),
    (dict(tasks=["nope"]), "nope"), (dict(max_examples=-1), "max_examples"),
])
def test_pathway_map_refuses_bad_arguments(trainer, kw, arg):
    probe(lambda: pathway_map(trainer.model, **kw), arg, expect="error")


def test_pathway_map_refuses_what_is_not_a_model():
    probe(lambda: pathway_map("model"), "model", expect="error")


# --- checkpoints -------------------------------------------------------------------------------
GARBAGE = {
    "empty": b"",
    "text": b"not a checkpoint\n",
    "random": bytes(range(256)) * 4,
    "pickle_of_list": pickle.dumps([1, 2, 3]),
    "zip_header": b"PK\x03\x04" + b"\0" * 64,
}


# (a byte flipped at random may land in the zip container's alignment padding, which is no part
# of the payload: the payload flip is the next test)
@pytest.mark.parametrize("kind", list(GARBAGE) + ["missing", "directory", "truncated"])
def test_loading_a_garbage_checkpoint_is_a_clear_error(trainer, tmp_path, kind):
    path = tmp_path / "checkpoint.pt"
    if kind in GARBAGE:
        path.write_bytes(GARBAGE[kind])
    elif kind == "directory":
        path.mkdir()
    elif kind in ("truncated", "flipped"):
        trainer.save(path)
        data = bytearray(path.read_bytes())
        if kind == "truncated":
            data = data[: len(data) // 2]
        else:
            mid = len(data) // 2
            data[mid] ^= 0xFF
        path.write_bytes(bytes(data))
    names = [str(path), "checkpoint"]
    probe(lambda: Trainer.load(path), names, expect="error")
    probe(lambda: trainer.restore(path), names, expect="error")


def test_a_flipped_payload_byte_is_a_checkpoint_integrity_error(trainer, tmp_path):
    # an oracle for the digest: a flipped weight keeps the file loadable by torch, only the digest sees it
    path = tmp_path / "checkpoint.pt"
    trainer.save(path)
    state = torch.load(path, weights_only=True)
    key = next(k for k, v in state["model"].items() if isinstance(v, torch.Tensor) and v.is_floating_point())
    state["model"][key].view(-1)[0] += 1.0
    torch.save(state, path)
    err = probe(lambda: Trainer.load(path), str(path), expect="error")
    assert isinstance(err, CheckpointIntegrityError)
