"""Models of FROG Sections 4.4/4.5: parameter counts equal torchvision's, block outputs, attention."""
import math

import pytest
import torch
import torch.nn.functional as F

from frogcore.models import MODELS, activity_dims, build_model, num_parameters
from frogcore.models.vit import Attention

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]
SMALL = {"fc": dict(width=16), "resnet18": dict(width=4), "vit": dict(depth=2, heads=2, dim=16, mlp_dim=32, patch=4)}


@pytest.mark.parametrize("width,count", [(256, 269_322), (1024, 1_863_690), (4096, 20_037_642)])
def test_fc_parameter_counts_match_the_paper_on_mnist(width, count):
    assert num_parameters(build_model("fc", (1, 28, 28), 10, width=width)) == count


def test_resnet18_parameter_count_equals_torchvision():
    # torchvision.models.resnet18(num_classes=10): 11,181,642 parameters (hard-coded; no torchvision here)
    assert num_parameters(build_model("resnet18", (3, 32, 32), 10)) == 11_181_642
    # one input channel changes only the stem convolution: 64 * (3 - 1) * 7 * 7 fewer weights
    assert num_parameters(build_model("resnet18", (1, 28, 28), 10)) == 11_181_642 - 64 * 2 * 49


def test_vit_parameter_count_matches_its_formula():
    dim, mlp, depth, patch, c, n_tok = 256, 512, 6, 4, 3, (32 // 4) ** 2 + 1
    block = 2 * 2 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * mlp + mlp) + (mlp * dim + dim)
    expected = (c * patch * patch * dim + dim) + dim + n_tok * dim + depth * block + 2 * dim + dim * 10 + 10
    assert num_parameters(build_model("vit", (3, 32, 32), 10)) == expected


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(MODELS))
def test_models_run_on_every_input_shape(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 10, **SMALL[name])
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8)])
def test_full_size_resnet18_and_vit_run(shape):
    for name in ("resnet18", "vit"):
        out = build_model(name, shape, 10)(torch.randn(2, *shape))
        assert out.shape == (2, 10)


@pytest.mark.parametrize("name", list(MODELS))
def test_block_names_are_submodules_in_forward_order_with_plain_tensor_outputs(name):
    shape = (3, 32, 32)
    model = build_model(name, shape, 10, **SMALL[name])
    modules = dict(model.named_modules())
    assert set(model.block_names) <= set(modules)
    seen = []
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.append((n, o))) for n in model.block_names]
    logits = model(torch.randn(2, *shape))
    for h in hooks:
        h.remove()
    assert [n for n, _ in seen] == model.block_names
    assert all(type(o) is torch.Tensor and o.shape[0] == 2 for _, o in seen)
    assert torch.equal(seen[-1][1], logits)  # the last block is the head


def test_activity_dimensions_match_the_paper():
    for w in (256, 1024, 4096):
        dims = activity_dims(build_model("fc", (1, 28, 28), 10, width=w), (1, 28, 28))
        assert list(dims) == ["fc1", "fc2", "fc3"] and sum(dims.values()) == 2 * w + 10
    dims = activity_dims(build_model("resnet18", (3, 32, 32), 10), (3, 32, 32))
    assert list(dims) == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert list(dims.values()) == [64 * 8 * 8, 64 * 8 * 8, 128 * 4 * 4, 256 * 2 * 2, 512, 10]  # 11,786 (~11.8k)
    dims = activity_dims(build_model("vit", (3, 32, 32), 10), (3, 32, 32))
    assert list(dims) == [f"blocks.{i}" for i in range(6)] + ["head"]
    assert sum(dims.values()) == 6 * 65 * 256 + 10


def test_resnet_initialisation_follows_torchvision():
    model = build_model("resnet18", (3, 32, 32), 10, width=8)
    conv = model.layer2[0].conv1
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() - math.sqrt(2 / fan_out)) < 0.15 * math.sqrt(2 / fan_out)
    assert torch.equal(model.layer1[0].bn1.weight, torch.ones(8)) and torch.equal(model.layer1[0].bn1.bias, torch.zeros(8))


def test_attention_equals_the_softmax_formula():
    torch.manual_seed(0)
    att = Attention(dim=12, heads=3)
    x = torch.randn(2, 5, 12)
    q, k, v = att.qkv(x).reshape(2, 5, 3, 3, 4).permute(2, 0, 3, 1, 4)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    ref = att.proj((w @ v).transpose(1, 2).reshape(2, 5, 12))
    torch.testing.assert_close(att(x), ref)


def test_seeded_construction_is_deterministic():
    a = [p.clone() for p in (torch.manual_seed(3), build_model("vit", (1, 8, 8), 10, **SMALL["vit"]))[1].parameters()]
    b = [p.clone() for p in (torch.manual_seed(3), build_model("vit", (1, 8, 8), 10, **SMALL["vit"]))[1].parameters()]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_bad_arguments_fail_with_a_message():
    with pytest.raises(ValueError, match="model"):
        build_model("mlp", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="width"):
        build_model("fc", (1, 8, 8), 10, width=0)
    with pytest.raises(ValueError, match="patch"):
        build_model("vit", (1, 8, 8), 10, patch=3)
    with pytest.raises(ValueError, match="heads"):
        build_model("vit", (1, 8, 8), 10, dim=10, heads=4, patch=4)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("resnet18", (64,), 10)
