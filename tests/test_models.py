"""The model registry: FROG's models (parameter counts equal torchvision's / the authors'), the FoMoH models,
block outputs, attention; one registry for both (fomoh_nets.build_model delegates)."""
import math

import pytest
import torch

from frogcore.models import FOMOH_MODELS, FROG_MODELS, MODELS, activity_dims, build_model, fomoh_nets, num_parameters
from frogcore.models.vit import Attention

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]
SMALL = {"fc": dict(width=16), "resnet18": dict(width=4), "vit": dict(depth=2, heads=2, dim=16, mlp_dim=32, patch=4),
         "lenet5": {}, "convnet": dict(channels=4, depth=4, hidden=16),
         "mlpmixer": dict(dim=16, depth=2, token_mlp_dim=8, channel_mlp_dim=32, patch=4),
         "logreg": {}, "mlp": dict(hidden=16), "cnn": {}, "cnn_cifar10": {}}


def test_one_registry_holds_every_model():
    assert set(MODELS) == set(FROG_MODELS) | set(FOMOH_MODELS) == set(SMALL)
    assert FOMOH_MODELS == tuple(fomoh_nets.MODELS)  # every FoMoH model is registered


@pytest.mark.parametrize("name", FOMOH_MODELS)
def test_fomoh_build_model_delegates_to_the_registry(name):
    shape = (3, 32, 32) if name == "cnn_cifar10" else (1, 8, 8)
    a = (torch.manual_seed(1), fomoh_nets.build_model(name, shape, 10))[1]
    b = (torch.manual_seed(1), build_model(name, shape, 10))[1]
    assert type(a) is type(b) and a.block_names == b.block_names
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # the same initialisation as the FoMoH builders themselves (results computed before the unification)
    direct = {"logreg": lambda: fomoh_nets.logistic_regression(shape, 10), "mlp": lambda: fomoh_nets.mlp(shape),
              "cnn": lambda: fomoh_nets.FomohCNN(shape, 10), "cnn_cifar10": lambda: fomoh_nets.cifar10_cnn(shape, 10)}[name]
    c = (torch.manual_seed(1), direct())[1]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    with pytest.raises(ValueError, match=r"model='vit'.*allowed values: 'logreg'"):
        fomoh_nets.build_model("vit", shape, 10)


@pytest.mark.parametrize("width,count", [(256, 269_322), (1024, 1_863_690), (4096, 20_037_642)])
def test_fc_parameter_counts_match_the_paper_on_mnist(width, count):
    assert num_parameters(build_model("fc", (1, 28, 28), 10, width=width)) == count


def test_resnet18_parameter_count_equals_torchvision():
    # torchvision.models.resnet18(num_classes=10): 11,181,642 parameters (hard-coded; no torchvision here)
    assert num_parameters(build_model("resnet18", (3, 32, 32), 10)) == 11_181_642
    # one input channel changes only the stem convolution: 64 * (3 - 1) * 7 * 7 fewer weights
    assert num_parameters(build_model("resnet18", (1, 28, 28), 10)) == 11_181_642 - 64 * 2 * 49


def test_lenet5_parameter_count_matches_the_authors_mnist_network():
    conv = (1 * 6 * 25 + 6) + 2 * 6 + (6 * 16 * 25 + 16) + 2 * 16  # two convolutions with BatchNorm
    dense = (256 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)  # 16 x 4 x 4 = 256 features on 28 x 28
    assert num_parameters(build_model("lenet5", (1, 28, 28), 10)) == conv + dense == 44_470
    assert build_model("lenet5", (1, 28, 28)).padding == 0 and build_model("lenet5", (1, 8, 8)).padding == 2


def test_convnet_parameter_count_matches_the_authors_configuration():
    # Conv64,3-ReLU x 4 -- F-FC1024-ReLU -- FC10 on 1 x 28 x 28 (28 -> 20 after four unpadded 3 x 3 convolutions)
    expected = (1 * 64 * 9 + 64) + 3 * (64 * 64 * 9 + 64) + (64 * 20 * 20 * 1024 + 1024) + (1024 * 10 + 10)
    assert num_parameters(build_model("convnet", (1, 28, 28), 10)) == expected == 26_337_098


def test_mlpmixer_parameter_count_matches_its_formula():
    dim, tok_mlp, ch_mlp, depth, patch, c = 512, 256, 2048, 8, 4, 3
    tokens = (32 // patch) ** 2
    block = 2 * 2 * dim + (tokens * tok_mlp + tok_mlp) + (tok_mlp * tokens + tokens) + (dim * ch_mlp + ch_mlp) \
        + (ch_mlp * dim + dim)
    expected = (c * patch * patch * dim + dim) + depth * block + 2 * dim + (dim * 10 + 10)
    assert num_parameters(build_model("mlpmixer", (3, 32, 32), 10)) == expected


def test_vit_parameter_count_matches_its_formula():
    dim, mlp, depth, patch, c, n_tok = 256, 512, 6, 4, 3, (32 // 4) ** 2 + 1
    block = 2 * 2 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * mlp + mlp) + (mlp * dim + dim)
    expected = (c * patch * patch * dim + dim) + dim + n_tok * dim + depth * block + 2 * dim + dim * 10 + 10
    assert num_parameters(build_model("vit", (3, 32, 32), 10)) == expected


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(MODELS))
def test_models_run_on_every_input_shape(name, shape):
    if name == "cnn_cifar10" and any(s % 8 for s in shape[1:]):
        with pytest.raises(ValueError, match="divisible"):  # three 2x2 poolings need sizes divisible by 8
            build_model(name, shape, 10)
        return
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
        assert list(dims) == ["act1", "act2", "fc3"] and sum(dims.values()) == 2 * w + 10  # post-ReLU, as the authors
    dims = activity_dims(build_model("resnet18", (3, 32, 32), 10), (3, 32, 32))
    assert list(dims) == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert list(dims.values()) == [64 * 8 * 8, 64 * 8 * 8, 128 * 4 * 4, 256 * 2 * 2, 512, 10]  # 11,786 (~11.8k)
    dims = activity_dims(build_model("vit", (3, 32, 32), 10), (3, 32, 32))
    assert list(dims) == [f"blocks.{i}" for i in range(5)] + ["head"]  # the authors' wide_1 grouping
    assert sum(dims.values()) == 5 * 65 * 256 + 10  # 83,210
    dims = activity_dims(build_model("lenet5", (1, 28, 28), 10), (1, 28, 28))
    assert dims == {"conv1": 6 * 12 * 12, "conv2": 16 * 4 * 4, "fc1": 120, "fc2": 84, "fc3": 10}
    dims = activity_dims(build_model("convnet", (1, 8, 8), 10, **SMALL["convnet"]), (1, 8, 8))
    assert dims == {"conv1": 4 * 64, "conv2": 4 * 64, "conv3": 4 * 64, "conv4": 4 * 64, "fc1": 16, "fc2": 10}
    dims = activity_dims(build_model("mlpmixer", (3, 32, 32), 10, **SMALL["mlpmixer"]), (3, 32, 32))
    assert dims == {"patch_embed": 64 * 16, "blocks.0": 64 * 16, "blocks.1": 64 * 16, "head": 10}
    dims = activity_dims(build_model("cnn", (1, 28, 28), 10), (1, 28, 28))
    assert dims == {"features.0": 20 * 24 * 24, "features.3": 50 * 8 * 8, "classifier.0": 500, "classifier.2": 10}


def test_resnet_initialisation_follows_torchvision():
    model = build_model("resnet18", (3, 32, 32), 10, width=8)
    conv = model.layer2[0].conv1
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() - math.sqrt(2 / fan_out)) < 0.15 * math.sqrt(2 / fan_out)
    bn = model.layer1[0].bn1
    assert torch.equal(bn.weight, torch.ones(8)) and torch.equal(bn.bias, torch.zeros(8))


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
    with pytest.raises(ValueError, match=r"model='alexnet'.*allowed values: 'fc', 'resnet18', 'vit', 'lenet5'"):
        build_model("alexnet", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("lenet5", (1, 8, 8), 0)
    with pytest.raises(ValueError, match="channels"):
        build_model("convnet", (1, 8, 8), 10, channels=0)
    with pytest.raises(ValueError, match="too small"):
        build_model("convnet", (1, 28, 28), 10, depth=20)
    with pytest.raises(ValueError, match="patch"):
        build_model("mlpmixer", (1, 8, 8), 10, patch=3)
    with pytest.raises(ValueError, match="dropout"):
        build_model("mlpmixer", (1, 8, 8), 10, dropout=1.5)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("lenet5", (64,), 10)
    with pytest.raises(ValueError, match="hidden"):
        build_model("mlp", (1, 8, 8), 10, hidden=0)
    with pytest.raises(ValueError, match="width"):
        build_model("fc", (1, 8, 8), 10, width=0)
    with pytest.raises(ValueError, match="patch"):
        build_model("vit", (1, 8, 8), 10, patch=3)
    with pytest.raises(ValueError, match="heads"):
        build_model("vit", (1, 8, 8), 10, dim=10, heads=4, patch=4)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("resnet18", (64,), 10)
