"""FGD / FoMoH / FoMoH-KD / Newton steps and the subspace view (frogcore.second_order)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from frogcore.estimators import aggregate, flatten, unflatten
from frogcore.functions import rosenbrock
from frogcore.hyperdual import directional_hessian, module_loss, module_params
from frogcore.models.fomoh_nets import FomohCNN, build_model, count_parameters, logistic_regression, mlp
from frogcore.second_order import STATUS, forward_step, solve_metric, subspace_step
from frogcore.tangents import sample_tangents

DT = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _spd(n, seed, cond=100.0):
    g = _gen(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    lam = torch.logspace(0, math.log10(cond), n, dtype=DT)
    return q @ torch.diag(lam) @ q.T


def _quadratic(A, b):
    return lambda z: 0.5 * (z @ A * z).sum(-1) - z @ b


@pytest.mark.parametrize("n", [3, 6])
def test_fomoh_kd_with_k_equal_n_is_newton_and_solves_a_quadratic(n):
    A, b = _spd(n, n), torch.randn(n, generator=_gen(1), dtype=DT)
    f = _quadratic(A, b)
    x0 = torch.randn(n, generator=_gen(2), dtype=DT)
    x_kd, info = forward_step(f, x0, "fomoh-kd", k=n, lr=1.0, generator=_gen(3))
    x_newton, _ = forward_step(f, x0, "newton", lr=1.0)
    x_star = torch.linalg.solve(A, b)  # single (unbatched) system
    torch.testing.assert_close(x_kd, x_newton)
    torch.testing.assert_close(x_kd, x_star)
    torch.testing.assert_close(x0 + (x_newton - x0), x0 - torch.linalg.solve(A, A @ x0 - b))
    assert info.solve.counts() == {"ok": 1, "jitter": 0, "failed": 0}
    assert float(f(x_kd)) == pytest.approx(float(f(x_star)), abs=1e-10)


def test_fomoh_kd_with_k_below_n_is_the_newton_step_in_the_subspace():
    n, k = 6, 2
    A, b = _spd(n, 11), torch.randn(n, generator=_gen(12), dtype=DT)
    f = _quadratic(A, b)
    x0 = torch.zeros(n, dtype=DT)
    x1, info = forward_step(f, x0, "fomoh-kd", k=k, lr=0.5, generator=_gen(5))
    V = sample_tangents(n, k, generator=_gen(5), dtype=DT)  # the same draw
    grad = A @ x0 - b
    kappa = torch.linalg.solve(V @ A @ V.T, V @ grad)
    torch.testing.assert_close(x1, x0 - 0.5 * V.T @ kappa)
    torch.testing.assert_close(info.d, V @ grad)


def test_fomoh_and_fgd_match_their_formulas():
    x0 = torch.tensor([-1.2, 1.0], dtype=DT)
    v = sample_tangents(2, 1, generator=_gen(9), dtype=DT)[0]
    grad = torch.autograd.functional.jacobian(rosenbrock, x0)
    H = torch.autograd.functional.hessian(rosenbrock, x0)
    x_fomoh, _ = forward_step(rosenbrock, x0, "fomoh", lr=0.7, eps=1e-5, generator=_gen(9))
    torch.testing.assert_close(x_fomoh, x0 - 0.7 * (grad @ v) / ((v @ H @ v).abs() + 1e-5) * v)
    x_fgd, _ = forward_step(rosenbrock, x0, "fgd", lr=1e-4, generator=_gen(9))
    torch.testing.assert_close(x_fgd, x0 - 1e-4 * (grad @ v) * v)
    x_bp, _ = forward_step(rosenbrock, x0, "bp", lr=1e-4)
    torch.testing.assert_close(x_bp, x0 - 1e-4 * grad)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), k=st.integers(1, 6), lr=st.floats(1e-3, 10.0), seed=st.integers(0, 10_000))
def test_identity_metric_is_frog_projection(n, k, lr, seed):
    k = min(k, n)
    g = _gen(seed)
    V = torch.randn(3, k, n, generator=g, dtype=DT)
    grad = torch.randn(3, n, generator=g, dtype=DT)
    d = (V @ grad.unsqueeze(-1)).squeeze(-1)
    step, info = subspace_step(d, V, metric="identity", lr=lr)
    torch.testing.assert_close(step, -lr * aggregate(d, V, "projection"), rtol=1e-7, atol=1e-9)
    assert info.counts()["failed"] == 0


def test_frog_method_uses_the_identity_metric():
    x0 = torch.tensor([[0.3, -0.2, 0.5, 1.1]], dtype=DT)
    x1, info = forward_step(rosenbrock, x0, "frog", k=2, lr=1e-3, generator=_gen(4))
    V = sample_tangents(4, 2, batch=(1,), generator=_gen(4), dtype=DT)
    grad = torch.autograd.functional.jacobian(rosenbrock, x0[0])
    d = V @ grad
    torch.testing.assert_close(x1, x0 - 1e-3 * aggregate(d, V, "projection"))


def test_damped_metric_interpolates_between_fomoh_kd_and_frog():
    n, k = 8, 3
    g = _gen(21)
    V = torch.randn(k, n, generator=g, dtype=DT)
    A = _spd(n, 22, cond=50.0)
    grad = torch.randn(n, generator=g, dtype=DT)
    d, H = V @ grad, V @ A @ V.T
    kd, _ = subspace_step(d, V, H, metric="hessian")
    torch.testing.assert_close(subspace_step(d, V, H, metric="damped", damping=0.0)[0], kd)
    mu = 1e9
    far, _ = subspace_step(d, V, H, metric="damped", damping=mu, lr=1.0)
    frog, _ = subspace_step(d, V, metric="identity", lr=1.0 / mu)
    torch.testing.assert_close(far, frog, rtol=1e-6, atol=0)
    # μ is relative to ‖v‖²: rescaling the tangents does not change the step
    s = 3.7
    scaled, _ = subspace_step(s * d, s * V, s * s * H, metric="damped", damping=0.1)
    torch.testing.assert_close(scaled, subspace_step(d, V, H, metric="damped", damping=0.1)[0])
    # a batch of dampings at once
    batch, _ = subspace_step(d.expand(2, k), V.expand(2, k, n), H.expand(2, k, k), metric="damped",
                             damping=torch.tensor([0.0, mu], dtype=DT))
    torch.testing.assert_close(batch[0], kd)
    torch.testing.assert_close(batch[1], far)


def test_singular_and_indefinite_systems_are_reported_not_fatal():
    # singular: two identical tangents
    M = torch.tensor([[[2.0, 2.0], [2.0, 2.0]]], dtype=DT)
    d = torch.tensor([[1.0, 1.0]], dtype=DT)
    kappa, info = solve_metric(M, d)
    assert torch.isfinite(kappa).all()
    assert STATUS[int(info.status[0])] == "jitter" and float(info.jitter[0]) > 0
    # indefinite: the jittered system is positive definite, so the step is a descent direction
    M = torch.tensor([[[1.0, 0.0], [0.0, -4.0]]], dtype=DT)
    d = torch.tensor([[1.0, -2.0]], dtype=DT)
    kappa, info = solve_metric(M, d)
    assert bool(info.indefinite[0]) and float(info.min_eig[0]) == pytest.approx(-4.0)
    assert STATUS[int(info.status[0])] == "jitter" and float(info.jitter[0]) > 4.0
    assert float(d[0] @ kappa[0]) > 0  # Δθ = −Vᵀκ decreases f to first order
    # abs curvature: |λ| (saddle-free), no jitter needed
    kappa, info = solve_metric(M, d, curvature="abs")
    torch.testing.assert_close(kappa, torch.tensor([[1.0, -0.5]], dtype=DT))
    assert STATUS[int(info.status[0])] == "ok"
    # softabs: ≈ |λ| far from zero
    kappa, _ = solve_metric(M, d, curvature="softabs")
    torch.testing.assert_close(kappa, torch.tensor([[1.0, -0.5]], dtype=DT), rtol=1e-3, atol=0)
    # non-finite: no step, status failed; the healthy batch element is untouched
    M = torch.stack([torch.eye(2, dtype=DT), torch.full((2, 2), float("nan"), dtype=DT)])
    d = torch.ones(2, 2, dtype=DT)
    kappa, info = solve_metric(M, d)
    assert info.counts() == {"ok": 1, "jitter": 0, "failed": 1}
    torch.testing.assert_close(kappa[0], torch.ones(2, dtype=DT))
    assert torch.equal(kappa[1], torch.zeros(2, dtype=DT))


def test_indefinite_function_step_through_forward_step():
    def saddle(z):
        return z[..., 0] ** 2 - z[..., 1] ** 2 + 0.1 * z[..., 1]

    x0 = torch.tensor([[1.0, 0.5]], dtype=DT)
    x1, info = forward_step(saddle, x0, "fomoh-kd", k=2, generator=_gen(0))
    assert torch.isfinite(x1).all()
    assert bool(info.solve.indefinite.all()) and info.solve.counts()["jitter"] == 1
    assert float(saddle(x1)) < float(saddle(x0))


def test_dict_parameters_take_the_same_step_as_the_flat_vector():
    torch.manual_seed(0)
    model = mlp((1, 3, 3), hidden=4, num_classes=3).double()
    x, y = torch.randn(16, 1, 3, 3, dtype=DT), torch.randint(0, 3, (16,))
    params = module_params(model)
    flat, spec = flatten(params)
    f = module_loss(model, F.cross_entropy, x, y)
    new, info = forward_step(f, params, "fomoh-kd", k=3, lr=0.5, generator=_gen(8))
    new_flat, info_flat = forward_step(lambda th: f(unflatten(th, spec)), flat, "fomoh-kd", k=3, lr=0.5,
                                       generator=_gen(8))
    torch.testing.assert_close(flatten(new)[0], new_flat)
    torch.testing.assert_close(info.H, info_flat.H)


def test_bad_arguments_fail_loudly():
    x = torch.zeros(3, dtype=DT)
    with pytest.raises(ValueError, match="method"):
        forward_step(rosenbrock, x, "adam")
    with pytest.raises(ValueError, match="k=1"):
        forward_step(rosenbrock, x, "fomoh", k=2)
    with pytest.raises(ValueError, match="curvature"):
        solve_metric(torch.eye(2, dtype=DT)[None], torch.ones(1, 2, dtype=DT), curvature="square")
    with pytest.raises(ValueError, match="metric"):
        subspace_step(torch.ones(2, dtype=DT), torch.eye(2, dtype=DT), metric="fisher")
    with pytest.raises(ValueError, match="damping"):
        subspace_step(torch.ones(2, dtype=DT), torch.eye(2, dtype=DT), torch.eye(2, dtype=DT),
                      metric="damped", damping=-1.0)


def test_parameter_counts():
    assert count_parameters(logistic_regression()) == 7_850
    assert count_parameters(FomohCNN()) == 431_080
    assert count_parameters(mlp()) == 101_770
    # digits adaptation (8×8 inputs, padded convolutions)
    assert count_parameters(build_model("logreg", (1, 8, 8))) == 650
    assert count_parameters(build_model("cnn", (1, 8, 8))) == 131_080
    assert FomohCNN().padding == 0 and FomohCNN((1, 8, 8)).padding == 2
    assert FomohCNN((1, 8, 8))(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_experiment_drivers_validate_their_input():
    from frogcore.experiments import fomoh

    with pytest.raises(ValueError, match="profile"):
        fomoh.run_rosenbrock_2d(profile="huge")
    with pytest.raises(ValueError, match="unknown parameter"):
        fomoh.run_rosenbrock_nd(profile="smoke", learning_rate=1.0)
    with pytest.raises(ValueError, match="n5_ks"):
        fomoh.run_rosenbrock_nd(profile="smoke", n5_ks=[6])
    with pytest.raises(ValueError, match="methods"):
        fomoh.run_networks(profile="smoke", methods=["adam"])
    with pytest.raises(ValueError, match="device"):
        fomoh.run_subspace(profile="smoke", device="tpu")
