"""pwlab.interop: transformers' sparse MoE blocks imported exactly, and the conventions that differ.

The oracle is the transformers block itself (tiny, random, built offline from a config): the
converted layer's output, routing, weights and input gradient must equal the block's. Tests
that need transformers skip with how to install it; the shared-gate and import checks do not.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pwlab import losses
from pwlab.flops import linear_flops, model_flops
from pwlab.moe import MoE

HF_SKIP = "transformers is not installed: pip install 'pwlab[hf]' to run the interop tests"
D = 16
TOL = 1e-5


@pytest.fixture
def interop():
    pytest.importorskip("transformers", reason=HF_SKIP)
    from pwlab import interop as mod
    return mod


# family, config overrides, k: every supported block, and the options that change its maths
CASES = [
    ("mixtral", {}, 2),
    ("mixtral", {}, 3),
    ("olmoe", {"norm_topk_prob": False}, 2),
    ("olmoe", {"norm_topk_prob": True}, 2),
    ("olmoe", {"norm_topk_prob": False}, 1),
    ("qwen3_moe", {"norm_topk_prob": True}, 2),
    ("qwen2_moe", {"norm_topk_prob": False}, 2),
    ("qwen2_moe", {"norm_topk_prob": True, "shared_expert_intermediate_size": 72}, 2),
    ("deepseek_v3", {"n_group": 1, "topk_group": 1}, 2),
    ("deepseek_v3", {"n_group": 2, "topk_group": 1, "n_shared_experts": 2}, 2),
    ("deepseek_v3", {"n_group": 4, "topk_group": 2, "norm_topk_prob": False, "routed_scaling_factor": 1.0}, 3),
]


def _ids(case):
    fam, cfg, k = case
    return f"{fam}-k{k}-" + "-".join(f"{a}={b}" for a, b in cfg.items())


def _hf_choices(block, x):
    """The block's own (expert, weight) per token, sorted by expert id: (N, k) each."""
    _, weight, expert = block.gate(x)
    order = expert.argsort(-1)
    return expert.gather(1, order), weight.gather(1, order)


def _pwlab_choices(stats, n, k):
    """The layer's kept (expert, weight) per token from MoEStats, sorted by expert id: (N, k) each."""
    r = stats.routing
    assert r.num_assignments == n * k
    order = torch.argsort(r.token * 1000 + r.expert)        # token-major, then by expert id
    return r.expert[order].view(n, k), r.weight[order].view(n, k)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_moe_from_hf_equals_the_block(interop, case):
    fam, cfg, k = case
    block = interop.tiny_hf_block(fam, seed=1, d_model=D, num_experts=8, top_k=k, **cfg)
    layer = interop.moe_from_hf(block).eval()
    x = torch.randn(3, 7, D, generator=torch.Generator().manual_seed(2), requires_grad=True)
    ref = block(x).reshape(-1, D)
    y, stats = layer(x.reshape(-1, D))
    assert y.shape == ref.shape
    assert torch.allclose(y, ref, atol=TOL, rtol=0), (y - ref).abs().max()
    # the same routing: each token's experts and their combine weights
    hf_expert, hf_weight = _hf_choices(block, x.detach().reshape(-1, D))
    expert, weight = _pwlab_choices(stats, 21, k)
    assert torch.equal(expert, hf_expert)
    assert torch.allclose(weight, hf_weight, atol=TOL, rtol=0)
    assert torch.equal(stats.counts, torch.bincount(hf_expert.flatten(), minlength=8))
    # and the same gradient with respect to the input
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(3))
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    (gx,) = torch.autograd.grad(y, x, g)
    assert torch.allclose(gx, gx_ref, atol=TOL, rtol=0), (gx - gx_ref).abs().max()


def test_the_converted_layer_has_the_blocks_structure(interop):
    qwen = interop.moe_from_hf(interop.tiny_hf_block("qwen2_moe", d_model=D, d_hidden=24,
                                                     shared_expert_intermediate_size=72))
    assert (qwen.num_experts, qwen.d_model, qwen.d_hidden, qwen.top_k) == (8, D, 24, 2)
    assert qwen.expert_kind == "swiglu" and qwen.capacity_factor is None
    assert qwen.num_shared_experts == 3 and qwen.shared_gate is not None     # 72 = 3 experts of width 24
    ds = interop.moe_from_hf(interop.tiny_hf_block("deepseek_v3", n_shared_experts=2, routed_scaling_factor=2.5))
    assert isinstance(ds.router, interop.SigmoidGroupTopK)
    assert ds.num_shared_experts == 2 and ds.shared_gate is None and ds.router.scaling == 2.5
    mix = interop.moe_from_hf(interop.tiny_hf_block("mixtral"))
    assert mix.shared_experts is None and mix.router.renormalize


def test_a_block_taken_from_a_full_causal_lm(interop):
    """The block of a whole model (the model's own init, routing near uniform) converts as well."""
    import transformers as tf

    config = tf.MixtralConfig(hidden_size=D, intermediate_size=24, num_local_experts=4, num_experts_per_tok=2,
                              num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, vocab_size=32)
    torch.manual_seed(0)
    model = tf.MixtralForCausalLM(config).eval()
    block = model.model.layers[0].mlp
    layer = interop.moe_from_hf(block).eval()
    x = torch.randn(2, 5, D)
    y, stats = layer(x.reshape(-1, D))
    assert torch.allclose(y, block(x).reshape(-1, D), atol=TOL, rtol=0)
    assert torch.equal(_pwlab_choices(stats, 10, 2)[0], _hf_choices(block, x.reshape(-1, D))[0])


def test_balance_loss_conventions(interop):
    """transformers' balance loss is top_k times pwlab's on the same routing (counts over N, not N·k)."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    for k in (1, 2, 3):
        gen = torch.Generator().manual_seed(k)
        logits = torch.randn(40, 8, generator=gen)
        probs = logits.softmax(-1)
        expert = probs.topk(k, dim=-1)[1].flatten()
        ours = losses.load_balancing(probs, expert)
        hf = load_balancing_loss_func((logits,), num_experts=8, top_k=k)
        assert torch.allclose(hf, k * ours, atol=1e-6, rtol=0)
    # uniform probabilities: pwlab's loss is 1 and transformers' is k, whatever the tie-break
    zeros = torch.zeros(12, 4)
    expert = zeros.topk(2, dim=-1)[1].flatten()
    assert losses.load_balancing(zeros.softmax(-1), expert).item() == pytest.approx(1.0)
    assert load_balancing_loss_func((zeros,), num_experts=4, top_k=2).item() == pytest.approx(2.0)


def test_balance_loss_of_a_converted_block(interop):
    """The converted layer's MoEStats balance loss is the block's transformers loss divided by k."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    block = interop.tiny_hf_block("mixtral", seed=4)
    layer = interop.moe_from_hf(block).eval()
    x = torch.randn(32, D)
    _, stats = layer(x)
    logits, _, _ = block.gate(x)
    hf = load_balancing_loss_func((logits,), num_experts=8, top_k=2)
    assert torch.allclose(hf, 2 * stats.aux_losses["load_balancing"], atol=1e-6, rtol=0)


def test_group_limited_routing_keeps_to_the_best_groups(interop):
    """num_group=4, topk_group=1: each token's experts all lie in one group of two, the best one."""
    block = interop.tiny_hf_block("deepseek_v3", seed=5, num_experts=8, top_k=2, n_group=4, topk_group=1)
    layer = interop.moe_from_hf(block).eval()
    x = torch.randn(50, D)
    _, stats = layer(x)
    expert, _ = _pwlab_choices(stats, 50, 2)
    groups = expert // 2
    assert torch.equal(groups[:, 0], groups[:, 1])
    # the chosen group is the one with the largest sum of its two biased scores (a hand oracle)
    r = layer.router
    choice = torch.sigmoid(x @ r.gate.weight.t()) + r.expert_bias
    assert torch.equal(groups[:, 0], choice.view(50, 4, 2).sum(-1).argmax(-1))
    # and it is a real restriction: plain top-2 would cross groups for some tokens
    plain = choice.topk(2, dim=-1)[1] // 2
    assert (plain[:, 0] != plain[:, 1]).any()


def test_the_correction_bias_moves_the_choice_not_the_weight(interop):
    block = interop.tiny_hf_block("deepseek_v3", seed=6, top_k=2, norm_topk_prob=False, routed_scaling_factor=1.0)
    with torch.no_grad():
        block.gate.e_score_correction_bias.zero_()
        block.gate.e_score_correction_bias[3] = 10.0          # every token now picks expert 3
    layer = interop.moe_from_hf(block).eval()
    x = torch.randn(20, D)
    y, stats = layer(x)
    assert torch.allclose(y, block(x.unsqueeze(0)).squeeze(0), atol=TOL, rtol=0)
    assert int(stats.counts[3]) == 20
    picked = stats.routing.expert == 3
    score = torch.sigmoid(x @ layer.router.gate.weight.t())[:, 3]
    assert torch.allclose(stats.routing.weight[picked], score[stats.routing.token[picked]], atol=1e-6)


def test_unsupported_blocks_and_options_are_refused(interop):
    with pytest.raises(TypeError, match="block must be one of .*MixtralSparseMoeBlock"):
        interop.moe_from_hf(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="top-1 routing with renormalisation"):
        interop.moe_from_hf(interop.tiny_hf_block("mixtral", top_k=1))
    with pytest.raises(ValueError, match="hidden_act must be 'silu'"):
        interop.moe_from_hf(interop.tiny_hf_block("olmoe", hidden_act="gelu"))
    with pytest.raises(ValueError, match="not a multiple of the routed experts' width 24"):
        interop.moe_from_hf(interop.tiny_hf_block("qwen2_moe", d_hidden=24, shared_expert_intermediate_size=30))
    with pytest.raises(ValueError, match="family"):
        interop.tiny_hf_block("gpt2")


def test_sigmoid_group_router_checks_its_arguments(interop):
    with pytest.raises(ValueError, match="topk_group"):
        interop.SigmoidGroupTopK(top_k=2, num_group=2, topk_group=3)
    with pytest.raises(ValueError, match="divisible by num_group"):
        interop.SigmoidGroupTopK(top_k=2, num_group=3, d_model=4, num_experts=8)
    with pytest.raises(ValueError, match="top_k=3 exceeds"):
        interop.SigmoidGroupTopK(top_k=3, num_group=4, topk_group=1, d_model=4, num_experts=8)
    with pytest.raises(ValueError, match="scaling"):
        interop.SigmoidGroupTopK(top_k=2, scaling=0.0)


def test_missing_transformers_gives_the_install_hint(monkeypatch):
    from pwlab import interop as mod

    monkeypatch.setitem(sys.modules, "transformers", None)       # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pip install 'pwlab\[hf\]'"):
        mod.moe_from_hf(torch.nn.Linear(2, 2))
    with pytest.raises(ImportError, match=r"pip install 'pwlab\[hf\]'"):
        mod.tiny_hf_block("mixtral")


def test_the_core_never_imports_transformers():
    code = ("import sys, pwlab, pwlab.moe, pwlab.model, pwlab.train, pwlab.interop\n"
            "assert 'transformers' not in sys.modules, 'transformers was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_shared_gate_scales_the_shared_experts():
    """MoE(shared_gate=True): y = routed(x) + sigmoid(x·w_s) · Σ shared(x), by hand."""
    torch.manual_seed(0)
    layer = MoE(D, 8, 4, expert="swiglu", num_shared_experts=2, shared_gate=True).eval()
    x = torch.randn(10, D)
    y, _ = layer(x)
    shared = sum(layer.shared_experts.forward_expert(i, x) for i in range(2))
    plain = MoE(D, 8, 4, layer.router, expert="swiglu").eval()
    plain.experts.load_state_dict(layer.experts.state_dict())
    routed, _ = plain(x)
    expected = routed + torch.sigmoid(x @ layer.shared_gate.weight.t()) * shared
    assert torch.allclose(y, expected, atol=1e-6, rtol=0)
    assert "shared_gate=True" in repr(layer)
    with pytest.raises(ValueError, match="shared_gate=True needs num_shared_experts"):
        MoE(D, 8, 4, shared_gate=True)
    # the gate is counted: a D→1 linear per token on top of the ungated layer
    gated = model_flops(layer, tokens=10).forward
    ungated = MoE(D, 8, 4, expert="swiglu", num_shared_experts=2)
    assert gated - model_flops(ungated, tokens=10).forward == linear_flops(10, D, 1).forward


def test_the_expert_parallel_copy_refuses_a_shared_gate():
    from pwlab.distributed.ep_moe import ExpertParallelMoE

    with pytest.raises(ValueError, match="shared_gate"):
        ExpertParallelMoE.from_moe(MoE(D, 8, 4, expert="swiglu", num_shared_experts=1, shared_gate=True))
