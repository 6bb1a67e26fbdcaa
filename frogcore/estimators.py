r"""Multi-tangent forward-gradient estimators.

Notation: ``g = ∇f ∈ R^n``, tangents ``v_1..v_k`` stacked as rows of ``V`` (shape ``(..., k, n)``),
directional derivatives ``d_i = v_i · g`` (what forward-mode AD gives, shape ``(..., k)``).

Aggregations (``AGGREGATIONS``):

* ``"single"``     — the single-tangent forward gradient ``(v_1·g) v_1`` (uses the first tangent);
* ``"mean"``       — ``(1/k) Σ_i d_i v_i``;
* ``"sum"``        — ``Σ_i d_i v_i`` (= k × mean);
* ``"projection"`` — the orthogonal projection ``V^T (V V^T)^{-1} V g`` of ``g`` onto ``span(V)``
  (FROG), computed robustly by :func:`frogcore.linalg.project`.

Scaling corrections (``scale=True``) make the expected length right for N(0, I) tangents:

* projection: ``×  E[χ_n] / E[χ_k]`` — since ``‖P g‖/‖g‖ = c`` with ``E[c] = E[χ_k]/E[χ_n]``,
  the corrected estimate has ``E‖·‖ = ‖g‖`` exactly (for ``k ≥ n`` the factor is 1);
* mean / sum / single: divided by the root-mean-square length ratio, so ``E‖·‖² = ‖g‖²``:
  ``sqrt((n+k+1)/k)`` for unnormalised tangents and ``sqrt((n+k-1)/(k n²))`` for normalised ones
  (sum additionally divided by ``k``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Union

import torch

from .config import check_choice
from .linalg import project

AGGREGATIONS = ("single", "mean", "sum", "projection")

Tree = Union[torch.Tensor, Mapping[str, torch.Tensor]]


def expected_chi(m: int) -> float:
    """``E[χ_m] = √2 Γ((m+1)/2) / Γ(m/2)``: the expected length of an m-dim N(0, I) vector."""
    return math.sqrt(2.0) * math.exp(math.lgamma((m + 1) / 2) - math.lgamma(m / 2))


def scale_factor(aggregation: str, n: int, k: int, *, normalized: bool = False) -> float:
    """Multiplicative scaling correction for an aggregation (see module docstring)."""
    check_choice("aggregation", aggregation, AGGREGATIONS)
    if aggregation == "projection":
        return 1.0 if k >= n else expected_chi(n) / expected_chi(k)
    kk = 1 if aggregation == "single" else k
    if normalized:
        rms = math.sqrt((n + kk - 1) / (kk * n * n))
    else:
        rms = math.sqrt((n + kk + 1) / kk)
    return 1.0 / (rms * (kk if aggregation == "sum" else 1))


def directional_derivatives(grad: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``d_i = v_i · grad`` for ``grad`` of shape ``(..., n)`` and ``v`` of shape ``(..., k, n)``."""
    return (v @ grad.unsqueeze(-1)).squeeze(-1)


def aggregate(
    d: torch.Tensor,
    v: torch.Tensor,
    aggregation: str = "mean",
    *,
    scale: bool = False,
    normalized: bool = False,
    solver: str = "auto",
) -> torch.Tensor:
    """Combine directional derivatives ``d`` ``(..., k)`` along tangents ``v`` ``(..., k, n)``.

    Returns the gradient estimate of shape ``(..., n)``. ``normalized`` only tells the scaling
    correction whether the tangents have unit length.
    """
    check_choice("aggregation", aggregation, AGGREGATIONS)
    if v.dim() < 2 or d.shape != v.shape[:-1]:
        raise ValueError(f"d must have shape v.shape[:-1]; got d {tuple(d.shape)}, v {tuple(v.shape)}")
    k, n = v.shape[-2:]
    if aggregation == "single":
        d, v = d[..., :1], v[..., :1, :]
        est = (d.unsqueeze(-2) @ v).squeeze(-2)
    elif aggregation in ("mean", "sum"):
        est = (d.unsqueeze(-2) @ v).squeeze(-2)
        if aggregation == "mean":
            est = est / k
    else:
        est = project(d, v, solver=solver)
    if scale:
        est = est * scale_factor(aggregation, n, k, normalized=normalized)
    return est


# ----------------------------------------------------------------------------- parameter trees

def flatten(tree: Tree) -> tuple[torch.Tensor, list[tuple[str, torch.Size]] | None]:
    """Flatten a tensor or a dict of tensors into one vector (last dim), remembering the shapes."""
    if isinstance(tree, torch.Tensor):
        return tree, None
    if not isinstance(tree, Mapping) or not tree:
        raise TypeError("expected a tensor or a non-empty dict of tensors")
    spec = [(name, t.shape) for name, t in tree.items()]
    return torch.cat([t.reshape(-1) for t in tree.values()]), spec


def unflatten(vec: torch.Tensor, spec: list[tuple[str, torch.Size]] | None) -> Tree:
    """Inverse of :func:`flatten` along the last dimension (leading dims are kept)."""
    if spec is None:
        return vec
    out, start = {}, 0
    lead = vec.shape[:-1]
    for name, shape in spec:
        size = math.prod(shape)
        out[name] = vec[..., start : start + size].reshape(*lead, *shape)
        start += size
    if start != vec.shape[-1]:
        raise ValueError(f"vector has {vec.shape[-1]} entries but the spec needs {start}")
    return out


def num_elements(tree: Tree) -> int:
    """Total number of scalars in a tensor or dict of tensors."""
    if isinstance(tree, torch.Tensor):
        return tree.shape[-1]
    return sum(t.numel() for t in tree.values())


def forward_gradient(
    grad: Tree,
    v: torch.Tensor,
    aggregation: str = "mean",
    *,
    scale: bool = False,
    normalized: bool = False,
    solver: str = "auto",
) -> Tree:
    """Forward-gradient estimate of a known gradient ("simulated" mode).

    ``grad`` is a vector ``(..., n)`` or a dict of parameter tensors; ``v`` holds ``k`` global
    tangents ``(..., k, n)`` where ``n`` is the total number of entries (for a dict, one tangent
    spans all tensors in insertion order, exactly as :func:`flatten` lays them out). The result
    has the structure of ``grad``.
    """
    flat, spec = flatten(grad)
    if v.shape[-1] != flat.shape[-1]:
        raise ValueError(f"tangents have dimension {v.shape[-1]} but the gradient has {flat.shape[-1]} entries")
    d = directional_derivatives(flat, v)
    est = aggregate(d, v, aggregation, scale=scale, normalized=normalized, solver=solver)
    return unflatten(est, spec)
