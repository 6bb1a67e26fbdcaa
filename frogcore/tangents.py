"""Random tangent samplers.

All samplers return a tensor of shape ``(*batch, k, n)``: ``k`` tangents in ``R^n`` for each
element of a leading batch (usually the number of Monte-Carlo samples). Randomness comes only
from the ``torch.Generator`` passed in, so the same seed gives the same tangents.

``resample=m`` redraws (at most ``m`` times) every batch element whose tangents are numerically linearly
dependent, as decided by :func:`frogcore.linalg.independent` (the rank tolerance of the projection's
SVD path, on unit tangents), so that the projection uses all ``k`` of them; this is the FROG authors'
``resample`` option (``forward_gradient/tangent_sampling.py``), which redraws the whole set. It needs
``k <= n``, and raises if some element is still dependent after ``m`` redraws (e.g. Rademacher tangents
with ``n`` small).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .config import check_choice, check_dtype, check_positive_int
from .linalg import independent

SAMPLERS = ("normal", "rademacher", "basis", "first-basis", "angle", "orthogonal")


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
    resample: int = 0,
) -> torch.Tensor:
    """Sample ``k`` tangents in ``R^n`` with shape ``(*batch, k, n)``.

    Parameters
    ----------
    sampler
        ``"normal"`` (i.i.d. N(0, 1) entries; the paper's default), ``"rademacher"`` (±1 entries),
        ``"basis"`` (``k`` distinct standard basis vectors chosen at random; needs ``k <= n``),
        ``"first-basis"`` (the first ``k`` standard basis vectors ``e_1..e_k``, the same for every batch
        element and seed: the authors' ``standard_basis``/``eye`` sampler; needs ``k <= n``), ``"angle"`` (normal
        tangents where tangents 2..k are rotated to the fixed ``angle`` (degrees) to the first one,
        paper Section 4.3), ``"orthogonal"`` (orthogonal directions with the lengths of independent
        normal vectors, i.e. chi_n distributed; needs ``k <= n``).
    normalize
        Rescale every tangent to unit length.
    resample
        Redraw linearly dependent tangent sets at most this many times (module docstring); 0: never.
    """
    check_choice("sampler", sampler, SAMPLERS)
    n = check_positive_int("n", n)
    k = check_positive_int("k", k)
    dtype = check_dtype(dtype)
    resample = check_positive_int("resample", resample, minimum=0)
    if resample and k > n:
        raise ValueError(f"resample needs k <= n (k > n tangents are always dependent); got k={k}, n={n}")
    if angle is not None and sampler != "angle":
        raise ValueError(f"angle= is only used with sampler='angle'; got sampler={sampler!r}")
    kw = dict(sampler=sampler, normalize=normalize, angle=angle, generator=generator, dtype=dtype, device=device)
    v = _draw(n, k, _shape(batch), **kw)
    if not resample:
        return v
    for attempt in range(resample + 1):
        flat = v.reshape(-1, k, n)
        dep = ~independent(flat)
        if not bool(dep.any()):
            return v
        if attempt == resample:
            raise ValueError(f"{int(dep.sum())} tangent set(s) are still linearly dependent after resample={resample} "
                             f"redraws (sampler={sampler!r}, k={k}, n={n}); raise resample or use another sampler")
        bad = dep.nonzero().squeeze(-1)
        v = flat.index_copy(0, bad, _draw(n, k, (bad.numel(),), **kw)).reshape(v.shape)
    return v  # not reached


def _draw(n, k, batch_shape, *, sampler, normalize, angle, generator, dtype, device):
    """One draw of ``(*batch_shape, k, n)`` tangents (arguments validated by :func:`sample_tangents`)."""
    shape = batch_shape + (k, n)
    kw = dict(generator=generator, dtype=dtype, device=device)

    if sampler == "normal":
        v = torch.randn(shape, **kw)
    elif sampler == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1
    elif sampler == "first-basis":
        if k > n:
            raise ValueError(f"sampler='first-basis' needs k <= n; got k={k}, n={n}")
        v = torch.eye(k, n, dtype=dtype, device=device).expand(shape).clone()
    elif sampler == "basis":
        if k > n:
            raise ValueError(f"sampler='basis' needs k <= n (k distinct basis vectors); got k={k}, n={n}")
        scores = torch.rand(batch_shape + (n,), generator=generator, device=device)
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
        g = torch.randn(batch_shape + (n, k), **kw)
        q, r = torch.linalg.qr(g)  # q: (..., n, k) orthonormal columns
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar measure
        lengths = torch.randn(shape, **kw).norm(dim=-1, keepdim=True)  # chi_n lengths
        v = q.transpose(-1, -2) * lengths

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
