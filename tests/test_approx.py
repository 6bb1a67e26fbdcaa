import math

import pytest
import torch

from frogcore.approx import ESTIMATORS, sample_quality
from frogcore.experiments import frog_4_1 as approx_quality


def test_quality_metrics_match_simple_facts():
    g = torch.Generator().manual_seed(0)
    res = sample_quality(32, 8, 4000, generator=g, dtype=torch.float64)
    # the projection's norm ratio equals its cosine similarity
    assert torch.allclose(res["projection"]["cosine"], res["projection"]["norm_ratio"], atol=1e-10)
    # sum and mean point the same way; sum is k times longer
    assert torch.allclose(res["sum"]["cosine"], res["mean"]["cosine"], atol=1e-10)
    assert torch.allclose(res["sum"]["norm_ratio"], 8 * res["mean"]["norm_ratio"], rtol=1e-10)
    # E|single|^2/|g|^2 = n + 2 for N(0, I) tangents (4-th moment of a Gaussian)
    r2 = res["single"]["norm_ratio"] ** 2
    assert abs(r2.mean().item() - 34) < 4 * r2.std().item() / math.sqrt(4000)
    # the projection is the best estimate in the span: never less aligned than the mean of the same tangents
    assert (res["projection"]["cosine"] >= res["mean"]["cosine"] - 1e-12).all()


def test_projection_is_exact_for_k_at_least_n():
    res = sample_quality(16, 32, 10, ["projection"], generator=torch.Generator().manual_seed(0))
    assert torch.allclose(res["projection"]["cosine"], torch.ones(10), atol=1e-5)


def test_grid_table_is_tidy():
    res = approx_quality.run("smoke", "cpu", 0, n_grid=[2, 8], k_grid=[1, 4], num_samples=10, force=True)
    t = res["summary"]
    assert list(t.columns) == ["n", "k", "estimator", "metric", "method", "mean", "std", "sem", "ci95", "count",
                               "mean_sq", "sem_sq"]
    # single estimators only at k = 1; others at every k
    assert set(t[t.estimator == "single"].k) == {1}
    # per n: k=1 has 5 multi-tangent + 2 single estimators, k=4 has 5; two metrics each
    assert len(t) == 2 * (7 + 5) * 2
    assert set(t.estimator) == set(ESTIMATORS)


def test_auto_uses_brute_force_for_cheap_cells_with_the_same_numbers():
    kw = dict(n_grid=[4, 2048], k_grid=[1, 8], num_samples=30, force=True)
    auto = approx_quality.run("smoke", "cpu", 0, method="auto", **kw)["summary"]
    brute = approx_quality.run("smoke", "cpu", 0, method="brute", **kw)["summary"]
    red = approx_quality.run("smoke", "cpu", 0, method="reduced", **kw)["summary"]
    cheap = auto.n * auto.k <= approx_quality.AUTO_BRUTE_MAX
    assert set(auto[cheap].method) == {"brute"} and set(auto[~cheap].method) == {"reduced"}
    assert set(red.method) == {"reduced"} and set(brute.method) == {"brute"}
    key = ["n", "k", "estimator", "metric"]
    a, b, r = (t.set_index(key).sort_index() for t in (auto, brute, red))
    # brute-force cells are identical (same per-cell seeds); reduced cells are the reduced run's
    ib, ir = a[a.method == "brute"].index, a[a.method == "reduced"].index
    assert len(ib) and len(ir)
    assert (a.loc[ib, "mean"] == b.loc[ib, "mean"]).all()
    assert (a.loc[ir, "mean"] == r.loc[ir, "mean"]).all()
    assert not (b["mean"] == r["mean"]).all()


def test_exact_table_agrees_with_the_samples():
    res = approx_quality.run("smoke", "cpu", 0, n_grid=[8, 300], k_grid=[1, 3, 16], num_samples=3000,
                             method="reduced", dtype="float64", force=True)
    e = res["exact"]
    assert {"exact_mean", "z", "z_sq", "abs_err"} <= set(e.columns)
    assert len(e) == len(res["summary"])
    # every closed-form, non-degenerate mean is within 4 standard errors (about 60 checks)
    assert e.z.notna().sum() >= 40 and e.z.abs().max() < 4
    # point masses (projection with k >= n) are hit exactly by the reduced sampler
    pm = e[(e.estimator == "projection") & (e.k >= e.n)]
    assert len(pm) and (pm.abs_err < 1e-12).all() and pm.z.isna().all()
    # no closed form for the normalised mean's cosine: nan, not a made-up number
    assert e[(e.estimator == "mean-normalized") & (e.metric == "cosine") & (e.k > 1)].exact_mean.isna().all()


def test_profiles_use_the_paper_grid():
    for prof in ("default", "paper"):
        p = approx_quality.PROFILES[prof]
        assert p["n_grid"] == [2**i for i in range(15)] and p["k_grid"] == [2**i for i in range(11)]
        assert p["num_samples"] == 1000
    assert approx_quality.PROFILES["paper"]["method"] == "reduced"


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="fast"), r"method='fast'.*allowed values: 'brute', 'reduced', 'auto'"),
    (dict(profile="huge"), r"profile='huge'.*allowed values: 'smoke', 'default', 'paper'"),
    (dict(device="tpu"), r"device='tpu'.*allowed values: 'auto', 'cpu', 'cuda'"),
    (dict(k_grid=[4, 0]), r"k_grid\[1\] must be an integer >= 1; got 0"),
    (dict(k_grid=[-2]), r"k_grid\[0\] must be an integer >= 1"),
    (dict(estimators=["mean", "median"]), r"estimators contains 'median'.*allowed values: 'single'"),
    (dict(num_samples=0), r"num_samples must be an integer >= 1"),
    (dict(dtype="half"), r"dtype='half'.*allowed values"),
])
def test_bad_parameters_fail_at_once_naming_the_parameter(kwargs, match):
    kw = {"profile": "smoke", "device": "cpu", **kwargs}
    with pytest.raises(ValueError, match=match):
        approx_quality.run(**kw)


@pytest.mark.parametrize("n, k", [(64, 8), (64, 40), (16, 16), (8, 20), (1, 3), (300, 150)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_norm_equals_the_norm_of_the_projection(n, k, dtype):
    from frogcore.approx import projection_norm
    from frogcore.estimators import aggregate

    gen = torch.Generator().manual_seed(n * 100 + k)
    v = torch.randn(5, 3, k, n, generator=gen, dtype=dtype)
    g = torch.randn(5, 3, n, generator=gen, dtype=dtype)
    d = (v @ g.unsqueeze(-1)).squeeze(-1)
    got = projection_norm(d, v)
    want = aggregate(d, v, "projection").norm(dim=-1)
    assert got.shape == (5, 3)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.allclose(got, want, rtol=tol, atol=tol)
    if k >= n:
        assert torch.allclose(got, g.norm(dim=-1), rtol=tol * 10)


def test_projection_norm_with_collinear_tangents_and_bad_input():
    from frogcore.approx import projection_norm

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 50, generator=gen, dtype=torch.float64)
    v = torch.cat([base, base[:2] * 3.0, base[:1] + 1e-13 * torch.randn(1, 50, generator=gen, dtype=torch.float64)])
    g = torch.randn(50, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(base.T)  # the span of the distinct tangents
    expected = (q.T @ g).norm()
    assert torch.allclose(projection_norm(v @ g, v), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"k >= 1 tangents.*k=0"):
        projection_norm(torch.zeros(0), torch.zeros(0, 5))
    with pytest.raises(ValueError, match="d must have shape"):
        projection_norm(torch.zeros(3), torch.zeros(2, 5))


def test_projection_norm_is_the_one_in_linalg():
    import frogcore.approx as approx
    import frogcore.linalg as linalg

    assert approx.projection_norm is linalg.projection_norm


def test_sample_quality_projection_with_widely_varying_tangent_lengths():
    """The 4.1 path (projection_norm) does not drop short tangents either (issue 15, defect 1)."""
    from frogcore.approx import projection_norm

    gen = torch.Generator().manual_seed(0)
    v = torch.randn(3, 16, 1024, generator=gen, dtype=torch.float64) * torch.logspace(-2, 2, 16,
                                                                                     dtype=torch.float64)[:, None]
    g = torch.ones(1024, dtype=torch.float64)
    q, _ = torch.linalg.qr(v.transpose(-1, -2))
    exact = (q.transpose(-1, -2) @ g).norm(dim=-1)
    got = projection_norm((v @ g).float(), v.float()).double()
    assert torch.allclose(got, exact, rtol=2e-5)
