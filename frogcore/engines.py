r"""Gradient engines: one training step with backprop, simulated forward gradients, or real forward mode.

An engine turns ``(model, loss_fn, x, y)`` into gradients stored in ``.grad`` of every trainable
parameter, so any ``torch.optim`` optimiser can take the step::

    engine = make_engine(mode="fwd", aggregation="projection", k=16, generator=g)
    loss = engine.step(model, loss_fn, x, y)   # sets p.grad for every trainable p
    optimizer.step()

Modes (``MODES``)
-----------------
``"bp"``   plain backpropagation (the reference).
``"sim"``  *simulated* forward gradients, exactly as the FROG authors run their network experiments:
           the true gradient comes from backprop, then the estimator
           (:func:`frogcore.estimators.aggregate`) is applied to the directional derivatives
           ``d_i = v_i · ∇`` along the sampled tangents.
``"fwd"``  *real* forward mode: the directional derivatives come from Jacobian-vector products
           (:func:`torch.func.jvp` through :func:`torch.func.functional_call`); no backward pass
           through the network for weight perturbation. The K tangents are batched with
           :func:`torch.func.vmap` (``fwd_impl="vmap"``) or evaluated one after the other
           (``fwd_impl="loop"``, the authors' real-forward-mode method); ``"auto"`` follows the
           measured rule of :func:`choose_fwd_impl` (``vmap`` over chunks of at most 32 MB of tangents).

With the same generator state ``sim`` and ``fwd`` sample the same tangents and give the same
update up to floating-point rounding; the tests check this for MLPs, ResNet18 and a ViT.

Perturbations (``PERTURBATIONS``)
---------------------------------
``"weight"``    tangents live in parameter space. ``tangents="global"``: one tangent over all
                parameters (in ``named_parameters()`` order); ``"per-layer"``: independent tangents
                for every module that owns parameters, each aggregated on its own (in forward mode
                this costs one JVP per layer and tangent); ``"per-tensor"``: the same with one group
                per parameter tensor (the FROG authors' simulated ``local_jvps``: each tensor's own
                tangents and directional derivatives ``V_p ∇_p L``; one JVP per tensor and tangent).
``"activity"``  ("node perturbation", the authors' setting for Sections 4.4/4.5) tangents live in the
                space of the block outputs named by ``model.block_names``: one tangent per block
                output, shared by all samples of the batch and concatenated across blocks into one
                global tangent (``"per-layer"`` and ``"per-tensor"``: one independent tangent per
                block). For every sample ``b`` the directional derivative is ``d_{b,i} = ⟨∂L/∂h_b, u_i⟩``
                (``h_b``: the sample's block outputs, ``L``: the batch loss), the estimator is applied per
                sample, and each block's weight gradient is the block-local backward (a vector-Jacobian
                product through that block only, its inputs held fixed) of its estimated activation gradient.
                Parameters after the last block (none in the shipped models) get their exact
                gradient from the backward through the loss head.

                In forward mode, samples are independent unless the model holds BatchNorm in training
                mode: then ``K`` JVPs (tangent shared by the batch) give every ``d_{b,i}``. Train-mode
                BatchNorm couples the samples of a batch, and ``⟨∂L/∂h_b, u⟩`` needs one JVP per sample
                and tangent (``B·K`` forward passes): an honest, large cost of real forward mode with
                activity perturbation on BatchNorm networks.

Tangent seeding (``SEEDINGS``)
------------------------------
``"stream"``       (default) the K tangents of a group are one ``(K, n)`` draw from ``generator``.
``"per-tangent"``  one integer ``s`` is drawn from ``generator`` per step; tangent ``i`` of group ``j`` is
                   then drawn alone, in chunks of :data:`TANGENT_CHUNK` entries, chunk ``c`` from a generator
                   seeded with :func:`tangent_seed` ``(s, j, i, c)`` (unit length afterwards with
                   ``normalize``). The set of tangents is the same whichever process draws which tangent,
                   and any whole-chunk coordinate range can be drawn alone: the tangent-parallel
                   engine (:mod:`frogcore.distributed`) splits the K tangents over processes and, for the
                   same generator seed, gives the update of a single-process engine with this seeding.
                   Both schemes give N(0, I) (or Rademacher) tangents; they are different draws.

Model state under forward mode
------------------------------
* BatchNorm: ``torch.func`` cannot update running statistics in place under ``vmap``; inside the JVP
  passes tracking is switched off (batch statistics are used, as in training), and the running
  statistics are updated exactly once per step by the primal pass, with PyTorch's own update rule.
* Dropout (``nn.Dropout*`` modules): masks are drawn once per step (primal pass, global RNG) and
  replayed in every JVP pass, so all tangents and the primal share one mask. Every mode draws its
  masks the same way, so ``sim`` and ``fwd`` match exactly even with dropout. Functional dropout
  calls inside a model's ``forward`` are not intercepted (``vmap`` then raises instead of silently
  using different masks).
* Attention: fused ``scaled_dot_product_attention`` kernels have no forward-mode derivative; JVP
  passes run under ``sdpa_kernel(SDPBackend.MATH)``.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.func import functional_call, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from .config import check_choice, check_positive_int
from .estimators import AGGREGATIONS, LINEAR_AGGREGATIONS, SCALABLE_AGGREGATIONS, aggregate
from .tangents import sample_tangents

MODES = ("bp", "sim", "fwd")
PERTURBATIONS = ("weight", "activity")
TANGENT_MODES = ("global", "per-layer", "per-tensor")
FWD_IMPLS = ("auto", "vmap", "loop")
ENGINE_SAMPLERS = ("normal", "rademacher")
SEEDINGS = ("stream", "per-tangent")
#: ``seeding="per-tangent"``: every tangent is drawn in chunks of this many entries, each chunk from its own seed
TANGENT_CHUNK = 1 << 16

__all__ = [
    "MODES", "PERTURBATIONS", "TANGENT_MODES", "FWD_IMPLS", "ENGINE_SAMPLERS", "SEEDINGS", "TANGENT_CHUNK",
    "Engine", "make_engine", "choose_fwd_impl", "auto_chunk", "parameter_groups", "block_modules", "tangent_seed",
]


# ----------------------------------------------------------------------------- model inspection

def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def parameter_groups(model: nn.Module, tangents: str = "global") -> list[list[str]]:
    """Parameter names grouped as the weight-perturbation tangents see them.

    ``"global"``: one group with every trainable parameter (``named_parameters()`` order);
    ``"per-layer"``: one group per module that directly owns trainable parameters;
    ``"per-tensor"``: one group per trainable parameter tensor.
    """
    check_choice("tangents", tangents, TANGENT_MODES)
    names = list(_trainable(model))
    if tangents == "global":
        return [names]
    if tangents == "per-tensor":
        return [[n] for n in names]
    groups = []
    for prefix, module in model.named_modules():
        own = [f"{prefix}.{n}" if prefix else n for n, p in module.named_parameters(recurse=False)
               if p.requires_grad]
        if own:
            groups.append(own)
    return groups


def block_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The activity-perturbation points ``model.block_names`` resolved to modules (validated)."""
    names = getattr(model, "block_names", None)
    if (not isinstance(names, (list, tuple)) or not names
            or not all(isinstance(n, str) for n in names)):
        raise ValueError(
            "perturbation='activity' needs model.block_names: a non-empty list of submodule names "
            f"(as in named_modules()) whose outputs are the perturbation points; got {names!r}")
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"model.block_names contains names that are not submodules: {missing}")
    if len(set(names)) != len(names):
        raise ValueError(f"model.block_names contains duplicates: {list(names)}")
    return [(n, modules[n]) for n in names]


def _active_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training]


def _tracking_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in _active_batchnorms(model) if m.track_running_stats]


def _active_dropouts(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _DropoutNd) and m.training and m.p > 0]


#: ``fwd_impl="auto"`` batches at most this many tangent elements per ``vmap`` call (32 MB in
#: float32), and never fewer than :data:`AUTO_CHUNK_MIN` directions; see :func:`auto_chunk`
AUTO_CHUNK_ELEMENTS = 1 << 23
AUTO_CHUNK_MIN = 4


def auto_chunk(k: int, direction_elements: int) -> int:
    """Directions per ``vmap`` call under ``fwd_impl="auto"`` (when no ``chunk_size`` is given).

    ``AUTO_CHUNK_ELEMENTS // direction_elements``, clipped to ``[AUTO_CHUNK_MIN, max(k, 16)]`` (the
    upper end is the ``fwd_impl="vmap"`` default). Large models get chunks of 4 tangents (FC-1024:
    1.9 M parameters per weight tangent; ResNet18 11.2 M; the ViT 3.2 M); small tangents (activity
    perturbation, the shrunk models of the default profile) keep the unchunked batch. Measured rule,
    see :func:`choose_fwd_impl`.
    """
    k = check_positive_int("k", k)
    direction_elements = check_positive_int("direction_elements", direction_elements)
    return max(AUTO_CHUNK_MIN, min(max(k, 16), AUTO_CHUNK_ELEMENTS // direction_elements))


def choose_fwd_impl(model: nn.Module) -> str:
    """The ``fwd_impl="auto"`` rule: ``"vmap"``, in chunks of :func:`auto_chunk` directions.

    Measured on the idle 2-core development CPU, one torch thread, K = 16, one configuration per
    process (book/performance.md). With all K tangents in one ``vmap`` call the paper-size ViT (6×256)
    is *slower* than the per-tangent loop (weight perturbation 18 s vs 13 s per step: K batched copies of
    every activation no longer fit in cache), while ``vmap`` over chunks of 4 tangents beats the loop on
    the large models — weight perturbation FC-1024 0.39 vs 0.46 s, ResNet18 4.4 vs 6.8 s, ViT 10.0 vs
    13.0 s; activity perturbation ViT 8.3 vs 13.9 s. With small tangents the unchunked batch is best
    (activity-perturbed FC-1024: 0.07 s unchunked, 0.09 s in chunks of 4, 0.19 s loop; the default
    profile's small ResNet18 with per-sample BatchNorm JVPs: chunks of 4 were 1.8× slower than 16), hence
    the size-dependent chunk. ``fwd_impl="vmap"`` batches ``max(k, 16)`` directions per call unless
    ``chunk_size`` says otherwise; the loop (``fwd_impl="loop"``, the authors' method) holds one tangent
    at a time. The function takes the model so that a model-dependent rule (e.g. for GPUs) can be
    added when measurements call for one.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return "vmap"


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of the SplitMix64 mixer (Steele, Lea & Flood 2014): a bijection of 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def tangent_seed(step_seed: int, group: int, index: int, chunk: int = 0) -> int:
    """Seed of entries ``[chunk·C, (chunk+1)·C)`` (``C`` = :data:`TANGENT_CHUNK`) of tangent ``index`` of tangent
    group ``group`` in a step whose seed is ``step_seed``.

    ``seeding="per-tangent"`` draws one ``step_seed`` per step from the engine's generator and then every
    chunk of every tangent from its own ``torch.Generator`` seeded with
    ``h(h(h(h(step_seed) ⊕ group) ⊕ index) ⊕ chunk) mod 2⁶³`` (``h``: SplitMix64), so tangent ``i`` does not
    depend on which other tangents are drawn, nor by which process, and any coordinate range of it can be
    drawn alone (the basis of :mod:`frogcore.distributed`). Groups are numbered in the order the engine
    samples them in a step.
    """
    for name, value in (("step_seed", step_seed), ("group", group), ("index", index), ("chunk", chunk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    h = _splitmix64(step_seed & _MASK64)
    h = _splitmix64(h ^ group)
    h = _splitmix64(h ^ index)
    return _splitmix64(h ^ chunk) & ((1 << 63) - 1)


# ----------------------------------------------------------------------------- context managers

@contextlib.contextmanager
def _batchnorm_frozen(model: nn.Module):
    """Train-mode BatchNorm with running-stat tracking off (batch statistics, no in-place update)."""
    bns = _tracking_batchnorms(model)
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


class _DropoutMasks:
    """Draw dropout masks once (``record``) and replay them in every later pass (``replay``)."""

    def __init__(self, model: nn.Module):
        self.modules = _active_dropouts(model)
        self.masks: dict[int, list[torch.Tensor]] = {id(m): [] for m in self.modules}
        self.cursor: dict[int, int] = {}

    @staticmethod
    def _draw(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - m.p
        if isinstance(m, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
            spatial = {nn.Dropout1d: 1, nn.Dropout2d: 2, nn.Dropout3d: 3}[type(m)]
            shape = x.shape[: x.dim() - spatial] + (1,) * spatial
        else:
            shape = x.shape
        return torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep) / keep

    @contextlib.contextmanager
    def active(self, record: bool):
        if not self.modules:
            yield
            return
        self.cursor = {id(m): 0 for m in self.modules}

        def make(m):
            def forward(x):
                key = id(m)
                if record:
                    mask = self._draw(m, x)
                    self.masks[key].append(mask)
                else:
                    recorded = self.masks[key]
                    if not recorded:
                        raise RuntimeError("a dropout module ran in a JVP pass but not in the primal pass")
                    i = self.cursor[key]
                    mask = recorded[i % len(recorded)]  # cycles: every pass replays the same masks
                    self.cursor[key] = i + 1
                return x * mask
            return forward

        for m in self.modules:
            m.forward = make(m)
        try:
            yield
        finally:
            for m in self.modules:
                del m.forward


@contextlib.contextmanager
def _forward_mode_context(model: nn.Module):
    with _batchnorm_frozen(model), sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        yield


# ----------------------------------------------------------------------------- the engine

@dataclass
class Engine:
    """A configured gradient engine (see :func:`make_engine` for the options; constructing it directly
    validates them the same way)."""

    mode: str = "fwd"
    aggregation: str = "mean"
    k: int = 1
    perturbation: str = "weight"
    tangents: str = "global"
    fwd_impl: str = "auto"
    generator: torch.Generator | None = None
    scale: bool = False
    sampler: str = "normal"
    normalize: bool = False
    chunk_size: int | None = None
    seeding: str = "stream"
    # per-step state of seeding="per-tangent": the step seed and the index of the next tangent group
    _step_seed: int | None = field(default=None, init=False, repr=False, compare=False)
    _group: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        self.k = check_positive_int("k", self.k)
        check_choice("perturbation", self.perturbation, PERTURBATIONS)
        check_choice("tangents", self.tangents, TANGENT_MODES)
        check_choice("fwd_impl", self.fwd_impl, FWD_IMPLS)
        check_choice("sampler", self.sampler, ENGINE_SAMPLERS)
        check_choice("seeding", self.seeding, SEEDINGS)
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None; got {type(self.generator).__name__}")
        if not isinstance(self.scale, bool):
            raise ValueError(f"scale must be True or False; got {self.scale!r}")
        if self.scale and self.aggregation not in SCALABLE_AGGREGATIONS:
            raise ValueError(f"scale=True has no closed-form correction for aggregation={self.aggregation!r}; "
                             f"aggregations with one: {', '.join(repr(a) for a in SCALABLE_AGGREGATIONS)}")
        if not isinstance(self.normalize, bool):
            raise ValueError(f"normalize must be True or False; got {self.normalize!r}")
        if self.chunk_size is not None:
            self.chunk_size = check_positive_int("chunk_size", self.chunk_size)

    # ------------------------------------------------------------------ public
    def step(self, model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Compute the gradient estimate into ``p.grad`` for every trainable parameter.

        ``loss_fn(output, y)`` must return the scalar batch loss (e.g. ``F.cross_entropy``). Existing
        ``.grad`` values are replaced, not accumulated. Returns the batch loss (a detached scalar).
        """
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable as loss_fn(output, y) -> scalar")
        params = _trainable(model)
        if not params:
            raise ValueError("model has no trainable parameters")
        for p in params.values():
            p.grad = None
        self._group = 0
        self._step_seed = self._draw_step_seed() if self.mode != "bp" and self.seeding == "per-tangent" else None
        if self.mode == "bp":
            loss = self._step_bp(model, loss_fn, x, y)
        elif self.perturbation == "weight":
            loss = (self._step_sim_weight if self.mode == "sim" else self._step_fwd_weight)(
                model, loss_fn, x, y, params)
        else:
            loss = self._step_activity(model, loss_fn, x, y, params)
        for p in params.values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return loss.detach()

    # ------------------------------------------------------------------ helpers
    def _draw_step_seed(self) -> int:
        """One draw from the engine's generator (the global RNG without one) per step."""
        g = self.generator
        dev = g.device if g is not None else torch.device("cpu")
        return int(torch.randint(0, 1 << 62, (1,), generator=g, device=dev).item())

    def _sample(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """The tangents ``(K, n)`` of the next tangent group of this step (``like``: dtype and device)."""
        group = self._group
        self._group += 1
        if self.seeding == "per-tangent":
            return self._sample_rows(n, like, group, range(self.k))
        dev = self.generator.device if self.generator is not None else like.device
        v = sample_tangents(n, self.k, sampler=self.sampler, normalize=self.normalize,
                            generator=self.generator, dtype=like.dtype, device=dev)
        return v.to(like.device)

    def _sample_rows(self, n: int, like: torch.Tensor, group: int, indices: Sequence[int]) -> torch.Tensor:
        """Tangents ``indices`` of ``group`` under ``seeding="per-tangent"`` (normalised if asked)."""
        out = self._sample_block(n, like, group, indices, 0, n)
        if self.normalize:
            out /= out.norm(dim=-1, keepdim=True)
        return out.to(like.device)

    def _sample_block(self, n: int, like: torch.Tensor, group: int, indices: Sequence[int], start: int,
                      stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Entries ``[start, stop)`` of the (unnormalised) per-tangent tangents ``indices`` of ``group``.

        ``start`` must be a multiple of :data:`TANGENT_CHUNK` and ``stop`` one or ``n``; every chunk comes
        from its own generator (:func:`tangent_seed`). On the generator's device (``like``'s without one),
        written into ``out`` (rows of stride-1 entries on that device) when given.
        """
        dev = self.generator.device if self.generator is not None else like.device
        if out is None:
            out = torch.empty(len(indices), stop - start, dtype=like.dtype, device=dev)
        for row, i in zip(out, indices):
            for c in range(start // TANGENT_CHUNK, -(-stop // TANGENT_CHUNK)):
                lo, hi = c * TANGENT_CHUNK, min((c + 1) * TANGENT_CHUNK, n)
                g = torch.Generator(device=dev).manual_seed(tangent_seed(self._step_seed, group, i, c))
                part = row[lo - start:hi - start]
                if self.sampler == "normal":  # in place: the numbers of sample_tangents(hi - lo, 1), no copy
                    torch.randn(hi - lo, generator=g, out=part)
                else:
                    part.copy_(sample_tangents(hi - lo, 1, sampler=self.sampler, generator=g, dtype=like.dtype,
                                               device=dev)[0])
        return out

    def _combine(self, d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The estimate from directional derivatives ``d`` along tangents ``v`` ``(K, n)``.

        ``d`` is ``(K,)`` (weight perturbation; returns ``(n,)``) or ``(B, K)`` (activity perturbation,
        one row per sample; returns ``(B, n)``). :class:`frogcore.distributed.TangentParallelEngine`
        overrides this (and :meth:`_sample`) to combine the tangents held by several processes.
        """
        kw = {"scale": self.scale, "normalized": self.normalize}
        if d.dim() == 1:
            return aggregate(d, v, self.aggregation, **kw)
        if self.aggregation not in LINEAR_AGGREGATIONS:  # max, max_normalized, mean_of_top_k: per sample
            return aggregate(d, v.expand(d.shape[0], *v.shape), self.aggregation, **kw)
        # a linear aggregator: est_b = d_b @ M with M = aggregate(I, V)
        k = v.shape[0]
        eye = torch.eye(k, dtype=v.dtype, device=v.device)
        basis = aggregate(eye, v.expand(k, *v.shape), self.aggregation, **kw)  # (K, n)
        return d @ basis

    def _impl(self, model: nn.Module) -> str:
        return choose_fwd_impl(model) if self.fwd_impl == "auto" else self.fwd_impl

    def _chunk(self, total: int, direction_elements: int) -> int:
        if self.chunk_size:
            return min(total, self.chunk_size)
        if self.fwd_impl == "auto":
            return min(total, auto_chunk(self.k, max(1, direction_elements)))
        return min(total, max(self.k, 16))

    def _jvp_all(self, func: Callable, primal, directions: torch.Tensor | dict, impl: str) -> torch.Tensor:
        """Directional derivatives of ``func`` at ``primal`` along a batch of directions.

        ``directions`` is a tensor or dict of tensors whose leading dimension indexes the
        directions; returns the primal output and the tangents ``(n_directions, *out_shape)``.
        """
        def one(t):
            return jvp(func, (primal,), (t,))

        leaves = list(directions.values()) if isinstance(directions, dict) else [directions]
        total = leaves[0].shape[0]
        if impl == "vmap" and total > 1:  # a single direction needs no batching
            per_direction = sum(t.numel() for t in leaves) // total
            out, tan = vmap(one, chunk_size=self._chunk(total, per_direction))(directions)
            return out[0], tan
        outs = []
        for i in range(total):
            t = {n: v[i] for n, v in directions.items()} if isinstance(directions, dict) else directions[i]
            out, tan = one(t)
            outs.append(tan)
        return out, torch.stack(outs)

    # ------------------------------------------------------------------ bp
    def _step_bp(self, model, loss_fn, x, y):
        masks = _DropoutMasks(model)
        with masks.active(record=True):
            loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    # ------------------------------------------------------------------ weight perturbation
    def _groups(self, model, params):
        return [[(n, params[n]) for n in g] for g in parameter_groups(model, self.tangents)]

    def _step_sim_weight(self, model, loss_fn, x, y, params):
        masks = _DropoutMasks(model)
        with masks.active(record=True):
            loss = loss_fn(model(x), y)
        names = list(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        grads = {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)}
        for group in self._groups(model, params):
            flat = torch.cat([grads[n].reshape(-1) for n, _ in group])
            v = self._sample(flat.numel(), flat)
            est = self._combine(v @ flat, v)
            self._assign(group, est)
        return loss

    @staticmethod
    def _assign(group, flat_est):
        start = 0
        for _, p in group:
            size = p.numel()
            p.grad = flat_est[start:start + size].reshape(p.shape).detach().clone()
            start += size

    def _step_fwd_weight(self, model, loss_fn, x, y, params):
        impl = self._impl(model)
        masks = _DropoutMasks(model)
        primal_loss = None
        if _tracking_batchnorms(model) or masks.modules:
            # the primal pass: running statistics updated once, dropout masks drawn once
            with torch.no_grad(), masks.active(record=True):
                primal_loss = loss_fn(model(x), y)
        for group in self._groups(model, params):
            prim = {n: p.detach() for n, p in group}
            v = self._sample(sum(p.numel() for _, p in group), next(iter(prim.values())))
            spec = [(n, p.shape) for n, p in group]
            dirs, start = {}, 0
            for n, shape in spec:
                size = math.prod(shape)
                dirs[n] = v[:, start:start + size].reshape(v.shape[0], *shape)  # views, no copy
                start += size

            def func(pp):
                return loss_fn(functional_call(model, pp, (x,)), y)

            with _forward_mode_context(model), masks.active(record=False):
                loss, d = self._jvp_all(func, prim, dirs, impl)
            if primal_loss is None:
                primal_loss = loss
            est = self._combine(d, v)
            self._assign(group, est)
        return primal_loss

    # ------------------------------------------------------------------ activity perturbation
    def _primal_cut_pass(self, model, blocks, x, masks):
        """Forward with the graph cut at every block output (leaves ``a_l``); returns output, records."""
        records: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(blocks)
        handles = []

        def make(i):
            def hook(mod, inp, out):
                if not isinstance(out, torch.Tensor):
                    raise ValueError(f"block {blocks[i][0]!r} must return a plain tensor; got {type(out).__name__}")
                if records[i] is not None:
                    raise ValueError(f"block {blocks[i][0]!r} ran more than once in one forward pass")
                a = out.detach().requires_grad_(True)
                records[i] = (out, a)
                return a
            return hook

        for i, (_, m) in enumerate(blocks):
            handles.append(m.register_forward_hook(make(i)))
        try:
            with torch.enable_grad(), masks.active(record=True):
                out = model(x)
        finally:
            for h in handles:
                h.remove()
        missing = [blocks[i][0] for i, r in enumerate(records) if r is None]
        if missing:
            raise ValueError(f"blocks {missing} from model.block_names did not run in the forward pass")
        return out, records

    def _activity_groups(self, nblocks):
        return [list(range(nblocks))] if self.tangents == "global" else [[i] for i in range(nblocks)]

    def _step_activity(self, model, loss_fn, x, y, params):
        blocks = block_modules(model)
        masks = _DropoutMasks(model)
        out, records = self._primal_cut_pass(model, blocks, x, masks)
        loss = loss_fn(out, y)
        leaves = [a for _, a in records]
        names = list(params)
        plist = [params[n] for n in names]
        # backward through the loss head only (graph is cut at the block outputs)
        head = torch.autograd.grad(loss, leaves + plist, allow_unused=True)
        g_head, g_post = list(head[: len(leaves)]), head[len(leaves):]
        for p, g in zip(plist, g_post):  # parameters after the last block: exact gradient
            if g is not None:
                p.grad = g.detach().clone()
        B = records[0][1].shape[0]
        feat_shapes = [a.shape[1:] for a in leaves]
        feat_sizes = [math.prod(s) for s in feat_shapes]

        if self.mode == "sim":
            true = self._true_activation_grads(records, g_head)
        else:
            true = None
            impl = self._impl(model)
            coupled = bool(_active_batchnorms(model))

        estimates: list[torch.Tensor | None] = [None] * len(blocks)
        for group in self._activity_groups(len(blocks)):
            n_g = sum(feat_sizes[i] for i in group)
            u = self._sample(n_g, leaves[0])  # (K, n_g), shared by all samples
            if self.mode == "sim":
                flat = torch.cat([true[i].reshape(B, -1) for i in group], dim=1)  # (B, n_g)
                d = flat @ u.T  # (B, K)
            else:
                d = self._activity_jvp(model, x, blocks, records, g_head, group, u, feat_shapes,
                                       masks, impl, coupled)
            est = self._combine(d, u)  # (B, n_g)
            start = 0
            for i in group:
                estimates[i] = est[:, start:start + feat_sizes[i]].reshape(B, *feat_shapes[i])
                start += feat_sizes[i]

        # block-local backward of every block's estimated activation gradient
        for i, (h, _) in enumerate(records):
            if not h.requires_grad:
                continue
            gs = torch.autograd.grad(h, plist, estimates[i], retain_graph=True, allow_unused=True)
            for p, g in zip(plist, gs):
                if g is not None:
                    p.grad = g.detach().clone() if p.grad is None else p.grad + g
        return loss

    @staticmethod
    def _true_activation_grads(records, g_head):
        """Backprop chained block by block through the cut graph: ∂L/∂h_l for every block."""
        acc = [None if g is None else g.detach().clone() for g in g_head]
        leaves = [a for _, a in records]
        for i in range(len(records) - 1, -1, -1):
            h, a = records[i]
            if acc[i] is None:
                acc[i] = torch.zeros_like(a)
            if i == 0 or not h.requires_grad:
                continue
            gs = torch.autograd.grad(h, leaves[:i], acc[i], retain_graph=True, allow_unused=True)
            for j, g in enumerate(gs):
                if g is not None:
                    acc[j] = g.detach().clone() if acc[j] is None else acc[j] + g
        return acc

    def _activity_jvp(self, model, x, blocks, records, g_head, group, u, feat_shapes, masks, impl, coupled):
        """Per-sample directional derivatives ``d_{b,i} = ⟨∂L/∂h_b, u_i⟩`` by forward mode, (B, K)."""
        B = records[0][1].shape[0]
        K = u.shape[0]
        read = [i for i, g in enumerate(g_head) if g is not None]  # block outputs the loss head reads
        heads = {i: g_head[i].detach() for i in read}
        sizes = [math.prod(feat_shapes[i]) for i in group]
        splits = list(torch.split(u, sizes, dim=1))
        tangent = {i: s.reshape(K, *feat_shapes[i]) for i, s in zip(group, splits)}  # (K, *feat)

        def func(deltas):
            captured = {}
            handles = []

            def make(i):
                def hook(mod, inp, out):
                    if i in deltas:
                        out = out + deltas[i]
                    if i in heads:
                        captured[i] = out
                    return out
                return hook

            for i, (_, m) in enumerate(blocks):
                if i in deltas or i in heads:
                    handles.append(m.register_forward_hook(make(i)))
            try:
                model(x)
            finally:
                for h in handles:
                    h.remove()
            s = sum((heads[i] * captured[i]).reshape(B, -1).sum(1) for i in read)
            return s if not coupled else s.sum()

        with _forward_mode_context(model), masks.active(record=False):
            if not coupled:
                # tangent shared by all samples: one JVP per tangent gives d_{b,i} for every b
                primal = {i: torch.zeros(feat_shapes[i], dtype=u.dtype, device=u.device) for i in group}
                d = self._jvp_all(func, primal, tangent, impl)[1]  # (K, B)
                return d.T
            # train-mode BatchNorm couples the samples: one JVP per (sample, tangent)
            primal = {i: torch.zeros(B, *feat_shapes[i], dtype=u.dtype, device=u.device) for i in group}
            eye = torch.eye(B, dtype=u.dtype, device=u.device)
            dirs = {}
            for i in group:
                t = tangent[i]  # (K, *feat)
                f = t.shape[1:]
                dirs[i] = (eye.reshape(B, 1, B, *([1] * len(f))) * t.reshape(1, K, 1, *f)).reshape(B * K, B, *f)
            d = self._jvp_all(func, primal, dirs, impl)[1]  # (B*K,)
            return d.reshape(B, K)


def make_engine(
    mode: str = "fwd",
    aggregation: str = "mean",
    k: int = 1,
    perturbation: str = "weight",
    tangents: str = "global",
    fwd_impl: str = "auto",
    generator: torch.Generator | None = None,
    scale: bool = False,
    *,
    sampler: str = "normal",
    normalize: bool = False,
    chunk_size: int | None = None,
    seeding: str = "stream",
) -> Engine:
    """Build a gradient engine (see the module docstring for the meaning of every option).

    Parameters
    ----------
    mode : ``"bp" | "sim" | "fwd"``
    aggregation : ``"single" | "mean" | "sum" | "projection"`` (ignored by ``"bp"``)
    k : number of tangents per step (per layer/tensor/block with ``tangents="per-layer"``/``"per-tensor"``)
    perturbation : ``"weight" | "activity"``
    tangents : ``"global" | "per-layer" | "per-tensor"``
    fwd_impl : ``"auto" | "vmap" | "loop"`` (forward mode only)
    generator : ``torch.Generator`` for the tangents (its device is where they are sampled)
    scale : apply the estimator's length correction (off in all of the authors' experiments)
    sampler : ``"normal"`` (the paper's N(0, I)) or ``"rademacher"``
    normalize : unit-length tangents
    chunk_size : directions per ``vmap`` call (default: :func:`auto_chunk` for ``fwd_impl="auto"``,
        ``max(k, 16)`` for ``"vmap"``)
    seeding : ``"stream"`` (all K tangents of a group in one draw from ``generator``) or
        ``"per-tangent"`` (every tangent from its own seed, :func:`tangent_seed`; the scheme of the
        tangent-parallel engine, :mod:`frogcore.distributed`)

    Every option is validated by :class:`Engine` itself (a ``ValueError`` naming the parameter).
    """
    return Engine(mode=mode, aggregation=aggregation, k=k, perturbation=perturbation, tangents=tangents,
                  fwd_impl=fwd_impl, generator=generator, scale=scale, sampler=sampler,
                  normalize=normalize, chunk_size=chunk_size, seeding=seeding)
