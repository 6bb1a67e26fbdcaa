import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from frogcore.estimators import (
    aggregate, directional_derivatives, expected_chi, flatten, forward_gradient, scale_factor, unflatten,
)
from frogcore.linalg import project, project_naive
from frogcore.tangents import sample_tangents

f64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def setup(n, k, batch=None, seed=0, dtype=f64, sampler="normal"):
    g = gen(seed)
    v = sample_tangents(n, k, batch=batch, generator=g, dtype=dtype, sampler=sampler)
    grad = torch.randn(*(() if batch is None else (batch,)), n, generator=g, dtype=dtype)
    return grad, v, directional_derivatives(grad, v)


# ----------------------------------------------------------------------------- projection

@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 80), seed=st.integers(0, 10_000))
def test_projection_is_idempotent_and_orthogonal(n, k, seed):
    grad, v, d = setup(n, k, seed=seed)
    p = aggregate(d, v, "projection")
    # projecting the projection changes nothing
    p2 = aggregate(directional_derivatives(p, v), v, "projection")
    assert torch.allclose(p2, p, atol=1e-8 * (1 + grad.norm()))
    # the residual is orthogonal to every tangent (among the first n, which span the subspace)
    resid = grad - p
    assert (v[: min(k, n)] @ resid).abs().max() < 1e-7 * (1 + grad.norm() * v.norm(dim=-1).max())


@pytest.mark.parametrize("n", [1, 7, 64, 300])
def test_k_equals_n_recovers_the_gradient(n):
    grad, v, d = setup(n, n)
    assert torch.allclose(aggregate(d, v, "projection"), grad, atol=1e-8, rtol=1e-8)


def test_k_greater_than_n_uses_first_n_tangents_and_recovers_the_gradient():
    grad, v, d = setup(10, 25)
    est = aggregate(d, v, "projection")
    assert torch.allclose(est, grad, atol=1e-10)
    assert torch.allclose(est, aggregate(d[:10], v[:10], "projection"), atol=1e-10)


def test_projection_solvers_agree_and_cholesky_matches_batched_reference():
    # batch >= 2 and size > 150 with several threads is where batched inv/solve fail on CPU
    grad, v, d = setup(400, 200, batch=6, dtype=torch.float32)
    reference = torch.stack([project(d[i].double(), v[i].double(), solver="qr") for i in range(6)]).float()
    for solver in ("auto", "cholesky", "qr", "svd"):
        est = project(d, v, solver=solver)
        assert torch.allclose(est, reference, atol=1e-3 * reference.abs().max()), solver


def test_k_equals_n_1024_is_more_accurate_than_the_inverse_gram_formula():
    grad, v, d = setup(1024, 1024, dtype=torch.float32, seed=3)
    ours = (project(d, v) - grad).norm() / grad.norm()
    naive = (project_naive(d, v) - grad).norm() / grad.norm()
    assert ours < 1e-2
    assert ours < naive / 10


def test_nearly_collinear_tangents():
    g = gen(5)
    n, k = 50, 6
    base = torch.randn(n, generator=g, dtype=f64)
    v = base + 1e-6 * torch.randn(k, n, generator=g, dtype=f64)  # six almost identical tangents
    grad = torch.randn(n, generator=g, dtype=f64)
    est = aggregate(directional_derivatives(grad, v), v, "projection")
    # the exact projection onto the span, from an orthonormal basis computed in float64 via SVD
    u, s, _ = torch.linalg.svd(v.T, full_matrices=False)
    exact = u @ (u.T @ grad)
    assert torch.isfinite(est).all()
    assert (est - exact).norm() / exact.norm() < 1e-4
    # exactly repeated tangents (rank deficient) still give the projection onto their span
    v2 = torch.cat([v[:2], v[:2]])
    est2 = aggregate(directional_derivatives(grad, v2), v2, "projection")
    u2, _, _ = torch.linalg.svd(v[:2].T, full_matrices=False)
    assert torch.allclose(est2, u2 @ (u2.T @ grad), atol=1e-6)


# ----------------------------------------------------------------------------- mean, sum, single

@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 20), seed=st.integers(0, 10_000))
def test_mean_and_sum_differ_by_k(n, k, seed):
    _, v, d = setup(n, k, seed=seed)
    assert torch.allclose(aggregate(d, v, "sum"), k * aggregate(d, v, "mean"), atol=1e-9, rtol=1e-9)


def test_single_uses_the_first_tangent_and_is_parallel_to_it():
    grad, v, d = setup(20, 5)
    est = aggregate(d, v, "single")
    assert torch.allclose(est, (grad @ v[0]) * v[0])


def test_single_tangent_forward_gradient_is_unbiased():
    # E[(g·v) v] = g for v ~ N(0, I). Per coordinate the estimator has variance g_j^2 + |g|^2, so with
    # S samples the sample mean has standard error sqrt((g_j^2 + |g|^2)/S); with a fixed seed we
    # require every coordinate within 4 standard errors (a chance failure has p < 1e-3 over all n).
    n, samples = 8, 200_000
    g = gen(11)
    grad = torch.linspace(-1.0, 2.0, n, dtype=f64)
    v = sample_tangents(n, 1, batch=samples, generator=g, dtype=f64)
    est = aggregate(directional_derivatives(grad, v), v, "single")
    se = torch.sqrt((grad**2 + grad.norm() ** 2) / samples)
    assert ((est.mean(0) - grad).abs() / se).max() < 4.0
    # and it is biased if the tangents are not isotropic (the test can fail)
    assert ((2 * est.mean(0) - grad).abs() / se).max() > 4.0


@pytest.mark.parametrize("aggregation, normalized", [
    ("mean", False), ("mean", True), ("sum", False), ("sum", True), ("single", False),
])
@pytest.mark.parametrize("n, k", [(16, 4), (100, 10)])
def test_scaling_correction_gives_mean_square_length_of_the_gradient(aggregation, normalized, n, k):
    samples = 20_000
    g = gen(7)
    grad = torch.randn(n, generator=g, dtype=f64)
    v = sample_tangents(n, k, batch=samples, generator=g, dtype=f64, normalize=normalized)
    est = aggregate(directional_derivatives(grad, v), v, aggregation, scale=True, normalized=normalized)
    ratio2 = (est.norm(dim=-1) / grad.norm()) ** 2
    se = ratio2.std() / math.sqrt(samples)
    assert abs(ratio2.mean().item() - 1.0) < 4 * se.item()


@pytest.mark.parametrize("n, k", [(16, 4), (200, 20), (50, 50)])
def test_projection_scaling_correction_gives_expected_length(n, k):
    samples = 5_000
    g = gen(8)
    grad = torch.randn(n, generator=g, dtype=f64)
    v = sample_tangents(n, k, batch=samples, generator=g, dtype=f64)
    est = aggregate(directional_derivatives(grad, v), v, "projection", scale=True)
    ratio = est.norm(dim=-1) / grad.norm()
    assert abs(ratio.mean().item() - 1.0) < 4 * ratio.std().item() / math.sqrt(samples) + 1e-12


def test_scale_factor_values():
    assert scale_factor("projection", 10, 10) == 1.0
    assert math.isclose(scale_factor("projection", 10, 2), expected_chi(10) / expected_chi(2))
    assert math.isclose(scale_factor("mean", 10, 2), 1 / math.sqrt(13 / 2))
    assert math.isclose(expected_chi(1), math.sqrt(2 / math.pi))


# ----------------------------------------------------------------------------- parameter trees

def test_dict_of_tensors_uses_one_global_tangent():
    g = gen(2)
    grads = {"w": torch.randn(3, 4, generator=g, dtype=f64), "b": torch.randn(4, generator=g, dtype=f64)}
    flat, spec = flatten(grads)
    assert flat.shape == (16,)
    v = sample_tangents(16, 5, generator=g, dtype=f64)
    for agg in ("mean", "sum", "projection", "single"):
        est = forward_gradient(grads, v, agg)
        assert set(est) == {"w", "b"} and est["w"].shape == (3, 4) and est["b"].shape == (4,)
        expected = unflatten(forward_gradient(flat, v, agg), spec)
        for name in grads:
            assert torch.allclose(est[name], expected[name])


def test_bad_arguments_name_the_parameter():
    grad, v, d = setup(5, 2)
    with pytest.raises(ValueError, match=r"aggregation='median'.*allowed values: 'single', 'mean', 'sum', 'projection'"):
        aggregate(d, v, "median")
    with pytest.raises(ValueError, match=r"solver='lu'.*allowed values"):
        project(d, v, solver="lu")
    with pytest.raises(ValueError, match=r"d must have shape"):
        aggregate(d[:1], v, "mean")
    with pytest.raises(ValueError, match=r"tangents have dimension 5 but the gradient has 4"):
        forward_gradient(torch.ones(4), v)
