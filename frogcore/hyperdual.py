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

Layers that need care (:func:`second_order_safe`)
-------------------------------------------------
Every evaluation here runs inside :func:`second_order_safe`, which makes normalisation layers, dropout and
attention correct under nested forward mode:

* **Normalisation.** In PyTorch (checked on 2.13) the forward-mode derivative *of the forward-mode
  derivative* of ``layer_norm``, ``batch_norm`` and ``instance_norm`` is wrong (the first-order jvp is
  right; ``v₁ᵀ∇²f v₂`` is off by O(1)), while ``group_norm`` and ``rms_norm`` are right. Inside the context these three
  functions are evaluated as compositions of elementary operations with the same formula,
  ``y = (x − μ) / √(σ² + ε) · w + b`` (``μ``, ``σ²`` the mean and biased variance over the normalised
  dimensions: the last ``len(normalized_shape)`` dimensions for LayerNorm, all but the channel dimension
  for BatchNorm in training mode or without running statistics, the spatial dimensions for InstanceNorm;
  BatchNorm in evaluation mode uses the running statistics). Running statistics are *not updated* during a
  hyper-dual evaluation: they are not part of ``f``. (``torch.func.hessian`` and ``jacrev(jacrev(f))`` are
  wrong through ``layer_norm`` too; reverse-over-reverse ``torch.autograd`` is right and is the reference
  of the tests.)
* **Dropout and other random operations.** A hyper-dual evaluation must differentiate *one* function, so
  every tangent (and the value) sees the same dropout mask: the ``vmap`` calls use ``randomness="same"``
  and ``mode="loop"`` restores the random state before each pair. The mask is drawn from the global
  generator as in a plain forward pass.
* **Attention.** Fused scaled-dot-product-attention kernels have no forward-mode derivative; the math
  backend is used (``sdpa_kernel(SDPBackend.MATH)``), and the fast path of ``nn.TransformerEncoderLayer`` in
  evaluation mode is bypassed.

Hessian-vector products (:func:`hvp`)
-------------------------------------
``H v`` for one tangent ``v`` at the cost of about one gradient: ``"reverse"`` is forward-over-reverse,
``jvp(∇f, θ, v)`` (Pearlmutter 1994); ``"forward"`` uses forward mode only, ``(Hv)_i = e_iᵀ∇²f v`` from ``n``
hyper-dual evaluations along ``(e_i, v)`` (the FoMoH authors' formulation; ``n`` passes, for small ``n``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import NamedTuple, Union

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp, vmap
from torch.func import grad as func_grad
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from .config import check_choice

Params = Union[torch.Tensor, Mapping[str, torch.Tensor]]

MODES = ("auto", "block", "pairs", "loop")
HVP_MODES = ("reverse", "forward")

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


class HessianVectorProduct(NamedTuple):
    """``f(θ)``, the gradient ``∇f`` and ``∇²f v`` (flat vectors ``(..., n)``; ``(n,)`` for dict parameters)."""

    value: torch.Tensor
    grad: torch.Tensor
    hvp: torch.Tensor


# ----------------------------------------------------------------------------- layers under nested forward mode

def _norm_affine(y: torch.Tensor, weight, bias, shape) -> torch.Tensor:
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _standardise(x: torch.Tensor, dims, eps: float) -> torch.Tensor:
    """``(x − μ) / √(σ² + ε)`` with the mean and the biased variance over ``dims``."""
    centred = x - x.mean(dims, keepdim=True)
    var = (centred * centred).mean(dims, keepdim=True)
    return centred * torch.rsqrt(var + eps)


def _layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    dims = tuple(range(-len(shape), 0))
    return _norm_affine(_standardise(input, dims, eps), weight, bias, shape)


def _batch_norm(input, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
    shape = (1, -1) + (1,) * (input.dim() - 2)
    if training or running_mean is None or running_var is None:
        y = _standardise(input, (0,) + tuple(range(2, input.dim())), eps)
    else:
        y = (input - running_mean.reshape(shape)) * torch.rsqrt(running_var.reshape(shape) + eps)
    return _norm_affine(y, weight, bias, shape)


def _instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                   momentum=0.1, eps=1e-5):
    shape = (1, -1) + (1,) * (input.dim() - 2)
    if use_input_stats or running_mean is None or running_var is None:
        y = _standardise(input, tuple(range(2, input.dim())), eps)
    else:
        y = (input - running_mean.reshape(shape)) * torch.rsqrt(running_var.reshape(shape) + eps)
    return _norm_affine(y, weight, bias, shape)


def _torch_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled=True):
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _torch_instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
                         cudnn_enabled=True):
    return _instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


#: functions whose nested forward-mode derivative is wrong in PyTorch, and their composite replacements
_REPLACEMENTS = {
    F.layer_norm: _layer_norm, torch.layer_norm: _layer_norm,
    F.batch_norm: _batch_norm, torch.batch_norm: _torch_batch_norm,
    F.instance_norm: _instance_norm, torch.instance_norm: _torch_instance_norm,
}


class _SecondOrderMode(TorchFunctionMode):
    """Evaluate the functions of :data:`_REPLACEMENTS` as compositions of elementary operations."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        replacement = _REPLACEMENTS.get(func)
        if replacement is not None:
            return replacement(*args, **kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def second_order_safe():
    """Context in which nested forward mode (hyper-dual evaluation) is correct for normalisation layers and
    attention; see the module docstring. Every evaluation of this module enters it."""
    with _SecondOrderMode(), sdpa_kernel(SDPBackend.MATH):
        yield


@contextlib.contextmanager
def _same_random_state(params: Params):
    """Yield ``reset()``, which puts the global random generators back to their state on entry.

    ``mode="loop"`` calls it before each pair so that every evaluation draws the same dropout mask.
    """
    ref = params if isinstance(params, torch.Tensor) else next(iter(params.values()), None)
    cuda = ref is not None and ref.device.type == "cuda"
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(ref.device) if cuda else None

    def reset():
        torch.set_rng_state(cpu_state)
        if cuda:
            torch.cuda.set_rng_state(cuda_state, ref.device)

    yield reset


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
    with second_order_safe():
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
    with second_order_safe():
        (value, d1), (d2, d12) = vmap(_pair_fn(f, params), out_dims=((None, 0), (0, 0)), randomness="same")(A, B)
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
            return vmap(lambda a: jvp(f, (p,), (a,)), out_dims=(None, 0), randomness="same")(T)  # f, d_i (K, ...)

        def outer(b):
            return jvp(inner, (params,), (b,))

        with second_order_safe():
            (value, d), (_, hcols) = vmap(outer, out_dims=((None, None), (0, 0)), randomness="same")(T)
        # hcols[j, i, ...] = v_jᵀ∇²f v_i
        H = hcols.movedim(0, -1).movedim(0, -2)
        H = 0.5 * (H + H.transpose(-1, -2))
        return DirectionalHessian(value, d.movedim(0, -1), H)
    i, j = pair_indices(k, device=V.device)
    if mode == "pairs":
        hd = hyperdual_pairs(f, params, V[..., i, :], V[..., j, :])
        diag = (i == j).nonzero().squeeze(-1)
        return DirectionalHessian(hd.value, hd.d1[..., diag], _symmetric_from_pairs(hd.d12, k))
    # loop over pairs (one hyper-dual evaluation each, all with the same random state)
    vals, ds, value = [], [None] * k, None
    with _same_random_state(params) as reset:
        for a, b in zip(i.tolist(), j.tolist()):
            reset()
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
    with second_order_safe():
        value, d = vmap(lambda a: jvp(f, (params,), (a,)), out_dims=(None, 0), randomness="same")(T)
    return value, d.movedim(0, -1)


def derivatives_1d(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
    """``f(x)``, ``f′(x)`` and ``f″(x)`` on a grid for an *elementwise* function (the blog's sin example).

    One hyper-dual evaluation with ``v₁ = v₂ = 1``: because ``f`` acts elementwise, its Jacobian and
    Hessian are diagonal and the ε₁ and ε₁ε₂ parts are exactly ``f′`` and ``f″`` at every grid point.
    """
    ones = torch.ones_like(x)
    with second_order_safe():
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


# ----------------------------------------------------------------------------- Hessian-vector products

def _flat_grad(g: Params) -> torch.Tensor:
    return g if isinstance(g, torch.Tensor) else torch.cat([t.reshape(-1) for t in g.values()])


def hvp(f: Callable, params: Params, v: torch.Tensor, *, mode: str = "reverse") -> HessianVectorProduct:
    """``f(θ)``, ``∇f(θ)`` and the Hessian-vector product ``∇²f(θ) v``.

    ``v``: a flat tangent, ``params.shape`` for tensor parameters (independent problems along the leading
    dims) or ``(n,)`` for a dict (the layout of :func:`frogcore.estimators.flatten`); the gradient and
    ``Hv`` come back in the same flat layout.

    ``mode="reverse"`` (default): forward-over-reverse, ``(∇f, ∇²f v) = jvp(∇f, (θ,), (v,))`` — one
    forward-mode pass through the gradient computation (Pearlmutter, "Fast exact multiplication by the
    Hessian", 1994). ``mode="forward"``: forward mode only, ``(∇²f v)_i = e_iᵀ∇²f v`` and ``(∇f)_i = ∇f·e_i``
    from ``n`` hyper-dual evaluations along the pairs ``(e_i, v)`` batched with ``vmap`` (``n`` times the
    cost; what the FoMoH authors' ``hvp`` does, here without a dual-number class).
    """
    check_choice("mode", mode, HVP_MODES)
    n = num_params(params)
    if v.shape[-1] != n:
        raise ValueError(f"v has dimension {v.shape[-1]} but the parameters have {n} entries")
    if mode == "forward":
        lead = params.shape[:-1] if isinstance(params, torch.Tensor) else ()
        eye = torch.eye(n, dtype=v.dtype, device=v.device).expand(*lead, n, n)
        hd = hyperdual_pairs(f, params, eye, v.unsqueeze(-2).expand(*lead, n, n))
        return HessianVectorProduct(hd.value, hd.d1, hd.d12)
    tangent = _to_tree(params, v, 0)

    def loss(p):
        value = f(p)
        return value.sum(), value

    def grad_and_value(p):
        return func_grad(loss, has_aux=True)(p)

    with second_order_safe():
        (g, value), (hv, _) = jvp(grad_and_value, (params,), (tangent,))
    return HessianVectorProduct(value, _flat_grad(g), _flat_grad(hv))
