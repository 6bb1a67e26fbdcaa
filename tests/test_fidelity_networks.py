"""Fidelity of the network experiments (FROG 4.4/4.5) to the authors' code (Helmholtz-AI-Energy/frog, 7beb8cb):
which activations are perturbed (FC after the ReLU, ViT grouping ``wide_1``), the ViT's LayerNorm eps and
torchvision initialisation, ResNet18's 1-channel first convolution, and the trainer's divergence rule
(``break_at_loss``) and argument checks. See book/frog_deviations.md."""
import copy
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from frogcore.datasets import Splits
from frogcore.engines import make_engine
from frogcore.models import activity_dims, build_model
from frogcore.training import fit


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _step(model, mode, x, y, seed=1, **kw):
    """One engine step on a copy of ``model``; the copy's gradients by parameter name."""
    m = copy.deepcopy(model)
    make_engine(mode=mode, generator=torch.Generator().manual_seed(seed), **kw).step(m, F.cross_entropy, x, y)
    return {n: p.grad.clone() for n, p in m.named_parameters()}


# ----------------------------------------------------------------------------- FC: post-ReLU activations

def test_fc_perturbs_the_hidden_activations_after_the_relu():
    torch.manual_seed(0)
    net = build_model("fc", (1, 4, 4), 10, width=12)
    assert net.block_names == ["act1", "act2", "fc3"]
    x = torch.randn(5, 1, 4, 4)
    seen = {}
    modules = dict(net.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o)) for n in net.block_names]
    logits = net(x)
    for h in hooks:
        h.remove()
    h1 = torch.relu(net.fc1(x.flatten(1)))
    torch.testing.assert_close(seen["act1"], h1)
    torch.testing.assert_close(seen["act2"], torch.relu(net.fc2(h1)))
    assert torch.equal(seen["fc3"], logits)
    assert sum(activity_dims(net, (1, 4, 4)).values()) == 2 * 12 + 10


@pytest.mark.parametrize("mode", ["sim", "fwd"])
def test_fc_unit_inactive_for_the_whole_batch_gets_no_fc1_gradient(mode):
    """The authors back-propagate the estimated post-ReLU gradient through the ReLU inside the block: a unit
    whose pre-activation is negative for every sample passes nothing to its fc1 row. Perturbing the
    pre-activation (the old block ``fc1``) gives that row a non-zero random gradient."""
    torch.manual_seed(0)
    net = build_model("fc", (1, 4, 4), 10, width=12).double()
    dead = 3
    with torch.no_grad():
        net.fc1.bias[dead] = -1e3  # pre-activation < 0 for every sample of the batch
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (16,), generator=g)
    assert (net.fc1(x.flatten(1))[:, dead] < 0).all()
    grads = _step(net, mode, x, y, perturbation="activity", aggregation="mean", k=4)
    assert torch.count_nonzero(grads["fc1.weight"][dead]) == 0 and grads["fc1.bias"][dead] == 0
    live = [i for i in range(12) if i != dead and (net.fc1(x.flatten(1))[:, i] > 0).any()]
    assert live and all(torch.count_nonzero(grads["fc1.weight"][i]) > 0 for i in live)


# ----------------------------------------------------------------------------- ViT: grouping wide_1

@pytest.mark.parametrize("shape,dim", [((3, 32, 32), 5 * 65 * 256 + 10), ((1, 28, 28), 5 * 50 * 256 + 10)])
def test_vit_perturbs_blocks_1_to_depth_minus_1_and_the_logits(shape, dim):
    net = build_model("vit", shape, 10)
    assert net.block_names == ["blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "head"]
    dims = activity_dims(net, shape)
    assert sum(dims.values()) == dim  # 83,210 on CIFAR-10, 64,010 on MNIST
    assert dim in (83_210, 64_010)
    assert build_model("vit", (1, 8, 8), 10, depth=1, dim=8, heads=2, mlp_dim=8).block_names == ["head"]


def test_vit_last_encoder_block_is_trained_through_the_head_group():
    """Per-block FROG with k = 10 = the logits' size is exact for the head group: the head and the last
    encoder block (which belongs to that group) get the backprop gradient, the perturbed blocks do not."""
    torch.manual_seed(0)
    net = build_model("vit", (3, 8, 8), 10, depth=3, heads=2, dim=8, mlp_dim=16, patch=4).double()
    with torch.no_grad():  # a non-zero head, so that the encoder blocks have non-zero gradients
        net.head[1].weight.normal_()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    kw = dict(perturbation="activity", tangents="per-layer", aggregation="projection", k=10)
    est = _step(net, "sim", x, y, **kw)
    bp = _step(net, "bp", x, y)
    scale = max(g.abs().max().item() for g in bp.values())
    for n in bp:
        err = (est[n] - bp[n]).abs().max().item()
        if n.startswith(("head.", "blocks.2.")):
            assert err <= 1e-9 * scale, n
    assert max(bp[n].abs().max().item() for n in bp if n.startswith("blocks.2.")) > 1e-6
    assert max((est[n] - bp[n]).abs().max().item() for n in bp if n.startswith("blocks.1.")) > 1e-6


# ----------------------------------------------------------------------------- ViT: LayerNorm and initialisation

def test_vit_layernorms_use_eps_1e_6():
    net = build_model("vit", (3, 32, 32), 10, depth=3)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 3 + 1 and all(m.eps == 1e-6 for m in norms)
    assert all(torch.equal(m.weight, torch.ones(256)) and torch.equal(m.bias, torch.zeros(256)) for m in norms)


def _uniform_ok(w, bound):
    """Every value within ±bound, the extremes near it and the std of U(−bound, bound)."""
    return (w.abs().max() <= bound and w.abs().max() > 0.95 * bound
            and abs(w.std().item() - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3))


def test_vit_initialisation_follows_torchvision():
    torch.manual_seed(0)
    d, mlp, c, p = 256, 512, 3, 4
    net = build_model("vit", (c, 32, 32), 10)
    zeros = [net.cls_token, net.head[1].weight, net.head[1].bias, net.patch_embed.bias]
    for b in net.blocks:
        zeros += [b.attn.qkv.bias, b.attn.proj.bias]
    assert all(torch.count_nonzero(t) == 0 for t in zeros)
    # patch embedding: truncated normal with std sqrt(1 / (c p^2))
    std = math.sqrt(1 / (c * p * p))
    assert abs(net.patch_embed.weight.std().item() - std) < 0.03 * std
    # position embedding N(0, 0.02^2)
    assert abs(net.pos_embed.std().item() - 0.02) < 0.03 * 0.02 and abs(net.pos_embed.mean().item()) < 1e-3
    for b in net.blocks:
        assert b.attn.qkv.weight.shape == (3 * d, d)
        assert _uniform_ok(b.attn.qkv.weight, math.sqrt(6 / (d + 3 * d)))  # Xavier on the (3d, d) matrix
        assert _uniform_ok(b.attn.proj.weight, 1 / math.sqrt(d))  # PyTorch's default Linear weight
        assert _uniform_ok(b.mlp[0].weight, math.sqrt(6 / (d + mlp))) and _uniform_ok(b.mlp[2].weight,
                                                                                    math.sqrt(6 / (d + mlp)))
        for bias in (b.mlp[0].bias, b.mlp[2].bias):  # N(0, 1e-12)
            assert torch.count_nonzero(bias) == bias.numel() and 0.7e-6 < bias.std().item() < 1.3e-6
    assert torch.count_nonzero(net(torch.randn(2, c, 32, 32))) == 0  # zero head: zero logits


# ----------------------------------------------------------------------------- ResNet18: 1-channel stem

def test_resnet18_one_channel_stem_keeps_pytorchs_default_init():
    torch.manual_seed(0)
    one = build_model("resnet18", (1, 28, 28), 10)
    assert _uniform_ok(one.stem.conv1.weight, 1 / math.sqrt(1 * 7 * 7))  # kaiming_uniform(a=sqrt(5))
    he = math.sqrt(2 / (64 * 7 * 7))  # torchvision's He-normal, fan-out
    three = build_model("resnet18", (3, 32, 32), 10)
    assert abs(three.stem.conv1.weight.std().item() - he) < 0.05 * he
    for net in (one, three):  # every other convolution keeps torchvision's init
        w = net.layer1[0].conv1.weight
        assert abs(w.std().item() - math.sqrt(2 / (64 * 9))) < 0.05 * math.sqrt(2 / (64 * 9))


# ----------------------------------------------------------------------------- training: divergence rule

def _blobs(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 2, 2, generator=g) * 0.5 + (2 * y - 1).view(-1, 1, 1, 1) * 1.5
    return Splits(*[(x[i::3], y[i::3]) for i in range(3)], num_classes=2, name="blobs")


class _Ascent:
    """Backprop gradient, negated: SGD climbs the loss (and soon overflows)."""

    def __init__(self):
        self.calls = 0

    def step(self, model, loss_fn, x, y):
        self.calls += 1
        loss = loss_fn(model(x), y)
        loss.backward()
        for p in model.parameters():
            p.grad.neg_()
        return loss.detach()


class _Grow(_Ascent):
    """``grad = −p``: every SGD step scales all weights by ``1 + lr``, so the logits grow geometrically and
    the validation loss (half the samples misclassified) rises past 10 while staying finite."""

    def step(self, model, loss_fn, x, y):
        self.calls += 1
        with torch.no_grad():
            loss = loss_fn(model(x), y)
        for p in model.parameters():
            p.grad = -p.detach().clone()
        return loss


def _fc(seed=0):
    torch.manual_seed(seed)
    return build_model("fc", (1, 2, 2), 2, width=8)


def test_a_finite_validation_loss_of_10_or_more_ends_the_run_as_diverged():
    assert inspect.signature(fit).parameters["break_at_loss"].default == 10.0
    kw = dict(lr=0.05, epochs=20, batch_size=8, progress=False)
    res = fit(_fc(), _blobs(), _Grow(), **kw)
    v = res.history.val_loss
    assert res.status == "diverged" and math.isfinite(v.iloc[-1]) and v.iloc[-1] >= 10
    assert (v.iloc[:-1] < 10).all() and 1 < res.epochs_run < 20  # stopped at the first epoch at or above 10
    free = fit(_fc(), _blobs(), _Grow(), break_at_loss=None, **kw)  # the same run without the rule goes on
    assert free.status == "completed" and free.epochs_run == 20 and math.isfinite(free.last.val_loss)
    torch.testing.assert_close(free.history.val_loss.iloc[:len(v)].to_numpy(), v.to_numpy())
    low = fit(_fc(), _blobs(), _Grow(), break_at_loss=3, **kw)
    assert low.status == "diverged" and low.last.val_loss >= 3 and low.epochs_run < res.epochs_run


def test_the_untrained_model_is_checked_too():
    net = _fc()
    with torch.no_grad():
        net.fc3.weight.mul_(1e4)  # an untrained validation loss far above 10
    eng = _Ascent()
    res = fit(copy.deepcopy(net), _blobs(), eng, lr=0.1, epochs=3, batch_size=8, progress=False)
    assert res.status == "diverged" and res.epochs_run == 0 and eng.calls == 0
    assert res.history.val_loss.iloc[0] >= 10


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, True, "10"])
def test_break_at_loss_is_validated(value):
    with pytest.raises(ValueError, match="break_at_loss"):
        fit(_fc(), _blobs(), _Ascent(), lr=0.1, epochs=1, batch_size=8, break_at_loss=value)


@pytest.mark.parametrize("value", [True, False, 0, -0.1, math.nan, math.inf, "0.1", None])
def test_lr_must_be_a_positive_finite_number_not_a_bool(value):
    eng = _Ascent()
    with pytest.raises(ValueError, match="lr"):
        fit(_fc(), _blobs(), eng, lr=value, epochs=1, batch_size=8, progress=False)
    assert eng.calls == 0
