r"""Multi-tangent forward-gradient estimators.

Notation: ``g = ∇f ∈ R^n``, tangents ``v_1..v_k`` stacked as rows of ``V`` (shape ``(..., k, n)``),
directional derivatives ``d_i = v_i · g`` (what forward-mode AD gives, shape ``(..., k)``).

Aggregations (``AGGREGATIONS``):

* ``"single"``     — the single-tangent forward gradient ``(v_1·g) v_1`` (uses the first tangent);
* ``"mean"``       — ``(1/k) Σ_i d_i v_i``;
* ``"sum"``        — ``Σ_i d_i v_i`` (= k × mean);
* ``"projection"`` — the orthogonal projection ``V^T (V V^T)^{-1} V g`` of ``g`` onto ``span(V)``
  (FROG), computed robustly by :func:`frogcore.linalg.project` (independent of the tangent lengths;
  ``selection`` picks the ``n`` tangents kept when ``k > n``);

and the further aggregations of the FROG authors' code (``forward_gradient/aggregation.py`` of
Helmholtz-AI-Energy/frog; same names, own implementation):

* ``"mean_times_dim"`` — ``(n/k) Σ_i d_i v_i`` (= n × mean);
* ``"max"``            — ``d_j v_j`` with ``j = argmax_i |d_i|`` (the single tangent with the largest
  directional derivative; for equal lengths the one best aligned with ``±g``);
* ``"max_normalized"`` — ``d_j v_j`` with ``j = argmax_i |d_i|/‖v_i‖ = argmax_i |cos∠(v_i, g)|``;
* ``"mean_of_top_k"``  — ``(1/k) Σ_{i∈T} d_i v_i`` over ``T = {i : c_i ≥ max_j c_j − τ}``,
  ``c_i = |d_i|/‖v_i‖ = ‖g‖ |cos∠(v_i, g)|``, ``τ = top_k_tolerance`` (the authors' 0.1). As in their code
  the threshold is absolute (it scales with ``‖g‖``) and the sum is divided by ``k``, not by ``|T|``.

``LINEAR_AGGREGATIONS`` are linear in ``d`` for fixed tangents (``max``, ``max_normalized`` and
``mean_of_top_k`` select tangents by ``d`` and are not).

Scaling corrections (``scale=True``) make the expected length right for N(0, I) tangents:

* projection: ``×  E[χ_n] / E[χ_k]`` — since ``‖P g‖/‖g‖ = c`` with ``E[c] = E[χ_k]/E[χ_n]``,
  the corrected estimate has ``E‖·‖ = ‖g‖`` exactly (for ``k ≥ n`` the factor is 1);
* mean / sum / single: divided by the root-mean-square length ratio, so ``E‖·‖² = ‖g‖²``:
  ``sqrt((n+k+1)/k)`` for unnormalised tangents and ``sqrt((n+k-1)/(k n²))`` for normalised ones
  (sum additionally divided by ``k``, mean_times_dim by ``n``);
* max, max_normalized, mean_of_top_k: no closed form; ``scale=True`` raises.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Union

import torch

from .config import check_choice, check_positive_int
from .linalg import SELECTIONS, as_float_tensor, project

AGGREGATIONS = ("single", "mean", "sum", "projection", "mean_times_dim", "max", "max_normalized", "mean_of_top_k")
LINEAR_AGGREGATIONS = ("single", "mean", "sum", "projection", "mean_times_dim")
#: aggregations with a closed-form scaling correction (:func:`scale_factor`)
SCALABLE_AGGREGATIONS = LINEAR_AGGREGATIONS
#: the authors' threshold of ``mean_of_top_k`` on ``|d_i|/‖v_i‖`` (absolute)
TOP_K_TOLERANCE = 0.1

Tree = Union[torch.Tensor, Mapping[str, torch.Tensor]]


def expected_chi(m: int) -> float:
    """``E[χ_m] = √2 Γ((m+1)/2) / Γ(m/2)``: the expected length of an m-dim N(0, I) vector."""
    return math.sqrt(2.0) * math.exp(math.lgamma((m + 1) / 2) - math.lgamma(m / 2))


def scale_factor(aggregation: str, n: int, k: int, *, normalized: bool = False) -> float:
    """Multiplicative scaling correction for an aggregation (see module docstring).

    ``n`` (dimension) and ``k`` (number of tangents) must be integers >= 1; aggregations without a
    closed-form correction (``max``, ``max_normalized``, ``mean_of_top_k``) raise a ``ValueError``.
    """
    check_choice("aggregation", aggregation, AGGREGATIONS)
    n = check_positive_int("n", n)
    k = check_positive_int("k", k)
    if aggregation not in SCALABLE_AGGREGATIONS:
        raise ValueError(f"scale=True has no closed-form correction for aggregation={aggregation!r}; "
                         f"aggregations with one: {', '.join(repr(a) for a in SCALABLE_AGGREGATIONS)}")
    if aggregation == "mean_times_dim":
        return scale_factor("mean", n, k, normalized=normalized) / n
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


def _pick(d: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``d_j v_j`` for the index ``j = idx`` of every batch element (shape ``(..., n)``)."""
    dj = d.gather(-1, idx.unsqueeze(-1))  # (..., 1)
    vj = v.gather(-2, idx[..., None, None].expand(*idx.shape, 1, v.shape[-1])).squeeze(-2)  # (..., n)
    return dj * vj


def aggregate(
    d,
    v,
    aggregation: str = "mean",
    *,
    scale: bool = False,
    normalized: bool = False,
    solver: str = "auto",
    selection: str = "first",
    top_k_tolerance: float = TOP_K_TOLERANCE,
) -> torch.Tensor:
    """Combine directional derivatives ``d`` ``(..., k)`` along tangents ``v`` ``(..., k, n)``.

    Returns the gradient estimate of shape ``(..., n)`` (formulas in the module docstring).
    ``normalized`` only tells the scaling correction whether the tangents have unit length;
    ``solver`` and ``selection`` are passed to :func:`frogcore.linalg.project` (projection only);
    ``top_k_tolerance`` is ``τ`` of ``mean_of_top_k``. ``d`` and ``v`` may be numpy arrays (converted);
    ``k = 0`` raises.
    """
    check_choice("aggregation", aggregation, AGGREGATIONS)
    check_choice("selection", selection, SELECTIONS)
    d, v = as_float_tensor("d", d), as_float_tensor("v", v)
    if v.dim() < 2 or d.shape != v.shape[:-1]:
        raise ValueError(f"d must have shape v.shape[:-1]; got d {tuple(d.shape)}, v {tuple(v.shape)}")
    k, n = v.shape[-2:]
    if k < 1 or n < 1:
        raise ValueError(f"v must hold k >= 1 tangents of dimension n >= 1; got k={k}, n={n}")
    dtype = torch.promote_types(d.dtype, v.dtype)
    d, v = d.to(dtype), v.to(dtype)
    if scale and aggregation not in SCALABLE_AGGREGATIONS:
        scale_factor(aggregation, n, k)  # raises, naming the aggregation
    if aggregation == "single":
        d, v = d[..., :1], v[..., :1, :]
        est = (d.unsqueeze(-2) @ v).squeeze(-2)
    elif aggregation in ("mean", "sum", "mean_times_dim"):
        est = (d.unsqueeze(-2) @ v).squeeze(-2)
        if aggregation == "mean":
            est = est / k
        elif aggregation == "mean_times_dim":
            est = est * (n / k)
    elif aggregation == "projection":
        est = project(d, v, solver=solver, selection=selection)
    else:
        lengths = torch.linalg.vector_norm(v, dim=-1).clamp_min(torch.finfo(v.dtype).tiny)
        if aggregation == "max":
            est = _pick(d, v, d.abs().argmax(-1))
        else:
            c = d.abs() / lengths  # ‖g‖ |cos∠(v_i, g)|
            if aggregation == "max_normalized":
                est = _pick(d, v, c.argmax(-1))
            else:
                tau = float(top_k_tolerance)
                if not tau >= 0:
                    raise ValueError(f"top_k_tolerance must be a number >= 0; got {top_k_tolerance!r}")
                mask = c >= c.amax(-1, keepdim=True) - tau
                est = ((d * mask).unsqueeze(-2) @ v).squeeze(-2) / k
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


#: how :func:`forward_gradient` lays tangents over a dict of tensors
TREE_TANGENTS = ("global", "per-tensor", "split")


def forward_gradient(
    grad: Tree,
    v: torch.Tensor,
    aggregation: str = "mean",
    *,
    tangents: str = "global",
    scale: bool = False,
    normalized: bool = False,
    solver: str = "auto",
    selection: str = "first",
    top_k_tolerance: float = TOP_K_TOLERANCE,
) -> Tree:
    r"""Forward-gradient estimate of a known gradient ("simulated" mode).

    ``grad`` is a vector ``(..., n)`` or a dict of parameter tensors; ``v`` holds ``k`` tangents
    ``(..., k, n)`` where ``n`` is the total number of entries (for a dict, tangent entries are laid
    over the tensors in insertion order, exactly as :func:`flatten` lays them out; ``V_p`` below is the
    slice of ``V`` over tensor ``p``, ``g_p`` that tensor's gradient). The result has the structure of
    ``grad``. ``tangents`` (``TREE_TANGENTS``; only matters for a dict):

    * ``"global"`` (default; FROG's network experiments): ``d = V g`` over all entries and one
      aggregation over all of them, ``agg(V g, V)``.
    * ``"per-tensor"``: every tensor aggregates its own directional derivatives along its own slice,
      ``ĝ_p = agg(V_p g_p, V_p)``. The slices of i.i.d. tangents are independent, so this is ``k``
      independent tangents per tensor: the FROG authors' simulated ``local_jvps`` mode and
      ``make_engine(tangents="per-tensor")`` (in forward mode, one JVP per tensor and tangent).
    * ``"split"``: the *global* directional derivatives aggregated with each tensor's slice,
      ``ĝ_p = agg(V g, V_p)`` — what the authors' real-forward-mode network code computes
      (``ForwardGradientModel.compute_forward_gradients`` in ``nn_training/fg_models.py``, with a TODO to
      orthogonalise across the network). For ``mean``/``sum`` it equals the global estimate; for the
      projection ``ĝ_p = V_p^T (V_p V_p^T)^{-1} (V_p g_p + Σ_{q≠p} V_q g_q)``: the other tensors' terms are
      noise of expected squared norm ``‖g_{-p}‖² k/(n_p − k − 1)`` (Gaussian tangents, ``n_p > k + 1``;
      unbounded for ``n_p ≤ k + 1``), so on a network the estimate is nearly uncorrelated with ``g``.
      Kept to reproduce the authors' numbers, not as a method.
    """
    check_choice("tangents", tangents, TREE_TANGENTS)
    flat, spec = flatten(grad)
    v = as_float_tensor("v", v)
    if v.shape[-1] != flat.shape[-1]:
        raise ValueError(f"tangents have dimension {v.shape[-1]} but the gradient has {flat.shape[-1]} entries")
    kw = dict(scale=scale, normalized=normalized, solver=solver, selection=selection, top_k_tolerance=top_k_tolerance)
    if spec is None or tangents == "global":
        return unflatten(aggregate(directional_derivatives(flat, v), v, aggregation, **kw), spec)
    d_global = directional_derivatives(flat, v) if tangents == "split" else None
    parts, start = [], 0
    for _, shape in spec:
        size = math.prod(shape)
        vp, gp = v[..., start:start + size], flat[..., start:start + size]
        d = d_global if tangents == "split" else directional_derivatives(gp, vp)
        parts.append(aggregate(d, vp, aggregation, **kw))
        start += size
    return unflatten(torch.cat(parts, dim=-1), spec)
