"""Approximation quality of forward-gradient estimators (FROG Section 4.1).

For a known gradient ``g`` (the paper uses ``g = 1 ∈ R^n``) and random tangents, measure how well
each aggregator approximates ``g``: the cosine similarity ``cos(ĝ, g)`` and the norm ratio
``‖ĝ‖/‖g‖``. :func:`sample_quality` draws the per-sample metrics by brute force (it builds the
tangents explicitly), batched over samples in memory-bounded chunks.

Estimator names used by the approximation-quality experiments (``ESTIMATORS``):
``"single"`` (k = 1 forward gradient), ``"mean"``, ``"sum"``, ``"projection"`` and the
``"-normalized"`` variants of the first three (tangents rescaled to unit length; the projection
does not depend on tangent lengths).

The projection's two metrics coincide: ``P g · g = ‖P g‖²`` for an orthogonal projector, so
``cos(P g, g) = ‖P g‖/‖g‖``. :func:`projection_norm` computes ``‖P g‖`` from ``d = V g`` without
forming ``P g``: ``‖L⁻¹d‖`` with ``L`` the Cholesky factor of the Gram matrix, or ``‖R⁻ᵀd‖`` with ``R``
the triangular factor of ``Vᵀ`` (no ``Q``), the same solver choice and fallbacks as
:func:`frogcore.linalg.project`. On the large cells of the grid this is about 3× cheaper than building
the estimate.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import check_choices, check_positive_int
from .estimators import aggregate
from .linalg import _GRAM_COND_LIMIT, _project_svd
from .tangents import sample_tangents

ESTIMATORS = ("single", "single-normalized", "mean", "mean-normalized", "sum", "sum-normalized", "projection")
METRICS = ("cosine", "norm_ratio")

# elements of the (chunk, k, n) tangent tensor processed at once
_CHUNK_ELEMENTS = 1 << 23


def split_estimator(name: str) -> tuple[str, bool]:
    """``"mean-normalized"`` → ``("mean", True)``."""
    base, _, suffix = name.partition("-")
    return base, suffix == "normalized"


def _norm_cholesky(d: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖L⁻¹d‖, ok) with ``L L^T = V V^T``; ok as in :func:`frogcore.linalg.project`'s Cholesky path."""
    chol, info = torch.linalg.cholesky_ex(v @ v.transpose(-1, -2))
    diag = torch.diagonal(chol, dim1=-2, dim2=-1).abs()
    ratio = (diag.amax(-1) / diag.amin(-1).clamp_min(torch.finfo(v.dtype).tiny)) ** 2
    ok = (info == 0) & torch.isfinite(ratio) & (ratio < _GRAM_COND_LIMIT.get(v.dtype, 1e3))
    chol = torch.where(ok[..., None, None], chol, torch.eye(v.shape[-2], dtype=v.dtype, device=v.device))
    y = torch.linalg.solve_triangular(chol, d.unsqueeze(-1), upper=False)
    return y.squeeze(-1).norm(dim=-1), ok


def _norm_qr(d: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖R⁻ᵀd‖, ok) with ``V^T = Q R`` (only ``R`` is formed); ok as in the QR path of ``project``."""
    r = torch.linalg.qr(v.transpose(-1, -2), mode="r")[1]
    rdiag = torch.diagonal(r, dim1=-2, dim2=-1).abs()
    tol = rdiag.amax(-1, keepdim=True) * v.shape[-1] * torch.finfo(v.dtype).eps * 10
    ok = (rdiag > tol).all(-1)
    r = torch.where(ok[..., None, None], r, torch.eye(v.shape[-2], dtype=v.dtype, device=v.device))
    y = torch.linalg.solve_triangular(r.transpose(-1, -2), d.unsqueeze(-1), upper=False)  # Q^T g
    return y.squeeze(-1).norm(dim=-1), ok


def projection_norm(d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``‖P g‖`` for the vector ``g`` with directional derivatives ``d = V g`` (shapes ``(..., k)``,
    ``(..., k, n)``), equal to ``aggregate(d, v, "projection").norm(dim=-1)`` (tested) but without
    forming the projection. ``k > n``: the first ``n`` tangents, as in :func:`frogcore.linalg.project`."""
    if d.shape != v.shape[:-1]:
        raise ValueError(f"d must have shape v.shape[:-1]={tuple(v.shape[:-1])}; got {tuple(d.shape)}")
    k, n = v.shape[-2:]
    check_positive_int("k", k)
    if k > n:
        v, d = v[..., :n, :], d[..., :n]
        k = n
    batch = v.shape[:-2]
    vf, df = v.reshape(-1, k, n), d.reshape(-1, k)
    if 2 * k > n:
        out, ok = _norm_qr(df, vf)
    else:
        out, ok = _norm_cholesky(df, vf)
        if not bool(ok.all()):
            bad = (~ok).nonzero().squeeze(-1)
            out_qr, ok_qr = _norm_qr(df[bad], vf[bad])
            out, ok = out.index_copy(0, bad, out_qr), ok.index_copy(0, bad, ok_qr)
    if not bool(ok.all()):
        bad = (~ok).nonzero().squeeze(-1)
        out = out.index_copy(0, bad, _project_svd(df[bad], vf[bad]).norm(dim=-1))
    return out.reshape(batch)


def sample_quality(
    n: int,
    k: int,
    num_samples: int,
    estimators: Sequence[str] = ESTIMATORS,
    *,
    grad: torch.Tensor | None = None,
    sampler: str = "normal",
    angle: float | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-sample cosine similarity and norm ratio of each estimator, by brute force.

    Returns ``{estimator: {"cosine": (num_samples,), "norm_ratio": (num_samples,)}}``. All
    estimators of one sample share the same tangents (``"single"`` uses the first of them), so
    their differences are not blurred by independent noise.
    """
    n = check_positive_int("n", n)
    k = check_positive_int("k", k)
    num_samples = check_positive_int("num_samples", num_samples)
    estimators = check_choices("estimators", estimators, ESTIMATORS)
    g = torch.ones(n, dtype=dtype, device=device) if grad is None else grad.to(dtype=dtype, device=device)
    gnorm = g.norm()
    chunk = max(1, min(num_samples, _CHUNK_ELEMENTS // (k * n)))
    parts: dict[str, dict[str, list[torch.Tensor]]] = {e: {m: [] for m in METRICS} for e in estimators}
    done = 0
    while done < num_samples:
        b = min(chunk, num_samples - done)
        v = sample_tangents(n, k, batch=b, sampler=sampler, angle=angle, generator=generator,
                            dtype=dtype, device=device)
        vn = v / v.norm(dim=-1, keepdim=True)
        d = v @ g
        dn = vn @ g
        for e in estimators:
            agg, normalized = split_estimator(e)
            if agg == "projection":  # cos = ‖P g‖/‖g‖ = norm ratio (module docstring)
                ratio = projection_norm(d, v) / gnorm
                parts[e]["cosine"].append(ratio)
                parts[e]["norm_ratio"].append(ratio)
                continue
            est = aggregate(dn, vn, agg) if normalized else aggregate(d, v, agg)
            enorm = est.norm(dim=-1)
            parts[e]["cosine"].append((est @ g) / (enorm * gnorm).clamp_min(torch.finfo(dtype).tiny))
            parts[e]["norm_ratio"].append(enorm / gnorm)
        done += b
    return {e: {m: torch.cat(parts[e][m]).cpu() for m in METRICS} for e in estimators}
