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
from frogcore.second_order import CG_STATUS, STATUS, forward_step, newton_cg_direction, solve_metric, subspace_step
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
    # the authors' CIFAR-10 CNN: 6 convolutions (3×3; 32, 32, 64, 64, 128, 128), 6 BatchNorms, 2048-1024-10
    from frogcore.models.fomoh_nets import cifar10_cnn

    convs = sum(9 * i * o + o for i, o in ((3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)))
    assert count_parameters(cifar10_cnn()) == convs + 2 * (32 + 32 + 64 + 64 + 128 + 128) + 2048 * 1024 + 1024 \
        + 1024 * 10 + 10 == 2_396_330
    net = cifar10_cnn().eval()
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.track_running_stats for m in net.modules())
    for bad in ((3, 30, 30), (3, 32)):
        with pytest.raises(ValueError, match="input_shape|divisible"):
            cifar10_cnn(bad)
    with pytest.raises(ValueError, match="dropout"):
        cifar10_cnn(dropout=1.0)


# ----------------------------------------------------------------------------- the metric solve in float32 (issue 15)

def _rosenbrock_runs(x0, dtype, steps, *, seeds=1, refine="auto"):
    """FoMoH-KD (K = 2) from ``x0`` for ``seeds`` independent problems; the first step with f < 1e-6 per seed."""
    x = torch.tensor(x0, dtype=dtype).expand(seeds, 2).clone()
    gen = _gen(0)
    first = torch.full((seeds,), -1)
    for it in range(1, steps + 1):
        x, _ = forward_step(rosenbrock, x, "fomoh-kd", k=2, generator=gen, refine=refine)
        first = torch.where((rosenbrock(x) < 1e-6) & (first < 0), it, first)
    return first


def test_float32_fomoh_kd_on_rosenbrock_does_not_stall():
    """Issue 15: from (59.55, 3546.2) FoMoH-KD in float32 used to creep (f 3428 → 1391 in 100 steps)."""
    x0 = [59.55, 3546.2]
    x = torch.tensor(x0, dtype=torch.float32)
    gen = _gen(0)
    for _ in range(50):  # the reported case: one run, tangents from generator seed 0
        x, info = forward_step(rosenbrock, x, "fomoh-kd", k=2, generator=gen)
        if float(rosenbrock(x)) < 1e-6:
            break
    assert float(rosenbrock(x)) < 1e-6
    # not one lucky draw: 16 independent tangent streams, every one within 50 steps, as in float64
    assert bool((_rosenbrock_runs(x0, torch.float32, 50, seeds=16) > 0).all())
    assert bool(((_rosenbrock_runs(x0, torch.float64, 10, seeds=4) > 0)).all())
    assert bool((_rosenbrock_runs([0.0, 1.0], torch.float32, 50, seeds=8) > 0).all())


def test_refinement_recovers_the_small_eigenvalue_in_float32():
    """At (59.55, 3546.2) the float32 Ĥ has a small eigenvalue of the wrong sign; one evaluation in its
    eigenbasis gives the float64 Newton step."""
    V64 = sample_tangents(2, 2, generator=_gen(0), dtype=DT)
    steps = {}
    x32 = torch.tensor([59.55, 3546.2])
    for dtype, refine in ((DT, "never"), (torch.float32, "never"), (torch.float32, "always")):
        x = x32.to(dtype)  # the same point in both dtypes
        x1, info = forward_step(rosenbrock, x, "fomoh-kd", k=2, tangents=V64.to(dtype), refine=refine)
        steps[dtype, refine] = (x1 - x).double()
        assert bool(info.refined) == (refine == "always")
    # the float32 Ĥ as evaluated in the basis V: its small eigenvalue (1.7e-6 in float64) has the wrong sign
    H32 = directional_hessian(rosenbrock, torch.tensor([59.55, 3546.2]), V64.float()).H.double()
    assert float(torch.linalg.eigvalsh(H32)[0]) < 0
    exact = steps[DT, "never"]  # float32's own ∇f here is a few % off (y − x² cancels), so is its best step
    assert float((steps[torch.float32, "always"] - exact).norm() / exact.norm()) < 0.05
    assert float((steps[torch.float32, "never"] - exact).norm() / exact.norm()) > 0.5


def test_refinement_changes_nothing_in_exact_arithmetic():
    """The step in the rotated basis W = QᵀV equals the step in V (every metric, shift, curvature treatment)."""
    n, k = 6, 3
    A, b = _spd(n, 30, cond=1e3), torch.randn(n, generator=_gen(31), dtype=DT)
    f = _quadratic(A, b)
    x0 = torch.randn(4, n, generator=_gen(32), dtype=DT)
    V = torch.randn(4, k, n, generator=_gen(33), dtype=DT)
    for kw in ({}, {"metric": "damped", "damping": 0.3}, {"curvature": "abs"}, {"curvature": "softabs"}):
        a, ia = forward_step(f, x0, "fomoh-kd", k=k, tangents=V, refine="never", **kw)
        b_, ib = forward_step(f, x0, "fomoh-kd", k=k, tangents=V, refine="always", **kw)
        torch.testing.assert_close(a, b_)
        torch.testing.assert_close(ia.H, ib.H)  # reported in the basis of the given tangents
        torch.testing.assert_close(ia.d, ib.d)
        assert bool(ib.refined.all()) and not bool(ia.refined.any())
    # well conditioned: "auto" does not refine and is bit-identical to "never"
    c, ic = forward_step(f, x0, "fomoh-kd", k=k, tangents=V)
    assert not bool(ic.refined.any()) and torch.equal(c, forward_step(f, x0, "fomoh-kd", k=k, tangents=V,
                                                                      refine="never")[0])


@pytest.mark.parametrize("dtype", [torch.float32, DT])
def test_singularity_is_decided_relative_to_dtype_and_scale(dtype):
    u = torch.finfo(dtype).eps
    d = torch.tensor([[1.0, 1.0]], dtype=dtype)
    # positive definite but with a condition number far above 1/(100 K u): solved as given, exactly
    M = torch.diag(torch.tensor([1.0, 1e-6 if dtype == torch.float32 else 1e-14], dtype=dtype))[None]
    kappa, info = solve_metric(M, d)
    assert info.counts()["ok"] == 1
    torch.testing.assert_close(kappa, d / M.diagonal(dim1=-2, dim2=-1))
    # correlated tangents (1 − ρ = 1000 u): still solvable to ~1000 u relative accuracy
    rho = 1 - 1000 * u
    M = torch.tensor([[[1.0, rho], [rho, 1.0]]], dtype=dtype)
    kappa, info = solve_metric(M, torch.tensor([[1.0, -1.0]], dtype=dtype))
    exact = torch.linalg.solve(M[0].double(), torch.tensor([1.0, -1.0], dtype=DT))
    assert info.counts()["ok"] == 1
    torch.testing.assert_close(kappa[0].double(), exact, rtol=1e-2, atol=0)
    # singular to working precision (1 − ρ = u/4): jitter
    rho = 1 - u / 4
    M = torch.tensor([[[1.0, rho], [rho, 1.0]]], dtype=dtype)
    assert solve_metric(M, d)[1].counts()["jitter"] == 1
    # scale and tangent lengths do not matter: D M D has the same status for any positive diagonal D
    base = torch.tensor([[4.0, 1.9], [1.9, 1.0]], dtype=dtype)
    for scale in (1e-30, 1.0, 1e30):
        Dm = torch.diag(torch.tensor([1e-3, 1e3], dtype=dtype)) * math.sqrt(scale)
        _, info = solve_metric((Dm @ base @ Dm)[None], d)
        assert info.counts()["ok"] == 1, scale


def test_zero_curvature_fails_without_a_step():
    """Issue 12 item 5: FoMoH with eps = 0 on |x| (or a linear f) used to take a ~1e308 step and report jitter."""
    x0 = torch.tensor([[0.7, -0.3]], dtype=DT)
    for f in (lambda z: z.abs().sum(-1), lambda z: z @ torch.tensor([1.0, 2.0], dtype=DT)):
        for method, k in (("fomoh", 1), ("fomoh-kd", 2)):
            for curvature in (None, "raw", "abs", "softabs"):
                x1, info = forward_step(f, x0, method, k=k, curvature=curvature, generator=_gen(0))
                assert info.solve.counts() == {"ok": 0, "jitter": 0, "failed": 1}, (method, curvature)
                assert torch.equal(x1, x0)
    # with eps > 0 the authors' formula d / (|vᵀHv| + ε) is defined and taken
    x1, info = forward_step(lambda z: z.abs().sum(-1), x0, "fomoh", eps=1e-5, generator=_gen(0))
    v = sample_tangents(2, 1, batch=(1,), generator=_gen(0), dtype=DT)[:, 0]
    torch.testing.assert_close(x1, x0 - (torch.sign(x0) * v).sum(-1, keepdim=True) / 1e-5 * v)
    assert info.solve.counts()["ok"] == 1
    # a solution that overflows is a failure too, not an infinite step
    kappa, info = solve_metric(torch.full((1, 1, 1), 1e-300, dtype=DT), torch.full((1, 1), 1e300, dtype=DT))
    assert info.counts()["failed"] == 1 and torch.equal(kappa, torch.zeros(1, 1, dtype=DT))


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1.0, 0.0, True, "0.1", torch.tensor([0.1, -0.1])])
def test_forward_step_validates_lr(lr):
    x = torch.zeros(2, 3, dtype=DT)
    for method in ("bp", "fgd", "fomoh-kd"):
        with pytest.raises(ValueError, match="lr"):
            forward_step(rosenbrock, x, method, k=2, lr=lr)


# ----------------------------------------------------------------------------- averaging, clipping, dropout

@pytest.mark.parametrize("method,k", [("fgd", 2), ("fomoh", 1), ("fomoh-kd", 2), ("frog", 2)])
def test_samples_average_the_single_set_directions(method, k):
    x0 = torch.tensor([[-1.2, 1.0, 0.4], [0.3, 0.2, -0.5]], dtype=DT)
    S = 3
    T = torch.randn(S, 2, k, 3, generator=_gen(40), dtype=DT)
    x_avg, info = forward_step(rosenbrock, x0, method, k=k, lr=0.01, tangents=T, samples=S)
    singles = [forward_step(rosenbrock, x0, method, k=k, lr=0.01, tangents=T[s])[0] - x0 for s in range(S)]
    torch.testing.assert_close(x_avg - x0, torch.stack(singles).mean(0))
    assert info.d.shape == (S, 2, k)
    # drawing S sets from a generator = S consecutive single draws
    drawn, _ = forward_step(rosenbrock, x0, method, k=k, lr=0.01, generator=_gen(41), samples=S)
    g = _gen(41)
    T2 = torch.stack([sample_tangents(3, k, batch=(2,), generator=g, dtype=DT) for _ in range(S)])
    torch.testing.assert_close(drawn, forward_step(rosenbrock, x0, method, k=k, lr=0.01, tangents=T2, samples=S)[0])


def test_clip_clamps_the_direction_before_the_learning_rate():
    x0 = torch.tensor([[-1.2, 1.0]], dtype=DT)
    grad = torch.autograd.functional.jacobian(rosenbrock, x0[0])
    x_bp, _ = forward_step(rosenbrock, x0, "bp", lr=0.5, clip=3.0)
    torch.testing.assert_close(x_bp, x0 - 0.5 * grad.clamp(-3.0, 3.0))
    V = torch.randn(1, 2, 2, generator=_gen(42), dtype=DT)
    free, _ = forward_step(rosenbrock, x0, "fomoh-kd", k=2, tangents=V)
    clipped, _ = forward_step(rosenbrock, x0, "fomoh-kd", k=2, tangents=V, clip=0.01, lr=0.5)
    torch.testing.assert_close(clipped, x0 + 0.5 * (free - x0).clamp(-0.01, 0.01))
    params = {"a": torch.tensor([3.0, -4.0], dtype=DT)}
    new, _ = forward_step(lambda p: (p["a"] ** 2).sum(), params, "bp", lr=1.0, clip=1.0)
    torch.testing.assert_close(new["a"], torch.tensor([2.0, -3.0], dtype=DT))


def test_tangent_dropout_masks_tangent_entries():
    n, p = 50, 0.3
    x0 = torch.randn(n, generator=_gen(43), dtype=DT)
    A, b = _spd(n, 44), torch.randn(n, generator=_gen(45), dtype=DT)
    f = _quadratic(A, b)
    x1, info = forward_step(f, x0, "fgd", lr=0.1, generator=_gen(46), tangent_dropout=p)
    g = _gen(46)
    v = sample_tangents(n, 1, generator=g, dtype=DT)
    v = v * (torch.rand(v.shape, generator=g, dtype=DT) > p)
    assert 0 < int((v == 0).sum()) < n
    torch.testing.assert_close(x1, x0 - 0.1 * (v @ (A @ x0 - b)) @ v)
    # E[(∇f·(m⊙v))(m⊙v)] = (1 − p)∇f: the average over many draws (fixed x0, linear f)
    c = torch.randn(n, generator=_gen(47), dtype=DT)
    x = torch.zeros(4000, n, dtype=DT)
    x1, _ = forward_step(lambda z: z @ c, x, "fgd", lr=1.0, generator=_gen(48), tangent_dropout=p)
    est = -x1.mean(0)
    assert float((est - (1 - p) * c).norm() / c.norm()) < 0.1


# ----------------------------------------------------------------------------- Newton-CG

def test_newton_cg_is_newton_on_a_convex_quadratic():
    n = 7
    A, b = _spd(n, 50, cond=30.0), torch.randn(n, generator=_gen(51), dtype=DT)
    f = _quadratic(A, b)
    x0 = torch.randn(3, n, generator=_gen(52), dtype=DT)
    for mode in ("reverse", "forward"):
        x1, info = forward_step(f, x0, "newton-cg", lr=1.0, cg_rtol=1e-10, cg_max_iter=2 * n, hvp_mode=mode)
        torch.testing.assert_close(x1, torch.linalg.solve(A, b).expand(3, n))
        # n iterations in exact arithmetic; rounding may need a few more for a residual of 1e-10
        assert info.cg.counts()["converged"] == 3 and int(info.cg.iterations.max()) <= n + 2
    # damping: (A + λI)⁻¹∇f
    u, value, g, info = newton_cg_direction(f, x0[0], damping=2.0, rtol=1e-12)
    torch.testing.assert_close(u, torch.linalg.solve(A + 2.0 * torch.eye(n, dtype=DT), A @ x0[0] - b))
    torch.testing.assert_close(g, A @ x0[0] - b)


def test_newton_cg_on_rosenbrock_and_negative_curvature():
    x = torch.tensor([[-1.2, 1.0], [1.5, 2.0]], dtype=DT)
    u, value, g, info = newton_cg_direction(rosenbrock, x, rtol=1e-10, max_iter=10)
    for i in range(2):
        H = torch.autograd.functional.hessian(rosenbrock, x[i])
        torch.testing.assert_close(u[i], torch.linalg.solve(H, g[i]))
    assert [CG_STATUS[int(s)] for s in info.status] == ["converged", "converged"]
    torch.testing.assert_close(value, rosenbrock(x))

    def saddle(z):  # ∇f = (0, 0.1), H = diag(2, −2) at 0; from (0.5, 0): ∇f = (1, 0.1)
        return z[..., 0] ** 2 - z[..., 1] ** 2 + 0.1 * z[..., 1]

    z = torch.tensor([[0.0, 0.0], [0.5, 0.0]], dtype=DT)
    u, _, g, info = newton_cg_direction(saddle, z, rtol=1e-10)
    # first iteration: p = ∇f = (0, 0.1) has pᵀHp < 0 → steepest descent u = ∇f (Nocedal & Wright Alg. 7.1)
    assert CG_STATUS[int(info.status[0])] == "negative_curvature" and int(info.iterations[0]) == 0
    torch.testing.assert_close(u[0], g[0])
    # second problem: the first CG step along (1, 0.1) has positive curvature, the second direction negative:
    # the iterate after one step is returned
    p0 = g[1]
    Hp = torch.tensor([2.0, -2.0], dtype=DT) * p0
    assert CG_STATUS[int(info.status[1])] == "negative_curvature" and int(info.iterations[1]) == 1
    torch.testing.assert_close(u[1], (p0 @ p0) / (p0 @ Hp) * p0)
    # truncated: the default forcing term stops early on the far point with a finite, descending direction
    u_t, _, g_t, info_t = newton_cg_direction(rosenbrock, torch.tensor([3.0, -2.0], dtype=DT), max_iter=1)
    assert int(info_t.iterations) == 1 and float(u_t @ g_t) > 0


def test_new_options_fail_loudly():
    x = torch.zeros(2, dtype=DT)
    for kw, word in (({"samples": 0}, "samples"), ({"clip": -1.0}, "clip"), ({"clip": float("nan")}, "clip"),
                     ({"tangent_dropout": 1.0}, "tangent_dropout"), ({"refine": "maybe"}, "refine"),
                     ({"hvp_mode": "x"}, "hvp_mode")):
        with pytest.raises(ValueError, match=word):
            forward_step(rosenbrock, x, "fomoh", **kw)
    with pytest.raises(ValueError, match="samples"):
        forward_step(rosenbrock, x, "bp", samples=2)
    with pytest.raises(ValueError, match="tangents"):
        forward_step(rosenbrock, x, "fomoh-kd", k=2, samples=2, tangents=torch.ones(2, 2, dtype=DT))
    with pytest.raises(ValueError, match="cg_max_iter"):
        forward_step(rosenbrock, x, "newton-cg", cg_max_iter=0)
