r"""Forward-mode optimisation steps: FGD, FROG, FoMoH, FoMoH-KD, Newton — one subspace view.

Notation: ``K`` tangents are the rows of ``V`` ``(..., K, n)``; forward mode gives the directional
derivatives ``d = V∇f`` (``K`` jvps) and, with hyper-dual evaluations (:mod:`frogcore.hyperdual`),
the directional Hessian ``Ĥ = V∇²f Vᵀ``. ``G = VVᵀ`` is the Gram matrix of the tangents.

The subspace view
-----------------
Every step here except FGD is a step inside ``span(V)``,

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
``curvature="raw"``      Cholesky of ``M``; where it fails (indefinite or singular ``M``) or ``M`` is
                         numerically singular, a multiple of the identity is added, ``M + τI`` with
                         ``τ = jitter · s · 10^t`` for ``t = 0, 1, …`` (``s`` = mean ``|diag M|``;
                         default ``jitter = 1e-3``), until Cholesky succeeds ("Cholesky with added
                         multiple of the identity", Nocedal & Wright Alg. 3.3). For an indefinite
                         ``M`` this turns the step into a descent direction.
``curvature="abs"``      eigenvalues replaced by ``|λ|`` (a saddle-free Newton step inside the
                         subspace); ``K = 1`` gives FoMoH's ``|vᵀHv|``.
``curvature="softabs"``  eigenvalues replaced by ``λ·coth(λ/β)`` with ``β = jitter · s``: smooth,
                         ``≈ |λ|`` for ``|λ| ≫ β`` and ``≥ β``.

``eps`` is added to the diagonal (raw) or to the modified eigenvalues (abs/softabs), e.g. the
``ε = 1e-5`` of FoMoH on networks. How each system was solved is *returned*
(:class:`SolveInfo`: status ``ok``/``jitter``/``failed`` per problem, the shift used and the smallest
eigenvalue of ``M``), never printed. Only batched Cholesky, ``cholesky_solve`` and ``eigh`` are used
(no batched ``inv``/``solve``, which is unreliable on CPU).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Union

import torch
from torch.func import grad as func_grad

from .config import check_choice, check_positive_int
from .hyperdual import directional_derivatives, directional_hessian, num_params, MODES
from .tangents import sample_tangents

Params = Union[torch.Tensor, Mapping[str, torch.Tensor]]

METRICS = ("hessian", "identity", "damped")
CURVATURES = ("raw", "abs", "softabs")
METHODS = ("bp", "fgd", "frog", "fomoh", "fomoh-kd", "newton")
STATUS = ("ok", "jitter", "failed")


@dataclass
class SolveInfo:
    """How the ``K × K`` systems were solved (one entry per problem in the batch).

    ``status``: index into :data:`STATUS` — ``0`` ok (solved as given), ``1`` jitter (a diagonal
    shift or an eigenvalue floor was needed: ``M`` was indefinite or singular), ``2`` failed (``M`` or
    ``d`` not finite: no step, ``κ = 0``). ``jitter``: the absolute shift ``τ`` added to the
    diagonal (0 where none). ``min_eig``: smallest eigenvalue of ``M`` as given (NaN where failed).
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
class StepInfo:
    """What one optimisation step saw: ``f(θ)`` before the step, ``d``, ``Ĥ`` and the solve."""

    loss: torch.Tensor
    d: torch.Tensor | None = None
    H: torch.Tensor | None = None
    solve: SolveInfo | None = None


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
    with _one_thread(M.numel() <= 1 << 16):
        return _solve_metric(M, d, curvature, eps, jitter, max_tries)


def _solve_metric(M, d, curvature, eps, jitter, max_tries):
    if M.shape[-2:] != (d.shape[-1], d.shape[-1]) or M.shape[:-2] != d.shape[:-1]:
        raise ValueError(f"M must have shape (..., K, K) matching d (..., K); got {tuple(M.shape)}, {tuple(d.shape)}")
    if jitter <= 0 or eps < 0:
        raise ValueError(f"jitter must be > 0 and eps >= 0; got jitter={jitter}, eps={eps}")
    k = M.shape[-1]
    eye = torch.eye(k, dtype=M.dtype, device=M.device)
    finite = torch.isfinite(M).all(-1).all(-1) & torch.isfinite(d).all(-1)
    M = torch.where(finite[..., None, None], 0.5 * (M + M.transpose(-1, -2)), eye)
    d = torch.where(finite[..., None], d, torch.zeros_like(d))
    lam, Q = torch.linalg.eigh(M)
    s = M.diagonal(dim1=-2, dim2=-1).abs().mean(-1)  # size of M: mean |diagonal|, else spectral norm, else 1
    s = torch.where(s > 0, s, lam.abs().amax(-1))
    s = torch.where(s > 0, s, torch.ones_like(s))
    min_eig = torch.where(finite, lam[..., 0], torch.full_like(lam[..., 0], float("nan")))
    rcond = 100 * k * torch.finfo(M.dtype).eps
    status = torch.full(finite.shape, 2, dtype=torch.long, device=M.device)
    tau_used = torch.zeros_like(s)

    if curvature != "raw":
        beta = jitter * s
        if curvature == "abs":
            lam2 = lam.abs()
        else:  # softabs: λ coth(λ/β), → β as λ → 0
            x = lam / beta[..., None]
            small = x.abs() < 1e-4
            lam2 = torch.where(small, beta[..., None], lam / torch.tanh(torch.where(small, torch.ones_like(x), x)))
        lam2 = lam2 + eps
        floor = (rcond * lam2.amax(-1, keepdim=True)).clamp_min(torch.finfo(M.dtype).tiny)
        floored = (lam2 < floor).any(-1)
        lam2 = torch.maximum(lam2, floor)
        kappa = (Q @ ((Q.transpose(-1, -2) @ d.unsqueeze(-1)).squeeze(-1) / lam2).unsqueeze(-1)).squeeze(-1)
        status = torch.where(finite, floored.long(), status)
        kappa = torch.where(finite[..., None], kappa, torch.zeros_like(kappa))
        return kappa, SolveInfo(status, tau_used, min_eig)

    M = M + eps * eye
    kappa = torch.zeros_like(d)
    pending = finite.clone()
    for t in range(max_tries + 1):
        tau = torch.zeros_like(s) if t == 0 else jitter * s * 10.0 ** (t - 1)
        L, info = torch.linalg.cholesky_ex(M + tau[..., None, None] * eye)
        diag = L.diagonal(dim1=-2, dim2=-1)
        ratio = (diag.amin(-1) / diag.amax(-1).clamp_min(torch.finfo(M.dtype).tiny)) ** 2
        ok = pending & (info == 0) & torch.isfinite(L).all(-1).all(-1) & (ratio > rcond)
        if bool(ok.any()):
            L = torch.where(ok[..., None, None], L, eye)
            sol = torch.cholesky_solve(d.unsqueeze(-1), L).squeeze(-1)
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
    M = subspace_metric(V, H, metric=metric, damping=damping)
    kappa, info = solve_metric(M, d, curvature=curvature, eps=eps, jitter=jitter)
    lr = torch.as_tensor(lr, dtype=V.dtype, device=V.device)
    return -lr.unsqueeze(-1) * (kappa.unsqueeze(-2) @ V).squeeze(-2), info


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
) -> tuple[Params, StepInfo]:
    """One optimisation step ``θ ← θ + Δθ``; returns the new parameters and a :class:`StepInfo`.

    ``method``:

    * ``"bp"``       — gradient descent with the true gradient (reverse mode; the baseline);
    * ``"fgd"``      — forward gradient descent ``−η (1/k) Σ (∇f·v_i) v_i`` (``k = 1``: Baydin et al.);
    * ``"frog"``     — ``−η`` × projection of ``∇f`` on ``span(V)`` (first order, ``k`` jvps);
    * ``"fomoh"``    — ``−η (∇f·v) v / (|vᵀ∇²f v| + ε)`` (needs ``k = 1``; ``curvature`` default abs);
    * ``"fomoh-kd"`` — ``−η Vᵀ M⁻¹ d`` with ``k`` tangents and the chosen ``metric``
      (default the directional Hessian, ``curvature`` default raw + jitter);
    * ``"newton"``   — FoMoH-KD with ``V = I`` (``k`` is ignored; needs ``n`` hyper-dual columns).

    ``params``: a tensor ``(..., n)`` (independent problems along the leading dims; ``f`` maps
    ``(..., n) → (...)``) or a dict of tensors (one global tangent). Tangents are drawn with
    :func:`frogcore.tangents.sample_tangents` from ``generator`` unless ``tangents`` ``(..., k, n)``
    are given (e.g. the same tangents for several runs, broadcast over their leading dims).
    """
    check_choice("method", method, METHODS)
    check_choice("mode", mode, MODES)
    k = check_positive_int("k", k)
    ref = _first(params)
    n = num_params(params)
    batch = params.shape[:-1] if isinstance(params, torch.Tensor) else ()
    lr_t = torch.as_tensor(lr, dtype=ref.dtype, device=ref.device)

    if method == "bp":
        if isinstance(params, torch.Tensor):
            g = func_grad(lambda p: f(p).sum())(params)
            loss = f(params)
            return params - lr_t.unsqueeze(-1) * g, StepInfo(loss.detach())
        g = func_grad(f)(params)
        with torch.no_grad():
            loss = f(params)
        return {name: p - lr_t * g[name] for name, p in params.items()}, StepInfo(loss)

    if method == "fomoh" and k != 1:
        raise ValueError(f"method='fomoh' uses one tangent (k=1); got k={k}. Use method='fomoh-kd' for k > 1")
    if method == "newton":
        V = torch.eye(n, dtype=ref.dtype, device=ref.device).expand(*batch, n, n)
    elif tangents is not None:
        if tangents.shape[-1] != n or tangents.shape[-2] != k:
            raise ValueError(f"tangents must have shape (..., k={k}, n={n}); got {tuple(tangents.shape)}")
        V = tangents.expand(*batch, k, n) if batch else tangents
    else:
        V = sample_tangents(n, k, batch=batch or None, sampler=sampler, generator=generator,
                            dtype=ref.dtype, device=ref.device)

    if method in ("fgd", "frog"):
        value, d = directional_derivatives(f, params, V)
        if method == "fgd":
            delta = -lr_t.unsqueeze(-1) * (d.unsqueeze(-2) @ V).squeeze(-2) / k
            return _add(params, delta), StepInfo(value, d)
        delta, info = subspace_step(d, V, metric="identity", lr=lr_t, jitter=jitter)
        return _add(params, delta), StepInfo(value, d, None, info)

    value, d, H = directional_hessian(f, params, V, mode=mode)
    if curvature is None:
        curvature = "abs" if method == "fomoh" else "raw"
    delta, info = subspace_step(d, V, H, metric="hessian" if method == "fomoh" else metric, damping=damping,
                                lr=lr_t, curvature=curvature, eps=eps, jitter=jitter)
    return _add(params, delta), StepInfo(value, d, H, info)
