"""pwlab.lm: the corpus, the tokenizer, the char-level MoE LM, its training, baseline and sampling."""
from __future__ import annotations

import math

import pytest
import torch

from pwlab import lm
from pwlab.pathways import mutual_information


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs on one torch thread (see conftest's ``one_thread``)."""


@pytest.fixture(scope="module")
def text():
    return lm.corpus(0, num_lines=400)


def _tiny(text, router="topk", **kw):
    torch.manual_seed(0)
    return lm.CharMoELM(lm.CharTokenizer(text), d_model=16, num_layers=2, num_experts=4, router=router,
                        num_heads=2, context=16, **kw)


# -- corpus and classes ----------------------------------------------------------------------
def test_corpus_is_deterministic_per_seed_and_holds_every_class_and_style():
    a, b, c = lm.corpus(3, 300), lm.corpus(3, 300), lm.corpus(4, 300)
    assert a == b and a != c
    assert {lm.token_class(ch) for ch in a} == set(lm.CLASSES)
    lines = a.splitlines()
    assert len(lines) == 300
    assert any(" = " in s and "+" in s for s in lines)                  # sums
    assert any(s.count("-") == 2 and s[:4].isdigit() for s in lines)     # ISO dates
    assert any(s.startswith("def f(") for s in lines)                   # code
    assert any(" el " in f" {s.lower()} " for s in lines)                # Spanish
    assert any(" the " in f" {s.lower()} " for s in lines)               # English


def test_sums_in_the_corpus_are_right():
    for s in lm.corpus(1, 300).splitlines():
        parts = s.split()
        if len(parts) == 5 and parts[1] in "+-" and parts[3] == "=":
            a, b, c = int(parts[0]), int(parts[2]), int(parts[4])
            assert (a + b if parts[1] == "+" else a - b) == c, s


def test_token_class_by_hand_and_bad_input():
    assert [lm.token_class(c) for c in "aZ7. \n(ñ"] == ["lower", "upper", "digit", "punct", "space", "space",
                                                        "punct", "lower"]
    with pytest.raises(ValueError, match="ch"):
        lm.token_class("ab")


def test_train_val_split_cuts_at_a_line():
    tr, va = lm.train_val_split("aa\nbb\ncc\ndd\n", 0.3)
    assert tr + va == "aa\nbb\ncc\ndd\n" and tr.endswith("\n") and va == "cc\ndd\n"
    with pytest.raises(ValueError, match="val_fraction"):
        lm.train_val_split("ab", 1.5)


# -- tokenizer ---------------------------------------------------------------------------------
def test_tokenizer_round_trips_and_names_unknown_characters(text):
    tok = lm.CharTokenizer(text)
    assert tok.decode(tok.encode(text)) == text
    assert len(tok) == len(set(text))
    assert lm.CharTokenizer("ba ").encode("ab ").tolist() == [1, 2, 0]   # sorted: ' ', 'a', 'b'
    with pytest.raises(ValueError, match="'@'"):
        tok.encode("@")
    assert [lm.CLASSES[i] for i in lm.CharTokenizer("a1.").classes()] == ["punct", "digit", "lower"]


# -- the model ---------------------------------------------------------------------------------
@pytest.mark.parametrize("router", ["topk", "switch", "hash", "expert_choice"])
def test_expert_of_each_character_has_the_right_shape_and_range(text, router):
    m = _tiny(text, router)
    idx = m.tokenizer.encode(text[:48]).view(3, 16)
    out = m(idx)
    assert out.logits.shape == (3, 16, len(m.tokenizer))
    assert out.experts.shape == (2, 3, 16) and out.experts.dtype == torch.long
    assert int(out.experts.min()) >= -1 and int(out.experts.max()) < 4
    if router != "expert_choice":      # token choice: every character goes somewhere
        assert int(out.experts.min()) >= 0
    assert lm.char_experts(m, text[:40]).shape == (2, 40)


def test_first_choice_is_the_expert_of_largest_weight():
    from pwlab.routing import Routing
    r = Routing(token=torch.tensor([0, 0, 1, 1, 2]), expert=torch.tensor([2, 1, 0, 3, 1]),
                weight=torch.tensor([0.3, 0.7, 0.9, 0.1, 0.5]), rank=torch.tensor([0, 1, 0, 1, 0]),
                probs=torch.zeros(4, 4), logits=torch.zeros(4, 4))
    assert lm.first_choice(r, 4).tolist() == [1, 0, 1, -1]


def test_hash_router_sends_each_character_to_one_fixed_expert(text):
    m = _tiny(text, "hash")
    ids = m.tokenizer.encode(text[:160])
    e = lm.char_experts(m, text[:160])
    for layer in range(2):
        for i in ids.unique():
            assert e[layer][ids == i].unique().numel() == 1


def test_causal_attention_does_not_look_ahead(text):
    m = _tiny(text).eval()
    idx = m.tokenizer.encode(text[:16])[None]
    other = idx.clone()
    other[0, 10:] = (other[0, 10:] + 1) % len(m.tokenizer)
    with torch.no_grad():
        assert torch.allclose(m(idx).logits[0, :10], m(other).logits[0, :10], atol=1e-6)


def test_bad_arguments_name_the_parameter(text):
    with pytest.raises(ValueError, match="router"):
        _tiny(text, "nope")
    m = _tiny(text)
    with pytest.raises(ValueError, match="context"):
        m(torch.zeros(1, 17, dtype=torch.long))


# -- training, baseline, sampling -------------------------------------------------------------
def test_loss_at_init_is_ln_vocab_and_short_training_lowers_it(text):
    tr, va = lm.train_val_split(text)
    m = _tiny(text)
    ids, val = m.tokenizer.encode(tr), m.tokenizer.encode(va)
    before = lm.lm_loss(m, val)
    # near-zero logits at init: every character equally likely, cross-entropy ln V (hand value)
    assert abs(before - math.log(len(m.tokenizer))) < 0.05
    hist = lm.train_lm(m, ids, 60, batch_size=8, lr=1e-2, val=val, progress=False)
    assert [r["step"] for r in hist] == list(range(1, 61)) and "val_loss" in hist[-1]
    assert hist[-1]["val_loss"] < before - 0.5
    assert hist[-1]["val_loss"] == pytest.approx(lm.lm_loss(m, val))


def test_training_is_reproducible_from_the_seed(text):
    ids = lm.CharTokenizer(text).encode(text)
    a, b = _tiny(text), _tiny(text)
    ha = lm.train_lm(a, ids, 5, batch_size=4, seed=2, progress=False)
    hb = lm.train_lm(b, ids, 5, batch_size=4, seed=2, progress=False)
    assert [r["loss"] for r in ha] == [r["loss"] for r in hb]


def test_unigram_loss_by_hand():
    # train "aab", val "ab", add-one over V = 2: p(a) = 3/5, p(b) = 2/5
    assert lm.unigram_loss("aab", "ab") == pytest.approx(-(math.log(0.6) + math.log(0.4)) / 2)
    # a character unseen in train: V = 3, p(c) = 1/6, p(a) = 3/6
    assert lm.unigram_loss("aab", "ca") == pytest.approx(-(math.log(1 / 6) + math.log(3 / 6)) / 2)
    assert lm.unigram_loss("aab", "ab", alpha=0) == pytest.approx(-(math.log(2 / 3) + math.log(1 / 3)) / 2)
    with pytest.raises(ValueError, match="alpha"):
        lm.unigram_loss("aab", "c", alpha=0)


def test_generate_is_deterministic_per_seed(text):
    m = _tiny(text)
    a = lm.generate(m, "The ", 30, torch.Generator().manual_seed(1))
    b = lm.generate(m, "The ", 30, torch.Generator().manual_seed(1))
    c = lm.generate(m, "The ", 30, torch.Generator().manual_seed(2))
    assert a == b != c
    assert a.startswith("The ") and len(a) == 34
    assert len(lm.generate(m, "", 20, torch.Generator().manual_seed(0))) == 20
    with pytest.raises(TypeError, match="generator"):
        lm.generate(m, "a", 3, 0)


# -- I(expert; class) -------------------------------------------------------------------------
def test_class_counts_and_mutual_information_by_hand():
    experts = torch.tensor([0, 0, 1, 1, -1])
    classes = torch.tensor([0, 0, 2, 2, 1])
    c = lm.class_counts(experts, classes, 2)
    assert c.shape == (2, len(lm.CLASSES)) and c.sum() == 4        # the unrouted character is left out
    assert c[0, 0] == 2 and c[1, 2] == 2
    assert mutual_information(c) == pytest.approx(1.0)            # two experts, one class each: 1 bit


def test_class_mutual_information_of_a_hash_router_equals_its_table(text):
    m = _tiny(text, "hash")
    tok = m.tokenizer
    table = m.blocks[0].moe.router.table
    ids = tok.encode(text)
    want = mutual_information(lm.class_counts(table[ids], tok.classes()[ids], 4))
    assert lm.class_mutual_information(m, text)[0] == pytest.approx(want)


def test_character_share_by_hand_and_for_a_hash_router(text):
    # character 0 → experts 2, 2, 1 (best 2 of 3); character 1 → 0, 0 (2 of 2); one unrouted miss
    ids, experts = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([2, 2, 1, 0, 0, -1])
    assert lm.character_share(experts, ids, 2, 3) == pytest.approx(4 / 6)
    m = _tiny(text, "hash")
    e = lm.char_experts(m, text[:200])
    assert lm.character_share(e[1], m.tokenizer.encode(text[:200]), len(m.tokenizer), 4) == 1.0


# -- the widget ------------------------------------------------------------------------------
def test_widget_recolours_in_place(text):
    from pwlab.widgets.lm import LMExplorer
    models = {"topk": _tiny(text), "hash": _tiny(text, "hash")}
    app = LMExplorer(models, text[:128])
    grid, bars = app.grid, app.bars
    before = list(grid.data[0].z[0])
    app.router.value = "hash"
    assert app.grid is grid and app.bars is bars
    hash_table = models["hash"].blocks[0].moe.router.table
    ids = models["hash"].tokenizer.encode(text[:128])
    assert [v for row in grid.data[0].z for v in row if v is not None] == hash_table[ids].tolist()
    app.layer.value = 1                # each layer has a hash table of its own
    table1 = models["hash"].blocks[1].moe.router.table
    assert [v for row in grid.data[0].z for v in row if v is not None] == table1[ids].tolist()
    app.router.value = "topk"
    want = lm.char_experts(models["topk"], text[:128])[1].tolist()
    assert [v for row in grid.data[0].z for v in row if v is not None] == want
    app.layer.value = 0
    assert list(grid.data[0].z[0]) == before
    # a model with another number of experts: the colour scale follows, in the same widget
    torch.manual_seed(1)
    models["two"] = lm.CharMoELM(models["topk"].tokenizer, d_model=16, num_layers=1, num_experts=2, num_heads=2,
                                 context=16)
    app = LMExplorer(models, text[:128])
    app.select(router="two")
    assert list(app.layer.options) == [0] and app.grid.data[0].zmax == 1.5
    assert [v for row in app.grid.data[0].z for v in row if v is not None] == \
        lm.char_experts(models["two"], text[:128])[0].tolist()
    app.select(router="topk", layer=1)
    assert app.grid.data[0].zmax == 3.5 and list(app.layer.options) == [0, 1]
    app.select(router="two")                       # from layer 1 to a one-layer model
    assert app.layer.value == 0 and app.grid.data[0].zmax == 1.5
    with pytest.raises(ValueError, match="models"):
        LMExplorer({}, text[:64])
