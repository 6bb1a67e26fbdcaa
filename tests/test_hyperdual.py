"""Hyper-dual evaluation (frogcore.hyperdual) against reverse-mode autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.functional import hessian
from torch.autograd.functional import jvp as ag_jvp

from frogcore.estimators import flatten, unflatten
from frogcore.functions import rosenbrock
from frogcore.hyperdual import (
    MODES,
    derivatives_1d,
    directional_derivatives,
    directional_hessian,
    hyperdual,
    hyperdual_pairs,
    module_loss,
    module_params,
)
from frogcore.models.fomoh_nets import logistic_regression, mlp

DT = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n", [5, 10])
def test_hyperdual_matches_autograd_on_rosenbrock(n):
    g = _gen(n)
    x = torch.randn(n, generator=g, dtype=DT)
    v1, v2 = torch.randn(2, n, generator=g, dtype=DT)
    hd = hyperdual(rosenbrock, x, v1, v2)
    H = hessian(rosenbrock, x)
    _, d1 = ag_jvp(rosenbrock, x, v1)
    _, d2 = ag_jvp(rosenbrock, x, v2)
    torch.testing.assert_close(hd.value, rosenbrock(x))
    torch.testing.assert_close(hd.d1, d1)
    torch.testing.assert_close(hd.d2, d2)
    torch.testing.assert_close(hd.d12, v1 @ H @ v2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [5, 10])
def test_directional_hessian_batched_over_problems(mode, n):
    g = _gen(100 + n)
    x = torch.randn(3, n, generator=g, dtype=DT)  # three independent problems
    V = torch.randn(3, 4, n, generator=g, dtype=DT)
    out = directional_hessian(rosenbrock, x, V, mode=mode)
    for b in range(3):
        H = hessian(rosenbrock, x[b])
        grad = torch.autograd.functional.jacobian(rosenbrock, x[b])
        torch.testing.assert_close(out.H[b], V[b] @ H @ V[b].T)
        torch.testing.assert_close(out.d[b], V[b] @ grad)
    torch.testing.assert_close(out.value, rosenbrock(x))
    assert torch.equal(out.H, out.H.transpose(-1, -2))


def test_shared_tangents_broadcast_over_problems():
    g = _gen(7)
    x = torch.randn(2, 5, generator=g, dtype=DT)
    V = torch.randn(3, 5, generator=g, dtype=DT)
    out = directional_hessian(rosenbrock, x, V)
    ref = directional_hessian(rosenbrock, x, V.expand(2, 3, 5))
    torch.testing.assert_close(out.H, ref.H)


def _flat_reference(model, x, y):
    params = module_params(model)
    flat, spec = flatten(params)
    f = module_loss(model, F.cross_entropy, x, y)
    return params, flat, (lambda th: f(unflatten(th, spec))), f


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_hyperdual_matches_autograd_on_networks(kind):
    torch.manual_seed(0)
    shape = (1, 4, 4)
    model = (logistic_regression(shape, 5) if kind == "logreg" else mlp(shape, hidden=6, num_classes=5)).double()
    x = torch.randn(32, *shape, dtype=DT)
    y = torch.randint(0, 5, (32,))
    params, flat, f_flat, f = _flat_reference(model, x, y)
    n = flat.numel()
    V = torch.randn(3, n, generator=_gen(1), dtype=DT)
    H = hessian(f_flat, flat)
    grad = torch.autograd.functional.jacobian(f_flat, flat)
    for mode in MODES:
        out = directional_hessian(f, params, V, mode=mode)  # dict parameters, one global tangent
        torch.testing.assert_close(out.H, V @ H @ V.T)
        torch.testing.assert_close(out.d, V @ grad)
        torch.testing.assert_close(out.value, f_flat(flat))
    hd = hyperdual(f, params, V[0], V[1])
    torch.testing.assert_close(hd.d12, V[0] @ H @ V[1])
    pairs = hyperdual_pairs(f, params, V[[0, 1]], V[[2, 2]])
    torch.testing.assert_close(pairs.d12, V[[0, 1]] @ H @ V[2])
    value, d = directional_derivatives(f, params, V)
    torch.testing.assert_close(d, V @ grad)


def test_sin_derivatives_on_a_grid():
    x = torch.linspace(-3, 3, 101, dtype=DT)
    f0, f1, f2 = derivatives_1d(torch.sin, x)
    torch.testing.assert_close(f0, torch.sin(x))
    torch.testing.assert_close(f1, torch.cos(x))
    torch.testing.assert_close(f2, -torch.sin(x))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 8), k=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_quadratic_form_is_exact(n, k, seed):
    """For f = ½xᵀAx + bᵀx: d = V(Ax + b) and Ĥ = VAVᵀ exactly, whatever the point."""
    g = _gen(seed)
    A = torch.randn(n, n, generator=g, dtype=DT)
    A = A + A.T
    b = torch.randn(n, generator=g, dtype=DT)
    x = torch.randn(n, generator=g, dtype=DT)
    V = torch.randn(k, n, generator=g, dtype=DT)

    def f(z):
        return 0.5 * (z @ A * z).sum(-1) + z @ b

    out = directional_hessian(f, x, V, mode="block")
    torch.testing.assert_close(out.H, V @ A @ V.T)
    torch.testing.assert_close(out.d, V @ (A @ x + b))


def test_bad_input_fails_loudly():
    x = torch.zeros(4, dtype=DT)
    with pytest.raises(ValueError, match="mode"):
        directional_hessian(rosenbrock, x, torch.ones(2, 4, dtype=DT), mode="bogus")
    with pytest.raises(ValueError, match="dimension"):
        directional_hessian(rosenbrock, x, torch.ones(2, 3, dtype=DT))
    with pytest.raises(ValueError, match="same shape"):
        hyperdual_pairs(rosenbrock, x, torch.ones(2, 4, dtype=DT), torch.ones(3, 4, dtype=DT))


# ----------------------------------------------------------------------------- layers that need care

def _ag_directional_hessian(f_flat, flat, V):
    """Reference ``V ∇²f Vᵀ`` and ``V∇f`` by reverse-over-reverse autograd (``torch.autograd``, not torch.func,
    whose ``hessian`` is itself wrong through layer_norm): one double-backward Hessian-vector product per row."""
    theta = flat.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f_flat(theta), theta, create_graph=True)
    HV = torch.stack([torch.autograd.grad(grad @ v, theta, retain_graph=True)[0] for v in V])
    return V @ HV.T, V @ grad.detach()


def _module_case(model, x, y, seed=0, k=3):
    model = model.double()
    params, flat, f_flat, f = _flat_reference(model, x, y)
    V = torch.randn(k, flat.numel(), generator=_gen(seed), dtype=DT)
    return params, flat, f_flat, f, V


class _Tail(torch.nn.Module):
    """A small network around one layer under test: linear → layer → tanh → linear."""

    def __init__(self, layer, d_in=6, d=5, classes=3):
        super().__init__()
        self.inp, self.layer, self.out = torch.nn.Linear(d_in, d), layer, torch.nn.Linear(d, classes)

    def forward(self, x):
        return self.out(torch.tanh(self.layer(self.inp(x))))


@pytest.mark.parametrize("mode", MODES)
def test_layer_norm_under_hyperdual_evaluation(mode):
    """PyTorch's nested forward mode through native layer_norm is wrong; the hyper-dual evaluation must not be."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 6, dtype=DT), torch.randint(0, 3, (8,))
    params, flat, f_flat, f, V = _module_case(_Tail(torch.nn.LayerNorm(5)), x, y)
    H_ref, d_ref = _ag_directional_hessian(f_flat, flat, V)
    out = directional_hessian(f, params, V, mode=mode)
    torch.testing.assert_close(out.H, H_ref)
    torch.testing.assert_close(out.d, d_ref)
    torch.testing.assert_close(out.value, f_flat(flat))


def test_native_layer_norm_second_order_is_wrong_in_torch_func():
    """Why :func:`second_order_safe` exists: without it, the nested jvp of F.layer_norm misses terms."""
    from torch.func import jvp

    from frogcore.hyperdual import second_order_safe

    g = _gen(3)
    x, w, a, b = (torch.randn(4, 5, generator=g, dtype=DT) for _ in range(4))

    def f(z):
        return (F.layer_norm(z, (5,)) * w).sin().sum()

    def second(z):
        return jvp(lambda p: jvp(f, (p,), (a,))[1], (z,), (b,))[1]

    ref = a.reshape(-1) @ hessian(f, x).reshape(20, 20) @ b.reshape(-1)
    assert abs(float(second(x) - ref)) > 1e-3  # torch's own nested forward mode (if this fails, torch was fixed)
    with second_order_safe():
        torch.testing.assert_close(second(x), ref)
        torch.testing.assert_close(F.layer_norm(x, (5,)), torch.nn.functional.layer_norm(x, (5,)))


@pytest.mark.parametrize("layer", ["batch_norm_train", "batch_norm_eval", "instance_norm", "group_norm"])
def test_normalisation_layers_under_hyperdual_evaluation(layer):
    torch.manual_seed(1)
    if layer.startswith("batch_norm"):
        norm = torch.nn.BatchNorm2d(4, track_running_stats=(layer == "batch_norm_eval"))
    elif layer == "instance_norm":
        norm = torch.nn.InstanceNorm2d(4, affine=True)
    else:
        norm = torch.nn.GroupNorm(2, 4)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), norm, torch.nn.Tanh(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 4 * 4, 3))
    if layer == "batch_norm_eval":
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        model.eval()
    x, y = torch.randn(6, 2, 4, 4, dtype=DT), torch.randint(0, 3, (6,))
    params, flat, f_flat, f, V = _module_case(model, x, y, seed=2)
    H_ref, d_ref = _ag_directional_hessian(f_flat, flat, V)
    for mode in ("block", "pairs"):
        out = directional_hessian(f, params, V, mode=mode)
        torch.testing.assert_close(out.H, H_ref)
        torch.testing.assert_close(out.d, d_ref)
    if layer == "batch_norm_eval":  # running statistics are read, not updated
        assert not torch.equal(norm.running_mean, torch.zeros(4, dtype=DT))


def _dropout_net():
    torch.manual_seed(4)
    return torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Dropout(0.4),
                               torch.nn.Linear(7, 3)).double()


def test_dropout_one_mask_per_evaluation_in_every_mode():
    """Every tangent and the value see the same dropout mask; the result is the Hessian of f with that mask."""
    model = _dropout_net()
    x, y = torch.randn(10, 6, dtype=DT), torch.randint(0, 3, (10,))
    params, flat, f_flat, f, V = _module_case(model, x, y, seed=5)

    def f_seeded(theta):  # the same mask as the first draw after manual_seed(7)
        torch.manual_seed(7)
        return f_flat(theta)

    H_ref, d_ref = _ag_directional_hessian(f_seeded, flat, V)
    results = []
    for mode in ("block", "pairs", "loop"):
        torch.manual_seed(7)
        out = directional_hessian(f, params, V, mode=mode)
        after = torch.rand(1)  # the random stream advanced by exactly one forward pass in every mode
        torch.manual_seed(7)
        f_flat(flat)
        torch.testing.assert_close(after, torch.rand(1))
        torch.testing.assert_close(out.H, H_ref)
        torch.testing.assert_close(out.d, d_ref)
        torch.testing.assert_close(out.value, f_seeded(flat))
        results.append(out.H)
    # a different mask gives a different Hessian (the test can see the mask)
    torch.manual_seed(8)
    assert not torch.allclose(directional_hessian(f, params, V, mode="pairs").H, results[0])
    # first order: one mask for all tangents too
    torch.manual_seed(7)
    value, d = directional_derivatives(f, params, V)
    torch.testing.assert_close(d, d_ref)


class _TransformerNet(torch.nn.Module):
    def __init__(self, dim=6, heads=2, classes=3, dropout=0.0):
        super().__init__()
        self.block = torch.nn.TransformerEncoderLayer(dim, heads, 8, dropout=dropout, batch_first=True)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.block(x).mean(1))


@pytest.mark.parametrize("train", [True, False])
def test_transformer_block_under_hyperdual_evaluation(train):
    """Attention (math backend), LayerNorm, GELU/ReLU MLP; in eval mode torch would take its fused fast path."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(6)
    model = _TransformerNet().double().train(train)
    x, y = torch.randn(3, 4, 6, dtype=DT), torch.randint(0, 3, (3,))
    params, flat, f_flat, f, V = _module_case(model, x, y, seed=9, k=2)
    with sdpa_kernel(SDPBackend.MATH):
        H_ref, d_ref = _ag_directional_hessian(f_flat, flat, V)
    for mode in ("block", "loop"):
        out = directional_hessian(f, params, V, mode=mode)
        torch.testing.assert_close(out.H, H_ref)
        torch.testing.assert_close(out.d, d_ref)


def test_cifar_cnn_under_hyperdual_evaluation():
    """The FoMoH authors' CIFAR-10 CNN (BatchNorm on batch statistics, dropout) on a small input, against
    Hessian-vector products by reverse-over-reverse autograd with the same dropout masks."""
    from frogcore.models.fomoh_nets import cifar10_cnn

    torch.manual_seed(10)
    model = cifar10_cnn((3, 8, 8), num_classes=4).double().train()
    x, y = torch.randn(4, 3, 8, 8, dtype=DT), torch.randint(0, 4, (4,))
    params, flat, f_flat, f, V = _module_case(model, x, y, seed=11, k=2)

    def f_seeded(theta):
        torch.manual_seed(12)
        return f_flat(theta)

    H_ref, d_ref = _ag_directional_hessian(f_seeded, flat, V)
    torch.manual_seed(12)
    out = directional_hessian(f, params, V, mode="block")
    torch.testing.assert_close(out.H, H_ref)
    torch.testing.assert_close(out.d, d_ref)


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_hvp_matches_the_hessian(mode):
    from frogcore.hyperdual import hvp

    g = _gen(13)
    x = torch.randn(3, 5, generator=g, dtype=DT)  # three independent problems
    v = torch.randn(3, 5, generator=g, dtype=DT)
    out = hvp(rosenbrock, x, v, mode=mode)
    for b in range(3):
        torch.testing.assert_close(out.hvp[b], hessian(rosenbrock, x[b]) @ v[b])
        torch.testing.assert_close(out.grad[b], torch.autograd.functional.jacobian(rosenbrock, x[b]))
    torch.testing.assert_close(out.value, rosenbrock(x))
    # dict parameters, one global tangent
    torch.manual_seed(0)
    model = mlp((1, 3, 3), hidden=4, num_classes=3).double()
    xb, yb = torch.randn(16, 1, 3, 3, dtype=DT), torch.randint(0, 3, (16,))
    params, flat, f_flat, f = _flat_reference(model, xb, yb)
    w = torch.randn(flat.numel(), generator=g, dtype=DT)
    out = hvp(f, params, w, mode=mode)
    torch.testing.assert_close(out.hvp, hessian(f_flat, flat) @ w)
    torch.testing.assert_close(out.grad, torch.autograd.functional.jacobian(f_flat, flat))
    with pytest.raises(ValueError, match="mode"):
        hvp(f, params, w, mode="sideways")
    with pytest.raises(ValueError, match="dimension"):
        hvp(f, params, w[:-1])
