import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from frogcore.estimators import (
    AGGREGATIONS,
    LINEAR_AGGREGATIONS,
    aggregate,
    directional_derivatives,
    expected_chi,
    flatten,
    forward_gradient,
    scale_factor,
    unflatten,
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
    ("mean", False), ("mean", True), ("sum", False), ("sum", True), ("single", False), ("mean_times_dim", False),
    ("mean_times_dim", True),
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
    assert math.isclose(scale_factor("mean_times_dim", 10, 2), scale_factor("mean", 10, 2) / 10)
    assert math.isclose(expected_chi(1), math.sqrt(2 / math.pi))


@pytest.mark.parametrize("args, match", [
    (("mean", -1, 4), r"n must be an integer >= 1; got -1"),
    (("mean", 4, 0), r"k must be an integer >= 1; got 0"),
    (("sum", 4.5, 2), r"n must be an integer >= 1"),
    (("max", 10, 2), r"no closed-form correction for aggregation='max'"),
    (("mean_of_top_k", 10, 2), r"no closed-form correction for aggregation='mean_of_top_k'"),
])
def test_scale_factor_validates_its_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        scale_factor(*args)


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


# ----------------------------------------------------------------------------- the authors' further aggregations

def _reference(d, v, aggregation, tau=0.1):
    """Loop implementation of the formulas in the estimators docstring, one batch element at a time."""
    k, n = v.shape
    c = [abs(d[i].item()) / v[i].norm().item() for i in range(k)]
    if aggregation == "mean_times_dim":
        return n * sum(d[i] * v[i] for i in range(k)) / k
    if aggregation == "max":
        j = max(range(k), key=lambda i: abs(d[i].item()))
        return d[j] * v[j]
    if aggregation == "max_normalized":
        j = max(range(k), key=lambda i: c[i])
        return d[j] * v[j]
    top = [i for i in range(k) if c[i] >= max(c) - tau]
    return sum(d[i] * v[i] for i in top) / k


@pytest.mark.parametrize("aggregation", ["mean_times_dim", "max", "max_normalized", "mean_of_top_k"])
def test_further_aggregations_match_their_formulas(aggregation):
    g = gen(4)
    batch, k, n = 5, 7, 12
    # tangents of different lengths, so that max and max_normalized pick different tangents
    v = torch.randn(batch, k, n, generator=g, dtype=f64) * torch.rand(batch, k, 1, generator=g, dtype=f64).add(0.2)
    grad = torch.randn(batch, n, generator=g, dtype=f64) * 0.2
    d = directional_derivatives(grad, v)
    est = aggregate(d, v, aggregation)
    ref = torch.stack([_reference(d[b], v[b], aggregation) for b in range(batch)])
    assert est.shape == (batch, n)
    assert torch.allclose(est, ref, atol=1e-12)


def test_further_aggregations_special_cases():
    g = gen(5)
    grad, v, d = setup(30, 6, batch=8, seed=5)
    mean = aggregate(d, v, "mean")
    assert torch.allclose(aggregate(d, v, "mean_times_dim"), 30 * mean)
    # tolerance 0 keeps only the best tangent (divided by k); an infinite one keeps all: the mean
    assert torch.allclose(aggregate(d, v, "mean_of_top_k", top_k_tolerance=0.0), aggregate(d, v, "max_normalized") / 6)
    assert torch.allclose(aggregate(d, v, "mean_of_top_k", top_k_tolerance=math.inf), mean)
    # with unit tangents max and max_normalized coincide; otherwise they pick different tangents
    vn = v / v.norm(dim=-1, keepdim=True)
    dn = directional_derivatives(grad, vn)
    assert torch.equal(aggregate(dn, vn, "max"), aggregate(dn, vn, "max_normalized"))
    w = v * torch.rand(8, 6, 1, generator=g, dtype=f64).mul(10)
    dw = directional_derivatives(grad, w)
    assert not torch.allclose(aggregate(dw, w, "max"), aggregate(dw, w, "max_normalized"))
    # max picks the single best-aligned tangent of equal-length ones: the estimate is parallel to it
    best = (dn.abs()).argmax(-1)
    est = aggregate(dn, vn, "max")
    for b in range(8):
        assert torch.allclose(est[b], dn[b, best[b]] * vn[b, best[b]])
    with pytest.raises(ValueError, match="top_k_tolerance must be a number >= 0"):
        aggregate(d, v, "mean_of_top_k", top_k_tolerance=-1.0)


def test_linear_aggregations_are_linear_in_d_and_the_others_are_not():
    _, v, d = setup(20, 5, batch=3, seed=9)
    d2 = torch.randn(d.shape, generator=gen(10), dtype=f64)
    for agg in AGGREGATIONS:
        lin = torch.allclose(aggregate(d + 2 * d2, v, agg), aggregate(d, v, agg) + 2 * aggregate(d2, v, agg))
        assert lin == (agg in LINEAR_AGGREGATIONS), agg


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_zero_tangents_raise_for_every_aggregation(aggregation):
    with pytest.raises(ValueError, match=r"k >= 1 tangents.*k=0"):
        aggregate(torch.zeros(0), torch.zeros(0, 4), aggregation)
    with pytest.raises(ValueError, match=r"k >= 1 tangents.*k=0"):
        aggregate(torch.zeros(3, 0), torch.zeros(3, 0, 4), aggregation)


def test_scale_with_an_aggregation_without_correction_raises_before_computing():
    _, v, d = setup(5, 2)
    with pytest.raises(ValueError, match="no closed-form correction for aggregation='max_normalized'"):
        aggregate(d, v, "max_normalized", scale=True)


def test_numpy_inputs_and_selection_pass_through():
    import numpy as np

    grad, v, d = setup(6, 9, seed=12)
    for agg in AGGREGATIONS:
        assert torch.allclose(aggregate(d.numpy(), v.numpy(), agg), aggregate(d, v, agg))
    assert torch.allclose(aggregate(d, v, "projection", selection="largest"), project(d, v, selection="largest"))
    with pytest.raises(ValueError, match=r"v must be a torch.Tensor or numpy.ndarray; got list"):
        aggregate(d, v.tolist())
    with pytest.raises(ValueError, match=r"selection='top'.*allowed values"):
        aggregate(d, v, "projection", selection="top")
    assert isinstance(np.asarray(aggregate(d.numpy(), v.numpy())), np.ndarray)


# ----------------------------------------------------------------------------- per-tensor tangents

def _tree(seed=6):
    g = gen(seed)
    return {"w": torch.randn(40, 3, generator=g, dtype=f64), "b": torch.randn(3, generator=g, dtype=f64),
            "c": torch.randn(50, generator=g, dtype=f64)}


def test_per_tensor_tangents_aggregate_each_tensor_with_its_own_derivatives():
    grads = _tree()
    flat, _ = flatten(grads)
    v = sample_tangents(flat.numel(), 5, generator=gen(1), dtype=f64)
    est = forward_gradient(grads, v, "projection", tangents="per-tensor")
    start = 0
    for name, gp in grads.items():
        vp = v[:, start:start + gp.numel()]
        want = aggregate(vp @ gp.reshape(-1), vp, "projection").reshape(gp.shape)
        assert torch.allclose(est[name], want, atol=1e-12)
        start += gp.numel()
    # the 3-entry bias sees 5 >= 3 of its own tangents: its gradient is exact
    assert torch.allclose(est["b"], grads["b"], atol=1e-12)


def test_split_tangents_reproduce_the_authors_real_forward_mode_combination():
    grads = _tree()
    flat, _ = flatten(grads)
    v = sample_tangents(flat.numel(), 5, generator=gen(2), dtype=f64)
    d = v @ flat
    for agg in ("mean", "sum"):  # slices of a linear map in d: the global estimate
        glob = forward_gradient(grads, v, agg)
        split = forward_gradient(grads, v, agg, tangents="split")
        assert all(torch.allclose(split[n], glob[n]) for n in grads)
    split = forward_gradient(grads, v, "projection", tangents="split")
    start = 0
    for name, gp in grads.items():  # each slice projected with the global directional derivatives
        vp = v[:, start:start + gp.numel()]
        assert torch.allclose(split[name], aggregate(d, vp, "projection").reshape(gp.shape), atol=1e-12)
        start += gp.numel()
    # the bias is "exact" for its own derivatives, but the split uses everybody's: far from its gradient
    assert (split["b"] - grads["b"]).norm() > grads["b"].norm()
    with pytest.raises(ValueError, match=r"tangents='local'.*allowed values: 'global', 'per-tensor', 'split'"):
        forward_gradient(grads, v, tangents="local")


def test_bad_arguments_name_the_parameter():
    grad, v, d = setup(5, 2)
    allowed = r"'single', 'mean', 'sum', 'projection', 'mean_times_dim', 'max', 'max_normalized', 'mean_of_top_k'"
    with pytest.raises(ValueError, match=r"aggregation='median'.*allowed values: " + allowed):
        aggregate(d, v, "median")
    with pytest.raises(ValueError, match=r"solver='lu'.*allowed values"):
        project(d, v, solver="lu")
    with pytest.raises(ValueError, match=r"d must have shape"):
        aggregate(d[:1], v, "mean")
    with pytest.raises(ValueError, match=r"tangents have dimension 5 but the gradient has 4"):
        forward_gradient(torch.ones(4), v)
