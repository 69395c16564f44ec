"""The offline task suite: registry, contracts, determinism, splits, oracles, sampler."""
from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pwlab.tasks as tasks
from pwlab.tasks import audio, text
from pwlab.tasks.base import Task

NAMES = ["digits", "digit_parity", "dtmf", "digit_words", "arithmetic", "wine", "breast_cancer", "mmoe_a", "mmoe_b"]


@pytest.fixture(scope="module")
def suite():
    return {t.name: t for t in tasks.load("all", seed=0)}


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.tobytes() for r in x.reshape(len(x), -1).numpy()}


# ---- registry and data card ------------------------------------------------------------

def test_registry_names_and_data_card():
    assert tasks.names() == NAMES
    card = tasks.describe()
    assert [r["name"] for r in card] == NAMES
    assert {r["sense"] for r in card} == {"image", "audio", "text", "tabular"}
    assert set(card[0]) >= {"name", "sense", "kind", "classes", "n_train", "n_test", "chance"}
    kinds = {r["name"]: r["kind"] for r in card}
    assert kinds["mmoe_a"] == kinds["mmoe_b"] == "regression"
    assert sum(k == "classification" for k in kinds.values()) == 7


def test_chance_by_hand():
    x = torch.zeros(3, 2)
    clf = Task("c", "tabular", "classification", ("a", "b"), x, torch.tensor([0, 1, 1]), x,
               torch.tensor([0, 0, 1]), "accuracy")
    reg = Task("r", "tabular", "regression", (), x, torch.zeros(3), x, torch.tensor([1.0, 2.0, 3.0]), "mse")
    assert tasks.chance(clf) == pytest.approx(2 / 3)          # always "a": 2 of 3 right
    assert tasks.chance(reg) == pytest.approx(2 / 3)          # mean 2: ((1)^2 + 0 + 1^2) / 3


def test_task_owns_its_loss_and_score_by_hand():
    x = torch.zeros(2, 2)
    clf = Task("c", "tabular", "classification", ("a", "b"), x, torch.tensor([0, 1]), x, torch.tensor([0, 1]),
               "accuracy")
    reg = Task("r", "tabular", "regression", (), x, torch.zeros(2), x, torch.zeros(2), "mse")
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([1, 1])
    # cross-entropy: -log(1/2) for the tie, -log(1/(1+e^2)) for the wrong confident guess
    per = torch.tensor([math.log(2.0), math.log(1 + math.e ** 2)])
    torch.testing.assert_close(clf.loss(logits, y, reduction="none"), per)
    assert float(clf.loss(logits, y)) == pytest.approx(float(per.mean()))
    assert float(clf.loss(logits, y, reduction="sum")) == pytest.approx(float(per.sum()))
    # score: the arg-max class (ties go to the first) against the target
    assert clf.score(logits, y).tolist() == [0.0, 0.0] and clf.score(logits, torch.tensor([0, 0])).tolist() == [1.0, 1.0]
    pred, target = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0])
    assert reg.loss(pred, target, reduction="none").tolist() == [1.0, 9.0] and float(reg.loss(pred, target)) == 5.0
    assert reg.score(pred, target).tolist() == [1.0, 9.0]
    with pytest.raises(ValueError, match="reduction"):
        clf.loss(logits, y, reduction="avg")


def test_describe_chance_matches_majority(suite):
    for rec in tasks.describe(["digits", "wine", "mmoe_a"]):
        t = suite[rec["name"]]
        if t.kind == "classification":
            expected = max((t.y_test == c).sum().item() for c in range(t.num_classes)) / len(t.y_test)
        else:
            expected = ((t.y_test - t.y_test.mean()) ** 2).mean().item()
        assert rec["chance"] == pytest.approx(expected, abs=1e-4)


def test_bad_names_and_options():
    with pytest.raises(ValueError, match="known tasks: digits, digit_parity"):
        tasks.get("mnist")
    with pytest.raises(ValueError, match="unknown task 'cifar'"):
        tasks.load(["digits", "cifar"])
    with pytest.raises(ValueError, match="at least one task"):
        tasks.load([])
    with pytest.raises(ValueError, match="options"):
        tasks.get("digits", p=0.3)
    with pytest.raises(ValueError, match="taken by none"):
        tasks.load(["digits", "wine"], p=0.3)
    for seed in (-1, 1.5, "0", None):
        with pytest.raises(ValueError, match="seed"):
            tasks.get("wine", seed=seed)
    a, d = tasks.load(["mmoe_a", "digits"], p=0.9)        # options go where they are taken
    assert a.meta["p"] == 0.9 and "p" not in d.meta


@pytest.mark.parametrize("p", [1.5, -1.01, float("nan"), "0.5", True])
def test_p_outside_range(p):
    with pytest.raises(ValueError, match=r"p \(the task correlation\)"):
        tasks.get("mmoe_b", p=p)


# ---- contracts, determinism, splits ---------------------------------------------------

def test_shapes_and_dtypes(suite):
    for t in suite.values():
        for x, y in ((t.x_train, t.y_train), (t.x_test, t.y_test)):
            assert len(x) == len(y) > 0
            if t.sense == "image":
                assert x.shape[1:] == (8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
            elif t.sense == "audio":
                assert x.shape[1:] == (t.meta["length"],) and x.dtype == torch.float32
            elif t.sense == "text":
                assert x.dtype == torch.long and x.shape[1] == t.meta["length"]
                assert 0 <= x.min() and x.max() < text.vocab_size
                assert t.meta["vocab"] == text.VOCAB and t.meta["vocab_size"] == text.vocab_size
            else:
                assert x.shape[1] == t.meta["num_features"] and x.dtype == torch.float32
            if t.kind == "classification":
                assert y.dtype == torch.long and 0 <= y.min() and y.max() < t.num_classes
                assert t.metric == "accuracy" and t.out_dim == t.num_classes
            else:
                assert y.dtype == torch.float32 and t.metric == "mse" and t.out_dim == 1


def test_same_seed_same_data_other_seed_other_data(suite):
    again = {t.name: t for t in tasks.load("all", seed=0)}
    other = {t.name: t for t in tasks.load("all", seed=1)}
    for name, t in suite.items():
        for field in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(t, field), getattr(again[name], field)), (name, field)
        assert not torch.equal(t.x_test, other[name].x_test), name


def test_no_train_test_overlap(suite):
    for t in suite.values():
        assert not (_rows(t.x_train) & _rows(t.x_test)), t.name


def test_class_balance(suite):
    for t in suite.values():
        if t.kind != "classification":
            continue
        tr = torch.bincount(t.y_train, minlength=t.num_classes).double() / len(t.y_train)
        te = torch.bincount(t.y_test, minlength=t.num_classes).double() / len(t.y_test)
        assert (tr > 0).all(), t.name
        if t.name != "arithmetic":             # arithmetic's test classes are the held-out pairs' sums
            assert (tr - te).abs().max() < 0.05, t.name     # stratified: same proportions in both splits
    counts = torch.bincount(suite["dtmf"].y_train)
    assert counts.tolist() == [200] * 10
    for name in ("digits", "digit_words"):
        counts = torch.bincount(suite[name].y_train).double()
        assert counts.max() / counts.min() < 1.15, name


# ---- per-task oracles ----------------------------------------------------------------

def test_digit_parity_is_digits_mod_2(suite):
    d, p = suite["digits"], suite["digit_parity"]
    assert torch.equal(d.x_train, p.x_train) and torch.equal(p.y_test, d.y_test % 2)


def test_tabular_standardized_with_training_statistics_only():
    from sklearn.datasets import load_breast_cancer, load_wine

    for name, loader in (("wine", load_wine), ("breast_cancer", load_breast_cancer)):
        t = tasks.get(name, seed=3)
        raw = torch.tensor(loader().data)
        mean, std = torch.tensor(t.meta["mean"]), torch.tensor(t.meta["std"])
        back_tr, back_te = t.x_train * std + mean, t.x_test * std + mean
        # both splits undo to rows of the raw table with the same (mean, std) ...
        for back in (back_tr, back_te):
            nearest = raw[torch.cdist(back.double(), raw).argmin(1)]
            assert torch.allclose(back.double(), nearest, rtol=1e-4, atol=1e-4)
        # ... and those are the training rows' statistics, not the test rows' or all rows'
        assert torch.allclose(back_tr.mean(0), mean, rtol=1e-4, atol=1e-3)
        assert torch.allclose(back_tr.std(0, unbiased=False), std, rtol=1e-3)
        assert not torch.allclose(back_te.mean(0), mean, rtol=1e-2)


def test_dtmf_keypad_frequencies():
    assert audio.DTMF_HZ[0] == (941.0, 1336.0) and audio.DTMF_HZ[5] == (770.0, 1336.0)
    assert audio.DTMF_HZ[9] == (852.0, 1477.0) and audio.DTMF_HZ[1] == (697.0, 1209.0)
    # a clean, full-length tone: the two largest FFT peaks sit at the keypad's frequencies
    sr, n = 4000, 4000                                          # 1 s: 1 Hz bins
    wave = audio.synthesize(torch.arange(10), torch.Generator().manual_seed(0), sample_rate=sr, length=n,
                            min_duration=1.0, max_duration=1.0, noise=(0.0, 0.0))
    spec = torch.fft.rfft(wave).abs()
    for d in range(10):
        peaks = sorted(torch.topk(spec[d], 2).indices.tolist())
        assert peaks == [int(f) for f in audio.DTMF_HZ[d]], d


def test_dtmf_duration_offset_and_length(suite):
    t = suite["dtmf"]
    assert t.meta["sample_rate"] == 4000 and t.x_train.shape[1] == 1000
    with pytest.raises(ValueError, match="sample_rate"):
        tasks.get("dtmf", sample_rate=2000)


def test_digit_words_oracle_without_noise():
    t = tasks.get("digit_words", seed=0, noise=0.0, n_train=20, n_test=10)
    words = {(w, d) for lang in text.DIGIT_WORDS.values() for d, w in enumerate(lang)}
    for s, y in zip(text.decode(torch.cat([t.x_train, t.x_test])), torch.cat([t.y_train, t.y_test]).tolist()):
        assert (s, y) in words
    assert len(text.DIGIT_WORDS) >= 3
    with pytest.raises(ValueError, match="distinct strings"):
        tasks.get("digit_words", noise=0.0)


def test_text_vocabulary_round_trip():
    s = ["fünf", "3 + 4", "zéro"]
    ids = text.encode(s, 6)
    assert ids.shape == (3, 6) and ids[1, 5] == 0 and text.decode(ids) == s
    with pytest.raises(ValueError, match="VOCAB"):
        text.encode(["Seven!"], 8)


@pytest.mark.parametrize("holdout", ["commuted", "unseen"])
def test_arithmetic_labels_and_holdout(holdout):
    t = tasks.get("arithmetic", seed=2, holdout=holdout)
    pair = lambda s: tuple(int(v) for v in s.replace(" ", "").split("+"))  # noqa: E731
    train = {pair(s) for s in text.decode(t.x_train)}
    for split_x, split_y in ((t.x_train, t.y_train), (t.x_test, t.y_test)):
        for s, y in zip(text.decode(split_x), split_y.tolist()):
            a, b = pair(s)
            assert a + b == y
    for s in text.decode(t.x_test):
        a, b = pair(s)
        assert (a, b) not in train
        assert ((b, a) in train) == (holdout == "commuted")
    with pytest.raises(ValueError, match="holdout"):
        tasks.get("arithmetic", holdout="random")


def test_mmoe_pair_correlation_and_shared_inputs():
    for p in (-1.0, -0.5, 0.0, 0.5, 1.0):
        a, b = tasks.load(["mmoe_a", "mmoe_b"], seed=0, p=p, m=0)   # m = 0: y_k = w_k^T x + noise
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
        r = torch.corrcoef(torch.stack([a.y_train, b.y_train]))[0, 1].item()
        # corr(w1.x + e1, w2.x + e2) = p c^2 / (c^2 + 0.01) for unit-norm u1, u2 and x ~ N(0, I)
        assert r == pytest.approx(p / 1.01, abs=0.03)
    a1, a2 = tasks.get("mmoe_a", p=0.1), tasks.get("mmoe_a", p=0.9)
    assert torch.equal(a1.y_train, a2.y_train)                 # task a does not depend on p
    assert abs(a1.y_train.mean().item()) < 1e-5 and a1.y_train.std().item() == pytest.approx(1, abs=1e-4)


# ---- sampler and evaluation batches ---------------------------------------------------

def _toy(name: str, n: int) -> Task:
    x = torch.arange(n, dtype=torch.float32)[:, None]        # x identifies the example
    return Task(name, "tabular", "regression", (), x, x[:, 0], x[:2], x[:2, 0], "mse", meta={"num_features": 1})


def test_mixing_probabilities_by_hand():
    ts = [_toy("a", 100), _toy("b", 300)]
    probs = lambda **kw: tasks.MultiTaskSampler(ts, **kw).probabilities.tolist()  # noqa: E731
    assert probs(strategy="proportional") == pytest.approx([0.25, 0.75])
    assert probs(strategy="uniform") == pytest.approx([0.5, 0.5])
    assert probs(strategy="temperature", temperature=2.0) == pytest.approx([10 / (10 + math.sqrt(300)),
                                                                            math.sqrt(300) / (10 + math.sqrt(300))])
    assert probs(strategy="temperature", temperature=1.0) == pytest.approx([0.25, 0.75])


def test_sampler_steps_mix_tasks_without_replacement_within_an_epoch():
    ts = [_toy("a", 50), _toy("b", 150)]
    s = tasks.MultiTaskSampler(ts, batch_size=16, seed=0)
    seen = {0: [], 1: []}
    hits = torch.zeros(2)
    for _ in range(100):
        step = s.sample()
        assert sum(len(b.y) for b in step) == 16
        assert [b.task_index for b in step] == sorted({b.task_index for b in step})
        for b in step:
            assert b.task == ts[b.task_index].name and b.sense == "tabular"
            seen[b.task_index] += b.x[:, 0].long().tolist()
            hits[b.task_index] += len(b.y)
    for k, n in ((0, 50), (1, 150)):
        full_epochs = len(seen[k]) // n
        for e in range(full_epochs):                # every epoch is a permutation of the task
            assert sorted(seen[k][e * n:(e + 1) * n]) == list(range(n))
    assert (hits / hits.sum()).tolist() == pytest.approx([0.25, 0.75], abs=0.03)


@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4), batch_size=st.integers(1, 50),
       strategy=st.sampled_from(tasks.STRATEGIES), seed=st.integers(0, 2**31 - 1))
def test_sampler_properties(sizes, batch_size, strategy, seed):
    ts = [_toy(f"t{i}", n) for i, n in enumerate(sizes)]
    s = tasks.MultiTaskSampler(ts, batch_size=batch_size, strategy=strategy, seed=seed)
    assert s.probabilities.sum().item() == pytest.approx(1.0) and (s.probabilities > 0).all()
    drawn = [[] for _ in sizes]
    for _ in range(6):
        step = s.sample()
        assert sum(len(b.y) for b in step) == batch_size
        for b in step:
            drawn[b.task_index] += b.x[:, 0].long().tolist()
    for k, n in enumerate(sizes):       # the first min(len, n) draws of a task are distinct examples
        first = drawn[k][:n]
        assert len(set(first)) == len(first) and all(0 <= i < n for i in first)
    assert [round(e, 9) for e in s.epochs] == [round(len(d) / n, 9) for d, n in zip(drawn, sizes)]


def test_sampler_seed_and_state_dict_round_trip():
    ts = tasks.load(["wine", "digits", "arithmetic"])
    a, b = (tasks.MultiTaskSampler(ts, batch_size=32, strategy="temperature", seed=7) for _ in range(2))
    for _ in range(5):
        for x, y in zip(a.sample(), b.sample()):
            assert x.task_index == y.task_index and torch.equal(x.x, y.x)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    c = tasks.MultiTaskSampler(ts, batch_size=32, strategy="temperature", seed=123)
    c.load_state_dict(torch.load(buf, weights_only=True))
    for _ in range(30):                                     # crosses the wine epoch boundary
        for x, y in zip(a.sample(), c.sample()):
            assert x.task_index == y.task_index and torch.equal(x.x, y.x) and torch.equal(x.y, y.y)
    d = tasks.MultiTaskSampler(ts, batch_size=32, strategy="temperature", seed=8)
    assert not all(torch.equal(x.x, y.x) for x, y in zip(d.sample(), b.sample()))


def test_sampler_bad_input():
    with pytest.raises(ValueError, match="tasks"):
        tasks.MultiTaskSampler([])
    with pytest.raises(ValueError, match="strategy"):
        tasks.MultiTaskSampler([_toy("a", 5)], strategy="round_robin")
    with pytest.raises(ValueError, match="temperature"):
        tasks.MultiTaskSampler([_toy("a", 5)], strategy="temperature", temperature=0)
    with pytest.raises(ValueError, match="batch_size"):
        tasks.MultiTaskSampler([_toy("a", 5)], batch_size=0)
    with pytest.raises(ValueError, match="seed"):
        tasks.MultiTaskSampler([_toy("a", 5)], seed="x")
    with pytest.raises(ValueError, match="state holds tasks"):
        tasks.MultiTaskSampler([_toy("b", 5)]).load_state_dict(tasks.MultiTaskSampler([_toy("a", 5)]).state_dict())


def test_batches_cover_the_split_in_order(suite):
    t = suite["wine"]
    parts = list(tasks.batches(t, "test", batch_size=10, task_index=3))
    assert [len(b.y) for b in parts] == [10, 10, 10, 10, 5]
    assert all(b.task_index == 3 and b.task == "wine" for b in parts)
    assert torch.equal(torch.cat([b.x for b in parts]), t.x_test)
    assert torch.equal(torch.cat([b.y for b in tasks.batches(t, "train")]), t.y_train)
    with pytest.raises(ValueError, match="split"):
        list(tasks.batches(t, "val"))
