r"""Numerically robust projection onto the span of a set of tangents.

Given the directional derivatives ``d = V g`` (shape ``(..., k)``) of an unknown vector ``g`` along
the rows of ``V`` (shape ``(..., k, n)``), :func:`project` returns the orthogonal projection of
``g`` onto ``span(V)``, ``P g = V^T (V V^T)^{-1} d``, without ever seeing ``g``; :func:`projection_norm`
returns ``‖P g‖`` without forming ``P g`` (FROG Section 4.1 needs only the norm).

Scale invariance
----------------
``P`` depends only on the span of the tangents, not on their lengths: with ``S = diag(‖v_i‖)`` and the
unit tangents ``U = S^{-1} V`` (directional derivatives ``e = S^{-1} d = U g``),
``V^T (V V^T)^{-1} d = U^T (U U^T)^{-1} e``. Every solver therefore works on the unit tangents, so the
decision whether a tangent is (numerically) dependent never depends on its length: a tangent 10⁴
times shorter than the others is used like any other (FROG issue 15, defect 1). ``U`` is never
materialised on the fast paths: the Cholesky path scales the Gram matrix, ``U U^T = S^{-1} (V V^T)
S^{-1}`` with ``‖v_i‖² = (V V^T)_ii``, and the QR path scales the columns of ``R``,
``U^T = V^T S^{-1} = Q (R S^{-1})`` with ``‖v_j‖ = ‖R e_j‖`` (Householder QR is column-wise backward
stable, so this is as accurate as factorising ``U^T``). The lengths thus cost no extra pass over ``V``,
and they double as its NaN/inf check. Lengths below ``sqrt(tiny)`` of the dtype count as zero tangents.

Solvers (``SOLVERS``)
---------------------
``"cholesky"``  Cholesky ``L L^T = U U^T`` of the unit-diagonal Gram matrix; fastest, squares the
                condition number. ``P g = U^T L^{-T} L^{-1} e``, ``‖P g‖ = ‖L^{-1} e‖``.
``"qr"``        reduced QR ``U^T = Q R``; ``Q^T g = R^{-T} e``, so ``P g = Q R^{-T} e`` and
                ``‖P g‖ = ‖R^{-T} e‖``. Accurate for ill-conditioned ``V``.
``"svd"``       ``U^T = W Σ Z^T`` with singular values below ``σ_max · max(k, n) · ε · 10`` dropped:
                ``P g = W Σ^{-1} Z^T e`` on the kept directions; projects onto the numerical span, so
                it handles rank-deficient ``V`` (repeated or collinear tangents).
``"auto"``      Cholesky, falling back per batch element to QR where Cholesky fails or
                ``(max L_ii / min L_ii)² ≥ 10³`` (float32) / ``10⁸`` (float64), a lower bound on the
                Gram condition number; QR directly wherever ``k > n/2``; then SVD where ``R`` is
                numerically singular (``|R_ii| ≤ max_j |R_jj| · n · ε · 10``).

An *explicit* ``"cholesky"`` or ``"qr"`` runs only that algorithm: where its own check above fails
(the tangents are too ill-conditioned or dependent for it) :func:`project` raises a ``ValueError``
naming the solver and suggesting ``"auto"`` or ``"svd"``, instead of returning an unreliable result.

Tangent selection for ``k > n`` (``SELECTIONS``)
------------------------------------------------
``k`` tangents in ``R^n`` span at most ``R^n``; only ``n`` of them are used. ``"first"`` (default, the
authors' ``first_n``) keeps the first ``n``; ``"largest"`` / ``"smallest"`` keep the ``n`` tangents with
the largest / smallest ``|d_i| / ‖v_i‖ = ‖g‖ |cos∠(v_i, g)|`` (the authors' ``max`` / ``min``
selection; scale-free like the projection itself), in their original order. If the kept tangents are
linearly independent the projection is ``g`` itself, whichever are kept.

Input
-----
``d`` and ``v`` are torch tensors or numpy arrays (converted with :func:`torch.as_tensor`; the result is
a torch tensor). Computation is in the promoted dtype of ``d`` and ``v``; ``float16``/``bfloat16`` inputs
are computed in ``float32`` (LAPACK has no half-precision factorisations) and the result is cast back.
Integer or complex inputs, ``k = 0``, ``n = 0`` and non-finite tangents raise a ``ValueError`` naming the
problem (non-finite ``d`` simply propagates to the result, as through any linear map, so that a
diverging training run still produces its NaN loss instead of a projection error).

Batched ``torch.linalg.inv``/``solve``/``lu_factor`` are deliberately avoided: on CPU with more
than one thread they return wrong results for batches of matrices larger than ~150 (an open
PyTorch bug). Cholesky, QR, SVD and triangular solves are used instead.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .config import check_choice

SOLVERS = ("auto", "cholesky", "qr", "svd")
SELECTIONS = ("first", "largest", "smallest")

# Largest Gram condition number (lower bound (max L_ii / min L_ii)^2) accepted from Cholesky.
_GRAM_COND_LIMIT = {torch.float32: 1e3, torch.float64: 1e8}
# Relative rank tolerance factor of the QR and SVD paths: tol = scale * max(k, n) * eps * _RANK_RTOL.
_RANK_RTOL = 10.0
_HALF = (torch.float16, torch.bfloat16)

__all__ = ["SOLVERS", "SELECTIONS", "project", "projection_norm", "independent", "project_naive",
           "as_float_tensor"]


# ----------------------------------------------------------------------------- input handling

def as_float_tensor(name: str, x: Any) -> torch.Tensor:
    """``x`` as a real floating-point torch tensor; numpy arrays are converted, anything else raises.

    Integer, boolean and complex dtypes raise a ``ValueError`` naming ``name``.
    """
    if isinstance(x, np.ndarray):
        x = torch.as_tensor(x)
    elif not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy.ndarray; got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must have a real floating-point dtype (float16, bfloat16, float32, float64); "
                         f"got {x.dtype}")
    return x


def _prepare(d: Any, v: Any) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """Validate and convert; returns (d, v) in the compute dtype and the output dtype."""
    v = as_float_tensor("v", v)
    d = as_float_tensor("d", d)
    if v.dim() < 2:
        raise ValueError(f"v must have shape (..., k, n); got {tuple(v.shape)}")
    if d.shape != v.shape[:-1]:
        raise ValueError(f"d must have shape v.shape[:-1]={tuple(v.shape[:-1])}; got {tuple(d.shape)}")
    k, n = v.shape[-2:]
    if k < 1 or n < 1:
        raise ValueError(f"v must hold k >= 1 tangents of dimension n >= 1; got k={k}, n={n}")
    out_dtype = torch.promote_types(d.dtype, v.dtype)
    dtype = torch.float32 if out_dtype in _HALF else out_dtype
    return d.to(dtype), v.to(dtype), out_dtype


def _check_lengths(lengths: torch.Tensor, v: torch.Tensor) -> None:
    """Raise if a tangent length (or squared length) is not finite: NaN/inf in ``v`` or overflow.

    The lengths come for free from each solver's factorisation, so this is the NaN/inf check of ``v``
    without an extra pass over it (the count of bad entries is computed only on the error path)."""
    if not bool(torch.isfinite(lengths).all()):
        bad = int((~torch.isfinite(v)).sum())
        if bad:
            raise ValueError(f"v contains {bad} NaN or infinite entries; tangents must be finite")
        raise ValueError(f"tangent lengths overflow in {v.dtype}; rescale the tangents (the projection does not "
                         "depend on their lengths)")


def _safe(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lengths with zero or tiny ones (below ``sqrt(tiny)``) replaced by 1, mask of the nonzero ones).

    A replaced tangent stays numerically zero, so the rank checks treat it as dependent."""
    nonzero = lengths > torch.finfo(lengths.dtype).tiny ** 0.5
    return torch.where(nonzero, lengths, torch.ones_like(lengths)), nonzero


def _norms(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(safe ``‖v_i‖``, nonzero mask) by one pass over ``v`` (SVD path, selection, :func:`independent`)."""
    raw = torch.linalg.vector_norm(v, dim=-1)
    _check_lengths(raw, v)
    return _safe(raw)


def _select(d, v, selection: str):
    """Keep ``n`` of ``k > n`` tangents (see the module docstring)."""
    n = v.shape[-1]
    if selection == "first":
        return d[..., :n], v[..., :n, :]
    score = d.abs() / _norms(v)[0]
    idx = score.topk(n, dim=-1, largest=selection == "largest").indices.sort(dim=-1).values
    rows = idx.unsqueeze(-1).expand(*idx.shape, n)
    return d.gather(-1, idx), v.gather(-2, rows)


# ----------------------------------------------------------------------------- the three solvers
# Each takes (d, v) with v of shape (B, k, n) and returns (projection (B, n) or norm (B,), ok (B,)).

def _eye_like(v: torch.Tensor) -> torch.Tensor:
    return torch.eye(v.shape[-2], dtype=v.dtype, device=v.device)


def _cholesky(d, v, norm_only: bool):
    """Cholesky of the unit-diagonal Gram matrix ``U U^T = S^{-1} V V^T S^{-1}`` (``S`` from its diagonal)."""
    gram = v @ v.transpose(-1, -2)
    sq = torch.diagonal(gram, dim1=-2, dim2=-1)
    _check_lengths(sq, v)
    s = _safe(sq.sqrt())[0]
    e = d / s  # directional derivatives along the unit tangents
    chol, info = torch.linalg.cholesky_ex(gram / (s.unsqueeze(-1) * s.unsqueeze(-2)))
    diag = torch.diagonal(chol, dim1=-2, dim2=-1).abs()
    ratio = (diag.amax(-1) / diag.amin(-1).clamp_min(torch.finfo(v.dtype).tiny)) ** 2
    ok = (info == 0) & torch.isfinite(ratio) & (ratio < _GRAM_COND_LIMIT.get(v.dtype, 1e3))
    chol = torch.where(ok[..., None, None], chol, _eye_like(v))
    if norm_only:
        y = torch.linalg.solve_triangular(chol, e.unsqueeze(-1), upper=False)  # L^{-1} e
        return y.squeeze(-1).norm(dim=-1), ok
    coef = torch.cholesky_solve(e.unsqueeze(-1), chol).squeeze(-1) / s  # coefficients of the rows of V
    return (coef.unsqueeze(-2) @ v).squeeze(-2), ok


def _qr(d, v, norm_only: bool):
    """``V^T = Q R``, ``U^T = Q (R S^{-1})`` with ``‖v_j‖`` the norm of column ``j`` of ``R`` (only ``R`` for
    the norm)."""
    if norm_only:
        q, r = None, torch.linalg.qr(v.transpose(-1, -2), mode="r")[1]
    else:
        q, r = torch.linalg.qr(v.transpose(-1, -2), mode="reduced")  # q: (..., n, k), r: (..., k, k)
    lengths = torch.linalg.vector_norm(r, dim=-2)  # Q has orthonormal columns: ‖R e_j‖ = ‖v_j‖
    _check_lengths(lengths, v)
    s = _safe(lengths)[0]
    e = d / s
    r = r / s.unsqueeze(-2)  # column j divided by ‖v_j‖
    rdiag = torch.diagonal(r, dim1=-2, dim2=-1).abs()
    tol = rdiag.amax(-1, keepdim=True) * v.shape[-1] * torch.finfo(v.dtype).eps * _RANK_RTOL
    ok = (rdiag > tol).all(-1)
    r = torch.where(ok[..., None, None], r, _eye_like(v))
    y = torch.linalg.solve_triangular(r.transpose(-1, -2), e.unsqueeze(-1), upper=False)  # Q^T g
    if norm_only:
        return y.squeeze(-1).norm(dim=-1), ok
    return (q @ y).squeeze(-1), ok


def _svd(d, v, norm_only: bool):
    """Projection (or its norm) onto the numerical span of the unit tangents, via SVD (always ok)."""
    s = _norms(v)[0]
    u = v / s.unsqueeze(-1)
    w, sv, zh = torch.linalg.svd(u.transpose(-1, -2), full_matrices=False)  # U^T = W Σ Z^T
    keep = sv > sv.amax(-1, keepdim=True) * max(v.shape[-2:]) * torch.finfo(v.dtype).eps * _RANK_RTOL
    sv_inv = torch.where(keep, 1.0 / torch.where(keep, sv, torch.ones_like(sv)), torch.zeros_like(sv))
    y = sv_inv * (zh @ (d / s).unsqueeze(-1)).squeeze(-1)  # W^T g on the kept directions
    out = y.norm(dim=-1) if norm_only else (w @ y.unsqueeze(-1)).squeeze(-1)
    return out, torch.ones(out.shape[0], dtype=torch.bool, device=out.device)


_SOLVE = {"cholesky": _cholesky, "qr": _qr, "svd": _svd}
_FAILURE = {
    "cholesky": "the Gram matrix of the unit tangents is not numerically positive definite, or its condition "
                "number exceeds {limit:g} for {dtype}",
    "qr": "R is numerically singular (the tangents are linearly dependent to within n·eps·{rtol:g})",
}


def _solve(d, v, solver: str, selection: str, norm_only: bool):
    """Shared dispatch of :func:`project` and :func:`projection_norm` (inputs already prepared)."""
    k, n = v.shape[-2:]
    if k > n:
        d, v = _select(d, v, selection)
        k = n
    batch = v.shape[:-2]
    vf, df = v.reshape(-1, k, n), d.reshape(-1, k)
    out_shape = batch if norm_only else (*batch, n)

    if solver != "auto":
        out, ok = _SOLVE[solver](df, vf, norm_only)
        if not bool(ok.all()):
            why = _FAILURE[solver].format(limit=_GRAM_COND_LIMIT.get(v.dtype, 1e3), dtype=v.dtype, rtol=_RANK_RTOL)
            raise ValueError(
                f"solver={solver!r} cannot handle these tangents ({int((~ok).sum())} of {ok.numel()} batch "
                f"elements): {why}. Use solver='auto' (falls back to QR, then SVD, per batch element) or "
                "solver='svd' (projects onto the numerical span).")
        return out.reshape(out_shape)

    out, ok = (_qr if 2 * k > n else _cholesky)(df, vf, norm_only)
    for fallback in ((_qr, _svd) if 2 * k <= n else (_svd,)):
        if bool(ok.all()):
            break
        bad = (~ok).nonzero().squeeze(-1)
        out_fb, ok_fb = fallback(df[bad], vf[bad], norm_only)
        out, ok = out.index_copy(0, bad, out_fb), ok.index_copy(0, bad, ok_fb)
    return out.reshape(out_shape)


# ----------------------------------------------------------------------------- public API

def project(d, v, *, solver: str = "auto", selection: str = "first") -> torch.Tensor:
    r"""Project the vector whose directional derivatives along ``v`` are ``d`` onto ``span(v)``.

    ``P g = V^T (V V^T)^{-1} d`` (FROG's orthogonal projection), computed on the unit tangents so that
    the result and every dependence decision are independent of the tangent lengths (module docstring).

    Parameters
    ----------
    d : tensor or array ``(..., k)``
        Directional derivatives ``d_i = v_i · g``.
    v : tensor or array ``(..., k, n)``
        Tangents (rows); must be finite.
    solver : ``"auto" | "cholesky" | "qr" | "svd"``
        ``"auto"`` is right for every input; an explicit ``"cholesky"``/``"qr"`` raises a ``ValueError``
        where its conditioning check fails.
    selection : ``"first" | "largest" | "smallest"``
        Which ``n`` tangents to keep when ``k > n``.

    Returns the projection, shape ``(..., n)``, in the promoted dtype of ``d`` and ``v``.
    """
    check_choice("solver", solver, SOLVERS)
    check_choice("selection", selection, SELECTIONS)
    d, v, out_dtype = _prepare(d, v)
    return _solve(d, v, solver, selection, norm_only=False).to(out_dtype)


def projection_norm(d, v, *, solver: str = "auto", selection: str = "first") -> torch.Tensor:
    r"""``‖P g‖`` for the vector ``g`` with directional derivatives ``d = V g`` (shapes ``(..., k)``,
    ``(..., k, n)``), without forming ``P g``: ``‖L^{-1} e‖`` (Cholesky), ``‖R^{-T} e‖`` (QR, only ``R`` is
    formed) or ``‖Σ^{-1} Z^T e‖`` (SVD) with ``e`` the directional derivatives along the unit tangents;
    the same solvers, fallbacks, selection and input rules as :func:`project`, and equal to
    ``project(d, v).norm(dim=-1)`` up to rounding. Returns shape ``v.shape[:-2]``.
    """
    check_choice("solver", solver, SOLVERS)
    check_choice("selection", selection, SELECTIONS)
    d, v, out_dtype = _prepare(d, v)
    return _solve(d, v, solver, selection, norm_only=True).to(out_dtype)


def independent(v) -> torch.Tensor:
    r"""Whether the ``k`` tangents (rows of ``v``, shape ``(..., k, n)``) are numerically linearly independent.

    Decided on the unit tangents ``U`` with the rank tolerance of :func:`project`'s SVD path: every
    singular value of ``U`` exceeds ``σ_max · max(k, n) · ε · 10``. Tangents declared independent are
    therefore used in full by :func:`project` (none is dropped as dependent); ``k > n`` is never
    independent. Returns a boolean tensor of shape ``v.shape[:-2]``.
    """
    v = as_float_tensor("v", v)
    if v.dim() < 2:
        raise ValueError(f"v must have shape (..., k, n); got {tuple(v.shape)}")
    k, n = v.shape[-2:]
    if k < 1 or n < 1:
        raise ValueError(f"v must hold k >= 1 tangents of dimension n >= 1; got k={k}, n={n}")
    if v.dtype in _HALF:
        v = v.float()
    s, nonzero = _norms(v)
    if k > n:
        return torch.zeros(v.shape[:-2], dtype=torch.bool, device=v.device)
    sv = torch.linalg.svdvals(v / s.unsqueeze(-1))
    tol = sv.amax(-1, keepdim=True) * max(k, n) * torch.finfo(v.dtype).eps * _RANK_RTOL
    return nonzero.all(-1) & (sv > tol).all(-1)


def project_naive(d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``V^T inv(V V^T) d`` with an explicit inverse, one matrix at a time.

    The textbook formula, kept only as a reference for accuracy tests and benchmarks: it squares
    the condition number of ``V`` and is not used by any estimator.
    """
    k, n = v.shape[-2:]
    if k > n:
        v, d = v[..., :n, :], d[..., :n]
    vf, df = v.reshape(-1, *v.shape[-2:]), d.reshape(-1, d.shape[-1])
    rows = [vi.T @ (torch.linalg.inv(vi @ vi.T) @ di) for vi, di in zip(vf, df)]
    return torch.stack(rows).reshape(*v.shape[:-2], v.shape[-1])
