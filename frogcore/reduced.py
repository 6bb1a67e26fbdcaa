r"""Exact reduced sampler for the Section 4.1 approximation-quality experiment.

:func:`frogcore.approx.sample_quality` builds ``k`` Gaussian tangents in ``R^n`` and aggregates them:
``O(k n)`` memory and ``O(k^2 n)`` time per sample. This module draws *the same random variables* —
the cosine similarity and the norm ratio of every estimator in ``frogcore.approx.ESTIMATORS``, with
their exact joint law within one sample — at a cost of ``O(k)`` per sample, independent of ``n``.

Why this is exact
-----------------
Gaussian tangents are rotation invariant, and both metrics are invariant to rotating the whole problem
and to rescaling ``∇f``; so ``∇f = e_1`` without loss of generality. Orthonormalise the tangents one by
one (Gram–Schmidt, i.e. the QR factorisation ``V^T = Q R``; the entries of ``R`` are the Bartlett
decomposition of the Wishart Gram matrix ``V V^T``). Let ``U_j = span(v_1..v_j)`` with ambient
dimension ``a_j = min(j, n)``. Given the past, the next tangent ``v_{j+1} ~ N(0, I_n)`` splits into

* its coordinates inside ``U_j`` in *any* orthonormal basis chosen from the past: i.i.d. ``N(0, 1)``;
* its component orthogonal to ``U_j``: length ``R_{j+1} ~ χ_{n-j}`` (zero once ``j ≥ n``) along a
  direction ``q`` uniform on the unit sphere of ``U_j^⊥``, independent of the length.

``e_1`` has coordinates ``h`` in ``U_j`` and a residual of squared length ``s_j = 1 - |h|^2``
outside it, so ``e_1 · q = √s_j · τ`` with ``τ`` the first coordinate of a uniform unit vector in
``R^{n-j}``: ``τ = z / √(z^2 + χ^2_{n-j-1})``.

Every estimate lives in ``U_k``: the unnormalised sum ``X = Σ d_i v_i`` (``d_i = v_i·e_1``), the
normalised sum ``Y = Σ (d_i/|v_i|^2) v_i`` and the projection ``P_U e_1`` (coordinates ``h``). The
update of ``(h, X, Y)`` by one tangent needs the new tangent only through its coordinates along
``span(h, X, Y)`` (three ``N(0, 1)``), the squared length of its remaining in-span part
(``χ^2_{a_j - 3}``) and its new direction (``R_{j+1}``, ``τ``). Keeping ``(h, X, Y)`` in the
orthonormal frame that Gram–Schmidt of ``(h, X, Y)`` defines, the whole state is six numbers:
``h = (η, 0, 0)``, ``X = (x_0, x_1, 0)``, ``Y = (y_0, y_1, y_2)``. One step re-orthonormalises the
5-dimensional coordinates (old frame, the residual direction, the new direction) back to three.

The metrics are then (``k`` tangents, ``η = |h| = √(1-s_k)``)

* projection: ``cos = |P_U e_1| = η``, norm ratio ``= η`` (``= 1`` for ``k ≥ n``);
* mean / sum: ``cos = X·e_1/|X| = X·h/|X| = η x_0/|(x_0, x_1)|`` (``X`` lies in ``U``), norm ratio
  ``|X|/k`` resp. ``|X|``; the ``-normalized`` variants the same with ``Y``;
* single: the mean after the first tangent.

No approximation is involved: the sampler draws from the exact joint law of the brute-force
computation (in float64). It supports the paper's tangents (``sampler="normal"``) only; the law does
not depend on ``∇f``. Randomness: a NumPy ``Generator`` seeded from the given ``torch.Generator``,
so a fixed torch seed gives fixed numbers.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .approx import ESTIMATORS, METRICS
from .config import check_choice, check_choices, check_dtype, check_positive_int, check_positive_ints

# steps whose random numbers are drawn in one call (bounds memory: steps x elements x 7 doubles)
_STEP_CHUNK = 32


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A NumPy generator seeded by one draw from ``generator`` (or torch's default generator)."""
    kw = {} if generator is None else {"generator": generator, "device": generator.device}
    seed = int(torch.randint(0, 2**62, (1,), **kw).item())
    return np.random.default_rng(seed)


def _draws(rng: np.random.Generator, n: int, j0: int, steps: int, b: int) -> np.ndarray:
    """Random numbers for steps ``j0 .. j0+steps-1`` of one group: shape ``(steps, 7, b)``.

    Rows: ξ_0, ξ_1, ξ_2, z (standard normals); the in-span residual χ^2_{a_j - min(a_j, 3)}; the new
    direction's squared length χ^2_{n-j}; the χ^2_{n-j-1} of τ. χ^2 with 0 degrees of freedom is 0.
    """
    j = np.arange(j0, j0 + steps, dtype=np.float64)[:, None]
    a = np.minimum(j, n)
    out = np.empty((steps, 7, b))
    out[:, :4] = rng.standard_normal((steps, 4, b))
    out[:, 4] = 2.0 * rng.standard_gamma(np.broadcast_to((a - np.minimum(a, 3.0)) / 2, (steps, b)))
    out[:, 5] = 2.0 * rng.standard_gamma(np.broadcast_to(np.maximum(n - j, 0.0) / 2, (steps, b)))
    out[:, 6] = 2.0 * rng.standard_gamma(np.broadcast_to(np.maximum(n - j - 1, 0.0) / 2, (steps, b)))
    return out


def _paths(
    ns: Sequence[int], ks: Sequence[int], num_samples: int, rngs: Sequence[np.random.Generator],
) -> dict[tuple[int, int], dict[str, dict[str, np.ndarray]]]:
    """Run one sequential path per group (dimension ``ns[g]``, generator ``rngs[g]``), all groups batched.

    Returns ``{(n, k): {estimator: {metric: (num_samples,) float64}}}`` for every ``n`` in ``ns`` and
    ``k`` in ``ks`` (the estimates at ``k`` use the first ``k`` tangents of the path).
    """
    b = num_samples
    groups = len(ns)
    nvec = np.repeat(np.asarray(ns, dtype=np.float64), b)  # (E,)
    e = nvec.size
    kset = sorted(set(ks))
    kmax = kset[-1]
    # state: h = (eta, 0, 0), X = (x0, x1, 0), Y = (y0, y1, y2); s = |e1 outside U|^2
    eta, x0, x1, y0, y1, y2 = (np.zeros(e) for _ in range(6))
    s = np.ones(e)
    out: dict[tuple[int, int], dict[str, dict[str, np.ndarray]]] = {}
    draws = None
    for j in range(kmax):
        if j % _STEP_CHUNK == 0:
            # always whole chunks, so the random stream (and every cell) does not depend on max(ks)
            draws = np.concatenate([_draws(rngs[g], ns[g], j, _STEP_CHUNK, b) for g in range(groups)], axis=2)
        xi0, xi1, xi2, z, rho, r2, w = draws[j % _STEP_CHUNK]
        a = np.minimum(j, nvec)                       # ambient dimension before this tangent
        f = np.minimum(a, 3.0)                        # frame dimension = rank of (h, X, Y)
        xi1 = np.where(f >= 2, xi1, 0.0)
        xi2 = np.where(f >= 3, xi2, 0.0)
        xi0 = np.where(f >= 1, xi0, 0.0)
        # new direction: length R, and e1's component along it
        big_r = np.sqrt(r2)
        zw = z * z + w
        tau = np.divide(z, np.sqrt(zw), out=np.zeros(e), where=zw > 0)
        hn = np.sqrt(s) * tau
        s = s * np.divide(w, zw, out=np.zeros(e), where=zw > 0)
        # directional derivative and squared length of the new tangent
        d = xi0 * eta + big_r * hn
        vn2 = xi0 * xi0 + xi1 * xi1 + xi2 * xi2 + rho + r2
        dn = d / vn2
        sq = np.sqrt(rho)
        # 5-d coordinates (frame 0..2, in-span residual direction, new direction) of h, X, Y
        mx = (x0 + d * xi0, x1 + d * xi1, d * xi2, d * sq, d * big_r)
        my = (y0 + dn * xi0, y1 + dn * xi1, y2 + dn * xi2, dn * sq, dn * big_r)
        # Gram-Schmidt of (h, X, Y); h = (eta, 0, 0, 0, hn)
        r11 = np.sqrt(eta * eta + hn * hn)
        q1 = (eta / r11, hn / r11)                    # nonzero entries (rows 0 and 4)
        r12 = q1[0] * mx[0] + q1[1] * mx[4]
        u2 = [mx[0] - r12 * q1[0], mx[1], mx[2], mx[3], mx[4] - r12 * q1[1]]
        t = q1[0] * u2[0] + q1[1] * u2[4]             # re-orthogonalise ("twice is enough")
        u2[0] -= t * q1[0]
        u2[4] -= t * q1[1]
        r12 = r12 + t
        r22 = np.sqrt(sum(c * c for c in u2))
        r13 = q1[0] * my[0] + q1[1] * my[4]
        u3 = [my[0] - r13 * q1[0], my[1], my[2], my[3], my[4] - r13 * q1[1]]
        t = q1[0] * u3[0] + q1[1] * u3[4]
        u3[0] -= t * q1[0]
        u3[4] -= t * q1[1]
        r13 = r13 + t
        f_new = np.minimum(np.minimum(j + 1, nvec), 3.0)
        safe22 = np.where(r22 > 0, r22, 1.0)
        q2 = [c / safe22 for c in u2]
        r23 = sum(a_ * b_ for a_, b_ in zip(q2, u3))
        u3 = [c - r23 * q for c, q in zip(u3, q2)]
        t = sum(a_ * b_ for a_, b_ in zip(q2, u3))
        u3 = [c - t * q for c, q in zip(u3, q2)]
        r23 = r23 + t
        r33 = np.sqrt(sum(c * c for c in u3))
        two, three = f_new >= 2, f_new >= 3
        eta, x0, x1 = r11, r12, np.where(two, r22, 0.0)
        y0, y1, y2 = r13, np.where(two, r23, 0.0), np.where(three, r33, 0.0)
        k = j + 1
        if k == 1:
            first = _metrics(eta, x0, x1, y0, y1, y2, s, 1)
        if k in kset:
            m = _metrics(eta, x0, x1, y0, y1, y2, s, k)
            m["single"], m["single-normalized"] = first["mean"], first["mean-normalized"]
            for g, n in enumerate(ns):
                sl = slice(g * b, (g + 1) * b)
                out[(n, k)] = {est: {met: v[sl] for met, v in mets.items()} for est, mets in m.items()}
    return out


def _metrics(eta, x0, x1, y0, y1, y2, s, k) -> dict[str, dict[str, np.ndarray]]:
    """Cosine and norm ratio of every estimator from the frame coordinates after ``k`` tangents."""
    xn = np.sqrt(x0 * x0 + x1 * x1)
    yn = np.sqrt(y0 * y0 + y1 * y1 + y2 * y2)
    # X·e1 = X·h = x0 * eta (h = eta * first frame vector; X lies in span(V))
    cos_x = np.clip(x0 * eta / xn, -1.0, 1.0)
    cos_y = np.clip(y0 * eta / yn, -1.0, 1.0)
    proj = np.sqrt(1.0 - s)
    return {
        "mean": {"cosine": cos_x, "norm_ratio": xn / k},
        "mean-normalized": {"cosine": cos_y, "norm_ratio": yn / k},
        "sum": {"cosine": cos_x, "norm_ratio": xn},
        "sum-normalized": {"cosine": cos_y, "norm_ratio": yn},
        "projection": {"cosine": proj, "norm_ratio": proj.copy()},
    }


def _check_common(num_samples, estimators, grad, sampler, angle, dtype):
    num_samples = check_positive_int("num_samples", num_samples)
    estimators = check_choices("estimators", estimators, ESTIMATORS)
    check_choice("sampler", sampler, ("normal",))  # the reduced law is derived for N(0, I) tangents
    if angle is not None:
        raise ValueError("angle= is not supported by the reduced sampler (sampler='normal' only)")
    dtype = check_dtype(dtype)
    return num_samples, estimators, dtype


def _check_grad(grad, n):
    if grad is not None:
        if grad.shape != (n,):
            raise ValueError(f"grad must have shape ({n},); got {tuple(grad.shape)}")
        if not bool(torch.isfinite(grad).all()) or float(grad.abs().max()) == 0.0:
            raise ValueError("grad must be finite and nonzero (the metrics divide by |grad|)")


def _to_torch(res, estimators, dtype):
    return {e: {m: torch.from_numpy(np.ascontiguousarray(res[e][m])).to(dtype) for m in METRICS}
            for e in estimators}


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
    """Drop-in replacement for :func:`frogcore.approx.sample_quality` (``sampler="normal"``).

    Same arguments and return value ``{estimator: {"cosine": (num_samples,), "norm_ratio": ...}}``
    (CPU tensors of ``dtype``), drawn from the exact law at ``O(k)`` cost per sample. ``grad`` is
    only validated: the law of both metrics does not depend on it. ``device`` is accepted for
    interface parity (the computation runs in NumPy on the CPU).
    """
    n = check_positive_int("n", n)
    k = check_positive_int("k", k)
    num_samples, estimators, dtype = _check_common(num_samples, estimators, grad, sampler, angle, dtype)
    _check_grad(grad, n)
    res = _paths([n], [k], num_samples, [_numpy_rng(generator)])[(n, k)]
    return _to_torch(res, estimators, dtype)


def sample_quality_paths(
    ns: Sequence[int],
    ks: Sequence[int],
    num_samples: int,
    estimators: Sequence[str] = ESTIMATORS,
    *,
    generators: Sequence[torch.Generator | None] | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[tuple[int, int], dict[str, dict[str, torch.Tensor]]]:
    """All cells ``(n, k)`` of a grid: one sequential path of ``max(ks)`` tangents per ``n``.

    The estimates at ``k`` use the first ``k`` tangents of the path, so within one ``n`` the cells
    are nested (like adding tangents one by one); each cell on its own has the exact law. Path ``i``
    draws only from ``generators[i]``, so a cell's numbers depend on its ``n``, its ``k`` and its
    generator's seed, not on the rest of the grid. All paths run batched together.
    """
    ns = check_positive_ints("n_grid", ns)
    ks = check_positive_ints("k_grid", ks)
    num_samples, estimators, dtype = _check_common(num_samples, estimators, None, "normal", None, dtype)
    if generators is None:
        generators = [None] * len(ns)
    if len(generators) != len(ns):
        raise ValueError(f"generators must have one entry per n; got {len(generators)} for {len(ns)} values")
    if len(set(ns)) != len(ns):
        raise ValueError(f"n_grid must not repeat values; got {ns}")
    res = _paths(ns, ks, num_samples, [_numpy_rng(g) for g in generators])
    return {cell: _to_torch(r, estimators, dtype) for cell, r in res.items()}
