r"""Tangent-parallel forward gradients: the K tangents of a step split over processes (``torch.distributed``).

The K directional derivatives of a multi-tangent forward gradient (FROG, Flügel et al., arXiv 2410.17764,
Section 3) are independent of each other: that is the paper's argument against backpropagation's
sequential backward pass. :class:`TangentParallelEngine` runs them ``W`` ways. Every process (rank) holds
a full replica of the model and the same mini-batch, draws and evaluates only its own share of the
tangents, and the ranks then combine what the aggregation needs. Launch with ``torchrun`` (gloo on CPUs,
NCCL on GPUs); :func:`init_from_env` sets up the process group, :func:`run_local` starts ``W`` local
processes from Python (tests, benchmarks)::

    torchrun --nproc-per-node 2 -m frogcore.experiments.tangent_parallel --tangent-parallel --k 16

Tangents
--------
Rank ``r`` owns the contiguous block of tangent indices :func:`tangent_shard` ``(K, W, r)`` (the first
``K mod W`` ranks one more). Tangents come from per-tangent seeds (``seeding="per-tangent"`` of
:mod:`frogcore.engines`): one step seed ``s`` is drawn per step from the engine's generator, identically
on every rank, and chunk ``c`` (entries ``[cC, (c+1)C)``, ``C`` = :data:`frogcore.engines.TANGENT_CHUNK`)
of tangent ``i`` of tangent group ``j`` from a generator seeded with
:func:`frogcore.engines.tangent_seed` ``(s, j, i, c)``. The union of the ranks' tangents is therefore
exactly the tangent set of a single-process engine built with ``seeding="per-tangent"`` and the same
generator seed, and the update equals that engine's update up to floating-point rounding (the tests check
this); and any rank can draw any coordinate range of any tangent. On GPUs this needs the same GPU model on
every rank (CUDA random numbers depend on the launch configuration). The first step checks that all ranks
drew the same step seed.

Combining (notation: ``g`` the gradient, ``V ∈ R^{K×n}`` the tangents, ``d = V g``; rank ``r`` holds the
rows ``V_r`` and ``d_r``; for activity perturbation ``d`` has one row per sample, ``D ∈ R^{B×K}``)
-----------------------------------------------------------------------------------------------------
* ``mean`` / ``sum`` / ``single`` / ``mean_times_dim``: ``ĝ = w Σ_i d_i v_i`` with ``w = 1/K``, ``1``, only
  ``i = 0``, resp. ``n/K``, so rank ``r`` forms its partial sum ``w Σ_{i∈r} d_i v_i`` and **one all-reduce**
  (``n`` numbers; ``B·n`` for activity perturbation) gives ``ĝ`` on every rank.
* ``max`` / ``max_normalized`` / ``mean_of_top_k`` select tangents by ``d_i`` and ``‖v_i‖`` and return
  ``ĝ = Σ_i α_i v_i``: one all-reduce collects all ``d`` and ``‖v_i‖`` (``B·K + K`` numbers), every rank
  evaluates the estimator on the stand-in tangents ``diag(‖v_1‖, …, ‖v_K‖)`` (the same lengths and
  derivatives, hence the same selection), which gives ``α_i ‖v_i‖``; then one all-reduce of
  ``Σ_{i∈r} α_i v_i`` as for the mean.
* ``projection``: ``ĝ = V^T (V V^T)^{-1} d = Σ_r V_r^T c_r`` with ``c = G^{-1} d`` and the Gram matrix
  ``G = V V^T`` (``K×K``), which needs every pair of tangents. Strategies (``GRAM_STRATEGIES``):

  - ``"regenerate"``: rank ``r`` draws again, from the per-tangent chunk seeds, the other ranks' tangents
    on its own coordinate slice ``S_r`` (:func:`coordinate_shard`: a contiguous ``1/W`` of the chunks), so it
    holds ``V[:, S_r]`` of *all* K tangents without receiving any of them (``(K - K_r)·|S_r|`` extra random
    numbers). Each rank forms its share ``V[:, S_r] V[:, S_r]^T`` of the Gram matrix (``K² n / W``
    multiply-adds: the Gram work is split too); **one all-reduce** of ``K² + K`` numbers (``K² + B·K``; ``K``
    more with ``normalize=True``, for the lengths) sums the shares and collects ``d``; every rank solves
    ``G c = d`` (Cholesky of the unit-diagonal Gram ``S^{-1} G S^{-1}``, ``S = diag(√G_ii)``, so the solve
    does not depend on the tangents' lengths); **one all-reduce** of ``V_r^T c_r`` (``n``, resp. ``B·n``)
    gives ``ĝ``. Where Cholesky fails or the unit Gram's condition bound ``(max L_ii / min L_ii)²`` exceeds
    10³ (float32) / 10⁸ (float64), or ``2K > n``, all ranks fall back to ``"gather"`` (the same decision
    everywhere, since ``G`` is the same), whose :func:`frogcore.linalg.project` uses QR (and SVD for
    dependent tangents).
  - ``"transpose"``: as ``"regenerate"``, but ``V[:, S_r]`` arrives by an asynchronous all-to-all started
    right after sampling (it overlaps the JVPs where the backend allows, e.g. NCCL): ``K_r·|S_s|`` numbers
    sent to every other rank ``s``.
  - ``"gather"``: every rank receives all K tangents and all of ``d`` (``K n + K`` numbers, resp.
    ``K n + B K``) and computes exactly what the single-process engine computes (the same code path:
    :func:`frogcore.estimators.aggregate`); no further communication. The Gram work ``K² n`` is
    repeated on every rank. On gloo the gather is a zero-padded all-reduce, because gloo's all-gather is
    several times slower than an all-reduce of the same total size
    (``benchmarks/bench_distributed.py --collectives``); NCCL uses ``all_gather_into_tensor``.
  - ``"auto"`` (:func:`choose_gram`): ``"gather"`` when ``2K > n``, else ``"regenerate"``. Chosen by
    ``benchmarks/bench_distributed.py --ks 64 --grams gather regenerate transpose`` (weight and activity
    perturbation, FC-1024, W = 2 on the 2-core development CPU): ``"regenerate"`` had the lowest CPU time
    per step for both; ``"gather"`` repeats the whole Gram work on every rank and, for weight tangents,
    moves all of them; ``"transpose"`` pays more CPU for the transfer than ``"regenerate"`` for drawing the
    same numbers again.

Per-layer (and per-tensor) tangents fall out naturally: every tangent group is sharded and combined on its
own (one set of collectives per group). ``mode="sim"`` works too (the true gradient comes from a replicated
backprop). Data parallelism is orthogonal and not built in: the ranks of one tangent-parallel group share
the batch.

Communication per step (numbers per rank; ``n`` parameters, or ``B·n_a`` activations for activity
perturbation) is returned by :func:`communication_volume` and recorded for every step in
``engine.comm_log``; data-parallel backprop (DDP) all-reduces the ``n`` gradient numbers once per step.

Failures
--------
Every collective runs under the process group's timeout (``init_from_env(timeout_s=...)``); an error
there (a peer died, or stopped answering) raises :class:`TangentParallelError` naming the collective,
the rank and the step, instead of hanging. :func:`check_replicas` verifies that the model replicas are
still identical (e.g. after every epoch).
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import engines as _engines
from .config import check_choice, check_positive_int
from .engines import Engine
from .estimators import scale_factor

GRAM_STRATEGIES = ("auto", "gather", "regenerate", "transpose")
#: aggregations whose weight on tangent i is known to its rank alone: partial sums, one all-reduce
WEIGHTED_AGGREGATIONS = ("single", "mean", "sum", "mean_times_dim")
BACKENDS = ("auto", "gloo", "nccl")
#: the Cholesky condition bound (on the unit-diagonal Gram) above which the slices path falls back to gather
_GRAM_COND_LIMIT = {torch.float32: 1e3, torch.float64: 1e8}

__all__ = [
    "GRAM_STRATEGIES", "WEIGHTED_AGGREGATIONS", "BACKENDS",
    "TangentParallelEngine", "TangentParallelError", "LocalRunError",
    "make_tangent_parallel_engine", "tangent_shard", "coordinate_shard", "choose_gram", "communication_volume",
    "init_from_env", "run_local", "check_replicas",
]


class TangentParallelError(RuntimeError):
    """A collective of the tangent-parallel engine failed (a peer died, timed out, or disagrees)."""


class LocalRunError(RuntimeError):
    """One or more processes started by :func:`run_local` failed; ``failures`` maps rank → message."""

    def __init__(self, message: str, failures: dict[int, str], exitcodes: dict[int, int | None]):
        super().__init__(message)
        self.failures = failures
        self.exitcodes = exitcodes


# ----------------------------------------------------------------------------- sharding and rules

def tangent_shard(k: int, world_size: int, rank: int) -> range:
    """The contiguous block of ``range(k)`` that ``rank`` of ``world_size`` owns.

    Blocks are as even as possible: the first ``k mod world_size`` ranks get ``⌈k/W⌉`` indices, the others
    ``⌊k/W⌋``.
    """
    k = check_positive_int("k", k, minimum=0)
    world_size = check_positive_int("world_size", world_size)
    rank = check_positive_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
    base, extra = divmod(k, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def coordinate_shard(n: int, world_size: int, rank: int) -> range:
    """The coordinates of ``n`` whose share of the Gram matrix ``rank`` computes: the chunks
    :func:`tangent_shard` ``(⌈n/C⌉, W, rank)`` of ``C`` = :data:`frogcore.engines.TANGENT_CHUNK` entries, so
    that the slice can be drawn again from the per-tangent chunk seeds (empty when there are fewer chunks
    than ranks)."""
    n = check_positive_int("n", n, minimum=0)
    size = _engines.TANGENT_CHUNK
    chunks = tangent_shard(-(-n // size), world_size, rank)
    return range(min(chunks.start * size, n), min(chunks.stop * size, n))


def choose_gram(k: int, n: int) -> str:
    """The ``gram="auto"`` rule: ``"gather"`` if ``2k > n``, else ``"regenerate"`` (measured; module docstring).

    ``2k > n``: the single-process projection uses QR there (:func:`frogcore.linalg.project`), which needs
    the tangents themselves.
    """
    k = check_positive_int("k", k)
    n = check_positive_int("n", n)
    return "gather" if 2 * k > n else "regenerate"


def communication_volume(aggregation: str, k: int, n: int, world_size: int, *, rows: int = 1,
                         gram: str = "regenerate", normalize: bool = False) -> dict[str, int]:
    """Numbers in the collectives of one tangent group's combine step (what ``engine.comm_log`` records).

    ``n``: tangent dimension (parameters for weight perturbation, activations per sample for activity
    perturbation); ``rows``: estimate rows (1, or the batch size ``B`` for activity perturbation);
    ``gram``: ``"gather"``, ``"regenerate"`` or ``"transpose"`` (the strategy actually used, after
    :func:`choose_gram`); ``normalize``: unit-length tangents (``"regenerate"`` then also sums the lengths).
    Keys: ``"all_reduce"`` (total size of the all-reduced buffers), ``"all_to_all"`` (numbers rank 0 sends
    to the others), ``"gather"`` (numbers of the gathered tangents and derivatives). A ring all-reduce of
    ``m`` numbers sends ``2 m (W-1)/W`` per rank.
    """
    from .estimators import AGGREGATIONS

    check_choice("aggregation", aggregation, AGGREGATIONS)
    check_choice("gram", gram, ("gather", "regenerate", "transpose"))
    k, n = check_positive_int("k", k), check_positive_int("n", n)
    world_size, rows = check_positive_int("world_size", world_size), check_positive_int("rows", rows)
    none = {"all_reduce": 0, "all_to_all": 0, "gather": 0}
    if world_size == 1:
        return none
    if aggregation in WEIGHTED_AGGREGATIONS:
        return dict(none, all_reduce=rows * n)
    if aggregation != "projection":  # selection aggregators: derivatives and lengths, then the partial sums
        return dict(none, all_reduce=rows * k + k + rows * n)
    if gram == "gather" or 2 * k > n:
        return dict(none, gather=k * n + rows * k)
    reduced = k * k + rows * k + rows * n
    if gram == "regenerate":
        return dict(none, all_reduce=reduced + (k if normalize else 0))
    k_r = len(tangent_shard(k, world_size, 0))
    return dict(none, all_reduce=reduced, all_to_all=k_r * (n - len(coordinate_shard(n, world_size, 0))))


# ----------------------------------------------------------------------------- the engine

@dataclass
class _Pending:
    """What :meth:`TangentParallelEngine._sample` leaves for :meth:`~TangentParallelEngine._combine`."""

    n: int
    strategy: str
    group: int = 0
    norms: torch.Tensor | None = None  # lengths of the own unnormalised tangents (normalize=True)
    own_slice: torch.Tensor | None = None  # own unnormalised tangents on this rank's coordinates (regenerate)
    work: Any = None
    send: torch.Tensor | None = None  # kept alive until the asynchronous all-to-all has finished
    recv: torch.Tensor | None = None
    recv_counts: list[int] = field(default_factory=list)


@dataclass
class TangentParallelEngine(Engine):
    """A gradient engine whose K tangents are split over the ranks of a process group.

    All options of :class:`frogcore.engines.Engine` (``mode`` ``"sim"`` or ``"fwd"``); ``seeding`` must be
    ``"per-tangent"``. ``group``: the process group (``None``: the default group, which must be
    initialised); ``gram``: the projection's strategy (module docstring). ``comm_log`` lists the
    collectives of the last step as ``(name, numbers)``.
    """

    seeding: str = "per-tangent"
    group: Any = None
    gram: str = "auto"
    comm_log: list = field(default_factory=list, init=False, repr=False, compare=False)
    _pending: Any = field(default=None, init=False, repr=False, compare=False)
    _seed_checked: bool = field(default=False, init=False, repr=False, compare=False)
    _steps: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode == "bp":
            raise ValueError("mode='bp' is not tangent-parallel (there are no tangents); use mode='sim' or 'fwd', "
                             "or torch's DistributedDataParallel for data-parallel backprop")
        if self.seeding != "per-tangent":
            raise ValueError(f"seeding={self.seeding!r} is not valid for the tangent-parallel engine; allowed "
                             "values: 'per-tangent' (the union of the ranks' tangents must not depend on the split)")
        check_choice("gram", self.gram, GRAM_STRATEGIES)
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("the tangent-parallel engine needs an initialised torch.distributed process group: "
                             "start under torchrun and call frogcore.distributed.init_from_env(), or use run_local()")
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)
        if self.k < self.world_size:
            raise ValueError(f"k={self.k} must be >= the number of processes ({self.world_size}): every rank "
                             "evaluates at least one tangent")
        self.backend = str(dist.get_backend(self.group))
        self.own = tangent_shard(self.k, self.world_size, self.rank)

    # ------------------------------------------------------------------ public
    def step(self, model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """As :meth:`frogcore.engines.Engine.step`; every rank must call it with the same model and batch."""
        self.comm_log = []
        self._pending = None
        self._steps += 1
        return super().step(model, loss_fn, x, y)

    # ------------------------------------------------------------------ communication helpers
    def _comm_device(self, like: torch.Tensor) -> torch.device:
        if self.backend == "nccl":
            return like.device
        return torch.device("cpu")  # gloo: communicate through host memory

    def _run(self, name: str, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, group=self.group, **kwargs)
        except Exception as exc:  # DistBackendError, RuntimeError from gloo/NCCL
            raise TangentParallelError(
                f"tangent-parallel step {self._steps}: collective {name!r} failed on rank {self.rank} of "
                f"{self.world_size} ({self.backend}): a peer process died or did not answer within the process "
                f"group's timeout. Original error: {type(exc).__name__}: {str(exc).strip()[:500]}") from exc

    def _all_reduce(self, name: str, t: torch.Tensor, op=None) -> torch.Tensor:
        if self.world_size == 1:
            return t
        buf = t.to(self._comm_device(t)).contiguous()
        self.comm_log.append((name, buf.numel()))
        self._run(name, dist.all_reduce, buf, op=op if op is not None else dist.ReduceOp.SUM)
        return buf.to(t.device)

    def _gather_rows(self, name: str, local: torch.Tensor, total: int) -> torch.Tensor:
        """The rows of all ranks, ``(total, *local.shape[1:])``, in rank order (tangent order)."""
        if self.world_size == 1:
            return local
        dev = self._comm_device(local)
        tail = local.shape[1:]
        self.comm_log.append((name, total * math.prod(tail)))
        if self.backend == "nccl":
            width = len(tangent_shard(total, self.world_size, 0))
            inp = torch.zeros(width, *tail, dtype=local.dtype, device=dev)
            inp[: local.shape[0]] = local
            out = torch.empty(self.world_size * width, *tail, dtype=local.dtype, device=dev)
            self._run(name, dist.all_gather_into_tensor, out, inp)
            parts = [out[s * width: s * width + len(tangent_shard(total, self.world_size, s))]
                     for s in range(self.world_size)]
            return torch.cat(parts).to(local.device)
        lo = tangent_shard(total, self.world_size, self.rank).start
        buf = torch.zeros(total, *tail, dtype=local.dtype, device=dev)
        buf[lo: lo + local.shape[0]] = local.to(dev)
        self._run(name, dist.all_reduce, buf)  # zero padding: the sum is exact
        return buf.to(local.device)

    # ------------------------------------------------------------------ engine hooks
    def _draw_step_seed(self) -> int:
        seed = super()._draw_step_seed()
        if not self._seed_checked and self.world_size > 1:
            dev = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
            t = torch.tensor([seed, -seed], dtype=torch.int64, device=dev)
            self._run("seed check", dist.all_reduce, t, op=dist.ReduceOp.MAX)
            self.comm_log.append(("seed check", 2))
            if int(t[0]) != seed or -int(t[1]) != seed:
                raise TangentParallelError(
                    f"rank {self.rank}: the ranks drew different step seeds (this rank {seed}, range "
                    f"[{-int(t[1])}, {int(t[0])}]): seed the engine's generator identically on every rank")
            self._seed_checked = True
        return seed

    def _sample(self, n: int, like: torch.Tensor) -> torch.Tensor:
        group = self._group
        self._group += 1
        strategy = "none"
        if self.aggregation == "projection" and self.world_size > 1:
            strategy = choose_gram(self.k, n) if self.gram == "auto" else self.gram
            if 2 * self.k > n:
                strategy = "gather"
        p = self._pending = _Pending(n=n, strategy=strategy, group=group)
        v = self._sample_block(n, like, group, self.own, 0, n)  # unnormalised, as Engine._sample_rows
        if strategy == "regenerate":  # the unnormalised own rows on this rank's coordinates
            cs = coordinate_shard(n, self.world_size, self.rank)
            p.own_slice = v[:, cs.start:cs.stop]
            if self.normalize:
                p.own_slice = p.own_slice.clone()
        if self.normalize:
            norms = v.norm(dim=-1, keepdim=True)
            v /= norms
            p.norms = norms.squeeze(-1)
        v = v.to(like.device)
        if strategy == "transpose":
            self._start_transpose(v)
        return v

    def _start_transpose(self, v: torch.Tensor) -> None:
        """Send ``V_r[:, S_s]`` to every rank ``s`` (asynchronous all-to-all; collected in :meth:`_combine`)."""
        p = self._pending
        dev = self._comm_device(v)
        W, n = self.world_size, p.n
        slices = [coordinate_shard(n, W, s) for s in range(W)]
        k_of = [len(tangent_shard(self.k, W, s)) for s in range(W)]
        p.send = send = torch.cat([v[:, sl.start:sl.stop].reshape(-1) for sl in slices]).to(dev)
        mine = len(slices[self.rank])
        p.recv_counts = k_of
        p.recv = torch.empty(self.k * mine, dtype=v.dtype, device=dev)
        in_splits = [v.shape[0] * len(sl) for sl in slices]
        out_splits = [k * mine for k in k_of]
        self.comm_log.append(("all_to_all tangents", send.numel() - in_splits[self.rank]))
        p.work = self._run("all_to_all tangents", dist.all_to_all_single, p.recv, send,
                           output_split_sizes=out_splits, input_split_sizes=in_splits, async_op=True)

    def _finish_transpose(self, like: torch.Tensor) -> torch.Tensor:
        p = self._pending
        try:
            p.work.wait()
        except Exception as exc:
            raise TangentParallelError(
                f"tangent-parallel step {self._steps}: collective 'all_to_all tangents' failed on rank "
                f"{self.rank} of {self.world_size} ({self.backend}): a peer process died or did not answer "
                f"within the process group's timeout. Original error: {type(exc).__name__}: "
                f"{str(exc).strip()[:500]}") from exc
        mine = p.recv.numel() // self.k
        p.send = None
        return p.recv.reshape(self.k, mine).to(like.device)  # rows in rank order = tangent order

    def _combine(self, d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self._pending
        if self.world_size == 1:
            return super()._combine(d, v)
        K, n = self.k, v.shape[1]
        lead = d.shape[:-1]
        if self.aggregation in WEIGHTED_AGGREGATIONS:
            if self.aggregation == "single":
                w = (torch.arange(self.own.start, self.own.stop, device=d.device) == 0).to(d.dtype)
            else:
                weight = {"mean": 1.0 / K, "sum": 1.0, "mean_times_dim": n / K}[self.aggregation]
                w = torch.full((len(self.own),), weight, dtype=d.dtype, device=d.device)
            part = (d * w) @ v
            if self.scale:
                part = part * scale_factor(self.aggregation, n, K, normalized=self.normalize)
            return self._all_reduce("all_reduce estimate", part)
        if self.aggregation != "projection":
            return self._combine_selection(d, v, lead)
        if p.strategy in ("regenerate", "transpose"):
            est = self._combine_slices(d, v, lead)
            if est is not None:
                return est
        return self._combine_gather(d, v)

    def _combine_selection(self, d: torch.Tensor, v: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """max / max_normalized / mean_of_top_k: the estimator on stand-in tangents ``diag(‖v_i‖)``."""
        K, lo, hi = self.k, self.own.start, self.own.stop
        d_full = torch.zeros(*lead, K, dtype=d.dtype, device=d.device)
        d_full[..., lo:hi] = d
        lengths = torch.zeros(K, dtype=v.dtype, device=v.device)
        lengths[lo:hi] = torch.linalg.vector_norm(v, dim=-1)
        buf = self._all_reduce("all_reduce derivatives+lengths", torch.cat([d_full.reshape(-1), lengths]))
        D, lengths = buf[:-K].reshape(*lead, K), buf[-K:].clamp_min(torch.finfo(v.dtype).tiny)
        alpha = Engine._combine(self, D, torch.diag(lengths)) / lengths  # est = Σ_i α_i v_i
        return self._all_reduce("all_reduce estimate", alpha[..., lo:hi] @ v)

    def _combine_gather(self, d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Everybody gets all tangents and derivatives, then the single-process computation."""
        V = self._gather_rows("gather tangents", v, self.k)
        D = self._gather_rows("gather derivatives", d.movedim(-1, 0), self.k).movedim(0, -1)
        return Engine._combine(self, D, V)

    def _regenerated_slice(self, v: torch.Tensor) -> torch.Tensor:
        """``U[:, S_r]`` of all K unnormalised tangents: own rows from the sample, the others drawn again."""
        p = self._pending
        cs = coordinate_shard(p.n, self.world_size, self.rank)
        dev = p.own_slice.device  # the generator's
        out = torch.empty(self.k, len(cs), dtype=v.dtype, device=dev)
        lo, hi = self.own.start, self.own.stop
        out[lo:hi] = p.own_slice
        p.own_slice = None
        for rows in (range(0, lo), range(hi, self.k)):
            if len(rows) and len(cs):  # drawn straight into place
                self._sample_block(p.n, v, p.group, rows, cs.start, cs.stop, out=out[rows.start:rows.stop])
        return out.to(v.device)

    def _combine_slices(self, d: torch.Tensor, v: torch.Tensor, lead: torch.Size) -> torch.Tensor | None:
        p, K = self._pending, self.k
        lo, hi = self.own.start, self.own.stop
        d_full = torch.zeros(*lead, K, dtype=d.dtype, device=d.device)
        d_full[..., lo:hi] = d
        parts = [d_full.reshape(-1)]
        rescale = p.strategy == "regenerate" and self.normalize  # the regenerated slices are unnormalised
        if rescale:
            norms = torch.zeros(K, dtype=v.dtype, device=v.device)
            norms[lo:hi] = p.norms.to(v.device)
            parts.append(norms)
        vs = self._finish_transpose(v) if p.strategy == "transpose" else self._regenerated_slice(v)  # (K, |S_r|)
        buf = self._all_reduce("all_reduce gram+derivatives", torch.cat([(vs @ vs.T).reshape(-1), *parts]))
        gram = buf[: K * K].reshape(K, K)
        D = buf[K * K: K * K + d_full.numel()].reshape(*lead, K)
        if rescale:  # Gram of the normalised tangents v_i = u_i / ‖u_i‖
            norms = buf[-K:]
            gram = gram / (norms[:, None] * norms[None, :])
        s = gram.diagonal().clamp_min(torch.finfo(gram.dtype).tiny).sqrt()
        unit = gram / (s[:, None] * s[None, :])
        chol, info = torch.linalg.cholesky_ex(unit)
        diag = chol.diagonal().abs()
        ratio = (diag.max() / diag.min().clamp_min(torch.finfo(gram.dtype).tiny)) ** 2
        if int(info) != 0 or not bool(torch.isfinite(ratio)) or float(ratio) >= _GRAM_COND_LIMIT.get(gram.dtype, 1e3):
            return None  # ill-conditioned: QR/SVD on the gathered tangents (the same decision on every rank)
        rhs = (D / s).reshape(-1, K).T  # (K, rows)
        c = (torch.cholesky_solve(rhs, chol).T / s).reshape(*lead, K)  # G c = d
        part = c[..., self.own.start:self.own.stop] @ v
        if self.scale:
            part = part * scale_factor("projection", v.shape[1], K, normalized=self.normalize)
        return self._all_reduce("all_reduce estimate", part)


def make_tangent_parallel_engine(
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
    group: Any = None,
    gram: str = "auto",
) -> TangentParallelEngine:
    """A :class:`TangentParallelEngine` (options as :func:`frogcore.engines.make_engine`, plus ``group``
    and ``gram``). Every rank must build it with the same options and an identically seeded generator."""
    return TangentParallelEngine(mode=mode, aggregation=aggregation, k=k, perturbation=perturbation,
                                 tangents=tangents, fwd_impl=fwd_impl, generator=generator, scale=scale,
                                 sampler=sampler, normalize=normalize, chunk_size=chunk_size, group=group, gram=gram)


# ----------------------------------------------------------------------------- process groups

def _resolve_backend(backend: str, device: str) -> str:
    check_choice("backend", backend, BACKENDS)
    if backend != "auto":
        return backend
    return "nccl" if device == "cuda" else "gloo"


def init_from_env(backend: str = "auto", *, device: str = "auto",
                  timeout_s: float = 300.0) -> tuple[int, int, torch.device]:
    """Initialise the default process group from ``torchrun``'s environment; returns ``(rank, world, device)``.

    ``device``: ``"cpu"``, ``"cuda"`` (one GPU per local rank: ``cuda:LOCAL_RANK``) or ``"auto"`` (CUDA when
    available). ``backend``: ``"auto"`` (NCCL for CUDA, gloo for CPU), ``"gloo"`` or ``"nccl"``. Collectives
    that do not complete within ``timeout_s`` raise instead of hanging.
    """
    check_choice("device", device, ("auto", "cpu", "cuda"))
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds; got {timeout_s!r}")
    missing = [v for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ValueError(f"init_from_env needs torchrun's environment ({', '.join(missing)} not set): start with "
                         "torchrun --nproc-per-node W -m <module> ...")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available; use device='cpu' or 'auto'")
    backend = _resolve_backend(backend, device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; start at "
                             "most one process per GPU (--nproc-per-node)")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=float(timeout_s)))
    return dist.get_rank(), dist.get_world_size(), dev


def check_replicas(model: nn.Module, group: Any = None) -> None:
    """Raise :class:`TangentParallelError` unless every rank holds bit-identical parameters and buffers.

    Compares a float64 checksum (sum and sum of squares of every tensor) with one all-reduce (MAX of
    ``±checksum``).
    """
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    if not tensors:
        return
    sums = torch.stack([torch.stack([t.detach().double().sum(), t.detach().double().square().sum()])
                        for t in tensors]).reshape(-1)
    dev = sums.device if str(dist.get_backend(group)) == "nccl" else torch.device("cpu")
    both = torch.cat([sums, -sums]).to(dev)
    try:
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    except Exception as exc:
        raise TangentParallelError(f"check_replicas: the all-reduce failed ({type(exc).__name__}: {exc})") from exc
    m = sums.numel()
    hi, lo = both[:m].cpu(), -both[m:].cpu()
    if not torch.equal(hi, lo):
        bad = int((hi != lo).nonzero()[0]) // 2
        raise TangentParallelError(f"the model replicas differ between ranks (first differing tensor: #{bad}); "
                                   "every rank must start from the same weights and see the same batches")


# ----------------------------------------------------------------------------- local launcher

def _local_worker(fn, rank, world_size, backend, init_file, pg_timeout_s, threads, device, args, outdir):
    import pickle

    status = 1
    try:
        if threads:
            torch.set_num_threads(threads)
        if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ and Path("/sys/class/net/lo").exists():
            os.environ["GLOO_SOCKET_IFNAME"] = "lo"
        if device == "cuda":
            torch.cuda.set_device(rank)
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=pg_timeout_s))
        result = fn(*args)
        tmp = Path(outdir) / f".result{rank}.tmp"
        torch.save(result, tmp, pickle_protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, Path(outdir) / f"result{rank}.pt")
        status = 0
    except BaseException:
        (Path(outdir) / f"error{rank}.txt").write_text(traceback.format_exc())
    finally:
        if status == 0 and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
    # skip interpreter teardown: a failed process group can block in its destructor
    os._exit(status)


def run_local(fn: Callable, world_size: int = 2, args: Sequence[Any] = (), *, backend: str = "gloo",
              device: str = "cpu", timeout_s: float = 120.0, pg_timeout_s: float = 30.0,
              threads: int | None = 1) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` new local processes that form a process group; return their results.

    ``fn`` must be importable by name (defined at module level) and its return value picklable. Every
    process gets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and a process group (``backend`` ``"gloo"``; or
    ``"nccl"`` with ``device="cuda"``: rank ``r`` on ``cuda:r``) with ``pg_timeout_s`` per collective,
    and ``threads`` torch threads. The whole run is bounded by ``timeout_s``: after it every process still
    running is killed. Raises :class:`LocalRunError` (with each failed rank's traceback or exit code)
    if any process fails, times out or returns nothing.
    """
    world_size = check_positive_int("world_size", world_size)
    check_choice("backend", backend, ("gloo", "nccl"))
    check_choice("device", device, ("cpu", "cuda"))
    if device == "cuda" and torch.cuda.device_count() < world_size:
        raise ValueError(f"device='cuda' with world_size={world_size} needs {world_size} GPUs; "
                         f"{torch.cuda.device_count()} visible")
    for name, value in (("timeout_s", timeout_s), ("pg_timeout_s", pg_timeout_s)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds; got {value!r}")
    if threads is not None:
        threads = check_positive_int("threads", threads)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="frog-run-local-") as outdir:
        init_file = str(Path(outdir) / "store")
        procs = [ctx.Process(target=_local_worker, daemon=True,
                             args=(fn, r, world_size, backend, init_file, float(pg_timeout_s), threads, device,
                                   tuple(args), outdir))
                 for r in range(world_size)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        timed_out = [r for r, p in enumerate(procs) if p.is_alive()]
        for r in timed_out:
            procs[r].kill()
            procs[r].join(5)
        exitcodes = {r: p.exitcode for r, p in enumerate(procs)}
        results, failures = [], {}
        for r in range(world_size):
            err, res = Path(outdir) / f"error{r}.txt", Path(outdir) / f"result{r}.pt"
            if r in timed_out:
                failures[r] = f"still running after {timeout_s:g} s: killed"
            elif err.exists():
                failures[r] = err.read_text()
            elif not res.exists():
                failures[r] = f"exited with code {exitcodes[r]} without a result"
            else:
                results.append(torch.load(res, weights_only=False))
        if failures:
            lines = [f"rank {r}: " + (msg.strip().splitlines()[-1] if msg.strip() else "failed")
                     for r, msg in sorted(failures.items())]
            raise LocalRunError(f"run_local: {len(failures)} of {world_size} processes failed\n" + "\n".join(lines),
                                failures, exitcodes)
        return results
