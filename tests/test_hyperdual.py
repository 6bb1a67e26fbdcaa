"""Hyper-dual evaluation (frogcore.hyperdual) against reverse-mode autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.functional import hessian, jvp as ag_jvp

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
