"""Random tangent samplers.

All samplers return a tensor of shape ``(*batch, k, n)``: ``k`` tangents in ``R^n`` for each
element of a leading batch (usually the number of Monte-Carlo samples). Randomness comes only
from the ``torch.Generator`` passed in, so the same seed gives the same tangents.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .config import check_choice, check_dtype, check_positive_int

SAMPLERS = ("normal", "rademacher", "basis", "angle", "orthogonal")


def _shape(batch: int | Sequence[int] | None) -> tuple[int, ...]:
    if batch is None:
        return ()
    if isinstance(batch, int):
        return (batch,)
    return tuple(batch)


def sample_tangents(
    n: int,
    k: int,
    *,
    batch: int | Sequence[int] | None = None,
    sampler: str = "normal",
    normalize: bool = False,
    angle: float | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sample ``k`` tangents in ``R^n`` with shape ``(*batch, k, n)``.

    Parameters
    ----------
    sampler
        ``"normal"`` (i.i.d. N(0, 1) entries; the paper's default), ``"rademacher"`` (±1 entries),
        ``"basis"`` (``k`` distinct standard basis vectors; needs ``k <= n``), ``"angle"`` (normal
        tangents where tangents 2..k are rotated to the fixed ``angle`` (degrees) to the first one,
        paper Section 4.3), ``"orthogonal"`` (orthogonal directions with the lengths of independent
        normal vectors, i.e. chi_n distributed; needs ``k <= n``).
    normalize
        Rescale every tangent to unit length.
    """
    check_choice("sampler", sampler, SAMPLERS)
    n = check_positive_int("n", n)
    k = check_positive_int("k", k)
    dtype = check_dtype(dtype)
    shape = _shape(batch) + (k, n)
    kw = dict(generator=generator, dtype=dtype, device=device)

    if sampler == "normal":
        v = torch.randn(shape, **kw)
    elif sampler == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1
    elif sampler == "basis":
        if k > n:
            raise ValueError(f"sampler='basis' needs k <= n (k distinct basis vectors); got k={k}, n={n}")
        scores = torch.rand(_shape(batch) + (n,), generator=generator, device=device)
        idx = scores.argsort(dim=-1)[..., :k]  # k distinct coordinates per batch element
        v = torch.zeros(shape, dtype=dtype, device=device)
        v.scatter_(-1, idx.unsqueeze(-1), 1.0)
    elif sampler == "angle":
        if angle is None:
            raise ValueError("sampler='angle' needs angle= (degrees, 0 < angle <= 90)")
        v = torch.randn(shape, **kw)
        v = rotate_to_angle(v, angle)
    else:  # orthogonal
        if k > n:
            raise ValueError(f"sampler='orthogonal' needs k <= n; got k={k}, n={n}")
        g = torch.randn(_shape(batch) + (n, k), **kw)
        q, r = torch.linalg.qr(g)  # q: (..., n, k) orthonormal columns
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar measure
        lengths = torch.randn(shape, **kw).norm(dim=-1, keepdim=True)  # chi_n lengths
        v = q.transpose(-1, -2) * lengths

    if angle is not None and sampler != "angle":
        raise ValueError(f"angle= is only used with sampler='angle'; got sampler={sampler!r}")
    if normalize:
        v = v / v.norm(dim=-1, keepdim=True)
    return v


def rotate_to_angle(v: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate tangents 2..k of ``v`` (shape ``(..., k, n)``) to ``angle`` degrees to the first.

    Each tangent ``v_i`` (i >= 2) is replaced by a vector of the same length in the plane spanned
    by ``v_1`` and ``v_i``, at the requested angle to ``v_1``. Needs ``n >= 2``.
    """
    if not (0 < float(angle) <= 180):
        raise ValueError(f"angle must be in (0, 180] degrees; got {angle!r}")
    if v.shape[-1] < 2:
        raise ValueError("sampler='angle' needs n >= 2")
    theta = math.radians(float(angle))
    u1 = v[..., :1, :] / v[..., :1, :].norm(dim=-1, keepdim=True)
    rest = v[..., 1:, :]
    lengths = rest.norm(dim=-1, keepdim=True)
    w = rest - (rest * u1).sum(-1, keepdim=True) * u1
    w = w / w.norm(dim=-1, keepdim=True)
    rotated = lengths * (math.cos(theta) * u1 + math.sin(theta) * w)
    return torch.cat([v[..., :1, :], rotated], dim=-2)
