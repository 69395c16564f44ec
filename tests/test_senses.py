"""Sense encoders: shapes, hand-computed oracles, the Senses front end, bad input."""
from __future__ import annotations

import math

import pytest
import torch

import pwlab.tasks as tasks
from pwlab.senses import (SENSES, AudioEncoder, ImageEncoder, Senses, TabularEncoder, TextEncoder, Tokens,
                          pad_cat)
from pwlab.tasks import audio as dtmf_audio
from pwlab.tasks import text

D = 16


@pytest.fixture(scope="module")
def suite():
    return tasks.load("all", seed=0)


def _check_tokens(tok: Tokens, b: int, t: int, sense: str):
    assert tok.tokens.shape == (b, t, D) and tok.mask.shape == (b, t) and tok.token_ids.shape == (b, t)
    assert tok.mask.dtype == torch.bool and tok.token_ids.dtype == torch.long
    assert tok.sense == SENSES.index(sense)


def test_image_patches_by_hand():
    torch.manual_seed(0)
    enc = ImageEncoder(4, (8, 8), patch_size=2)
    with torch.no_grad():                       # projection = identity, positions = 0: tokens are raw patches
        enc.proj.weight.copy_(torch.eye(4))
        enc.proj.bias.zero_()
        enc.row.zero_()
        enc.col.zero_()
    x = torch.rand(3, 8, 8)
    tok = enc(x)
    assert tok.tokens.shape == (3, 16, 4)
    for r in range(4):
        for c in range(4):
            assert torch.equal(tok.tokens[:, 4 * r + c], x[:, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(3, 4))
    assert tok.token_ids[0].tolist() == list(range(16)) and tok.mask.all()
    assert ImageEncoder(D, (8, 8), patch_size=4)(x).tokens.shape == (3, 4, D)


def test_image_positions_are_2d():
    enc = ImageEncoder(D, (8, 8), patch_size=2)
    tok = enc(torch.zeros(1, 8, 8))                  # zero image: token = bias + row[r] + col[c]
    t = tok.tokens[0] - enc.proj.bias
    expected = (enc.row[:, None] + enc.col[None, :]).reshape(16, D)
    assert torch.allclose(t, expected)


def test_audio_frames_match_a_naive_dft():
    enc = AudioEncoder(D, length=1000, n_fft=128, hop_length=64)
    x = torch.randn(2, 1000, dtype=torch.float32)
    spec = enc.spectrogram(x)                        # (B, T, F)
    assert spec.shape == (2, 1 + 1000 // 64, 65)
    # frame 5 is centered at sample 5 * 64: window [320 - 64, 320 + 64), away from the padded edges
    frame = x[:, 5 * 64 - 64:5 * 64 + 64].double() * torch.hann_window(128, dtype=torch.float64)
    n = torch.arange(128, dtype=torch.float64)
    k = torch.arange(65, dtype=torch.float64)
    basis = torch.exp(-2j * math.pi * k[:, None] * n[None, :] / 128)     # (F, n_fft) DFT matrix
    naive = torch.log1p((frame.to(torch.complex128) @ basis.T).abs())
    assert torch.allclose(spec[:, 5].double(), naive, atol=1e-4)
    tok = enc(x)
    _check_tokens(tok, 2, 16, "audio")


def test_audio_spectrum_peaks_at_dtmf_rows_and_columns():
    enc = AudioEncoder(D, length=1000)
    wave = dtmf_audio.synthesize(torch.tensor([5]), torch.Generator().manual_seed(0), min_duration=0.25,
                                 max_duration=0.25, noise=(0.0, 0.0))
    mean_spec = enc.spectrogram(wave)[0].mean(0)           # (F,), bins of 4000 / 128 = 31.25 Hz
    peaks = sorted(torch.topk(mean_spec, 2).indices.tolist())
    assert peaks == [round(770 / 31.25), round(1336 / 31.25)]


def test_text_mask_ids_and_positions():
    enc = TextEncoder(D, text.vocab_size, max_len=12, id_offset=100)
    x = text.encode(["sept", "3+4", "aa"], 6)
    tok = enc(x)
    _check_tokens(tok, 3, 6, "text")
    assert torch.equal(tok.mask, x != 0)
    assert torch.equal(tok.token_ids, x + 100)
    expected = enc.embed(x[2, 0]) + enc.pos[0]
    assert torch.allclose(tok.tokens[2, 0], expected)
    assert not torch.allclose(tok.tokens[2, 0], tok.tokens[2, 1])   # same character, other position


def test_tabular_tokens_by_hand():
    enc = TabularEncoder(D, num_features=5, id_offset=7)
    x = torch.randn(4, 5)
    tok = enc(x)
    _check_tokens(tok, 4, 5, "tabular")
    assert torch.allclose(tok.tokens, x[:, :, None] * enc.weight + enc.bias)
    assert tok.token_ids[0].tolist() == [7, 8, 9, 10, 11]


def test_senses_encodes_every_task(suite):
    senses = Senses(suite, D)
    assert set(senses.encoders) == {"image", "audio", "text"}
    assert set(senses.tabular) == {"wine", "breast_cancer", "mmoe"}     # the MMoE pair shares its table
    ranges = {}
    for t in suite:
        tok = senses(t.x_train[:5], t)
        assert tok.tokens.shape[0] == 5 and tok.tokens.shape[-1] == D
        assert tok.sense == SENSES.index(t.sense)
        assert torch.equal(senses(t.x_train[:5], t.name).token_ids, tok.token_ids)
        enc = senses.encoder(t)
        ranges[id(enc)] = (enc.id_offset, enc.id_offset + enc.num_ids)
        assert tok.token_ids.min() >= enc.id_offset and tok.token_ids.max() < enc.id_offset + enc.num_ids
    spans = sorted(ranges.values())                   # id ranges of different encoders never overlap
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert spans[-1][1] == senses.num_token_ids
    assert senses.encoder("mmoe_a") is senses.encoder("mmoe_b")
    assert senses.encoder("digits") is senses.encoder("digit_parity")


def test_senses_gradients_reach_the_encoders(suite):
    senses = Senses(suite, D)
    loss = sum(senses(t.x_train[:4], t).tokens.square().mean() for t in suite)
    loss.backward()
    for name, p in senses.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_pad_cat(suite):
    senses = Senses(suite, D)
    parts = [senses(t.x_train[:3], t) for t in suite[:5]]        # 16, 16, 16, 12, 5 tokens
    tok, mask, ids, sense = pad_cat(parts)
    assert tok.shape == (15, 16, D) and mask.shape == ids.shape == (15, 16)
    assert sense.tolist() == [0] * 6 + [1] * 3 + [2] * 6
    assert not mask[12:, 5:].any() and (ids[12:, 5:] == -1).all() and (tok[12:, 5:] == 0).all()
    assert torch.equal(tok[9:12, :12], parts[3].tokens)
    with pytest.raises(ValueError, match="parts"):
        pad_cat([])


@pytest.mark.parametrize("d_model", [0, -4, 2.5, "16", None, True])
def test_bad_d_model(d_model, suite):
    with pytest.raises(ValueError, match="d_model"):
        Senses(suite, d_model)
    with pytest.raises(ValueError, match="d_model"):
        ImageEncoder(d_model)


def test_bad_inputs_name_the_parameter(suite):
    senses = Senses(suite, D)
    with pytest.raises(ValueError, match="num_features=13"):
        senses(torch.randn(4, 30), "wine")                 # breast-cancer rows into the wine encoder
    with pytest.raises(ValueError, match=r"x must be \(B, H, W\)"):
        senses(torch.rand(4, 1, 8, 8), "digits")
    with pytest.raises(ValueError, match=r"\(H, W\) = \(8, 8\)"):
        senses(torch.rand(4, 7, 7), "digits")
    with pytest.raises(ValueError, match="L = 1000"):
        senses(torch.randn(4, 999), "dtmf")
    with pytest.raises(ValueError, match="long tensor"):
        senses(torch.rand(4, 5), "arithmetic")
    with pytest.raises(ValueError, match="vocab_size"):
        senses(torch.full((2, 5), 999), "arithmetic")
    with pytest.raises(ValueError, match="max_len"):
        senses(torch.ones(2, 40, dtype=torch.long), "digit_words")
    with pytest.raises(ValueError, match="not one of this Senses' tasks"):
        Senses(suite[:2], D)(torch.randn(2, 13), "wine")
    with pytest.raises(ValueError, match="tasks"):
        Senses([], D)
    with pytest.raises(ValueError, match="patch_size"):
        ImageEncoder(D, (8, 8), patch_size=3)


def test_senses_sizes_from_shapes_and_disagreeing_tasks():
    x = torch.rand(6, 4, 4)
    y = torch.zeros(6, dtype=torch.long)
    small = tasks.Task("small", "image", "classification", ("a",), x, y, x, y, "accuracy")
    tok = Senses([small], D, patch_size=2)(x, "small")          # sized from x_train, no meta needed
    assert tok.tokens.shape == (6, 4, D)
    with pytest.raises(ValueError, match=r"image size \(H, W\)"):
        Senses([small, tasks.get("digits")], D)
