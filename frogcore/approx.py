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
``cos(P g, g) = ‖P g‖/‖g‖``. :func:`projection_norm` (:func:`frogcore.linalg.projection_norm`, re-exported
here) computes ``‖P g‖`` from ``d = V g`` without forming ``P g``: ``‖L⁻¹e‖`` with ``L`` the Cholesky factor
of the Gram matrix of the unit tangents, or ``‖R⁻ᵀe‖`` with ``R`` the triangular factor of their transpose
(no ``Q``), with the solver dispatch and fallbacks of :func:`frogcore.linalg.project` (one implementation).
On the large cells of the grid this is about 3× cheaper than building the estimate.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import check_choices, check_positive_int
from .estimators import aggregate
from .linalg import projection_norm
from .tangents import sample_tangents

ESTIMATORS = ("single", "single-normalized", "mean", "mean-normalized", "sum", "sum-normalized", "projection")
METRICS = ("cosine", "norm_ratio")

# elements of the (chunk, k, n) tangent tensor processed at once
_CHUNK_ELEMENTS = 1 << 23


def split_estimator(name: str) -> tuple[str, bool]:
    """``"mean-normalized"`` → ``("mean", True)``."""
    base, _, suffix = name.partition("-")
    return base, suffix == "normalized"


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
