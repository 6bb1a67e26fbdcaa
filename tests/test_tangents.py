import math

import pytest
import torch

from frogcore.tangents import sample_tangents


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sampler", ["normal", "rademacher", "basis", "orthogonal"])
def test_shape_dtype_and_seed_reproducibility(sampler):
    a = sample_tangents(20, 5, batch=3, sampler=sampler, generator=gen(1), dtype=torch.float64)
    b = sample_tangents(20, 5, batch=3, sampler=sampler, generator=gen(1), dtype=torch.float64)
    c = sample_tangents(20, 5, batch=3, sampler=sampler, generator=gen(2), dtype=torch.float64)
    assert a.shape == (3, 5, 20) and a.dtype == torch.float64
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


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


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=5, k=2, sampler="gaussian"), r"sampler='gaussian'.*allowed values: 'normal'"),
    (dict(n=5, k=0), r"k must be an integer >= 1"),
    (dict(n=0, k=2), r"n must be an integer >= 1"),
    (dict(n=5, k=6, sampler="basis"), r"k <= n"),
    (dict(n=5, k=2, sampler="angle"), r"needs angle="),
    (dict(n=5, k=2, angle=30.0), r"only used with sampler='angle'"),
    (dict(n=5, k=2, dtype="float16"), r"dtype='float16'.*allowed values"),
])
def test_bad_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_tangents(**kwargs)
