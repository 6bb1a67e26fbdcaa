r"""Directional derivatives by real forward-mode AD, and backprop gradients for comparison.

:func:`directional_derivatives` evaluates ``f(x)`` and ``d_i = ∇f(x)·v_i`` for ``k`` tangents with
``torch.func.jvp`` — no backward pass, no gradient is ever formed. Two equivalent layouts:

``"vmap"``  ``torch.func.vmap`` over the ``k`` tangents of one ``jvp``: the primal ``f(x)`` is
            computed once per point and only the tangent part is batched. Works for any ``f`` that
            maps ``(..., n) → (...)`` or even only ``(n,) → ()`` when ``x`` has no batch dimension.
``"rows"``  one ``jvp`` on ``k`` copies of ``x`` (one row per tangent); needs ``f`` to broadcast over
            leading dimensions (all of :mod:`frogcore.functions` do). It recomputes the primal ``k``
            times but avoids the ``vmap`` overhead, which wins for small problems; the batched
            optimiser uses it with an explicit list of (run, tangent) rows.

:func:`gradient` is the reverse-mode (backprop) reference: value and exact gradient by autograd.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jvp, vmap

from .config import check_choice

METHODS = ("vmap", "rows")

Function = Callable[[torch.Tensor], torch.Tensor]


def directional_derivatives(
    f: Function, x: torch.Tensor, v: torch.Tensor, *, method: str = "vmap"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(f(x), d)`` with ``d[..., i] = ∇f(x) · v[..., i, :]`` by forward mode.

    Parameters
    ----------
    x : tensor ``(..., n)``
    v : tensor ``(..., k, n)`` (same leading dimensions as ``x``)
    method : ``"vmap"`` or ``"rows"`` (see module docstring)

    Returns ``f(x)`` of shape ``(...)`` and ``d`` of shape ``(..., k)``.
    """
    check_choice("method", method, METHODS)
    if v.dim() != x.dim() + 1 or v.shape[:-2] != x.shape[:-1] or v.shape[-1] != x.shape[-1]:
        raise ValueError(f"v must have shape (*x.shape[:-1], k, n); got x {tuple(x.shape)}, v {tuple(v.shape)}")
    if method == "vmap":
        kdim = v.dim() - 2

        def one(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return jvp(f, (x,), (t,))

        fx, d = vmap(one, in_dims=kdim, out_dims=(None, -1))(v)
        return fx, d
    xr = x.unsqueeze(-2).expand(v.shape).contiguous()  # forward AD needs non-overlapping memory
    fr, d = jvp(f, (xr,), (v,))
    return fr[..., 0], d


def rows_jvp(f: Function, x_rows: torch.Tensor, v_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward mode on explicit rows: ``(f(x_r), ∇f(x_r)·v_r)`` for every row ``r`` of ``(M, n)`` inputs."""
    return jvp(f, (x_rows,), (v_rows,))


def gradient(f: Function, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value and exact gradient by reverse mode (backprop) for a batch of points ``x`` ``(..., n)``.

    ``f`` must act independently on each point of the batch (the sum trick gives per-point gradients).
    """
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        fx = f(xx)
        (g,) = torch.autograd.grad(fx.sum(), xx)
    return fx.detach(), g
