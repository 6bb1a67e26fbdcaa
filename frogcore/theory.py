r"""Exact laws of the Section 4.1 quality metrics for Gaussian tangents.

Setting: ``k`` tangents ``v_i ~ N(0, I_n)``, any fixed ``∇f ≠ 0``. For each estimator of
``frogcore.approx.ESTIMATORS`` and each metric — the cosine similarity ``c = cos(ĝ, ∇f)`` and the
norm ratio ``ρ = |ĝ|/|∇f|`` — :func:`law` returns the exact distribution. The derivations are in the
book page *Geometry of random subspaces*; in short (``S ~ χ²_k``, ``T ~ χ²_{n-1}`` independent):

* **projection** onto ``U = span(v_1..v_k)``: ``U`` is a uniformly random ``k``-dimensional subspace,
  so ``c² = |P_U e_1|² ~ Beta(k/2, (n-k)/2)`` and ``ρ = c``; for ``k ≥ n``, ``c = ρ = 1``.
* **mean** ``ḡ = (1/k) Σ (v_i·∇f) v_i``: with ``∇f = e_1``, ``v_i = (a_i, w_i)``,
  ``ḡ = (S e_1 + Σ a_i w_i)/k`` and ``Σ a_i w_i | a ~ N(0, S I_{n-1})``. Hence
  ``c² = S/(S+T) ~ Beta(k/2, (n-1)/2)`` and ``kρ = √(S(S+T)) = √B · Λ`` with ``B = S/(S+T)`` and
  ``Λ = S+T ~ χ²_{n+k-1}`` independent (Lukacs). ``E ρ² = (n+k+1)/k``.
  **sum** = ``k`` × mean (same cosine); **single** = the mean with ``k = 1``.
* **single-normalized** (``u = v/|v|``): ``ĝ = (u·e_1) u``, so ``c = ρ = |u_1|`` with
  ``u_1² ~ Beta(1/2, (n-1)/2)`` — the cosine has the same law as for the unnormalised tangent.
* **mean-normalized** / **sum-normalized** (``k ≥ 2``): no simple closed law (the norm involves a
  random walk with unit steps on the sphere). Exact: ``E[ĝ·∇f]/|∇f|² = 1/n``,
  ``E ρ² = (n+k-1)/(k n²)`` (mean; sum ×k²), and ``c → `` the unnormalised mean's law as ``n → ∞``.
  :func:`law` returns an object whose mean/quantiles are ``nan`` but whose ``moment(2)`` of the
  norm ratio is exact; :mod:`frogcore.reduced` samples it exactly.

Every law object has ``pdf``, ``cdf``, ``ppf`` (vectorised over NumPy arrays), ``moment(p)``,
``mean()``, ``var()`` and ``std()``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from .approx import ESTIMATORS, METRICS, split_estimator
from .config import check_choice, check_choices, check_positive_int, check_positive_ints


def _log_beta_moment(a: float, b: float, p: float) -> float:
    """``log E[B^p]`` for ``B ~ Beta(a, b)``."""
    return special.gammaln(a + p) + special.gammaln(a + b) - special.gammaln(a) - special.gammaln(a + b + p)


def chi2_moment(m: float, p: float) -> float:
    """``E[Λ^p]`` for ``Λ ~ χ²_m``: ``2^p Γ(m/2 + p) / Γ(m/2)``."""
    return math.exp(p * math.log(2.0) + special.gammaln(m / 2 + p) - special.gammaln(m / 2))


def _chi2_pdf(y, m):
    """χ²_m density (plain NumPy; ``scipy.stats`` adds per-call overhead)."""
    y = np.asarray(y, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = (m / 2 - 1) * np.log(y) - y / 2 - special.gammaln(m / 2) - (m / 2) * math.log(2.0)
    return np.where(y > 0, np.exp(logp), 0.0 if m > 2 else (0.5 if m == 2 else np.inf))


class Law:
    """Common interface: ``moment(p)`` is required, the rest may return ``nan``."""

    closed_form = True

    def moment(self, p: float) -> float:
        raise NotImplementedError

    def mean(self) -> float:
        return self.moment(1)

    def var(self) -> float:
        return max(self.moment(2) - self.mean() ** 2, 0.0)

    def std(self) -> float:
        return math.sqrt(self.var())

    def pdf(self, x):
        raise NotImplementedError

    def cdf(self, x):
        raise NotImplementedError

    def ppf(self, q):
        raise NotImplementedError


class PointMass(Law):
    """A deterministic value (e.g. the projection for ``k ≥ n``)."""

    def __init__(self, value: float):
        self.value = float(value)

    def moment(self, p):
        return self.value ** p

    def pdf(self, x):
        return np.where(np.asarray(x, dtype=float) == self.value, np.inf, 0.0)

    def cdf(self, x):
        return np.where(np.asarray(x, dtype=float) >= self.value, 1.0, 0.0)

    def ppf(self, q):
        return np.full(np.shape(q), self.value)

    def __repr__(self):
        return f"PointMass({self.value})"


class SqrtBeta(Law):
    """Law of ``scale · √B`` with ``B ~ Beta(a, b)``."""

    def __init__(self, a: float, b: float, scale: float = 1.0):
        if not (a > 0 and b > 0):
            raise ValueError(f"SqrtBeta needs a, b > 0; got a={a}, b={b}")
        self.a, self.b, self.scale = float(a), float(b), float(scale)

    def moment(self, p):
        return self.scale ** p * math.exp(_log_beta_moment(self.a, self.b, p / 2))

    def pdf(self, x):
        x = np.asarray(x, dtype=float) / self.scale
        return 2 * x * stats.beta.pdf(x * x, self.a, self.b) / self.scale

    def cdf(self, x):
        x = np.asarray(x, dtype=float) / self.scale
        return stats.beta.cdf(np.clip(x, 0, None) ** 2, self.a, self.b)

    def ppf(self, q):
        return self.scale * np.sqrt(stats.beta.ppf(q, self.a, self.b))

    def __repr__(self):
        return f"SqrtBeta({self.a}, {self.b}, scale={self.scale})"


class MeanNormLaw(Law):
    """Law of ``scale · √B · Λ`` with ``B ~ Beta(k/2, (n-1)/2)`` and ``Λ ~ χ²_{n+k-1}`` independent.

    The norm ratio of the unnormalised mean (``scale = 1/k``) and sum (``scale = 1``). The CDF and
    density are one-dimensional integrals over the Beta quantile (Gauss-Legendre, 1000 nodes).
    """

    def __init__(self, n: int, k: int, scale: float):
        self.n, self.k, self.scale = int(n), int(k), float(scale)
        self.a, self.b, self.m = k / 2, (n - 1) / 2, n + k - 1

    def moment(self, p):
        beta_part = 1.0 if self.n == 1 else math.exp(_log_beta_moment(self.a, self.b, p / 2))
        return self.scale ** p * beta_part * chi2_moment(self.m, p)

    _NODES = 1000  # Gauss-Legendre nodes over the Beta quantile (CDF error < 1e-7 on the paper grid)

    def _beta_nodes(self):
        """Nodes ``√B(u_i)`` at Gauss-Legendre points ``u_i`` of (0, 1) and their weights (cached)."""
        if not hasattr(self, "_rb"):
            x, w = special.roots_legendre(self._NODES)  # O(N) asymptotic nodes (no eigensolver)
            self._rb = np.sqrt(special.betaincinv(self.a, self.b, (x + 1) / 2))
            self._w = w / 2
        return self._rb, self._w

    def _integrate(self, fn, x):
        """``E_B[fn(x / (scale √B), √B)]`` elementwise over ``x``: an integral over the Beta quantile
        ``u`` (a smooth integrand, no endpoint singularities of the Beta density)."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        if self.n == 1:  # B = 1
            return fn(x / self.scale, 1.0)
        rb, w = self._beta_nodes()
        y = np.clip(x, 0, None)[..., None] / (self.scale * rb)
        return (w * fn(y, rb)).sum(-1)

    def cdf(self, x):
        res = self._integrate(lambda y, rb: special.gammainc(self.m / 2, y / 2), x)
        return res if np.ndim(x) else float(res[0])

    def pdf(self, x):
        res = self._integrate(lambda y, rb: _chi2_pdf(y, self.m) / (self.scale * rb), x)
        return res if np.ndim(x) else float(res[0])

    def ppf(self, q):
        q = np.asarray(q, dtype=float)
        hi = self.mean() + 40 * self.std() + 1.0
        out = np.array([optimize.brentq(lambda x, qi=qi: float(self.cdf(x)) - qi, 0.0, hi, xtol=1e-12, rtol=1e-10)
                        if 0 < qi < 1 else (0.0 if qi <= 0 else np.inf) for qi in q.flat]).reshape(q.shape)
        return out if q.ndim else float(out)

    def __repr__(self):
        return f"MeanNormLaw(n={self.n}, k={self.k}, scale={self.scale})"


class MomentsOnly(Law):
    """A law known only through some exact moments (the normalised-tangent mean/sum, ``k ≥ 2``)."""

    closed_form = False

    def __init__(self, moments: dict[int, float], name: str):
        self.moments, self.name = dict(moments), name

    def moment(self, p):
        return self.moments.get(p, math.nan)

    def var(self):
        return math.nan

    def pdf(self, x):
        return np.full(np.shape(x), np.nan)

    cdf = pdf

    def ppf(self, q):
        return np.full(np.shape(q), np.nan)

    def __repr__(self):
        return f"MomentsOnly({self.name}, {self.moments})"


def law(estimator: str, metric: str, n: int, k: int = 1) -> Law:
    """The exact law of ``metric`` (``"cosine"`` or ``"norm_ratio"``) for ``estimator`` at ``(n, k)``."""
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("metric", metric, METRICS)
    n = check_positive_int("n", n)
    k = check_positive_int("k", k)
    agg, normalized = split_estimator(estimator)
    if agg == "single":
        k = 1
    if agg == "projection":
        return PointMass(1.0) if k >= n else SqrtBeta(k / 2, (n - k) / 2)
    scale = 1.0 / k if agg == "mean" else 1.0  # "single" has k = 1
    if not normalized:
        if metric == "cosine":
            return PointMass(1.0) if n == 1 else SqrtBeta(k / 2, (n - 1) / 2)
        return MeanNormLaw(n, k, scale)
    # normalised tangents
    if n == 1:  # u = ±e_1: every normalised estimate is (k·scale) e_1
        return PointMass(1.0 if metric == "cosine" else k * scale)
    if k == 1:
        return SqrtBeta(0.5, (n - 1) / 2, 1.0)  # c = ρ = |u_1|
    if metric == "norm_ratio":
        m2 = (n + k - 1) / (k * n * n) * (k * scale) ** 2
        return MomentsOnly({2: m2}, f"{estimator} norm ratio")
    return MomentsOnly({}, f"{estimator} cosine")


def expected_dot(estimator: str, n: int, k: int = 1) -> float:
    """``E[ĝ·∇f]/|∇f|²`` (exact): 1 for single/mean, k for sum, k/n for the projection; the
    normalised variants divide by ``n`` (``E[(u·e_1)²] = 1/n``)."""
    check_choice("estimator", estimator, ESTIMATORS)
    agg, normalized = split_estimator(estimator)
    if agg == "projection":
        return min(k, n) / n
    base = k if agg == "sum" else 1.0
    return base / n if normalized else base


def mean_length_factor(n: int, k: int) -> float:
    """``√(E|ḡ|²)/|∇f| = √((n+k+1)/k)``: how much the unnormalised mean overestimates the length."""
    return math.sqrt((n + k + 1) / k)


def exact_table(
    n_grid: Sequence[int], k_grid: Sequence[int], estimators: Sequence[str] = ESTIMATORS,
) -> pd.DataFrame:
    """Exact mean, standard deviation and second moment of each metric over a grid.

    Columns ``n, k, estimator, metric, exact_mean, exact_std, exact_mean_sq, closed_form``; ``nan``
    where no closed form exists (normalised-tangent mean/sum cosine, and their norm ratio's mean).
    ``single`` estimators appear only with ``k = 1``, as in the 4.1 summary table.
    """
    n_grid = check_positive_ints("n_grid", n_grid)
    k_grid = check_positive_ints("k_grid", k_grid)
    estimators = check_choices("estimators", estimators, ESTIMATORS)
    rows = []
    for n in n_grid:
        for k in sorted(set(k_grid) | {1}):
            for e in estimators:
                if e.startswith("single") and k != 1:
                    continue
                if not e.startswith("single") and k not in k_grid:
                    continue
                for m in METRICS:
                    lw = law(e, m, n, k)
                    rows.append({"n": n, "k": k, "estimator": e, "metric": m, "exact_mean": lw.mean(),
                                 "exact_std": lw.std(), "exact_mean_sq": lw.moment(2),
                                 "closed_form": lw.closed_form})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- learning rates

#: tangent dimension of the FC networks in the authors' Section 4.4 (activation perturbation: 2W + 10)
FC_TANGENT_DIM = {"fc_w=256": 522, "fc_w=1024": 2058, "fc_w=4096": 8202}


def learning_rate_ratios() -> pd.DataFrame:
    """The authors' tuned learning rates relative to backpropagation's, with the geometric predictions.

    Reads ``frogcore/data/math.csv`` (Section 4.2; ``n`` = the function's dimension) and
    ``fc_nns.csv`` (Section 4.4; ``n`` = the activation-tangent dimension ``2W + 10``). Columns:
    ``problem, n, approach, k, lr, lr_bp, ratio = lr/lr_bp``, and two predictions for the ratio:

    * ``descent`` — the step that minimises ``E f(x - η ĝ)`` on an isotropic quadratic:
      ``E[ĝ·∇f]/E|ĝ|²`` relative to ``1/|∇f|²``, i.e. ``k/(n+k+1)`` for the mean, ``1`` for the
      projection;
    * ``length`` — the step that makes ``η|ĝ|`` match backprop's ``η|∇f|`` in root mean square:
      ``√(k/(n+k+1))`` for the mean, ``√(n/k)`` for the projection (``1`` for ``k ≥ n``).
    """
    from importlib import resources

    data = resources.files("frogcore") / "data"
    with resources.as_file(data / "math.csv") as p:
        math_df = pd.read_csv(p)
    with resources.as_file(data / "fc_nns.csv") as p:
        fc = pd.read_csv(p)
    math_df = math_df.rename(columns={"function": "problem"})
    fc = fc.assign(problem=fc.model + " " + fc.dataset, n=fc.model.map(FC_TANGENT_DIM))
    rows = []
    for df, family in ((math_df, "closed-form (4.2)"), (fc, "FC network (4.4)")):
        bp = df[df.gradient_approach == "bp"].set_index(["problem", "n"])["lr"]
        for r in df[df.gradient_approach != "bp"].itertuples():
            n, k = int(r.n), int(r.k)
            lr_bp = float(bp.loc[(r.problem, r.n)])
            if r.gradient_approach == "frog":
                descent, length = 1.0, math.sqrt(n / k) if k < n else 1.0
            else:
                descent, length = k / (n + k + 1), math.sqrt(k / (n + k + 1))
            rows.append({"family": family, "problem": r.problem, "n": n, "approach": r.gradient_approach, "k": k,
                         "lr": float(r.lr), "lr_bp": lr_bp, "ratio": float(r.lr) / lr_bp,
                         "descent": descent, "length": length})
    return pd.DataFrame(rows)


def fit_lr_exponents(ratios: pd.DataFrame, min_n: int = 8, pool_fc: bool = True) -> pd.DataFrame:
    """Least-squares slope of ``log(lr/lr_bp)`` against ``log((n+k+1)/k)`` per problem and approach.

    The descent prediction gives slope ``-1`` for the mean and ``0`` for the projection; the length
    prediction ``-1/2`` for the mean and about ``+1/2`` for the projection (``n/k ≈ (n+k+1)/k`` for
    ``k ≪ n``). Only ``n ≥ min_n`` enters (small ``n`` is dominated by the tuning grid's resolution).
    ``pool_fc`` fits the three FC networks together (each alone has only 3-4 rates).
    """
    rows = []
    data = ratios[ratios.n >= min_n].copy()
    if pool_fc:
        data.loc[data.family.str.startswith("FC"), "problem"] = "FC networks (pooled)"
    for (problem, approach), g in data.groupby(["problem", "approach"]):
        x = np.log((g.n + g.k + 1) / g.k)
        y = np.log(g.ratio)
        slope, icpt = np.polyfit(x, y, 1)
        resid = y - (slope * x + icpt)
        se = math.sqrt((resid ** 2).sum() / max(len(g) - 2, 1) / ((x - x.mean()) ** 2).sum())
        rows.append({"family": g.family.iloc[0], "problem": problem, "approach": approach, "points": len(g),
                     "slope": slope, "slope_se": se})
    return pd.DataFrame(rows)
