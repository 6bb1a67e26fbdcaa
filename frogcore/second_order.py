r"""Forward-mode optimisation steps: FGD, FROG, FoMoH, FoMoH-KD, Newton, Newton-CG — one subspace view.

Notation: ``K`` tangents are the rows of ``V`` ``(..., K, n)``; forward mode gives the directional
derivatives ``d = V∇f`` (``K`` jvps) and, with hyper-dual evaluations (:mod:`frogcore.hyperdual`),
the directional Hessian ``Ĥ = V∇²f Vᵀ``. ``G = VVᵀ`` is the Gram matrix of the tangents.

The subspace view
-----------------
Every step here except FGD and Newton-CG is a step inside ``span(V)``,

.. math::  Δθ = -η\, V^⊤ M^{-1} d,

that differs only in the ``K × K`` *metric* ``M`` (:func:`subspace_step`):

``metric="identity"``  ``M = G``: ``Δθ = −η V^⊤(VV^⊤)^{-1}V∇f`` — the orthogonal projection of the
                       gradient (FROG) with learning rate ``η``.
``metric="hessian"``   ``M = Ĥ``: the Newton step restricted to ``span(V)`` — FoMoH-KD; with
                       ``K = 1`` and ``curvature="abs"`` it is FoMoH, ``−η (∇f·v) v / |vᵀ∇²f v|``;
                       with ``V = I`` it is Newton's method.
``metric="damped"``    ``M = Ĥ + μG`` (Levenberg–Marquardt inside the subspace): ``μ → 0`` gives
                       FoMoH-KD, ``μ → ∞`` gives FROG with learning rate ``η/μ``. ``μ`` is absolute;
                       both terms scale as ``‖v‖²``, so the mixture does not depend on the tangent
                       lengths.

Solving ``Mκ = d`` robustly (:func:`solve_metric`)
--------------------------------------------------
``u = ε_mach`` is the unit roundoff of the dtype (``torch.finfo(dtype).eps``), ``‖M‖`` the largest
``|eigenvalue|``.

``curvature="raw"``      Cholesky ``M + εI = LLᵀ`` is accepted when it succeeds and every pivot, relative
                         to its diagonal entry, exceeds the rounding level: ``min_i L_ii² / M_ii > K·u``.
                         That is the Cholesky factorisation of the *diagonally scaled* metric
                         ``D^{-1/2} M D^{-1/2}`` (``D = diag M``), whose pivots are ``L_ii²/M_ii``: the
                         test does not depend on the scale of ``M`` nor on the lengths of the tangents
                         (scaling ``v_i`` scales row and column ``i``), and Cholesky's error in the
                         solution is governed by the condition number of the scaled matrix (van der
                         Sluis 1969; Demmel 1989), so ``M`` counts as singular only when that matrix is
                         singular *to working precision*. Otherwise (``M`` indefinite, or singular in its
                         dtype) a multiple of the identity is added, ``M + εI + τI`` with
                         ``τ = jitter · s · 10^t`` for ``t = 0, 1, …`` (``s`` = mean ``|diag M|``; default
                         ``jitter = 1e-3``), until the test passes ("Cholesky with added multiple of
                         the identity", Nocedal & Wright Alg. 3.3). For an indefinite ``M`` this turns the
                         step into a descent direction.
``curvature="abs"``      eigenvalues replaced by ``|λ|`` (a saddle-free Newton step inside the
                         subspace); ``K = 1`` gives FoMoH's ``|vᵀHv|``.
``curvature="softabs"``  eigenvalues replaced by ``λ·coth(λ/β)`` with ``β = jitter · s``: smooth,
                         ``≈ |λ|`` for ``|λ| ≫ β`` and ``≥ β``.

``eps`` is added to the diagonal (raw) or to the modified eigenvalues (abs/softabs), e.g. the
``ε = 1e-5`` of FoMoH on networks; with abs/softabs the eigenvalues are floored at ``K·u·max λ``.
How each system was solved is *returned* (:class:`SolveInfo`: status ``ok``/``jitter``/``failed`` per
problem, the shift used and the smallest eigenvalue of ``M``), never printed. **Failed** means: ``M`` or
``d`` not finite, a *zero* metric (no curvature at all and ``eps = 0``: e.g. FoMoH on ``|x|`` or on a
linear function, where ``d/|vᵀHv|`` is ``d/0``), or a non-finite solution; then there is **no step**
(``κ = 0``) — a first-order fallback would need a learning rate in the units of a gradient step, which
a Newton-type ``η`` is not. Only batched Cholesky, ``cholesky_solve`` and ``eigh`` are used (no batched
``inv``/``solve``, which is unreliable on CPU).

Rayleigh–Ritz refinement (``refine``)
-------------------------------------
``Ĥ`` is assembled from directional second derivatives ``v_iᵀ∇²f v_j``, each rounded relative to the largest
curvature along ``v_i`` and ``v_j``. When ``Ĥ`` is ill-conditioned the small eigenvalues are then lost in
rounding even though ``f`` determines them well: on 2-D Rosenbrock at ``(59.55, 3546.2)`` (float32, K = 2, one
draw of tangents) the true small eigenvalue of ``Ĥ`` is ``1.7e-6`` and the computed one ``−0.08``, and
FoMoH-KD crawls. The cure is a second evaluation in the eigenbasis of the first: with ``Ĥ = QΛQᵀ`` the
tangents ``W = QᵀV`` span the same subspace, and ``w_iᵀ∇²f w_i`` is the curvature along one eigen-direction,
rounded relative to *its own* size. The step is unchanged in exact arithmetic (every metric, shift and
eigenvalue treatment here is invariant under ``V → QᵀV`` with orthogonal ``Q``). ``refine="auto"`` (default)
does it only for problems whose ``Ĥ`` has ``min|λ| < √u · max|λ|`` (fewer than half the dtype's digits left in
the smallest eigenvalue), ``"always"`` for every problem, ``"never"`` not at all; it costs one more hyper-dual
evaluation in the steps where it happens (with ``K = 1`` never). The random state (dropout) is reset so that
both evaluations see the same function. ``StepInfo.d``/``H`` are reported in the basis of the original
tangents.

Averaging, clipping, tangent dropout (the FoMoH authors' training options)
-------------------------------------------------------------------------
``samples = S`` draws ``S`` independent tangent sets per step and averages the *directions*,
``Δθ = −η · (1/S) Σ_s u_s`` where ``Δθ_s = −η u_s`` is the single-set step (FGD:
``u_s = (1/k)Σ(∇f·v)v``; FoMoH: ``(∇f·v)v/(|vᵀHv|+ε)``; FoMoH-KD: ``V_sᵀ M_s⁻¹ d_s``) — the authors'
``n_sample_directions`` (SRI-CSL/fomoh, ``fomoh/nn.py`` ``optimizer_step`` and ``fomoh/opt.py``
``optimizer_step_plane_Nd``). ``clip = c`` clamps the averaged direction elementwise to ``[−c, c]``
before the learning rate is applied, ``Δθ = −η · clamp(u, −c, c)`` (their ``clip_value``; with BP it
clips the gradient). ``tangent_dropout = p`` zeroes each entry of each tangent independently with
probability ``p``, ``v ← m ⊙ v``, ``m_j ~ Bernoulli(1 − p)`` (no rescaling, as theirs; for FGD with normal
tangents ``E[(∇f·(m⊙v))(m⊙v)] = (1 − p)∇f``); the mask is drawn from ``generator`` after the tangents.

Newton-CG (``method="newton-cg"``, :func:`newton_cg_direction`)
----------------------------------------------------------------
A truncated Newton step without forming any Hessian: conjugate gradients on ``(∇²f + λI) u = ∇f`` with
Hessian-vector products (:func:`frogcore.hyperdual.hvp`: forward-over-reverse, or forward-over-forward
with ``hvp_mode="forward"``), stopped when ``‖r‖ ≤ min(0.5, √‖∇f‖)·‖∇f‖`` (or ``cg_rtol·‖∇f‖``), after
``cg_max_iter`` iterations, or at the first direction of non-positive curvature ``pᵀ(H + λI)p ≤ 0`` —
then the iterate so far is returned, or ``∇f`` itself if that happens in the first iteration
(line-search Newton–CG, Nocedal & Wright Alg. 7.1). ``Δθ = −η u``. ``λ`` is ``damping``.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Union

import torch
from torch.func import grad as func_grad

from .config import check_choice, check_positive_int
from .hyperdual import (
    HVP_MODES,
    MODES,
    _same_random_state,
    directional_derivatives,
    directional_hessian,
    hvp,
    num_params,
)
from .tangents import sample_tangents

Params = Union[torch.Tensor, Mapping[str, torch.Tensor]]

METRICS = ("hessian", "identity", "damped")
CURVATURES = ("raw", "abs", "softabs")
METHODS = ("bp", "fgd", "frog", "fomoh", "fomoh-kd", "newton", "newton-cg")
STATUS = ("ok", "jitter", "failed")
REFINE = ("auto", "always", "never")
CG_STATUS = ("converged", "max_iter", "negative_curvature", "failed")


@dataclass
class SolveInfo:
    """How the ``K × K`` systems were solved (one entry per problem in the batch).

    ``status``: index into :data:`STATUS` — ``0`` ok (solved as given), ``1`` jitter (a diagonal
    shift or an eigenvalue floor was needed: ``M`` was indefinite or singular to working precision),
    ``2`` failed (``M`` or ``d`` not finite, a zero metric, or a non-finite solution: no step, ``κ = 0``).
    ``jitter``: the absolute shift ``τ`` added to the diagonal (0 where none). ``min_eig``: smallest
    eigenvalue of ``M`` as given (NaN where not finite).
    """

    status: torch.Tensor
    jitter: torch.Tensor
    min_eig: torch.Tensor

    def counts(self) -> dict[str, int]:
        """How many problems ended in each status."""
        return {name: int((self.status == i).sum()) for i, name in enumerate(STATUS)}

    @property
    def indefinite(self) -> torch.Tensor:
        """Where ``M`` had a negative eigenvalue."""
        return self.min_eig < 0


@dataclass
class CGInfo:
    """How the Newton-CG systems were solved (one entry per problem).

    ``status``: index into :data:`CG_STATUS` (converged, max_iter, negative_curvature, failed);
    ``iterations``: CG iterations taken (Hessian-vector products after the gradient); ``residual``:
    final ``‖(H + λI)u − ∇f‖ / ‖∇f‖`` as tracked by the recurrence (0 where ``∇f = 0``).
    """

    status: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor

    def counts(self) -> dict[str, int]:
        return {name: int((self.status == i).sum()) for i, name in enumerate(CG_STATUS)}


@dataclass
class StepInfo:
    """What one optimisation step saw: ``f(θ)`` before the step, ``d``, ``Ĥ`` and the solve.

    With ``samples = S > 1`` the per-set fields ``d``, ``H``, ``solve``, ``refined`` carry a leading
    dimension ``S``. ``refined``: where the Rayleigh–Ritz refinement was used (``None`` for methods
    without ``Ĥ``). ``cg``: the Newton-CG solve (``method="newton-cg"`` only).
    """

    loss: torch.Tensor
    d: torch.Tensor | None = None
    H: torch.Tensor | None = None
    solve: SolveInfo | None = None
    refined: torch.Tensor | None = None
    cg: CGInfo | None = None


# ----------------------------------------------------------------------------- K x K solves

@contextlib.contextmanager
def _one_thread(small: bool):
    """Run tiny batched LAPACK calls on one thread.

    Batched ``cholesky_ex`` on a few 3 × 3 matrices takes ~15 ms with 2 OpenMP threads on a loaded
    machine (thread wake-up) and microseconds on one; the K × K systems here are always tiny.
    """
    if not small:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _check_number(name: str, value, *, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}; got {value!r}")
    return float(value)


def solve_metric(
    M: torch.Tensor,
    d: torch.Tensor,
    *,
    curvature: str = "raw",
    eps: float = 0.0,
    jitter: float = 1e-3,
    max_tries: int = 16,
) -> tuple[torch.Tensor, SolveInfo]:
    """Solve ``M κ = d`` for symmetric ``M`` ``(..., K, K)`` robustly; see the module docstring."""
    check_choice("curvature", curvature, CURVATURES)
    eps = _check_number("eps", eps, positive=False)
    jitter = _check_number("jitter", jitter, positive=True)
    max_tries = check_positive_int("max_tries", max_tries, minimum=0)
    with _one_thread(M.numel() <= 1 << 16):
        return _solve_metric(M, d, curvature, eps, jitter, max_tries)


def _solve_metric(M, d, curvature, eps, jitter, max_tries):
    if M.shape[-2:] != (d.shape[-1], d.shape[-1]) or M.shape[:-2] != d.shape[:-1]:
        raise ValueError(f"M must have shape (..., K, K) matching d (..., K); got {tuple(M.shape)}, {tuple(d.shape)}")
    k = M.shape[-1]
    eye = torch.eye(k, dtype=M.dtype, device=M.device)
    unit = torch.finfo(M.dtype).eps
    finite = torch.isfinite(M).all(-1).all(-1) & torch.isfinite(d).all(-1)
    M = torch.where(finite[..., None, None], 0.5 * (M + M.transpose(-1, -2)), eye)
    d = torch.where(finite[..., None], d, torch.zeros_like(d))
    lam, Q = torch.linalg.eigh(M)
    norm = lam.abs().amax(-1)  # ‖M‖₂
    s = M.diagonal(dim1=-2, dim2=-1).abs().mean(-1)  # size of M: mean |diagonal|, else spectral norm, else 1
    s = torch.where(s > 0, s, norm)
    s = torch.where(s > 0, s, torch.ones_like(s))
    min_eig = torch.where(finite, lam[..., 0], torch.full_like(lam[..., 0], float("nan")))
    status = torch.full(finite.shape, 2, dtype=torch.long, device=M.device)
    tau_used = torch.zeros_like(s)
    zero = torch.zeros_like(d)

    if curvature != "raw":
        beta = jitter * s
        if curvature == "abs":
            lam2 = lam.abs()
        else:  # softabs: λ coth(λ/β), → β as λ → 0
            x = lam / beta[..., None]
            small = x.abs() < 1e-4
            lam2 = torch.where(small, beta[..., None], lam / torch.tanh(torch.where(small, torch.ones_like(x), x)))
        lam2 = lam2 + eps
        top = lam2.amax(-1)
        # no curvature at all (a zero metric with eps = 0): the step d / 0 is undefined
        has_scale = (top > 0) & ((norm > 0) | (eps > 0))
        floor = (k * unit * top).clamp_min(torch.finfo(M.dtype).tiny)[..., None]
        floored = (lam2 < floor).any(-1)
        lam2 = torch.maximum(lam2, floor)
        kappa = (Q @ ((Q.transpose(-1, -2) @ d.unsqueeze(-1)).squeeze(-1) / lam2).unsqueeze(-1)).squeeze(-1)
        good = finite & has_scale & torch.isfinite(kappa).all(-1)
        status = torch.where(good, floored.long(), status)
        kappa = torch.where(good[..., None], kappa, zero)
        return kappa, SolveInfo(status, tau_used, min_eig)

    M = M + eps * eye
    kappa = zero
    pending = finite & ((lam + eps).abs().amax(-1) > 0)  # a zero metric has no step: failed
    for t in range(max_tries + 1):
        tau = torch.zeros_like(s) if t == 0 else jitter * s * 10.0 ** (t - 1)
        Mt = M + tau[..., None, None] * eye
        L, info = torch.linalg.cholesky_ex(Mt)
        # pivots of the diagonally scaled matrix D^-1/2 Mt D^-1/2: L_ii² / Mt_ii (scale-invariant)
        diag = Mt.diagonal(dim1=-2, dim2=-1)
        pivots = L.diagonal(dim1=-2, dim2=-1) ** 2 / torch.where(diag > 0, diag, torch.ones_like(diag))
        ok = pending & (info == 0) & torch.isfinite(L).all(-1).all(-1) & (pivots.amin(-1) > k * unit)
        if bool(ok.any()):
            L = torch.where(ok[..., None, None], L, eye)
            sol = torch.cholesky_solve(d.unsqueeze(-1), L).squeeze(-1)
            ok = ok & torch.isfinite(sol).all(-1)
            kappa = torch.where(ok[..., None], sol, kappa)
            status = torch.where(ok, 0 if t == 0 else 1, status)
            tau_used = torch.where(ok, tau, tau_used)
            pending = pending & ~ok
        if not bool(pending.any()):
            break
    return kappa, SolveInfo(status, tau_used, min_eig)


def subspace_metric(
    V: torch.Tensor, H: torch.Tensor | None = None, *, metric: str = "hessian", damping: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """The ``K × K`` metric ``M``: ``G = VVᵀ`` (identity), ``Ĥ`` (hessian) or ``Ĥ + μG`` (damped)."""
    check_choice("metric", metric, METRICS)
    damping = torch.as_tensor(damping, dtype=V.dtype, device=V.device)
    if bool((damping < 0).any()) or not bool(torch.isfinite(damping).all()):
        raise ValueError(f"damping must be finite and >= 0; got {damping}")
    if metric != "identity" and H is None:
        raise ValueError(f"metric={metric!r} needs the directional Hessian H")
    if metric == "hessian":
        return H
    G = V @ V.transpose(-1, -2)
    return G if metric == "identity" else H + damping[..., None, None] * G


def _subspace_direction(d, V, H=None, *, metric="hessian", damping=0.0, curvature="raw", eps=0.0, jitter=1e-3):
    """``u = Vᵀ M⁻¹ d`` (the step is ``−η u``) and the :class:`SolveInfo`."""
    M = subspace_metric(V, H, metric=metric, damping=damping)
    kappa, info = solve_metric(M, d, curvature=curvature, eps=eps, jitter=jitter)
    return (kappa.unsqueeze(-2) @ V).squeeze(-2), info


def subspace_step(
    d: torch.Tensor,
    V: torch.Tensor,
    H: torch.Tensor | None = None,
    *,
    metric: str = "hessian",
    damping: float | torch.Tensor = 0.0,
    lr: float | torch.Tensor = 1.0,
    curvature: str = "raw",
    eps: float = 0.0,
    jitter: float = 1e-3,
) -> tuple[torch.Tensor, SolveInfo]:
    """The update ``Δθ = −η Vᵀ M⁻¹ d`` inside ``span(V)`` (to be *added* to ``θ``).

    ``d`` ``(..., K)``, ``V`` ``(..., K, n)``, ``H`` ``(..., K, K)``; ``lr`` a float or a tensor that
    broadcasts over the leading dims (so does ``damping``). ``metric="identity"`` gives ``−η`` times FROG's projection
    :func:`frogcore.estimators.aggregate` ``(d, V, "projection")``.
    """
    u, info = _subspace_direction(d, V, H, metric=metric, damping=damping, curvature=curvature, eps=eps,
                                  jitter=jitter)
    lr = _check_lr(lr, V.dtype, V.device)
    return -lr.unsqueeze(-1) * u, info


# ----------------------------------------------------------------------------- Rayleigh–Ritz refinement

def needs_refinement(H: torch.Tensor) -> torch.Tensor:
    """Where ``Ĥ`` ``(..., K, K)`` is too ill-conditioned for its dtype: ``min|λ| < √u · max|λ|``
    (finite, non-zero ``Ĥ`` with ``K > 1`` only); see the module docstring."""
    k = H.shape[-1]
    finite = torch.isfinite(H).all(-1).all(-1)
    if k < 2:
        return torch.zeros_like(finite)
    eye = torch.eye(k, dtype=H.dtype, device=H.device)
    with _one_thread(H.numel() <= 1 << 16):
        a = torch.linalg.eigvalsh(torch.where(finite[..., None, None], 0.5 * (H + H.transpose(-1, -2)), eye)).abs()
    top = a.amax(-1)
    return finite & (top > 0) & (a.amin(-1) < math.sqrt(torch.finfo(H.dtype).eps) * top)


def _refined_hessian(f, params, V, d, H, refine, mode, reset):
    """Rayleigh–Ritz refinement; returns ``(d, H, V)`` to solve with, ``(d, H)`` in the original basis, mask."""
    none = torch.zeros(H.shape[:-2], dtype=torch.bool, device=H.device)
    if refine == "never" or H.shape[-1] < 2:
        return (d, H, V), (d, H), none
    need = ~none if refine == "always" else needs_refinement(H)
    if not bool(need.any()):
        return (d, H, V), (d, H), none
    finite = torch.isfinite(H).all(-1).all(-1)
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    need = need & finite
    with _one_thread(H.numel() <= 1 << 16):
        _, Q = torch.linalg.eigh(torch.where(finite[..., None, None], 0.5 * (H + H.transpose(-1, -2)), eye))
    W = Q.transpose(-1, -2) @ V
    reset()  # the same random state (dropout masks) as the first evaluation
    _, dW, HW = directional_hessian(f, params, W, mode=mode)
    m1, m2 = need[..., None], need[..., None, None]
    solve = (torch.where(m1, dW, d), torch.where(m2, HW, H), torch.where(m2, W, V))
    d_rep = torch.where(m1, (Q @ dW.unsqueeze(-1)).squeeze(-1), d)
    H_rep = torch.where(m2, Q @ HW @ Q.transpose(-1, -2), H)
    return solve, (d_rep, H_rep), need


# ----------------------------------------------------------------------------- Newton-CG

def newton_cg_direction(
    f: Callable,
    params: Params,
    *,
    damping: float | torch.Tensor = 0.0,
    max_iter: int | None = None,
    rtol: float | None = None,
    hvp_mode: str = "reverse",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, CGInfo]:
    """Truncated Newton direction by conjugate gradients on ``(∇²f + λI) u = ∇f`` (module docstring).

    Returns ``(u, f(θ), ∇f, info)`` with flat ``u`` and ``∇f`` (``(..., n)``; ``(n,)`` for dict
    parameters); the Newton-CG step is ``θ ← θ − η u``. ``max_iter`` defaults to ``min(n, 100)``; ``rtol``
    to the forcing term ``min(0.5, √‖∇f‖)`` (Nocedal & Wright Alg. 7.1). Every iteration costs one
    Hessian-vector product (:func:`frogcore.hyperdual.hvp`); independent problems along the leading
    dimensions of tensor parameters are solved together, each stopping on its own.
    """
    check_choice("hvp_mode", hvp_mode, HVP_MODES)
    n = num_params(params)
    max_iter = min(n, 100) if max_iter is None else check_positive_int("cg_max_iter", max_iter)
    if rtol is not None:
        rtol = _check_number("cg_rtol", rtol, positive=True)
    ref = _first(params)
    lam = torch.as_tensor(damping, dtype=ref.dtype, device=ref.device)
    if bool((lam < 0).any()) or not bool(torch.isfinite(lam).all()):
        raise ValueError(f"damping must be finite and >= 0; got {damping}")
    lam = lam.unsqueeze(-1) if lam.dim() else lam

    zeros = torch.zeros(*(ref.shape[:-1] if isinstance(params, torch.Tensor) else ()), n, dtype=ref.dtype,
                        device=ref.device)
    first = hvp(f, params, zeros, mode=hvp_mode)  # value and gradient (H·0 = 0)
    value, g = first.value, first.grad
    gnorm = g.norm(dim=-1)
    tol = (rtol if rtol is not None else torch.clamp(gnorm.sqrt(), max=0.5)) * gnorm
    finite = torch.isfinite(g).all(-1) & torch.isfinite(value)
    g = torch.where(finite[..., None], g, torch.zeros_like(g))
    u, r, p = torch.zeros_like(g), g.clone(), g.clone()
    rr = (r * r).sum(-1)
    active = finite & (gnorm > tol)
    status = torch.where(finite, torch.where(active, 1, 0), 3)
    iters = torch.zeros_like(status)
    for j in range(max_iter):
        if not bool(active.any()):
            break
        Hp = hvp(f, params, p, mode=hvp_mode).hvp + lam * p
        curv = (p * Hp).sum(-1)
        neg = active & ~(curv > 0)  # non-positive (or NaN) curvature along p
        if j == 0:
            u = torch.where(neg[..., None], g, u)  # steepest descent, as Nocedal & Wright Alg. 7.1
        status = torch.where(neg, 2, status)
        active = active & ~neg
        alpha = rr / torch.where(active, curv, torch.ones_like(curv))
        a = active[..., None]
        u = torch.where(a, u + alpha[..., None] * p, u)
        r_new = torch.where(a, r - alpha[..., None] * Hp, r)
        rr_new = (r_new * r_new).sum(-1)
        iters = iters + active.long()
        conv = active & (rr_new.sqrt() <= tol)
        status = torch.where(conv, 0, status)
        beta = rr_new / torch.where(active, rr, torch.ones_like(rr))
        p = torch.where(a, r_new + beta[..., None] * p, p)
        r, rr = r_new, rr_new
        active = active & ~conv
    bad = ~torch.isfinite(u).all(-1)
    u = torch.where(bad[..., None], torch.zeros_like(u), u)
    status = torch.where(bad, 3, status)
    residual = torch.where(gnorm > 0, rr.sqrt() / torch.where(gnorm > 0, gnorm, torch.ones_like(gnorm)),
                           torch.zeros_like(gnorm))
    return u, value, g, CGInfo(status, iters, residual)


# ----------------------------------------------------------------------------- steps on a function

def _add(params: Params, delta: torch.Tensor) -> Params:
    if isinstance(params, torch.Tensor):
        return params + delta
    out, start = {}, 0
    for name, t in params.items():
        out[name] = t + delta[start:start + t.numel()].reshape(t.shape)
        start += t.numel()
    return out


def _first(params: Params) -> torch.Tensor:
    return params if isinstance(params, torch.Tensor) else next(iter(params.values()))


def _check_lr(lr, dtype, device) -> torch.Tensor:
    """``lr`` as a tensor; a finite number > 0 (or a tensor of them), else ``ValueError``."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float, torch.Tensor)):
        raise ValueError(f"lr must be a finite number > 0 or a tensor of them; got {lr!r}")
    t = torch.as_tensor(lr, dtype=dtype, device=device)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"lr must be a finite number > 0 or a tensor of them; got {lr!r}")
    return t


def _draw(n, k, batch, *, sampler, generator, dtype, device, dropout, tangents):
    V = tangents if tangents is not None else sample_tangents(n, k, batch=batch or None, sampler=sampler,
                                                              generator=generator, dtype=dtype, device=device)
    if batch and tangents is not None:
        V = V.expand(*batch, k, n)
    if dropout > 0:
        keep = torch.rand(V.shape, generator=generator, dtype=dtype, device=device) > dropout
        V = V * keep
    return V


def _stack_solve(infos):
    return SolveInfo(*(torch.stack([getattr(i, name) for i in infos]) for name in ("status", "jitter", "min_eig")))


def forward_step(
    f: Callable,
    params: Params,
    method: str,
    *,
    k: int = 1,
    lr: float | torch.Tensor = 1.0,
    generator: torch.Generator | None = None,
    metric: str = "hessian",
    damping: float | torch.Tensor = 0.0,
    curvature: str | None = None,
    eps: float = 0.0,
    jitter: float = 1e-3,
    mode: str = "auto",
    sampler: str = "normal",
    tangents: torch.Tensor | None = None,
    samples: int = 1,
    clip: float | None = None,
    tangent_dropout: float = 0.0,
    refine: str = "auto",
    cg_max_iter: int | None = None,
    cg_rtol: float | None = None,
    hvp_mode: str = "reverse",
) -> tuple[Params, StepInfo]:
    """One optimisation step ``θ ← θ + Δθ``; returns the new parameters and a :class:`StepInfo`.

    ``method``:

    * ``"bp"``        — gradient descent with the true gradient (reverse mode; the baseline);
    * ``"fgd"``       — forward gradient descent ``−η (1/k) Σ (∇f·v_i) v_i`` (``k = 1``: Baydin et al.);
    * ``"frog"``      — ``−η`` × projection of ``∇f`` on ``span(V)`` (first order, ``k`` jvps);
    * ``"fomoh"``     — ``−η (∇f·v) v / (|vᵀ∇²f v| + ε)`` (needs ``k = 1``; ``curvature`` default abs);
    * ``"fomoh-kd"``  — ``−η Vᵀ M⁻¹ d`` with ``k`` tangents and the chosen ``metric``
      (default the directional Hessian, ``curvature`` default raw + jitter);
    * ``"newton"``    — FoMoH-KD with ``V = I`` (``k`` is ignored; needs ``n`` hyper-dual columns);
    * ``"newton-cg"`` — ``−η u`` with ``u ≈ (∇²f + λI)⁻¹∇f`` by conjugate gradients on Hessian-vector
      products (:func:`newton_cg_direction`; ``damping`` is ``λ``, ``cg_max_iter``, ``cg_rtol``, ``hvp_mode``).

    ``params``: a tensor ``(..., n)`` (independent problems along the leading dims; ``f`` maps
    ``(..., n) → (...)``) or a dict of tensors (one global tangent). Tangents are drawn with
    :func:`frogcore.tangents.sample_tangents` from ``generator`` unless ``tangents`` ``(..., k, n)``
    are given (e.g. the same tangents for several runs, broadcast over their leading dims; with
    ``samples = S > 1`` they are ``(S, ..., k, n)``). ``lr``: a finite number > 0 or a tensor of them
    broadcasting over the leading dims. ``samples``, ``clip``, ``tangent_dropout``: the authors' averaging
    over tangent sets, elementwise clipping of the direction and tangent dropout; ``refine``: the
    Rayleigh–Ritz refinement of ``Ĥ`` (``"auto"`` | ``"always"`` | ``"never"``); all in the module docstring.
    With ``samples = 1``, no clipping and no dropout the step is exactly the single-set formula above.
    """
    check_choice("method", method, METHODS)
    check_choice("mode", mode, MODES)
    check_choice("refine", refine, REFINE)
    check_choice("hvp_mode", hvp_mode, HVP_MODES)
    k = check_positive_int("k", k)
    samples = check_positive_int("samples", samples)
    if clip is not None:
        clip = _check_number("clip", clip, positive=True)
    tangent_dropout = _check_number("tangent_dropout", tangent_dropout, positive=False)
    if tangent_dropout >= 1:
        raise ValueError(f"tangent_dropout must be in [0, 1); got {tangent_dropout!r}")
    ref = _first(params)
    n = num_params(params)
    batch = params.shape[:-1] if isinstance(params, torch.Tensor) else ()
    lr_t = _check_lr(lr, ref.dtype, ref.device)
    if method in ("bp", "newton", "newton-cg") and (samples != 1 or tangent_dropout > 0):
        raise ValueError(f"method={method!r} draws no tangents: samples must be 1 and tangent_dropout 0; "
                         f"got samples={samples}, tangent_dropout={tangent_dropout}")

    def clipped(u):
        return u if clip is None else u.clamp(-clip, clip)

    if method == "bp":
        if isinstance(params, torch.Tensor):
            g = func_grad(lambda p: f(p).sum())(params)
            loss = f(params)
            return params - lr_t.unsqueeze(-1) * clipped(g), StepInfo(loss.detach())
        g = func_grad(f)(params)
        with torch.no_grad():
            loss = f(params)
        return {name: p - lr_t * clipped(g[name]) for name, p in params.items()}, StepInfo(loss)

    if method == "newton-cg":
        u, value, _, cg = newton_cg_direction(f, params, damping=damping, max_iter=cg_max_iter, rtol=cg_rtol,
                                              hvp_mode=hvp_mode)
        return _add(params, -lr_t.unsqueeze(-1) * clipped(u)), StepInfo(value.detach(), cg=cg)

    if method == "fomoh" and k != 1:
        raise ValueError(f"method='fomoh' uses one tangent (k=1); got k={k}. Use method='fomoh-kd' for k > 1")
    if method == "newton":
        k, tangents = n, None  # V = I
    if tangents is not None:
        want = (samples, k, n) if samples > 1 else (k, n)
        lead = tangents.shape[:1] if samples > 1 else ()
        if tangents.dim() < len(want) or (*lead, *tangents.shape[-2:]) != want:
            raise ValueError(f"tangents must have shape {'(samples, ' if samples > 1 else '('}..., k={k}, n={n}); "
                             f"got {tuple(tangents.shape)}")
    if curvature is None:
        curvature = "abs" if method == "fomoh" else "raw"
    draw_kw = dict(sampler=sampler, generator=generator, dtype=ref.dtype, device=ref.device, dropout=tangent_dropout)

    directions, infos, value = [], [], None
    for s in range(samples):
        given = None if tangents is None else (tangents[s] if samples > 1 else tangents)
        if method == "newton":
            V = torch.eye(n, dtype=ref.dtype, device=ref.device).expand(*batch, n, n)
        else:
            V = _draw(n, k, batch, tangents=given, **draw_kw)
        if method in ("fgd", "frog"):
            value, d = directional_derivatives(f, params, V)
            if method == "fgd":
                if samples == 1 and clip is None:  # the single-set formula, operation for operation
                    delta = -lr_t.unsqueeze(-1) * (d.unsqueeze(-2) @ V).squeeze(-2) / k
                    return _add(params, delta), StepInfo(value, d)
                directions.append((d.unsqueeze(-2) @ V).squeeze(-2) / k)
                infos.append(StepInfo(value, d))
                continue
            u, solve = _subspace_direction(d, V, metric="identity", jitter=jitter)
            directions.append(u)
            infos.append(StepInfo(value, d, None, solve))
            continue
        with _same_random_state(params) as reset:
            value, d, H = directional_hessian(f, params, V, mode=mode)
            (d_s, H_s, V_s), (d_r, H_r), refined = _refined_hessian(f, params, V, d, H, refine, mode, reset)
        u, solve = _subspace_direction(d_s, V_s, H_s, metric="hessian" if method == "fomoh" else metric,
                                       damping=damping, curvature=curvature, eps=eps, jitter=jitter)
        directions.append(u)
        infos.append(StepInfo(value, d_r, H_r, solve, refined))

    u = directions[0] if samples == 1 else torch.stack(directions).mean(0)
    delta = -lr_t.unsqueeze(-1) * clipped(u)
    if samples == 1:
        return _add(params, delta), infos[0]
    stack = (lambda name: torch.stack([getattr(i, name) for i in infos]) if getattr(infos[0], name) is not None
             else None)
    solve = _stack_solve([i.solve for i in infos]) if infos[0].solve is not None else None
    return _add(params, delta), StepInfo(value, stack("d"), stack("H"), solve, stack("refined"))
