r"""Code shared by the FoMoH chapters (``fomoh_rosenbrock``, ``fomoh_subspace``; Cobb et al., arXiv 2408.10419).

:func:`optimise` runs many optimisation runs of a test function as ONE tensor program: ``x`` has
shape ``(..., S, n)`` where the last batch dimension holds the ``S`` seeds and any leading dimensions
hold a sweep (learning rates, dampings) that shares the tangents of its seed. Each step is one call
of :func:`frogcore.second_order.forward_step`,

.. math::  θ_{t+1} = θ_t - η\, V_t^⊤ M_t^{-1} V_t ∇f(θ_t)

(FoMoH-KD: ``M = V∇²fVᵀ``; FROG: ``M = VVᵀ``; damped: ``M = V∇²fVᵀ + μVVᵀ``; FGD: ``−η(1/k)Σ(∇f·v)v``;
FoMoH: ``−η(∇f·v)v/|vᵀ∇²fv|``; Newton: ``V = I``), see :mod:`frogcore.second_order`.

Randomness (:mod:`frogcore.seeds`): seed ``s`` of a run draws its start point from
:func:`start_points` and its tangents from its own generator (:func:`tangent_generators`); both are
drawn on the CPU in float64 and moved to the device, so a run's numbers do not depend on the device's
random number generator, on the number of seeds in the batch, or on the sweep it belongs to.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from ...approach import Approach
from ...config import check_positive_int
from ...second_order import STATUS, forward_step
from ...seeds import generator
from ...tangents import sample_tangents

__all__ = [
    "SECOND_ORDER_APPROACHES",
    "Trajectory",
    "best_index",
    "check_positive_float",
    "check_positive_floats",
    "loss_curves",
    "median_final",
    "optimise",
    "start_points",
    "tangent_generators",
]

#: approaches :func:`optimise` runs (the methods of :func:`frogcore.second_order.forward_step`)
SECOND_ORDER_APPROACHES = ("bp", "fgd", "frog", "fomoh", "fomoh-kd", "newton")


class Trajectory(NamedTuple):
    """What :func:`optimise` returns: the logged iterations, the points ``x`` at those iterations
    (each ``(..., S, n)``, on the device) and how the ``K × K`` systems were solved (``ok`` /
    ``jitter`` / ``failed`` counts summed over the run and the batch; zeros for FGD and BP)."""

    iterations: list[int]
    points: list[torch.Tensor]
    status: dict[str, int]


def start_points(seed: int, section: str, n: int, seeds: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(seeds, n)`` float64 start points ``x_0 ~ N(0, I)``; row ``s`` is drawn on the CPU from
    ``derive(seed, section, "start", n, s)`` (the same on every device and for any number of seeds)."""
    rows = [torch.randn(n, generator=generator(seed, section, "start", n, s), dtype=torch.float64)
            for s in range(check_positive_int("seeds", seeds))]
    return torch.stack(rows).to(device)


def tangent_generators(seed: int, *parts: Any, seeds: int) -> list[torch.Generator]:
    """One CPU generator per seed ``s``: ``derive(seed, *parts, s)``. Runs given the same ``parts``
    (e.g. FoMoH-KD and FROG with the same ``K``) see the same tangents: common random numbers."""
    return [generator(seed, *parts, s) for s in range(check_positive_int("seeds", seeds))]


def optimise(f: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, approach: Approach | str,
             iterations: int, *, generators: Sequence[torch.Generator], lr: float | torch.Tensor = 1.0,
             log_every: int = 1, **step_kw: Any) -> Trajectory:
    """Run ``iterations`` steps of ``approach`` from ``x0`` ``(..., S, n)``, ``S = len(generators)``.

    At every step seed ``s`` draws ``V`` ``(K, n)`` from ``generators[s]`` (standard normal entries,
    :func:`frogcore.tangents.sample_tangents`); every slice along the leading dimensions of ``x0`` sees
    the same ``V`` of its seed. ``lr`` is a float or a tensor broadcasting over ``x0.shape[:-1]``;
    ``step_kw`` go to :func:`frogcore.second_order.forward_step` (``metric``, ``damping``, ``curvature``,
    ``eps``, ...). The points at iteration 0, every ``log_every``-th iteration and the last one are kept.
    """
    a = Approach.parse(approach)
    if a.name not in SECOND_ORDER_APPROACHES:
        raise ValueError(f"approach={a.spec!r} is not valid here; allowed approaches: "
                         + ", ".join(repr(x) for x in SECOND_ORDER_APPROACHES))
    iterations = check_positive_int("iterations", iterations, minimum=0)
    log_every = check_positive_int("log_every", log_every)
    if x0.dim() < 2 or x0.shape[-2] != len(generators):
        raise ValueError(f"x0 must have shape (..., S, n) with S = len(generators) = {len(generators)}; "
                         f"got {tuple(x0.shape)}")
    n, k = x0.shape[-1], max(a.k, 1)
    draws = a.name not in ("bp", "newton")
    x = x0.clone()
    its, xs = [0], [x.clone()]
    counts = dict.fromkeys(STATUS, 0)
    for it in range(1, iterations + 1):
        if draws:
            V = torch.stack([sample_tangents(n, k, generator=g, dtype=torch.float64) for g in generators])
            step_kw["tangents"] = V.to(dtype=x0.dtype, device=x0.device)  # (S, k, n), broadcast over the sweep
        x, info = forward_step(f, x, a.name, k=k, lr=lr, **step_kw)
        if info.solve is not None:
            for key, val in info.solve.counts().items():
                counts[key] += val
        if it % log_every == 0 or it == iterations:
            its.append(it)
            xs.append(x.clone())
    return Trajectory(its, xs, counts)


def loss_curves(traj: Trajectory, f: Callable[[torch.Tensor], torch.Tensor], columns: Mapping[str, Any],
                offset: float = 0.0, value: str = "loss") -> pd.DataFrame:
    """Tidy table of ``f(x) − offset`` at the logged iterations of a trajectory whose points are
    ``(S, n)``: the given constant ``columns``, then ``seed``, ``iteration`` and ``value``."""
    X = torch.stack(traj.points).cpu()  # (T, S, n)
    y = (f(X) - offset).numpy()
    T, S = y.shape
    return pd.DataFrame({**columns, "seed": np.tile(np.arange(S), T), "iteration": np.repeat(traj.iterations, S),
                         value: y.reshape(-1)})


def median_final(final: torch.Tensor) -> np.ndarray:
    """Median over the last dimension (the seeds), non-finite values counting as ``+inf``; for an even
    number of seeds the mean of the two middle values (as :func:`numpy.median` and pandas), not torch's
    lower median."""
    f = final.detach().cpu().double().numpy()
    return np.median(np.where(np.isfinite(f), f, np.inf), axis=-1)


def best_index(final: torch.Tensor) -> int:
    """Index along the first dimension of ``final`` ``(L, S)`` with the lowest :func:`median_final`
    (the first of equal medians wins)."""
    return int(np.argmin(median_final(final)))


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A finite number > 0 (``>= 0`` with ``allow_zero``) as a float; ``ValueError`` naming ``name``."""
    bound = ">= 0" if allow_zero else "> 0"
    v = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return v


def check_positive_floats(name: str, values: Any, *, allow_zero: bool = False) -> list[float]:
    """A non-empty list of finite numbers > 0 (``>= 0`` with ``allow_zero``) as floats."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a non-empty list of finite numbers {bound}; got {values!r}")
    return [check_positive_float(f"{name}[{i}]", v, allow_zero=allow_zero) for i, v in enumerate(values)]

