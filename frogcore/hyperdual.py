r"""Hyper-dual (second-order forward-mode) evaluation with ``torch.func``.

A hyper-dual evaluation of a scalar function ``f`` at ``θ`` along two tangents ``v₁, v₂`` returns the
four coefficients of ``f(θ + v₁ε₁ + v₂ε₂)`` with ``ε₁² = ε₂² = 0``:

.. math::  f(θ),\quad ∇f·v_1,\quad ∇f·v_2,\quad v_1^⊤ ∇^2 f\, v_2 .

There is no hand-written dual-number class here: the ``ε₁`` part is one ``torch.func.jvp`` and the
``ε₂``/``ε₁ε₂`` parts are a second ``jvp`` *of that jvp* (forward-over-forward). Everything is
batched over tangents with ``vmap``.

Parameters ``params`` are either

* a tensor of shape ``(..., n)`` — ``f`` maps ``(..., n) → (...)`` and the leading dimensions are
  independent problems (e.g. many optimisation runs of a test function at once); tangents then have
  shape ``(..., n)`` (one pair) or ``(..., K, n)`` (several);
* a dict of tensors (the parameters of an ``nn.Module``, see :func:`module_loss`). Tangents are
  *global* flat vectors of length ``n = Σ numel`` laid out as :func:`frogcore.estimators.flatten`
  does (one tangent spans every tensor), with shape ``(n,)`` or ``(K, n)``.

Ways to get the ``K × K`` directional Hessian ``Ĥ_ij = v_iᵀ∇²f v_j`` (:func:`directional_hessian`):

``"block"`` (default)
    ``vmap_j jvp(θ ↦ vmap_i jvp(f, θ, v_i), θ, v_j)``: the primal is propagated once, the first-order
    parts ``K + K`` times and the mixed parts ``K²`` times. All ``K(K+1)/2`` distinct pairs (and
    their mirror images) in one batched call; cheapest for every ``K``.
``"pairs"``
    the paper's formulation: one hyper-dual evaluation per pair ``i ≤ j``, the ``K(K+1)/2`` pairs
    batched with ``vmap`` (first-order parts propagated ``K(K+1)/2`` times each).
``"loop"``
    the same pairs in a Python loop (the primal is recomputed per pair) — the baseline of
    ``benchmarks/bench_fomoh.py``.
``"auto"`` (default)
    ``"block"`` for ``n ≥ AUTO_BLOCK_MIN_PARAMS``, else ``"pairs"``: on tiny functions the cost is
    framework overhead, and the nested ``vmap`` of ``"block"`` has more of it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple, Union

import torch
from torch.func import functional_call, jvp, vmap

from .config import check_choice

Params = Union[torch.Tensor, Mapping[str, torch.Tensor]]

MODES = ("auto", "block", "pairs", "loop")

#: below this many parameters ``mode="auto"`` uses ``"pairs"`` (the nested vmap of ``"block"`` costs
#: more framework overhead than it saves on tiny functions such as Rosenbrock)
AUTO_BLOCK_MIN_PARAMS = 4096


class HyperDual(NamedTuple):
    """Coefficients of ``f(θ + v₁ε₁ + v₂ε₂)``: ``value + d1 ε₁ + d2 ε₂ + d12 ε₁ε₂``."""

    value: torch.Tensor  #: f(θ)
    d1: torch.Tensor  #: ∇f·v₁
    d2: torch.Tensor  #: ∇f·v₂
    d12: torch.Tensor  #: v₁ᵀ ∇²f v₂


class DirectionalHessian(NamedTuple):
    """``f(θ)``, the directional derivatives ``d_i = ∇f·v_i`` ``(..., K)`` and ``Ĥ`` ``(..., K, K)``."""

    value: torch.Tensor
    d: torch.Tensor
    H: torch.Tensor


# ----------------------------------------------------------------------------- tangent layout

def num_params(params: Params) -> int:
    """``n``: the last dimension of a tensor, or the total number of entries of a dict."""
    if isinstance(params, torch.Tensor):
        return params.shape[-1]
    return sum(t.numel() for t in params.values())


def _to_tree(params: Params, v: torch.Tensor, lead: int) -> Params:
    """Turn flat tangents ``(*L, n)`` (``lead = len(L)`` leading tangent dims) into ``params``' layout.

    For tensor parameters the tangents are returned with the ``lead`` dims moved to the front:
    ``(..., *L, n)`` → ``(*L, ..., n)``. For a dict, ``v`` must be ``(*L, n)`` and each entry
    becomes ``(*L, *shape)``.
    """
    n = num_params(params)
    if v.shape[-1] != n:
        raise ValueError(f"tangents have dimension {v.shape[-1]} but the parameters have {n} entries")
    if isinstance(params, torch.Tensor):
        if lead:  # (..., *L, n) -> (*L, ..., n)
            dims = v.dim()
            order = list(range(dims - 1 - lead, dims - 1)) + list(range(dims - 1 - lead)) + [dims - 1]
            v = v.permute(order)
        return v
    if v.dim() != lead + 1:
        raise ValueError(f"for dict parameters the tangents must have shape {'(K, n)' if lead else '(n,)'}; "
                         f"got {tuple(v.shape)}")
    out, start = {}, 0
    for name, t in params.items():
        size = t.numel()
        out[name] = v[..., start:start + size].reshape(*v.shape[:lead], *t.shape)
        start += size
    return out


def _pair_fn(f: Callable, params: Params):
    """``(a, b) ↦ ((f, ∇f·a), (∇f·b, aᵀ∇²f b))`` for tangents already in ``params``' layout."""
    def pair(a, b):
        def first(p):
            return jvp(f, (p,), (a,))
        return jvp(first, (params,), (b,))
    return pair


# ----------------------------------------------------------------------------- evaluations

def hyperdual(f: Callable, params: Params, v1: torch.Tensor, v2: torch.Tensor) -> HyperDual:
    """One hyper-dual evaluation: ``f(θ)``, ``∇f·v₁``, ``∇f·v₂``, ``v₁ᵀ∇²f v₂``.

    ``v1``/``v2``: flat tangents of shape ``params.shape`` (tensor parameters) or ``(n,)`` (dict).
    """
    a, b = _to_tree(params, v1, 0), _to_tree(params, v2, 0)
    (value, d1), (d2, d12) = _pair_fn(f, params)(a, b)
    return HyperDual(value, d1, d2, d12)


def hyperdual_pairs(f: Callable, params: Params, V1: torch.Tensor, V2: torch.Tensor) -> HyperDual:
    """Hyper-dual evaluations for ``P`` tangent pairs in one ``vmap``-batched call.

    ``V1``, ``V2``: ``(..., P, n)`` for tensor parameters of shape ``(..., n)``, ``(P, n)`` for a dict.
    Returns ``value`` ``(...)`` and ``d1, d2, d12`` of shape ``(..., P)``.
    """
    if V1.shape != V2.shape:
        raise ValueError(f"V1 and V2 must have the same shape; got {tuple(V1.shape)} and {tuple(V2.shape)}")
    A, B = _to_tree(params, V1, 1), _to_tree(params, V2, 1)
    (value, d1), (d2, d12) = vmap(_pair_fn(f, params), out_dims=((None, 0), (0, 0)))(A, B)
    return HyperDual(value, d1.movedim(0, -1), d2.movedim(0, -1), d12.movedim(0, -1))


def pair_indices(k: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row/column indices of the ``K(K+1)/2`` pairs ``i ≤ j`` (upper triangle, row-major)."""
    idx = torch.triu_indices(k, k, device=device)
    return idx[0], idx[1]


def _symmetric_from_pairs(vals: torch.Tensor, k: int) -> torch.Tensor:
    i, j = pair_indices(k, device=vals.device)
    H = vals.new_zeros(*vals.shape[:-1], k, k)
    H[..., i, j] = vals
    H[..., j, i] = vals
    return H


def directional_hessian(f: Callable, params: Params, V: torch.Tensor, *, mode: str = "auto") -> DirectionalHessian:
    """``f(θ)``, ``d = V∇f`` and ``Ĥ = V∇²f Vᵀ`` for ``K`` tangents (rows of ``V``).

    ``V``: ``(..., K, n)`` (tensor parameters ``(..., n)``; ``(K, n)`` broadcasts over the leading
    dims) or ``(K, n)`` (dict parameters). ``mode``: ``"auto"`` | ``"block"`` | ``"pairs"`` |
    ``"loop"`` (module docstring). ``Ĥ`` is exactly symmetric.
    """
    check_choice("mode", mode, MODES)
    if mode == "auto":
        mode = "block" if num_params(params) >= AUTO_BLOCK_MIN_PARAMS else "pairs"
    if V.dim() < 2:
        raise ValueError(f"V must have shape (..., K, n); got {tuple(V.shape)}")
    if isinstance(params, torch.Tensor) and V.dim() - 1 < params.dim():
        V = V.expand(*params.shape[:-1], *V.shape[-2:])
    k = V.shape[-2]
    if mode == "block":
        T = _to_tree(params, V, 1)

        def inner(p):
            return vmap(lambda a: jvp(f, (p,), (a,)), out_dims=(None, 0))(T)  # f, d_i (K, ...)

        def outer(b):
            return jvp(inner, (params,), (b,))

        (value, d), (_, hcols) = vmap(outer, out_dims=((None, None), (0, 0)))(T)
        # hcols[j, i, ...] = v_jᵀ∇²f v_i
        H = hcols.movedim(0, -1).movedim(0, -2)
        H = 0.5 * (H + H.transpose(-1, -2))
        return DirectionalHessian(value, d.movedim(0, -1), H)
    i, j = pair_indices(k, device=V.device)
    if mode == "pairs":
        hd = hyperdual_pairs(f, params, V[..., i, :], V[..., j, :])
        diag = (i == j).nonzero().squeeze(-1)
        return DirectionalHessian(hd.value, hd.d1[..., diag], _symmetric_from_pairs(hd.d12, k))
    # loop over pairs (one hyper-dual evaluation each)
    vals, ds, value = [], [None] * k, None
    for a, b in zip(i.tolist(), j.tolist()):
        hd = hyperdual(f, params, V[..., a, :], V[..., b, :])
        value = hd.value
        vals.append(hd.d12)
        if a == b:
            ds[a] = hd.d1
    return DirectionalHessian(value, torch.stack(ds, -1), _symmetric_from_pairs(torch.stack(vals, -1), k))


def directional_derivatives(f: Callable, params: Params, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First order only: ``f(θ)`` and ``d = V∇f`` ``(..., K)`` with ``K`` batched jvps (FGD, FROG)."""
    if V.dim() < 2:
        raise ValueError(f"V must have shape (..., K, n); got {tuple(V.shape)}")
    if isinstance(params, torch.Tensor) and V.dim() - 1 < params.dim():
        V = V.expand(*params.shape[:-1], *V.shape[-2:])
    T = _to_tree(params, V, 1)
    value, d = vmap(lambda a: jvp(f, (params,), (a,)), out_dims=(None, 0))(T)
    return value, d.movedim(0, -1)


def derivatives_1d(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
    """``f(x)``, ``f′(x)`` and ``f″(x)`` on a grid for an *elementwise* function (the blog's sin example).

    One hyper-dual evaluation with ``v₁ = v₂ = 1``: because ``f`` acts elementwise, its Jacobian and
    Hessian are diagonal and the ε₁ and ε₁ε₂ parts are exactly ``f′`` and ``f″`` at every grid point.
    """
    ones = torch.ones_like(x)
    (value, d1), (_, d12) = _pair_fn(f, x)(ones, ones)
    return value, d1, d12


# ----------------------------------------------------------------------------- nn.Module support

def module_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``model`` as a dict of detached tensors (for ``functional_call``)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def module_loss(model: torch.nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> Callable:
    """``params ↦ loss_fn(model(x; params), y)`` through ``torch.func.functional_call``.

    Buffers are taken from the module as they are; BatchNorm in train mode is not supported by
    ``torch.func`` forward mode (in-place running-stat updates), so use it in eval mode.
    """
    buffers = dict(model.named_buffers())

    def f(params):
        return loss_fn(functional_call(model, (params, buffers), (x,)), y)

    return f
