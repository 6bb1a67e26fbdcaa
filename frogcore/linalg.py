"""Numerically robust projection onto the span of a set of tangents.

Given the directional derivatives ``d = V g`` (shape ``(..., k)``) of an unknown vector ``g`` along
the rows of ``V`` (shape ``(..., k, n)``), :func:`project` returns the orthogonal projection of
``g`` onto ``span(V)``, ``V^T (V V^T)^{-1} d``, without ever seeing ``g``.

Solvers
-------
``"cholesky"``  Cholesky of the k x k Gram matrix ``V V^T``; fastest, but squares the condition
                number of ``V``.
``"qr"``        reduced QR of ``V^T``: ``V^T = Q R`` so ``d = R^T Q^T g``; one triangular solve gives
                ``Q^T g`` and the projection is ``Q Q^T g``. Accurate for ill-conditioned ``V``.
``"svd"``       SVD of ``V^T`` with small singular values dropped; handles rank-deficient ``V``
                (e.g. repeated tangents) by projecting onto the numerical span.
``"auto"``      Cholesky, falling back per batch element to QR where Cholesky fails or the Gram
                matrix is too ill-conditioned for the dtype, or wherever ``k > n/2``; then to SVD
                where ``R`` is numerically singular.

``k > n``: ``k`` tangents in ``R^n`` span at most ``R^n``. Following the FROG authors, only the first
``n`` tangents are used; if they are linearly independent the projection is ``g`` itself.

Batched ``torch.linalg.inv``/``solve``/``lu_factor`` are deliberately avoided: on CPU with more
than one thread they return wrong results for batches of matrices larger than ~150 (an open
PyTorch bug). Cholesky, QR, SVD and triangular solves are used instead.
"""
from __future__ import annotations

import torch

from .config import check_choice

SOLVERS = ("auto", "cholesky", "qr", "svd")

# Largest Gram condition number accepted from Cholesky before switching to QR.
_GRAM_COND_LIMIT = {torch.float32: 1e3, torch.float64: 1e8}


def _as_column(d: torch.Tensor) -> torch.Tensor:
    return d.unsqueeze(-1)


def _project_cholesky(d: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (projection, ok-mask) via Cholesky of the Gram matrix."""
    gram = v @ v.transpose(-1, -2)
    chol, info = torch.linalg.cholesky_ex(gram)
    diag = torch.diagonal(chol, dim1=-2, dim2=-1).abs()
    limit = _GRAM_COND_LIMIT.get(v.dtype, 1e3)
    # (max L_ii / min L_ii)^2 is a cheap lower bound on cond(Gram)
    ratio = (diag.amax(-1) / diag.amin(-1).clamp_min(torch.finfo(v.dtype).tiny)) ** 2
    ok = (info == 0) & torch.isfinite(ratio) & (ratio < limit)
    chol = torch.where(ok[..., None, None], chol, torch.eye(v.shape[-2], dtype=v.dtype, device=v.device))
    coef = torch.cholesky_solve(_as_column(d), chol).squeeze(-1)
    return (coef.unsqueeze(-2) @ v).squeeze(-2), ok


def _project_qr(d: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (projection, ok-mask) via reduced QR of V^T."""
    q, r = torch.linalg.qr(v.transpose(-1, -2), mode="reduced")  # q: (..., n, k), r: (..., k, k)
    rdiag = torch.diagonal(r, dim1=-2, dim2=-1).abs()
    tol = rdiag.amax(-1, keepdim=True) * v.shape[-1] * torch.finfo(v.dtype).eps * 10
    ok = (rdiag > tol).all(-1)
    eye = torch.eye(v.shape[-2], dtype=v.dtype, device=v.device)
    r = torch.where(ok[..., None, None], r, eye)
    y = torch.linalg.solve_triangular(r.transpose(-1, -2), _as_column(d), upper=False)  # Q^T g
    return (q @ y).squeeze(-1), ok


def _project_svd(d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Projection onto the numerical span of V via SVD (rank-deficient safe)."""
    u, s, wh = torch.linalg.svd(v.transpose(-1, -2), full_matrices=False)  # V^T = U S W^T
    tol = s.amax(-1, keepdim=True) * max(v.shape[-2:]) * torch.finfo(v.dtype).eps * 10
    keep = s > tol
    s_inv = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
    # d = W S U^T g  =>  U^T g = S^-1 W^T d on the kept singular directions
    y = s_inv * (wh @ _as_column(d)).squeeze(-1)
    return (u @ _as_column(y)).squeeze(-1)


def project(d: torch.Tensor, v: torch.Tensor, *, solver: str = "auto") -> torch.Tensor:
    """Project the vector whose directional derivatives along ``v`` are ``d`` onto ``span(v)``.

    Parameters
    ----------
    d : tensor ``(..., k)``
        Directional derivatives ``v_i · g``.
    v : tensor ``(..., k, n)``
        Tangents (rows).
    solver : ``"auto" | "cholesky" | "qr" | "svd"``
    """
    check_choice("solver", solver, SOLVERS)
    if d.shape != v.shape[:-1]:
        raise ValueError(f"d must have shape v.shape[:-1]={tuple(v.shape[:-1])}; got {tuple(d.shape)}")
    k, n = v.shape[-2:]
    if k > n:  # only the first n tangents matter (the authors' convention)
        v, d = v[..., :n, :], d[..., :n]
        k = n
    if solver == "cholesky":
        return _project_cholesky(d, v)[0]
    if solver == "qr":
        return _project_qr(d, v)[0]
    if solver == "svd":
        return _project_svd(d, v)

    batch = v.shape[:-2]
    vf, df = v.reshape(-1, k, n), d.reshape(-1, k)
    if 2 * k > n:
        out, ok = _project_qr(df, vf)
    else:
        out, ok = _project_cholesky(df, vf)
        if not bool(ok.all()):
            bad = (~ok).nonzero().squeeze(-1)
            out_qr, ok_qr = _project_qr(df[bad], vf[bad])
            out = out.index_copy(0, bad, out_qr)
            ok = ok.index_copy(0, bad, ok_qr)
    if not bool(ok.all()):
        bad = (~ok).nonzero().squeeze(-1)
        out = out.index_copy(0, bad, _project_svd(df[bad], vf[bad]))
    return out.reshape(*batch, n)


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
