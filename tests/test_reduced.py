"""The reduced O(k) sampler draws from the same law as the brute-force 4.1 computation."""
import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from frogcore import approx, reduced
from frogcore.approx import ESTIMATORS, METRICS

# (n, k) pairs: k < n small, k < n moderate, k ≈ n/4, k > n (mean/sum keep a nontrivial law), and a
# large n with k ≪ n, the regime the reduced sampler exists for
PAIRS = [(3, 2), (16, 4), (64, 16), (24, 40), (512, 64)]
NUM = 4000


def _pair_samples(n, k):
    brute = approx.sample_quality(n, k, NUM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    red = reduced.sample_quality(n, k, NUM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return brute, red


@pytest.fixture(scope="module", params=PAIRS, ids=[f"n{n}-k{k}" for n, k in PAIRS])
def pair(request):
    n, k = request.param
    return n, k, *_pair_samples(n, k)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_ks_reduced_matches_brute_force(pair, estimator):
    n, k, brute, red = pair
    for metric in METRICS:
        b, r = brute[estimator][metric].numpy(), red[estimator][metric].numpy()
        if estimator == "projection" and k >= n:  # degenerate: exactly 1
            assert np.allclose(b, 1, atol=1e-9) and np.all(r == 1)
            continue
        p = ks_2samp(b, r).pvalue
        assert p > 0.01, f"{estimator} {metric} at n={n}, k={k}: KS p={p:.2g}"


def test_ks_detects_a_wrong_law():
    # the KS comparison above has power: the mean's cosine at k=4 differs from the projection's
    brute, red = _pair_samples(16, 4)
    assert ks_2samp(brute["mean"]["cosine"].numpy(), red["projection"]["cosine"].numpy()).pvalue < 1e-6
    # and a one-tangent-off k is detected for the unnormalised mean's length
    other = reduced.sample_quality(16, 5, NUM, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert ks_2samp(brute["mean"]["norm_ratio"].numpy(), other["mean"]["norm_ratio"].numpy()).pvalue < 0.01


def test_dimension_one_is_deterministic_where_brute_force_is():
    brute = approx.sample_quality(1, 3, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    red = reduced.sample_quality(1, 3, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for e in ESTIMATORS:
        assert np.allclose(red[e]["cosine"], 1.0) and np.allclose(brute[e]["cosine"], 1.0)
    assert np.allclose(red["sum-normalized"]["norm_ratio"], 3.0)
    assert np.allclose(red["mean-normalized"]["norm_ratio"], 1.0)


def test_joint_law_within_a_sample():
    # the sampler keeps the estimators of one sample on the same tangents, like brute force
    red = reduced.sample_quality(32, 8, 3000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(red["projection"]["cosine"], red["projection"]["norm_ratio"])
    assert torch.allclose(red["sum"]["norm_ratio"], 8 * red["mean"]["norm_ratio"])
    assert torch.allclose(red["sum-normalized"]["cosine"], red["mean-normalized"]["cosine"])
    # the projection is the best direction in the span: never below the mean or normalised mean
    assert (red["projection"]["cosine"] >= red["mean"]["cosine"] - 1e-12).all()
    assert (red["projection"]["cosine"] >= red["mean-normalized"]["cosine"] - 1e-12).all()
    assert not torch.allclose(red["mean"]["cosine"], red["mean-normalized"]["cosine"])


def test_same_seed_same_numbers_and_cells_independent_of_grid():
    a = reduced.sample_quality(40, 6, 50, generator=torch.Generator().manual_seed(5))
    b = reduced.sample_quality(40, 6, 50, generator=torch.Generator().manual_seed(5))
    c = reduced.sample_quality(40, 6, 50, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a["mean"]["cosine"], b["mean"]["cosine"])
    assert not torch.equal(a["mean"]["cosine"], c["mean"]["cosine"])
    # one path per n: the cell (40, 6) is the same alone or inside a larger grid
    grid = reduced.sample_quality_paths([4, 40], [1, 6, 9], 50, generators=[
        torch.Generator().manual_seed(9), torch.Generator().manual_seed(5)])
    for e in ESTIMATORS:
        for m in METRICS:
            assert torch.allclose(grid[(40, 6)][e][m], a[e][m])
    assert set(grid) == {(n, k) for n in (4, 40) for k in (1, 6, 9)}


def test_k_at_least_n_projection_is_exact_and_mean_still_random():
    red = reduced.sample_quality(8, 20, 500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(red["projection"]["cosine"], torch.ones(500, dtype=torch.float64))
    assert red["mean"]["cosine"].std() > 0.01


@pytest.mark.parametrize("kwargs, match", [
    (dict(sampler="rademacher"), r"sampler='rademacher'.*allowed values: 'normal'"),
    (dict(estimators=["median"]), r"estimators contains 'median'"),
    (dict(num_samples=0), r"num_samples must be an integer >= 1"),
    (dict(grad=torch.ones(3)), r"grad must have shape \(5,\)"),
    (dict(grad=torch.zeros(5)), r"grad must be finite and nonzero"),
    (dict(dtype="half"), r"dtype='half'"),
])
def test_bad_input_fails_at_once(kwargs, match):
    kw = {"n": 5, "k": 2, "num_samples": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        reduced.sample_quality(**kw)


def test_paths_validate_grid():
    with pytest.raises(ValueError, match=r"k_grid\[1\] must be an integer >= 1"):
        reduced.sample_quality_paths([4], [1, 0], 5)
    with pytest.raises(ValueError, match="one entry per n"):
        reduced.sample_quality_paths([4, 8], [1], 5, generators=[None])
