"""pwlab.flops against hand counts (2 FLOPs per multiply-add)."""
import pytest
import torch
from torch import nn

from pwlab import flops
from pwlab.moe import MoE
from pwlab.routing.topk import TopK


def test_linear_hand_count():
    f = flops.linear_flops(4, 3, 5)
    assert f.forward == 2 * 4 * 3 * 5 == 120
    assert f.grad_input == 120 and f.grad_weight == 120
    assert f.backward == 240 and f.training == 360


def test_swat_linear_scales_forward_and_grad_input_by_weight_density_grad_weight_by_act_density():
    f = flops.swat_linear_flops(10, 100, 20, weight_sparsity=0.9, act_sparsity=0.5)
    dense = 2 * 10 * 100 * 20
    assert f.forward == dense // 10 and f.grad_input == dense // 10
    assert f.grad_weight == dense // 2


def test_conv2d_hand_count():
    # 2 images, 3->8 channels, 3x3 kernel, 6x6 output: 2*(2*36 positions)*(3*9)*8
    f = flops.conv2d_flops(2, 3, 8, 3, (6, 6))
    assert f.forward == 2 * 2 * 36 * 27 * 8
    g = flops.conv2d_flops(2, 4, 8, (3, 3), 6, groups=2)
    assert g.forward == 2 * 2 * 36 * (2 * 9) * 8


def test_ffn_and_moe_hand_counts():
    n, d, h, e, k = 16, 8, 32, 4, 2
    assert flops.ffn_flops(n, d, h).forward == 4 * n * d * h
    m = flops.moe_ffn_flops(n, d, h, e, k)
    assert m.forward == 4 * n * k * d * h + 2 * n * d * e
    assert m.training == 3 * m.forward


def test_attention_hand_count():
    f = flops.attention_flops(2, 5, 8)
    assert f.forward == 4 * 2 * 25 * 8 and f.backward == 2 * f.forward


def test_model_flops_walks_mlp_with_tokens():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    mf = flops.model_flops(mlp, 7)
    fwd = 2 * 7 * (64 * 32 + 32 * 10)
    assert mf.forward == fwd and mf.training == 3 * fwd
    assert mf.run(5) == 15 * fwd and flops.train_flops(mlp, 7, 5) == 15 * fwd
    assert mf.per_token() == pytest.approx(3 * fwd / 7)
    assert [k for _, k, _ in mf.layers] == ["linear", "linear"]


def test_model_flops_conv_needs_example_input_and_counts_output_size():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    with pytest.raises(ValueError, match="example_input"):
        flops.model_flops(net, 3)
    mf = flops.model_flops(net, example_input=torch.zeros(3, 1, 8, 8))
    conv = 2 * 3 * 64 * 9 * 4
    lin = 2 * 3 * 256 * 10
    assert mf.forward == conv + lin
    assert mf.tokens == 3


def test_model_flops_moe_counts_active_experts_and_router():
    torch.manual_seed(0)
    moe = MoE(8, 16, 4, TopK(top_k=2))
    mf = flops.model_flops(moe, 10)
    assert mf.forward == 4 * 10 * 2 * 8 * 16 + 2 * 10 * 8 * 4
    assert mf.layers[0][1] == "moe"
    probed = flops.model_flops(moe, example_input=torch.randn(10, 8))
    assert probed.forward == mf.forward


def test_model_flops_recognises_swat_layers_by_their_sparsities():
    class Fake(nn.Linear):
        weight_sparsity, act_sparsity = 0.75, 0.5

    mf = flops.model_flops(nn.Sequential(nn.Linear(4, 8), Fake(8, 8)), 2)
    swat = mf.total(swat_only=True)
    assert swat.forward == 2 * 2 * 64 // 4 and swat.grad_weight == 2 * 2 * 64 // 2
    assert mf.total().forward == 2 * 2 * 32 + swat.forward


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "x"])
def test_bad_sparsity_names_the_parameter(bad):
    with pytest.raises(ValueError, match="weight_sparsity"):
        flops.swat_linear_flops(1, 2, 3, weight_sparsity=bad)
    with pytest.raises(ValueError, match="act_sparsity"):
        flops.swat_linear_flops(1, 2, 3, act_sparsity=bad)


def test_missing_tokens_is_a_value_error():
    with pytest.raises(ValueError, match="tokens"):
        flops.model_flops(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="tokens"):
        flops.linear_flops(-1, 2, 2)


def test_model_flops_takes_a_list_of_task_batches():
    """PathwaysModel's input is a list of TaskBatch: the examples are counted over all of them."""
    import pwlab.tasks as T
    from pwlab.config import tiny
    from pwlab.model import PathwaysModel
    from pwlab.tasks.base import TaskBatch
    from pwlab.flops import model_flops
    tasks = [T.get("wine"), T.get("digits")]
    model = PathwaysModel(tasks, tiny().model)
    batches = [TaskBatch(task=t.name, task_index=i, sense=t.sense, x=t.x_train[:5], y=t.y_train[:5])
               for i, t in enumerate(tasks)]
    f = model_flops(model, example_input=(batches,))
    assert f.tokens == 10
    assert f.training > 0 and f.forward > 0
