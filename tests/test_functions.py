import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from frogcore.forward import directional_derivatives, gradient
from frogcore.functions import (
    FUNCTIONS,
    PAPER_FUNCTIONS,
    STYBLINSKI_TANG_MIN_PER_DIM,
    contour_grid,
    get_function,
    rosenbrock,
    sphere,
    styblinski_tang,
)


def test_paper_functions_at_known_points():
    x = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    assert sphere(x).item() == pytest.approx(14.0)
    # 100(−2 − 1)² + 0² + 100(3 − 4)² + 3² = 900 + 100 + 9
    assert rosenbrock(x).item() == pytest.approx(1009.0)
    # ½ Σ (x⁴ − 16x² + 5x): (1−16+5) + (16−64−10) + (81−144+15) = −10 − 58 − 48 → −58
    assert styblinski_tang(x).item() == pytest.approx(-58.0)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_registry_minimum_is_attained_at_argmins(name):
    fun = FUNCTIONS[name]
    n = fun.dims or 5
    am = fun.argmins(n)
    assert am.shape[-1] == n and am.shape[0] >= 1
    vals = fun(am)
    assert torch.allclose(vals, torch.full_like(vals, fun.minimum(n)), atol=1e-6)
    # a random point nearby is worse, and the start is not optimal
    gen = torch.Generator().manual_seed(0)
    near = am[0] + 0.05 * torch.randn(n, generator=gen, dtype=torch.float64)
    assert fun(near).item() > fun.minimum(n)
    assert fun(fun.start(n)).item() > fun.minimum(n) + 1e-3
    assert fun.distance(am[0]).item() == pytest.approx(0.0, abs=1e-12)


def test_paper_starting_points_and_minima():
    assert torch.equal(FUNCTIONS["sphere"].start(4), -torch.ones(4, dtype=torch.float64))
    assert torch.equal(FUNCTIONS["rosenbrock"].start(3), torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(FUNCTIONS["styblinski-tang"].start(3), torch.zeros(3, dtype=torch.float64))
    assert [FUNCTIONS[f].max_steps for f in PAPER_FUNCTIONS] == [1000, 25000, 1000]
    # the paper's rounded constant is within 2e-4 per dimension of the exact minimum
    assert FUNCTIONS["styblinski-tang"].minimum(10) == pytest.approx(STYBLINSKI_TANG_MIN_PER_DIM * 10, abs=2e-3)
    # Rosenbrock with n = 1 has no terms: every point is a minimiser
    assert FUNCTIONS["rosenbrock"].distance(torch.tensor([5.0])).item() == 0.0


def test_two_d_functions_reject_other_dimensions():
    with pytest.raises(ValueError, match="n=3.*himmelblau.*allowed values: 2"):
        FUNCTIONS["himmelblau"].check_n(3)
    with pytest.raises(ValueError, match="function='nope'.*allowed values"):
        get_function("nope")


def test_contour_grid_shape_and_values():
    X, Y, Z = contour_grid("booth", num=11)
    assert X.shape == Y.shape == Z.shape == (11, 11)
    assert torch.allclose(Z, (X + 2 * Y - 7) ** 2 + (2 * X + Y - 5) ** 2)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(list(FUNCTIONS)), seed=st.integers(0, 2**31 - 1), k=st.integers(1, 5))
def test_forward_mode_equals_autograd_dot_tangent(name, seed, k):
    """jvp (both layouts) gives the same directional derivatives as the backprop gradient · v."""
    fun = FUNCTIONS[name]
    n = fun.dims or 6
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, n, generator=gen, dtype=torch.float64)
    v = torch.randn(3, k, n, generator=gen, dtype=torch.float64)
    f_ref, g = gradient(fun.fn, x)
    d_ref = (v @ g.unsqueeze(-1)).squeeze(-1)
    for method in ("vmap", "rows"):
        fx, d = directional_derivatives(fun.fn, x, v, method=method)
        assert torch.allclose(fx, f_ref, rtol=1e-12, atol=1e-12)
        assert torch.allclose(d, d_ref, rtol=1e-10, atol=1e-9), (method, d, d_ref)


def test_natural_formulas_match_forward_mode_friendly_ones():
    """The rewritten formulas (torch.add with alpha, no dual × constant) compute the textbook values."""
    x = torch.randn(7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    a, b = x[..., :-1], x[..., 1:]
    assert torch.allclose(rosenbrock(x), (100.0 * (b - a**2) ** 2 + (1 - a) ** 2).sum(-1), rtol=1e-13)
    assert torch.allclose(styblinski_tang(x), 0.5 * (x**4 - 16 * x**2 + 5 * x).sum(-1), rtol=1e-13)
    assert torch.allclose(FUNCTIONS["rastrigin"](x),
                          10 * 9 + (x**2 - 10 * torch.cos(2 * math.pi * x)).sum(-1), rtol=1e-12)
