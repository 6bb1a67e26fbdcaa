r"""Gradient descent with forward gradients, many runs as one tensor program.

:func:`optimize` runs ``R`` independent gradient-descent runs ``x ← x − lr·ĝ(x)`` on one function
and dimension ``n`` together: every step evaluates the directional derivatives of *all* active runs
with ONE forward-mode ``jvp`` over a flat list of (run, tangent) rows, aggregates them per run
(mean/sum by one ``index_add``, the orthogonal projection of all FROG runs by ONE call of
:func:`frogcore.linalg.project`), takes the exact gradient of the backprop runs with one autograd
call, and updates all runs with one fused op. Runs may differ in approach, ``k``, seed, learning
rate and tangent sampler.

Semantics (FROG Section 4.2): at step ``t`` the value ``f(x_t)`` is recorded; a non-finite value
ends the run as ``"diverged"``; otherwise the early-stopping counter is updated with the FROG
authors' rule and a run whose counter reaches ``patience`` ends as ``"early_stop"``; otherwise it
takes the step.

Early stopping (the authors' rule, Helmholtz-AI-Energy/frog,
``function_optimization/gradient_descent.py``, ``GradientDescent.check_stop_criteria``): the counter
counts *consecutive* steps whose value did not drop below the previous step's value,

    c_0 = 0,   c_t = c_{t-1} + 1  if f(x_t) >= f(x_{t-1}),   c_t = 0  otherwise,

so any decrease, however small, resets it; the run stops when ``c_t >= patience`` (the paper: 50).
A run that rises above its best value and then descends slowly is therefore *not* stopped. The
authors stop on a NaN position; here any non-finite value stops the run (a NaN position gives a
NaN value; an infinite value at a finite position, which their loop would continue from, is also
treated as divergence). After ``max_steps`` steps
``f(x_T)`` is recorded and the run ends as ``"max_steps"``. Ended runs are *frozen*: their ``x``
stays, their trajectory repeats their last value, and they cost nothing in later steps (the batch
is re-planned without them).

Randomness: run ``r`` draws its tangents from a stream identified by ``(seed, draw, sampler,
angle)`` (``draw`` = tangents per step, default ``k``; generator seed :func:`stream_seed`); step ``t``
uses the first ``k`` rows of the ``t``-th call of ``sample_tangents(n, draw, ...)`` on that stream's
generator. Runs that share a stream (e.g. FG-mean and FROG with the same seed) see the same tangent
sequence — common random numbers for comparing aggregations — and a run's numbers do not depend on
which other runs share the batch. :func:`optimize_loop` is the plain one-run
reference with the same semantics and streams.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from .approach import FROG_APPROACHES, Approach
from .config import check_choice, check_dtype, check_positive_int
from .estimators import aggregate
from .forward import directional_derivatives, gradient, rows_jvp
from .linalg import project
from .seeds import derive
from .tangents import SAMPLERS, rotate_to_angle, sample_tangents

APPROACHES = FROG_APPROACHES
STATUSES = ("max_steps", "early_stop", "diverged")

# elements of the pre-drawn tangent block (steps × rows × n); only memory, never the numbers
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Run:
    """One optimisation run: approach, number of tangents, seed, learning rate, tangent sampler.

    ``approach``: ``"bp"`` (exact gradient), ``"fg-mean"`` (k = 1 is the single-tangent forward
    gradient), ``"fg-sum"``, ``"frog"`` (orthogonal projection). ``k`` is ignored for ``"bp"``.
    ``draw`` (≥ k, default k): tangents drawn per step from the run's stream, of which the run uses
    the first ``k``. Giving every run of a comparison the same ``draw`` makes runs with the same seed
    share their leading tangents across approaches *and* k (common random numbers). ``normalize``
    rescales every tangent to unit length (after the rotation of the ``"angle"`` sampler).
    """

    approach: str
    k: int = 0
    seed: int = 0
    lr: float = 1e-3
    sampler: str = "normal"
    angle: float | None = None
    draw: int | None = None
    normalize: bool = False

    def __post_init__(self):
        check_choice("approach", self.approach, APPROACHES)
        check_choice("sampler", self.sampler, SAMPLERS)
        if self.approach == "bp":
            object.__setattr__(self, "k", 0)
        else:
            check_positive_int("k", self.k)
        if self.draw is not None:
            check_positive_int("draw", self.draw)
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a positive finite number; got {self.lr!r}")
        if (self.sampler == "angle") != (self.angle is not None):
            raise ValueError(f"angle= is needed with (and only with) sampler='angle'; got sampler={self.sampler!r}, "
                             f"angle={self.angle!r}")

    @property
    def label(self) -> str:
        """Display name (:attr:`frogcore.approach.Approach.label`): ``BP``, ``FG``, ``FG-mean k=4``, ``FROG k=16``."""
        return Approach(self.approach, self.k).label

    @property
    def stream(self) -> tuple[int, int, str, float | None, bool]:
        """``(seed, tangents drawn per step, sampler, angle)``: runs with equal streams share tangents."""
        return (self.seed, max(self.k, self.draw or 0), self.sampler, self.angle, bool(self.normalize))


def stream_seed(seed: int, draw: int) -> int:
    """Generator seed of the tangent streams of ``seed`` drawing ``draw`` tangents per step.

    Stable across Python processes. The sampler is *not* part of it: the ``"angle"`` streams rotate
    exactly the raw normal draws of the ``"normal"`` stream with the same seed and ``draw``, so runs
    that differ only in the angle see the same underlying randomness.
    """
    return derive(seed, "tangents", int(draw))


def stream_generator(run: Run, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(stream_seed(*run.stream[:2]))


@dataclass
class OptimResult:
    """Per-run outcome of :func:`optimize` / :func:`optimize_loop` (all tensors on the CPU)."""

    runs: list[Run]
    values: torch.Tensor  # (T+1, R): f(x_t); frozen runs repeat their last value
    best: torch.Tensor  # (R,)
    best_step: torch.Tensor  # (R,)
    last: torch.Tensor  # (R,) value at the final (frozen) point
    x: torch.Tensor  # (R, n) final points
    steps: torch.Tensor  # (R,) number of updates taken
    status: list[str]
    xs: torch.Tensor | None = None  # (T+1, R, n) when record_x=True

    def table(self, **columns) -> pd.DataFrame:
        """One row per run: approach, label, k, seed, lr, sampler, angle, best, last, steps, status."""
        rows = []
        for i, r in enumerate(self.runs):
            rows.append({**columns, "approach": r.approach, "label": r.label, "k": r.k, "seed": r.seed, "lr": r.lr,
                         "sampler": r.sampler, "angle": r.angle, "normalize": r.normalize, "best": float(self.best[i]),
                         "best_step": int(self.best_step[i]), "last": float(self.last[i]),
                         "steps": int(self.steps[i]), "status": self.status[i]})
        return pd.DataFrame(rows)

    def curves(self, steps: Sequence[int] | torch.Tensor | None = None, **columns) -> pd.DataFrame:
        """Long table of ``f(x_t)`` at the given steps (default: every step) for every run."""
        T = self.values.shape[0] - 1
        if steps is None:
            idx = torch.arange(T + 1)
        else:
            idx = torch.as_tensor(steps if torch.is_tensor(steps) else list(steps))
        idx = idx[(idx >= 0) & (idx <= T)].unique()
        vals = self.values[idx]
        frames = []
        for i, r in enumerate(self.runs):
            frames.append(pd.DataFrame({**columns, "label": r.label, "approach": r.approach, "k": r.k, "seed": r.seed,
                                        "sampler": r.sampler, "angle": r.angle, "step": idx.numpy(),
                                        "value": vals[:, i].numpy()}))
        return pd.concat(frames, ignore_index=True)


def log_steps(max_steps: int, num: int = 120) -> torch.Tensor:
    """About ``num`` log-spaced step indices in ``[0, max_steps]`` (always with 0..10 and the end)."""
    pts = torch.logspace(0, math.log10(max_steps), num).round().long()
    return torch.cat([torch.arange(min(11, max_steps + 1)), pts, torch.tensor([max_steps])]).unique()


# ----------------------------------------------------------------------------- the batched optimiser

class _Plan:
    """Index tensors for one set of active runs (rebuilt when runs end)."""

    def __init__(self, runs, active, stream_off, n, dtype, device):
        act = [i for i in range(len(runs)) if active[i]]
        self.bp = [i for i in act if runs[i].approach == "bp"]
        mean = [i for i in act if runs[i].approach in ("fg-mean", "fg-sum")]
        frog = [i for i in act if runs[i].approach == "frog"]
        row_run, row_src, w, first = [], [], [], []
        for i in mean:
            r = runs[i]
            first.append(len(row_run))
            row_run += [i] * r.k
            row_src += [stream_off[r.stream] + j for j in range(r.k)]
            w += [1.0 / r.k if r.approach == "fg-mean" else 1.0] * r.k
        self.n_mean_rows = len(row_run)
        keff = [min(runs[i].k, n) for i in frog]  # project() keeps only the first n tangents
        K = max(keff, default=0)
        slots = []
        for a, i in enumerate(frog):
            first.append(len(row_run))
            r = runs[i]
            row_run += [i] * keff[a]
            row_src += [stream_off[r.stream] + j for j in range(keff[a])]
            slots += [a * K + j for j in range(keff[a])]
        kw = dict(device=device)
        self.fg = mean + frog
        self.fg_t = torch.tensor(self.fg, dtype=torch.long, **kw)
        self.first = torch.tensor(first, dtype=torch.long, **kw)
        self.row_run = torch.tensor(row_run, dtype=torch.long, **kw)
        self.row_src = torch.tensor(row_src, dtype=torch.long, **kw)
        self.mean_run = self.row_run[: self.n_mean_rows]
        self.mean_w = torch.tensor(w, dtype=dtype, **kw)
        self.bp_t = torch.tensor(self.bp, dtype=torch.long, **kw)
        self.frog_t = torch.tensor(frog, dtype=torch.long, **kw)
        self.n_frog = len(frog)
        self.K = K
        # FROG runs with different k share ONE project() call: runs with fewer tangents are padded
        # with rows sqrt(n)·e_j in K extra coordinates (and d = 0 there). The padded Gram matrix is
        # block-diagonal, so the first n coordinates are exactly the projection onto each run's own
        # tangents and the extra coordinates come out 0.
        self.padded = len(set(keff)) > 1
        if self.n_frog and self.padded:
            self.vaug = torch.zeros(self.n_frog, K, n + K, dtype=dtype, **kw)
            for a in range(self.n_frog):
                for j in range(keff[a], K):
                    self.vaug[a, j, n + j] = math.sqrt(n)
            self.slots = torch.tensor(slots, dtype=torch.long, **kw)
            self.daug = torch.zeros(self.n_frog * K, dtype=dtype, **kw)


class _Streams:
    """Pre-drawn tangent blocks of all streams; step t's tangents are the t-th draw of each stream."""

    def __init__(self, runs, n, dtype, device):
        self.keys = []
        for r in runs:
            if r.approach != "bp" and r.stream not in self.keys:
                self.keys.append(r.stream)
        self.off, total = {}, 0
        for key in self.keys:
            self.off[key] = total
            total += key[1]
        self.rows, self.n, self.dtype, self.device = total, n, dtype, device
        self.gens = {key: torch.Generator(device=device).manual_seed(stream_seed(*key[:2])) for key in self.keys}
        self.block = max(1, min(256, _BLOCK_ELEMENTS // max(1, total * n)))
        self.buf = torch.empty(self.block, total, n, dtype=dtype, device=device) if total else None
        self.start: int | None = None
        self.live = set(self.keys)

    def at(self, t: int) -> torch.Tensor:
        if self.start is None or not (self.start <= t < self.start + self.block):
            self.start = t
            for key in self.keys:
                if key not in self.live:
                    continue  # no active run uses it any more: skipping does not change other streams
                seed, k, sampler, angle, normalize = key
                o, g = self.off[key], self.gens[key]
                view = self.buf[:, o : o + k]
                if sampler in ("normal", "angle"):
                    for j in range(self.block):
                        torch.randn(k, self.n, generator=g, dtype=self.dtype, device=self.device, out=view[j])
                    if sampler == "angle":
                        view.copy_(rotate_to_angle(view, angle))
                    if normalize:
                        view.div_(view.norm(dim=-1, keepdim=True))
                else:
                    for j in range(self.block):
                        view[j] = sample_tangents(self.n, k, sampler=sampler, normalize=normalize, generator=g,
                                                  dtype=self.dtype, device=self.device)
        return self.buf[t - self.start]


def _check_common(f, x0, max_steps, patience, dtype, device):
    if not callable(f):
        raise ValueError(f"f must be callable; got {f!r}")
    max_steps = check_positive_int("max_steps", max_steps)
    if patience is not None:
        patience = check_positive_int("patience", patience)
    dtype = check_dtype(dtype)
    x0 = torch.as_tensor(x0)
    if x0.dim() != 1:
        raise ValueError(f"x0 must be a vector (n,); got shape {tuple(x0.shape)}")
    return x0.to(dtype=dtype, device=device), max_steps, patience, dtype


@torch.no_grad()
def optimize(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    runs: Sequence[Run],
    *,
    max_steps: int,
    patience: int | None = 50,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    record_x: bool = False,
) -> OptimResult:
    """Run every run in ``runs`` from ``x0`` (shape ``(n,)``) as one batched program.

    ``f`` maps ``(..., n) → (...)`` (batched over leading dimensions). ``patience=None`` disables
    early stopping. ``record_x`` also keeps every iterate (memory ``(max_steps+1)·R·n``; for 2-D plots).
    See the module docstring for the exact semantics.
    """
    device = torch.device(device)
    x0, T, patience, dtype = _check_common(f, x0, max_steps, patience, dtype, device)
    runs = list(runs)
    if not runs or not all(isinstance(r, Run) for r in runs):
        raise ValueError("runs must be a non-empty list of frogcore.optimize.Run")
    R, n = len(runs), x0.shape[0]
    x = x0.expand(R, n).clone()
    neg_lr = torch.tensor([-r.lr for r in runs], dtype=dtype, device=device).unsqueeze(-1)
    values = torch.full((T + 1, R), math.nan, dtype=dtype, device=device)
    xs = torch.empty(T + 1, R, n, dtype=dtype, device=device) if record_x else None
    fx = torch.full((R,), math.nan, dtype=dtype, device=device)
    best = torch.full((R,), math.inf, dtype=dtype, device=device)
    best_step = torch.zeros(R, dtype=torch.long, device=device)
    since = torch.zeros(R, dtype=torch.long, device=device)  # the authors' counter c_t
    prev = torch.full((R,), math.nan, dtype=dtype, device=device)  # f(x_{t-1}); NaN at t = 0 (never >=)
    active = torch.ones(R, dtype=torch.bool, device=device)
    act_list = [True] * R
    stop_step = [T] * R
    status = ["max_steps"] * R
    est = torch.zeros(R, n, dtype=dtype, device=device)
    streams = _Streams(runs, n, dtype, device)
    plan = _Plan(runs, act_list, streams.off, n, dtype, device)
    pat = patience if patience is not None else T + 2

    def evaluate(t: int, final: bool) -> None:
        """Fill fx (active runs) and, unless final, est (active runs) at the current x."""
        if len(plan.fg):
            if final:  # only the values are needed
                fx.index_copy_(0, plan.fg_t, f(x.index_select(0, plan.fg_t)))
            else:
                v = streams.at(t).index_select(0, plan.row_src)
                frow, d = rows_jvp(f, x.index_select(0, plan.row_run), v)
                fx.index_copy_(0, plan.fg_t, frow.index_select(0, plan.first))
                m = plan.n_mean_rows
                if m:
                    est.index_add_(0, plan.mean_run, v[:m] * (d[:m] * plan.mean_w).unsqueeze(-1))
                if plan.n_frog:
                    if plan.padded:
                        vaug = plan.vaug.view(-1, n + plan.K)
                        vaug[:, :n].index_copy_(0, plan.slots, v[m:])
                        plan.daug.index_copy_(0, plan.slots, d[m:])
                        proj = project(plan.daug.view(plan.n_frog, plan.K), plan.vaug)[:, :n]
                    else:
                        proj = project(d[m:].view(plan.n_frog, plan.K), v[m:].view(plan.n_frog, plan.K, n))
                    est.index_copy_(0, plan.frog_t, proj)
        if len(plan.bp):
            xb = x.index_select(0, plan.bp_t)
            if final:
                fx.index_copy_(0, plan.bp_t, f(xb))
            else:
                fb, gb = gradient(f, xb)
                fx.index_copy_(0, plan.bp_t, fb)
                est.index_copy_(0, plan.bp_t, gb)

    t_end = T
    for t in range(T):
        est.zero_()
        evaluate(t, final=False)
        values[t] = fx
        if xs is not None:
            xs[t] = x
        finite = torch.isfinite(fx)
        improved = active & finite & (fx < best)
        best = torch.where(improved, fx, best)
        best_step = torch.where(improved, t, best_step)
        since = torch.where(active & (fx >= prev), since + 1, 0)
        prev = torch.where(active, fx, prev)
        ended = active & (~finite | (since >= pat))
        if bool(ended.any()):
            for i in ended.nonzero().flatten().tolist():
                status[i] = "diverged" if not math.isfinite(float(fx[i])) else "early_stop"
                stop_step[i] = t
                act_list[i] = False
            active &= ~ended
            est[ended] = 0.0
            if not any(act_list):
                t_end = t
                break
            streams.live = {r.stream for r, a in zip(runs, act_list) if a and r.approach != "bp"}
            plan = _Plan(runs, act_list, streams.off, n, dtype, device)
        x.addcmul_(neg_lr, est)
    else:  # all steps taken: record the final point of the runs still active
        evaluate(T, final=True)
        values[T] = fx
        if xs is not None:
            xs[T] = x
        finite = torch.isfinite(fx)
        improved = active & finite & (fx < best)
        best = torch.where(improved, fx, best)
        best_step = torch.where(improved, T, best_step)
        for i in (active & ~finite).nonzero().flatten().tolist():
            status[i] = "diverged"
    if t_end < T:  # everyone ended early: frozen trajectories repeat the last values
        values[t_end + 1 :] = fx
        if xs is not None:
            xs[t_end + 1 :] = x
    steps = torch.tensor(stop_step, dtype=torch.long)
    return OptimResult(runs, values.cpu(), best.cpu(), best_step.cpu(), fx.cpu(), x.cpu(), steps, status,
                       None if xs is None else xs.cpu())


# ----------------------------------------------------------------------------- the one-run reference loop

@torch.no_grad()
def optimize_loop(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    run: Run,
    *,
    max_steps: int,
    patience: int | None = 50,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
) -> OptimResult:
    """One run, one step at a time, written as plainly as possible (the reference for tests and the
    baseline of the benchmark): ``sample_tangents`` per step, ``vmap``-ed ``jvp`` for the directional
    derivatives, :func:`frogcore.estimators.aggregate`, autograd for backprop."""
    device = torch.device(device)
    x0, T, patience, dtype = _check_common(f, x0, max_steps, patience, dtype, device)
    if not isinstance(run, Run):
        raise ValueError("run must be a frogcore.optimize.Run")
    n = x0.shape[0]
    x = x0.clone()
    gen = stream_generator(run, device)
    agg = {"fg-mean": "mean", "fg-sum": "sum", "frog": "projection"}.get(run.approach)
    values = torch.full((T + 1,), math.nan, dtype=dtype)
    best, best_step, since, status, stop = math.inf, 0, 0, "max_steps", T
    fx = prev = math.nan
    for t in range(T + 1):
        if t == T:
            fx = float(f(x))
        elif run.approach == "bp":
            fval, g = gradient(f, x)
            fx = float(fval)
        else:
            v = sample_tangents(n, run.stream[1], sampler=run.sampler, angle=run.angle, normalize=run.normalize,
                                generator=gen, dtype=dtype, device=device)[: run.k]
            fval, d = directional_derivatives(f, x, v, method="vmap")
            fx = float(fval)
            g = aggregate(d, v, agg)
        values[t] = fx
        if math.isfinite(fx) and fx < best:
            best, best_step = fx, t
        since = since + 1 if fx >= prev else 0  # the authors' rule (see the module docstring)
        prev = fx
        if t == T:
            status = "diverged" if not math.isfinite(fx) else status
            break
        if not math.isfinite(fx) or (patience is not None and since >= patience):
            status, stop = ("diverged" if not math.isfinite(fx) else "early_stop"), t
            values[t + 1 :] = fx
            break
        x = x - run.lr * g
    return OptimResult([run], values.unsqueeze(-1), torch.tensor([best]), torch.tensor([best_step]),
                       torch.tensor([fx]), x.unsqueeze(0).cpu(), torch.tensor([stop]), [status])
