import math

import pytest
import torch

from frogcore.linalg import independent
from frogcore.tangents import SAMPLERS, sample_tangents


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sampler", ["normal", "rademacher", "basis", "orthogonal", "first-basis"])
def test_shape_dtype_and_seed_reproducibility(sampler):
    a = sample_tangents(20, 5, batch=3, sampler=sampler, generator=gen(1), dtype=torch.float64)
    b = sample_tangents(20, 5, batch=3, sampler=sampler, generator=gen(1), dtype=torch.float64)
    c = sample_tangents(20, 5, batch=3, sampler=sampler, generator=gen(2), dtype=torch.float64)
    assert a.shape == (3, 5, 20) and a.dtype == torch.float64
    assert torch.equal(a, b)
    assert torch.equal(a, c) == (sampler == "first-basis")  # the only deterministic sampler


def test_rademacher_entries_are_plus_minus_one():
    v = sample_tangents(50, 4, batch=10, sampler="rademacher", generator=gen())
    assert set(v.unique().tolist()) == {-1.0, 1.0}


def test_basis_tangents_are_distinct_unit_vectors():
    v = sample_tangents(10, 10, batch=4, sampler="basis", generator=gen())
    assert torch.equal(v.sum(-1), torch.ones(4, 10))
    # k = n distinct basis vectors form a permutation matrix
    assert torch.equal(v.sum(-2), torch.ones(4, 10))


def test_orthogonal_tangents_are_orthogonal_with_chi_lengths():
    v = sample_tangents(64, 8, batch=500, sampler="orthogonal", generator=gen(), dtype=torch.float64)
    gram = v @ v.transpose(-1, -2)
    off = gram - torch.diag_embed(torch.diagonal(gram, dim1=-2, dim2=-1))
    assert off.abs().max() < 1e-9
    lengths = v.norm(dim=-1)
    expected = math.sqrt(2) * math.exp(math.lgamma(32.5) - math.lgamma(32))  # E[chi_64]
    assert abs(lengths.mean().item() - expected) < 4 * lengths.std().item() / math.sqrt(lengths.numel())


@pytest.mark.parametrize("angle", [15, 30, 45, 60, 75, 90])
def test_fixed_angle_tangents_have_the_requested_angle(angle):
    v = sample_tangents(64, 16, batch=8, sampler="angle", angle=angle, generator=gen(), dtype=torch.float64)
    u = v / v.norm(dim=-1, keepdim=True)
    cos = (u[..., 1:, :] * u[..., :1, :]).sum(-1)
    assert torch.allclose(cos, torch.full_like(cos, math.cos(math.radians(angle))), atol=1e-12)


def test_normalize_gives_unit_length():
    v = sample_tangents(30, 7, batch=2, normalize=True, generator=gen())
    assert torch.allclose(v.norm(dim=-1), torch.ones(2, 7), atol=1e-6)


def test_first_basis_gives_the_first_k_standard_basis_vectors():
    v = sample_tangents(6, 3, batch=(2, 2), sampler="first-basis", generator=gen())
    assert v.shape == (2, 2, 3, 6)
    assert torch.equal(v, torch.eye(6)[:3].expand(2, 2, 3, 6))
    # distinct from "basis", which picks k random coordinates
    r = sample_tangents(6, 3, batch=50, sampler="basis", generator=gen())
    assert not torch.equal(r, torch.eye(6)[:3].expand(50, 3, 6))


def test_resample_redraws_until_the_tangents_are_independent():
    # 4 Rademacher tangents in R^4 are dependent with high probability
    plain = sample_tangents(4, 4, batch=200, sampler="rademacher", generator=gen(3))
    dep = ~independent(plain)
    assert 20 < int(dep.sum()) < 200
    v = sample_tangents(4, 4, batch=200, sampler="rademacher", generator=gen(3), resample=100)
    assert bool(independent(v).all())
    assert torch.equal(v[~dep], plain[~dep])  # independent sets of the first draw are kept
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    # normal tangents are independent at once: resampling draws nothing more
    assert torch.equal(sample_tangents(8, 5, batch=3, generator=gen(4), resample=3),
                       sample_tangents(8, 5, batch=3, generator=gen(4)))


def test_resample_raises_when_independence_is_impossible_or_not_reached():
    with pytest.raises(ValueError, match=r"still linearly dependent after resample=3 redraws"):
        sample_tangents(5, 3, sampler="angle", angle=180, resample=3, generator=gen())
    with pytest.raises(ValueError, match=r"resample needs k <= n"):
        sample_tangents(3, 4, resample=2)
    with pytest.raises(ValueError, match=r"resample must be an integer >= 0"):
        sample_tangents(3, 2, resample=-1)


def test_every_sampler_is_listed():
    assert SAMPLERS == ("normal", "rademacher", "basis", "first-basis", "angle", "orthogonal")


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=5, k=2, sampler="gaussian"), r"sampler='gaussian'.*allowed values: 'normal'"),
    (dict(n=5, k=0), r"k must be an integer >= 1"),
    (dict(n=0, k=2), r"n must be an integer >= 1"),
    (dict(n=5, k=6, sampler="basis"), r"k <= n"),
    (dict(n=5, k=6, sampler="first-basis"), r"sampler='first-basis' needs k <= n"),
    (dict(n=5, k=2, sampler="angle"), r"needs angle="),
    (dict(n=5, k=2, angle=30.0), r"only used with sampler='angle'"),
    (dict(n=5, k=2, dtype="float16"), r"dtype='float16'.*allowed values"),
])
def test_bad_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_tangents(**kwargs)
