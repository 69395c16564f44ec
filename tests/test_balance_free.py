"""DeepSeek-V3's auxiliary-loss-free balancing and sigmoid gates on TopK (arXiv 2412.19437 §2.1.2).

Oracles: routings worked out by hand on 2 tokens and 3 experts, the bias update on a known
load vector, a collapsed router balanced by the bias alone, and a Trainer checkpoint round trip.
"""
from __future__ import annotations

import math

import pytest
import torch

import pwlab.tasks as tasks
from pwlab import config, fused
from pwlab.moe import MoE
from pwlab.routing import TopK, make_router
from pwlab.train import NonFiniteLossError, Trainer


def _identity_router(**kw) -> TopK:
    """A TopK router on 3 experts whose logits are its input (gate = identity)."""
    r = TopK(d_model=3, num_experts=3, **kw)
    with torch.no_grad():
        r.gate.weight.copy_(torch.eye(3, dtype=r.gate.weight.dtype))
    return r


def _per_token(routing, n, k):
    """(expert (n, k), weight (n, k)) in token-major order."""
    order = torch.argsort(routing.token * k + routing.rank)
    return routing.expert[order].view(n, k), routing.weight[order].view(n, k)


# softmax probabilities [0.5, 0.3, 0.2] and [0.1, 0.6, 0.3]
SOFTMAX_LOGITS = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], dtype=torch.float64).log()
SOFTMAX_BIAS = torch.tensor([-0.4, 0.0, 0.15], dtype=torch.float64)
# sigmoid scores [0.5, 0.75, 0.25] and [0.8, 0.5, 0.2]
SIGMOID_LOGITS = torch.tensor([[0.0, math.log(3), -math.log(3)], [math.log(4), 0.0, -math.log(4)]], dtype=torch.float64)
SIGMOID_BIAS = torch.tensor([0.0, -0.3, 0.5], dtype=torch.float64)


@pytest.mark.parametrize("k, renormalize, biased, expert, weight", [
    # biased scores: token 0 [0.1, 0.3, 0.35], token 1 [-0.3, 0.6, 0.45]
    (1, True, False, [[0], [1]], [[0.5], [0.6]]),
    (1, True, True, [[2], [1]], [[0.2], [0.6]]),                         # token 0 moves 0 -> 2
    (2, False, False, [[0, 1], [1, 2]], [[0.5, 0.3], [0.6, 0.3]]),
    (2, False, True, [[2, 1], [1, 2]], [[0.2, 0.3], [0.6, 0.3]]),        # unbiased probabilities
    (2, True, True, [[2, 1], [1, 2]], [[0.4, 0.6], [2 / 3, 1 / 3]]),
])
def test_softmax_bias_changes_the_choice_not_the_weights(k, renormalize, biased, expert, weight):
    r = _identity_router(top_k=k, renormalize=renormalize, bias_update_rate=0.1).double().eval()
    if biased:
        r.expert_bias.copy_(SOFTMAX_BIAS)
    out = r(SOFTMAX_LOGITS)
    e, w = _per_token(out, 2, k)
    assert e.tolist() == expert
    assert torch.allclose(w, torch.tensor(weight, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out.probs, SOFTMAX_LOGITS.exp(), atol=1e-12)       # probs never see the bias
    # eval mode: the bias is read, never updated
    assert torch.equal(r.expert_bias, SOFTMAX_BIAS if biased else torch.zeros(3, dtype=torch.float64))


def test_topk_softmax_order_with_bias_softmaxes_the_chosen_logits():
    r = _identity_router(top_k=2, order="topk_softmax", bias_update_rate=0.1).double().eval()
    r.expert_bias.copy_(SOFTMAX_BIAS)
    e, w = _per_token(r(SOFTMAX_LOGITS), 2, 2)
    assert e.tolist() == [[2, 1], [1, 2]]
    # softmax over the chosen logits = the chosen probabilities renormalised
    assert torch.allclose(w, torch.tensor([[0.4, 0.6], [2 / 3, 1 / 3]], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("biased, expert, weight", [
    (False, [[1, 0], [0, 1]], [[0.6, 0.4], [0.8 / 1.3, 0.5 / 1.3]]),
    # biased scores: token 0 [0.5, 0.45, 0.75], token 1 [0.8, 0.2, 0.7]
    (True, [[2, 0], [0, 2]], [[1 / 3, 2 / 3], [0.8, 0.2]]),
])
def test_sigmoid_gate_by_hand(biased, expert, weight):
    r = _identity_router(top_k=2, gate="sigmoid", bias_update_rate=0.1 if biased else None).double().eval()
    if biased:
        r.expert_bias.copy_(SIGMOID_BIAS)
    out = r(SIGMOID_LOGITS)
    e, w = _per_token(out, 2, 2)
    assert e.tolist() == expert
    assert torch.allclose(w, torch.tensor(weight, dtype=torch.float64), atol=1e-12)
    # probs: the sigmoid scores normalised over all experts (scores sum to 1.5 on both tokens)
    assert torch.allclose(out.probs, torch.tensor([[1 / 3, 1 / 2, 1 / 6], [8 / 15, 1 / 3, 2 / 15]],
                                                  dtype=torch.float64), atol=1e-12)
    assert torch.equal(out.logits, SIGMOID_LOGITS)


def test_sigmoid_top1_keeps_the_raw_score():
    e, w = _per_token(_identity_router(top_k=1, gate="sigmoid").double()(SIGMOID_LOGITS), 2, 1)
    assert e.tolist() == [[1], [0]] and torch.allclose(w, torch.tensor([[0.75], [0.8]], dtype=torch.float64))


def test_sigmoid_balance_and_z_loss_by_hand():
    moe = MoE(3, 4, 3, TopK(top_k=2, gate="sigmoid"), dispatch="loop").double()
    with torch.no_grad():
        moe.router.gate.weight.copy_(torch.eye(3, dtype=torch.float64))
    _, stats = moe(SIGMOID_LOGITS)
    # f = [2, 2, 0] / 4; P = mean of the normalised scores = [13/30, 5/12, 3/20]; L = E · Σ f·P
    lb = 3 * (0.5 * 13 / 30 + 0.5 * 5 / 12)
    assert math.isclose(float(stats.aux_losses["load_balancing"].detach()), lb, rel_tol=1e-12)
    z = (math.log(1 + 3 + 1 / 3) ** 2 + math.log(4 + 1 + 1 / 4) ** 2) / 2          # mean logsumexp(logits)²
    assert math.isclose(float(stats.aux_losses["z_loss"].detach()), z, rel_tol=1e-12)
    # uniform routing (zero logits: every score 1/2) gives the balance loss 1, z-loss (log E)²
    with torch.no_grad():
        moe.router.gate.weight.zero_()
    _, stats = moe(SIGMOID_LOGITS)
    assert math.isclose(float(stats.aux_losses["load_balancing"].detach()), 1.0, rel_tol=1e-12)
    assert math.isclose(float(stats.aux_losses["z_loss"].detach()), math.log(3) ** 2, rel_tol=1e-12)


def test_sigmoid_balance_loss_alone_spreads_a_collapsed_router():
    """The balance loss on normalised sigmoid scores still balances (no bias here).

    Collapsed top-2 (every first choice on expert 0): s_0 ≈ 1 and the other scores ≈ 1/2, so
    P_0 ≈ 1 / (1 + 7/2) ≈ 0.22 and L ≈ 8 · (1/2 · 0.22 + 1/2 · 0.11) ≈ 1.3: sigmoid scores make
    the normalised distribution flat, so the loss sits closer to 1 than with softmax.
    """
    torch.manual_seed(0)
    moe = MoE(D_C, 8, E_C, TopK(top_k=2, gate="sigmoid"), aux_weights={"load_balancing": 1.0, "z_loss": 0.0})
    _collapse(moe.router)
    x = _tokens(512, torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(moe.router.parameters(), lr=1.0)
    history = []
    for _ in range(200):
        _, stats = moe(x)
        history.append((float(stats.aux_loss.detach()), _cv(stats.counts)))
        opt.zero_grad()
        stats.aux_loss.backward()
        opt.step()
    (loss0, cv0), (loss1, cv1) = history[0], history[-1]
    assert loss0 > 1.25 and cv0 > 1.0
    assert loss1 < 1.0 and cv1 < BALANCED_CV, history[-1]


# -- the update rule -----------------------------------------------------------------------

def test_update_rule_on_a_known_load_vector():
    # one-hot logits of height 10: the chosen experts are fixed, loads [5, 1, 2, 0] (mean 2)
    r = TopK(top_k=1, bias_update_rate=0.125, d_model=4, num_experts=4)
    with torch.no_grad():
        r.gate.weight.copy_(10 * torch.eye(4))
    x = torch.eye(4)[[0, 0, 0, 0, 0, 1, 2, 2]]
    expected = torch.tensor([-0.125, 0.125, 0.0, 0.125])        # γ · sign(2 − load); a tie stays put
    for step in (1, 2):
        out = r(x)
        assert torch.bincount(out.expert, minlength=4).tolist() == [5, 1, 2, 0]
        assert torch.equal(r.expert_bias, step * expected)
    with torch.no_grad():
        r.eval()(x)
    assert torch.equal(r.expert_bias, 2 * expected)             # eval: unchanged
    # and in the train step of a hand-made example: loads [0, 2, 2] of the biased top-2 above
    s = _identity_router(top_k=2, bias_update_rate=0.1).double()
    s.expert_bias.copy_(SOFTMAX_BIAS)
    s(SOFTMAX_LOGITS)
    assert torch.allclose(s.expert_bias, SOFTMAX_BIAS + 0.1 * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64),
                          atol=1e-15)


def test_bias_is_off_by_default_and_the_state_dict_is_unchanged():
    assert TopK(top_k=2, d_model=4, num_experts=3).expert_bias is None
    assert TopK(top_k=2, bias_update_rate=0, d_model=4, num_experts=3).expert_bias is None
    assert set(TopK(top_k=2, d_model=4, num_experts=3).state_dict()) == {"gate.weight"}
    with_bias = TopK(top_k=2, bias_update_rate=1e-3, d_model=4, num_experts=3)
    assert set(with_bias.state_dict()) == {"gate.weight", "expert_bias"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bias_stays_float32_in_half_precision(dtype):
    r = TopK(top_k=1, bias_update_rate=1e-3, d_model=4, num_experts=4).to(dtype)
    assert r.gate.weight.dtype == dtype and r.expert_bias.dtype == torch.float32
    r.expert_bias.fill_(0.5)
    with torch.no_grad():
        r.gate.weight.copy_(10 * torch.eye(4))
        r(torch.eye(4, dtype=dtype)[[0, 0, 1, 2]])             # loads [2, 1, 1, 0], mean 1
    # in bfloat16, 0.5 - 1e-3 would round back to 0.5
    assert torch.allclose(r.expert_bias, torch.tensor([0.499, 0.5, 0.5, 0.501]), rtol=0, atol=1e-7)
    r.load_state_dict(r.state_dict())
    assert r.expert_bias.dtype == torch.float32


def test_bias_gets_no_gradient_and_the_weights_do():
    r = TopK(top_k=2, bias_update_rate=0.1, d_model=6, num_experts=4)
    r.expert_bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
    out = r(torch.randn(10, 6))
    out.weight.sum().backward()
    assert not r.expert_bias.requires_grad
    assert r.gate.weight.grad is not None and bool(r.gate.weight.grad.abs().sum() > 0)


@pytest.mark.parametrize("kw, match", [
    ({"gate": "relu"}, "gate must be one of 'softmax', 'sigmoid'"),
    ({"gate": "sigmoid", "order": "topk_softmax"}, "order must be 'softmax_topk' with gate='sigmoid'"),
    ({"bias_update_rate": -1e-3}, "bias_update_rate must be a finite number >= 0"),
    ({"bias_update_rate": float("nan")}, "bias_update_rate must be a finite number >= 0"),
    ({"bias_update_rate": "fast"}, "bias_update_rate must be a finite number >= 0"),
])
def test_bad_options_are_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TopK(top_k=2, **kw)


# -- balancing a collapsed router ---------------------------------------------------------

D_C, E_C = 16, 8


def _tokens(n, g):
    """Tokens whose first feature is 1: the collapsed gate's row 0 reads it."""
    x = torch.randn(n, D_C, generator=g)
    x[:, 0] = 1.0
    return x


def _collapse(router):
    """Gate weights under which every token prefers expert 0 (its logit is 4 above the rest)."""
    with torch.no_grad():
        w = torch.randn(E_C, D_C, generator=torch.Generator().manual_seed(3)) * D_C ** -0.5
        w[:, 0] = 0.0
        w[0, 0] = 4.0
        router.gate.weight.copy_(w)


def _cv(counts):
    counts = counts.float()
    return float(counts.std(unbiased=False) / counts.mean())


# fixed before running: collapsed CV > 2 (top-1, all on expert 0: sqrt(7) ≈ 2.65), balanced < 0.3
COLLAPSED_CV, BALANCED_CV = 2.0, 0.3


@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
def test_bias_alone_balances_a_collapsed_router(gate):
    g = torch.Generator().manual_seed(0)
    held_out = _tokens(4096, torch.Generator().manual_seed(99))
    cvs = {}
    for rate in (2e-3, 0.0):
        r = TopK(top_k=1, gate=gate, bias_update_rate=rate, d_model=D_C, num_experts=E_C)
        _collapse(r)
        with torch.no_grad():
            before = _cv(torch.bincount(r.eval()(held_out).expert, minlength=E_C))
            r.train()
            for _ in range(600):                                # forward only: the gate never changes
                r(_tokens(256, g))
            cvs[rate] = _cv(torch.bincount(r.eval()(held_out).expert, minlength=E_C))
        assert before > COLLAPSED_CV
    assert cvs[2e-3] < BALANCED_CV, cvs
    assert cvs[0.0] > COLLAPSED_CV, cvs                         # without the bias it stays collapsed


def test_training_without_aux_loss_is_balanced_by_the_bias():
    """An MoE layer trained on a regression with every auxiliary weight 0: only the bias balances."""
    loads = {}
    for rate in (2e-3, None):
        torch.manual_seed(0)
        moe = MoE(D_C, 16, E_C, TopK(top_k=1, bias_update_rate=rate),
                  aux_weights={"load_balancing": 0.0, "z_loss": 0.0})
        _collapse(moe.router)
        target = torch.nn.Linear(D_C, D_C)
        opt = torch.optim.Adam(moe.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(400):
            x = _tokens(256, g)
            y, stats = moe(x)
            assert float(stats.aux_loss.detach()) == 0.0
            loss = (y - target(x).detach()).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            _, stats = moe.eval()(_tokens(4096, torch.Generator().manual_seed(99)))
        loads[rate] = _cv(stats.counts)
    assert loads[2e-3] < BALANCED_CV, loads
    assert loads[None] > COLLAPSED_CV, loads


# -- the MoE layer ------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{"bias_update_rate": 0.1}, {"gate": "sigmoid"}])
def test_layer_takes_the_general_path_with_the_options_on(kw, monkeypatch):
    calls = []
    real = fused.topk_moe
    monkeypatch.setattr(fused, "topk_moe", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(10, 8)
    MoE(8, 12, 4, TopK(top_k=2))(x)
    assert len(calls) == 1                                      # the plain router is fused
    MoE(8, 12, 4, TopK(top_k=2, **kw))(x)
    assert len(calls) == 1


@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
@pytest.mark.parametrize("cf", [None, 1.0])
def test_layer_output_follows_the_biased_routing(gate, cf):
    """The fast dispatch equals the loop reference and a sum by hand over the router's choices."""
    torch.manual_seed(0)
    fast = MoE(8, 12, 4, TopK(top_k=2, gate=gate, bias_update_rate=0.1), capacity_factor=cf).double()
    loop = MoE(8, 12, 4, TopK(top_k=2, gate=gate, bias_update_rate=0.1), capacity_factor=cf, dispatch="loop").double()
    fast.router.expert_bias.copy_(torch.tensor([0.5, -0.5, 0.0, 0.2]))
    loop.load_state_dict(fast.state_dict())
    fast.eval()
    loop.eval()
    x = torch.randn(30, 8, dtype=torch.float64)
    (y_fast, s_fast), (y_loop, s_loop) = fast(x), loop(x)
    assert torch.allclose(y_fast, y_loop, atol=1e-12)
    assert torch.equal(s_fast.proposed.expert, s_loop.proposed.expert)
    kept = s_fast.routing
    by_hand = torch.zeros_like(x)
    for t, e, w in zip(kept.token.tolist(), kept.expert.tolist(), kept.weight):
        by_hand[t] += w * fast.experts.forward_expert(e, x[t:t + 1])[0]
    assert torch.allclose(y_fast, by_hand, atol=1e-12)
    # the bias moved the choices away from expert 1 and towards expert 0
    plain = MoE(8, 12, 4, TopK(top_k=2, gate=gate)).double()
    plain.router.gate.weight.data.copy_(fast.router.gate.weight)
    counts_plain = torch.bincount(plain.router(x).expert, minlength=4)
    counts_bias = s_fast.proposed_counts
    assert counts_bias[0] >= counts_plain[0] and counts_bias[1] <= counts_plain[1]
    assert not torch.equal(counts_bias, counts_plain)


def test_make_router_passes_the_options():
    r = make_router("topk", top_k=2, gate="sigmoid", bias_update_rate=1e-3)
    assert r.gate_fn == "sigmoid" and r.bias_update_rate == 1e-3
    assert "gate='sigmoid'" in repr(r.bind(4, 3)) and "bias_update_rate=0.001" in repr(r)


# -- checkpoints --------------------------------------------------------------------------

def _bias_cfg(**train):
    return config.Config(config.ModelConfig(d_model=16, num_heads=2, num_experts=4, d_hidden=16, router="topk",
                                            router_kwargs={"bias_update_rate": 1e-2, "gate": "sigmoid"}),
                         config.TrainConfig(batch_size=24, lr=3e-3, **train), name="test")


def _bias(trainer):
    (name,) = [k for k in trainer.model.state_dict() if k.endswith("expert_bias")]
    return trainer.model.state_dict()[name]


def test_bias_survives_a_trainer_checkpoint(tmp_path):
    task_list = tasks.load(["wine", "digit_words"])
    cfg = _bias_cfg()
    full = Trainer(task_list, cfg)
    (i,) = cfg.model.moe_layer_indices()
    bias = _bias
    full.step(3)
    after3 = bias(full).clone()
    assert after3.abs().sum() > 0                               # the steps moved it
    assert torch.allclose(after3.abs(), torch.full((4,), 1e-2) * after3.abs().div(1e-2).round())   # multiples of γ
    full.evaluate(max_examples=20)
    assert torch.equal(bias(full), after3)                      # evaluation does not move it
    full.save(tmp_path / "c.pt")
    full.step(2)
    resumed = Trainer.load(tmp_path / "c.pt", task_list)
    assert torch.equal(bias(resumed), after3)
    resumed.step(2)
    assert torch.equal(bias(resumed), bias(full))
    assert [r["load/" + str(i)] for r in resumed.history[-2:]] == [r["load/" + str(i)] for r in full.history[-2:]]


def test_a_step_that_fails_or_is_skipped_leaves_the_bias_as_it_was():
    """The Trainer applies a step as one unit: the bias update of its forward is undone with the rest."""
    task_list = tasks.load(["wine", "digit_words"])
    for skip in (False, True):
        tr = Trainer(task_list, _bias_cfg(skip_nonfinite=skip))
        tr.step(2)
        before = _bias(tr).clone()
        with torch.no_grad():
            for head in tr.model.heads.values():
                head.weight.fill_(float("nan"))             # every task loss NaN; the routing is intact
        if skip:
            (rec,) = tr.step()
            assert rec.get("skipped") is True
        else:
            with pytest.raises(NonFiniteLossError):
                tr.step()
        assert torch.equal(_bias(tr), before)
