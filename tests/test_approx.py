import math

import pytest
import torch

from frogcore.approx import ESTIMATORS, sample_quality
from frogcore.experiments import approx_quality


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
    assert list(t.columns) == ["n", "k", "estimator", "metric", "mean", "std", "sem", "ci95", "count"]
    # single estimators only at k = 1; others at every k
    assert set(t[t.estimator == "single"].k) == {1}
    # per n: k=1 has 5 multi-tangent + 2 single estimators, k=4 has 5; two metrics each
    assert len(t) == 2 * (7 + 5) * 2
    assert set(t.estimator) == set(ESTIMATORS)


@pytest.mark.parametrize("kwargs, match", [
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
