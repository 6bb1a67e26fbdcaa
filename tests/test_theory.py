"""Exact laws of the 4.1 metrics: checked against samples (reduced and brute force) and for consistency."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kstest

from frogcore import approx, reduced, theory
from frogcore.approx import ESTIMATORS, METRICS

CELLS = [(2, 1), (5, 3), (16, 4), (64, 16), (40, 64), (1000, 30)]


@pytest.fixture(scope="module")
def samples():
    out = {}
    for i, (n, k) in enumerate(CELLS):
        out[(n, k)] = reduced.sample_quality(n, k, 20000, generator=torch.Generator().manual_seed(100 + i),
                                             dtype=torch.float64)
    return out


def _z(x, target):
    se = x.std(ddof=1) / math.sqrt(x.size)
    return (x.mean() - target) / se if se > 0 else (0.0 if np.isclose(x.mean(), target) else np.inf)


@pytest.mark.parametrize("cell", CELLS, ids=[f"n{n}-k{k}" for n, k in CELLS])
def test_reduced_means_within_three_standard_errors(samples, cell):
    n, k = cell
    checked = 0
    for e in ESTIMATORS:
        for m in METRICS:
            x = samples[cell][e][m].numpy()
            lw = theory.law(e, m, n, k)
            if not math.isnan(lw.mean()):
                assert abs(_z(x, lw.mean())) < 3, (e, m, x.mean(), lw.mean())
                checked += 1
            if not math.isnan(lw.moment(2)):  # includes the normalised mean's exact E ρ²
                assert abs(_z(x ** 2, lw.moment(2))) < 3, (e, m, (x ** 2).mean(), lw.moment(2))
                checked += 1
    assert checked >= 20


def test_brute_force_means_within_three_standard_errors():
    n, k = 48, 6
    res = approx.sample_quality(n, k, 6000, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for e in ESTIMATORS:
        for m in METRICS:
            lw = theory.law(e, m, n, k)
            x = res[e][m].numpy()
            if not math.isnan(lw.mean()):
                assert abs(_z(x, lw.mean())) < 3, (e, m)
            if not math.isnan(lw.moment(2)):
                assert abs(_z(x ** 2, lw.moment(2))) < 3, (e, m)


@pytest.mark.parametrize("cell", [(5, 3), (64, 16), (40, 64)])
def test_ks_samples_against_exact_cdf(samples, cell):
    n, k = cell
    for e in ("single", "single-normalized", "mean", "sum", "projection"):
        for m in METRICS:
            lw = theory.law(e, m, n, k)
            if isinstance(lw, theory.PointMass):
                assert np.all(samples[cell][e][m].numpy() == lw.value)
                continue
            x = samples[cell][e][m].numpy()[:2500]
            p = kstest(x, lw.cdf).pvalue
            assert p > 0.01, (e, m, p)


def test_exact_cdf_rejects_a_neighbouring_law(samples):
    # power check: the mean's cosine at (16, 4) is not the projection's law
    x = samples[(16, 4)]["mean"]["cosine"].numpy()[:4000]
    assert kstest(x, theory.law("projection", "cosine", 16, 4).cdf).pvalue < 1e-6
    x = samples[(16, 4)]["mean"]["norm_ratio"].numpy()[:4000]
    assert kstest(x, theory.law("mean", "norm_ratio", 16, 5).cdf).pvalue < 0.01


def test_expected_dot_product(samples):
    # E[ĝ·∇f]/|∇f|² = cos · ρ on average: 1 (mean), k (sum), 1/n (normalised mean), k/n (projection)
    for cell, res in samples.items():
        n, k = cell
        for e in ESTIMATORS:
            x = (res[e]["cosine"] * res[e]["norm_ratio"]).numpy()
            assert abs(_z(x, theory.expected_dot(e, n, k))) < 3.5, (cell, e)


@pytest.mark.parametrize("law", [theory.SqrtBeta(1.5, 4.0), theory.SqrtBeta(0.5, 0.5), theory.MeanNormLaw(20, 4, 0.25),
                                 theory.MeanNormLaw(2, 1, 1.0), theory.MeanNormLaw(300, 64, 1 / 64)])
def test_density_cdf_quantile_are_consistent(law):
    qs = np.array([0.05, 0.3, 0.5, 0.8, 0.95])
    xs = np.asarray(law.ppf(qs))
    assert np.allclose(law.cdf(xs), qs, atol=1e-7)
    # the density is the derivative of the CDF
    h = 1e-5 * max(1.0, float(xs.max()))
    deriv = (law.cdf(xs + h) - law.cdf(xs - h)) / (2 * h)
    assert np.allclose(law.pdf(xs), deriv, rtol=1e-4, atol=1e-6)
    # and the mean is the integral of the survival function
    grid = np.linspace(0, float(law.ppf(1 - 1e-10)), 4001)
    assert abs(np.trapezoid(1 - law.cdf(grid), grid) - law.mean()) < 1e-4 * max(1.0, law.mean())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5000), k=st.integers(1, 2000))
def test_closed_form_moments(n, k):
    # E ρ² of the unnormalised mean is (n+k+1)/k; the sum's is k² times that; E c² of the projection k/n
    assert math.isclose(theory.law("mean", "norm_ratio", n, k).moment(2), (n + k + 1) / k, rel_tol=1e-9)
    assert math.isclose(theory.law("sum", "norm_ratio", n, k).moment(2), k * (n + k + 1), rel_tol=1e-9)
    proj = theory.law("projection", "cosine", n, k)
    assert math.isclose(proj.moment(2), min(k, n) / n, rel_tol=1e-9)
    # the mean's cosine: E c² = k/(n+k-1); Jensen: E c <= sqrt(E c²)
    c = theory.law("mean", "cosine", n, k)
    assert math.isclose(c.moment(2), k / (n + k - 1), rel_tol=1e-9)
    assert c.mean() <= math.sqrt(c.moment(2)) + 1e-12
    # the projection is better aligned than the mean on average; equal at k = 1
    assert proj.mean() >= c.mean() - 1e-12
    if k == 1:
        assert math.isclose(proj.mean(), c.mean(), rel_tol=1e-9)
    # the normalised mean's exact second moment
    if n > 1 and k > 1:
        assert math.isclose(theory.law("mean-normalized", "norm_ratio", n, k).moment(2),
                            (n + k - 1) / (k * n * n), rel_tol=1e-12)
    assert math.isclose(theory.mean_length_factor(n, k) ** 2, (n + k + 1) / k)


def test_special_cases_and_unknowns():
    assert isinstance(theory.law("projection", "cosine", 8, 8), theory.PointMass)
    assert isinstance(theory.law("projection", "norm_ratio", 8, 30), theory.PointMass)
    assert theory.law("sum-normalized", "norm_ratio", 1, 5).mean() == 5
    # k = 1 normalised: cosine and length |u_1| with u_1² ~ Beta(1/2, (n-1)/2)
    lw = theory.law("mean-normalized", "norm_ratio", 10, 1)
    assert math.isclose(lw.moment(2), 1 / 10)
    # no closed form: nan mean, exact second moment still available
    lw = theory.law("mean-normalized", "cosine", 10, 4)
    assert math.isnan(lw.mean()) and not lw.closed_form
    # single ignores k
    assert theory.law("single", "cosine", 10, 7).mean() == theory.law("single", "cosine", 10, 1).mean()


def test_exact_table_layout():
    t = theory.exact_table([4, 16], [1, 4])
    assert list(t.columns) == ["n", "k", "estimator", "metric", "exact_mean", "exact_std", "exact_mean_sq",
                               "closed_form"]
    assert set(t[t.estimator == "single"].k) == {1}
    assert len(t) == 2 * (7 + 5) * 2
    row = t[(t.n == 16) & (t.k == 4) & (t.estimator == "mean") & (t.metric == "norm_ratio")].iloc[0]
    assert math.isclose(row.exact_mean_sq, 21 / 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(estimator="median"), r"estimator='median'.*allowed values"),
    (dict(metric="angle"), r"metric='angle'.*allowed values: 'cosine', 'norm_ratio'"),
    (dict(n=0), r"n must be an integer >= 1"),
    (dict(k=1.5), r"k must be an integer >= 1"),
])
def test_law_validates_input(kwargs, match):
    kw = {"estimator": "mean", "metric": "cosine", "n": 4, "k": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        theory.law(**kw)
