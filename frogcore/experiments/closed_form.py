"""Sections 4.2 and 4.3 drivers: gradient descent on closed-form functions with forward gradients.

Section 4.2 (:func:`run`): sphere, Rosenbrock and Styblinski-Tang for n = 1, 2, 4, …, 1024; backprop,
FG (k = 1), FG-mean and FROG (k = 2, 4, 16); plain gradient descent with the authors' learning rates
(:mod:`frogcore.lrs`), early stopping after 50 non-improving steps or on a non-finite value, seeds
0–4. All runs of one (function, n) form ONE batch of :func:`frogcore.optimize.optimize`; the
(function, n) jobs are spread over ``workers`` processes (results do not depend on ``workers``).

Section 4.3 (:func:`run_custom_tangents`): tangents 2..k at a fixed angle to the first one
(sampler ``"angle"``) — approximation quality at n = 64 and optimisation of Styblinski-Tang n = 64
with FG-mean and FROG.

dtype: float32 by default, like PyTorch's default the authors' code ran with, and 2.4× faster than
float64 at n = 1024 (forward mode and tangent sampling are memory-bound). The runs are short (≤ 25000
plain steps) and the only float32-specific effect is that a converged run stops improving at
float32 resolution, which the early-stopping rule then ends as the authors' runs would. Pass
``dtype="float64"`` to compare.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import pandas as pd
import torch

from ..config import (check_choice, check_choices, check_dtype, check_positive_int, check_positive_ints,
                      pick_profile, resolve_device)
from ..estimators import aggregate
from ..functions import FUNCTIONS, PAPER_FUNCTIONS, get_function
from ..lrs import LRTable
from ..optimize import OptimResult, Run, log_steps, optimize
from ..results import StoredResult, run_cached
from ..tangents import sample_tangents

SECTION = "frog_4_2"
SECTION_CUSTOM = "frog_4_3"
CODE = ["frogcore.experiments.closed_form"]  # + its frogcore imports, found automatically

PAPER_APPROACHES = ("bp", "fg-mean:1", "fg-mean:2", "fg-mean:4", "fg-mean:16", "frog:2", "frog:4", "frog:16")
PAPER_N = tuple(2**i for i in range(11))
PAPER_ANGLES = (15.0, 30.0, 45.0, 60.0, 75.0, 90.0)

PROFILES = {
    "smoke": dict(functions=list(PAPER_FUNCTIONS), n_grid=[2, 16], approaches=list(PAPER_APPROACHES), num_seeds=2,
                  max_steps={"sphere": 100, "rosenbrock": 200, "styblinski-tang": 100}, patience=50),
    # every other dimension (1 … 1024, so the high-n regime stays) and 3 seeds at the paper's step limits:
    # about half the CPU time of the paper grid (≈ 6 of 11 CPU-minutes), same functions and approaches
    "default": dict(functions=list(PAPER_FUNCTIONS), n_grid=[1, 4, 16, 64, 256, 1024],
                    approaches=list(PAPER_APPROACHES), num_seeds=3, max_steps=None, patience=50),
    "paper": dict(functions=list(PAPER_FUNCTIONS), n_grid=list(PAPER_N), approaches=list(PAPER_APPROACHES),
                  num_seeds=5, max_steps=None, patience=50),
}

PROFILES_CUSTOM = {
    "smoke": dict(n=64, quality_k=[4, 16], num_samples=100, opt_k=[16], angles=[15.0, 45.0, 90.0], num_seeds=2,
                  max_steps=100, patience=50),
    "default": dict(n=64, quality_k=[4, 16, 64], num_samples=1000, opt_k=[16, 64], angles=list(PAPER_ANGLES),
                    num_seeds=5, max_steps=1000, patience=50),
    "paper": dict(n=64, quality_k=[4, 16, 64], num_samples=1000, opt_k=[16, 64], angles=list(PAPER_ANGLES),
                  num_seeds=5, max_steps=1000, patience=50),
}


# ----------------------------------------------------------------------------- approaches and runs

def parse_approach(spec: str) -> tuple[str, int]:
    """``"bp"`` → ``("bp", 0)``; ``"frog:16"`` → ``("frog", 16)``; ``"fg-mean:1"`` is the FG baseline."""
    if not isinstance(spec, str):
        raise ValueError(f"approach spec must be a string like 'bp' or 'frog:16'; got {spec!r}")
    name, _, k = spec.partition(":")
    check_choice("approach", name, ("bp", "fg-mean", "frog"))
    if name == "bp":
        if k:
            raise ValueError(f"approach 'bp' takes no k; got {spec!r}")
        return "bp", 0
    try:
        kk = int(k)
    except ValueError:
        raise ValueError(f"approach {spec!r} needs a tangent count, e.g. '{name}:4'") from None
    return name, check_positive_int(f"k of approach {spec!r}", kk)


def make_runs(function: str, n: int, approaches: Sequence[str], seeds: Sequence[int], lrs: LRTable,
              *, sampler: str = "normal", angle: float | None = None) -> tuple[list[Run], list[str]]:
    """Runs for every approach × seed with learning rates from ``lrs`` (and their sources).

    All forward-gradient runs of one seed draw the same tangents (``draw`` = the largest k), so
    approaches are compared on common random numbers.
    """
    parsed = [parse_approach(a) for a in approaches]
    draw = max([k for _, k in parsed] + [1])
    runs, sources = [], []
    for name, k in parsed:
        lr_sampler = "normal" if name == "frog" else sampler  # the projection does not see the angle
        lr, src = lrs.lookup_with_source(function, n, name, k, sampler=lr_sampler,
                                         angle=angle if lr_sampler == "angle" else None)
        for s in seeds:
            runs.append(Run(name, k, int(s), lr, sampler=sampler if name != "bp" else "normal",
                            angle=angle if name != "bp" else None, draw=draw if name != "bp" else None))
            sources.append(src)
    return runs, sources


def optimize_function(function: str, n: int, approaches: Sequence[str] = PAPER_APPROACHES,
                      seeds: Sequence[int] = range(5), *, max_steps: int | None = None, patience: int | None = 50,
                      lr_overrides: Sequence[Mapping[str, Any]] | None = None, dtype: str = "float32",
                      device: str = "cpu", record_x: bool = False) -> OptimResult:
    """All approaches × seeds on one function and dimension as one batch (paper start and step limit)."""
    fun = get_function(function)
    n = fun.check_n(n)
    runs, _ = make_runs(function, n, approaches, seeds, LRTable.shipped(overrides=lr_overrides))
    steps = fun.max_steps if max_steps is None else check_positive_int("max_steps", max_steps)
    return optimize(fun.fn, fun.start(n), runs, max_steps=steps, patience=patience, dtype=dtype,
                    device=resolve_device(device), record_x=record_x)


def summarise_curves(res: OptimResult, steps: torch.Tensor, **columns) -> pd.DataFrame:
    """Median / min / max over seeds of ``f(x_t)`` per run label at the given steps."""
    idx = steps[steps < res.values.shape[0]]
    labels = [r.label for r in res.runs]
    frames = []
    for lab in dict.fromkeys(labels):
        cols = [i for i, l in enumerate(labels) if l == lab]
        v = res.values[idx][:, cols].double()
        finite = torch.isfinite(v)
        vv = torch.where(finite, v, torch.tensor(math.nan, dtype=v.dtype))
        r0 = res.runs[cols[0]]
        frames.append(pd.DataFrame({**columns, "label": lab, "approach": r0.approach, "k": r0.k,
                                    "angle": r0.angle, "step": idx.numpy(),
                                    "median": vv.nanmedian(dim=1).values.numpy(),
                                    "min": torch.where(finite, v, math.inf).amin(1).numpy(),
                                    "max": torch.where(finite, v, -math.inf).amax(1).numpy(),
                                    "num_finite": finite.sum(1).numpy()}))
    out = pd.concat(frames, ignore_index=True)
    out[["min", "max"]] = out[["min", "max"]].replace([math.inf, -math.inf], math.nan)
    return out


# ----------------------------------------------------------------------------- Section 4.2

def _job(args: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One (function, n) batch; runs in a worker process."""
    torch.set_num_threads(1)  # the two cores go to the two workers; more threads only contend
    fun = get_function(args["function"])
    n = args["n"]
    lrs = LRTable.shipped(overrides=args["lr_overrides"])
    runs, sources = make_runs(fun.name, n, args["approaches"], args["seeds"], lrs)
    res = optimize(fun.fn, fun.start(n), runs, max_steps=args["max_steps"], patience=args["patience"],
                   dtype=args["dtype"], device=args["device"])
    fmin = fun.minimum(n)
    table = res.table(function=fun.name, n=n)
    table["lr_source"] = sources
    table["minimum"] = fmin
    table["gap_last"] = table["last"] - fmin
    table["gap_best"] = table["best"] - fmin
    table["distance"] = fun.distance(res.x.double()).numpy()
    curves = summarise_curves(res, log_steps(args["max_steps"], 80), function=fun.name, n=n)
    curves["minimum"] = fmin
    return table, curves


def closed_form_grid(functions: Sequence[str], n_grid: Sequence[int], approaches: Sequence[str],
                     seeds: Sequence[int], *, max_steps: Mapping[str, int] | None = None, patience: int | None = 50,
                     lr_overrides: Sequence[Mapping[str, Any]] | None = None, dtype: str = "float32",
                     device: torch.device | str = "cpu", workers: int = 1) -> dict[str, pd.DataFrame]:
    """Tables ``runs`` (one row per run) and ``curves`` (median/min/max over seeds at log-spaced steps)."""
    jobs = []
    for fname in functions:
        fun = get_function(fname)
        steps = (max_steps or {}).get(fname, fun.max_steps)
        for n in n_grid:
            jobs.append(dict(function=fname, n=fun.check_n(n), approaches=list(approaches), seeds=list(seeds),
                             max_steps=steps, patience=patience, lr_overrides=list(lr_overrides or []),
                             dtype=dtype, device=str(torch.device(device))))
    # biggest jobs first so that the workers finish together
    cost = [j["max_steps"] * (j["n"] + 16) for j in jobs]
    order = sorted(range(len(jobs)), key=lambda i: -cost[i])
    big = sum(j["max_steps"] for j in jobs) >= 20000  # below that, starting processes costs more than it saves
    if workers > 1 and len(jobs) > 1 and big and torch.device(device).type == "cpu":
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as ex:
            outs = dict(zip(order, ex.map(_job, [jobs[i] for i in order])))
    else:
        threads = torch.get_num_threads()
        try:
            outs = {i: _job(jobs[i]) for i in order}
        finally:
            torch.set_num_threads(threads)
    tables = [outs[i][0] for i in range(len(jobs))]
    curves = [outs[i][1] for i in range(len(jobs))]
    return {"runs": pd.concat(tables, ignore_index=True), "curves": pd.concat(curves, ignore_index=True)}


def _resolve_params(profile: str, table: Mapping[str, dict], overrides: Mapping[str, Any]) -> dict[str, Any]:
    params = dict(pick_profile(profile, table))
    for key, value in overrides.items():
        check_choice("parameter", key, tuple(params) + ("lr_overrides", "dtype"))
        if value is not None:
            params[key] = value
    return params


def run(profile: str = "default", device: str = "auto", seed: int = 0, *, workers: int | None = None,
        **overrides: Any) -> StoredResult:
    """Section 4.2 at a profile (``smoke``/``default``/``paper``); ``overrides`` replace profile values.

    Parameters (all optional overrides): ``functions``, ``n_grid``, ``approaches`` (e.g. ``"frog:16"``),
    ``num_seeds`` (seeds ``seed, seed+1, …``), ``max_steps`` (dict function → steps; ``None``: the
    paper's 1000 / 25000 / 1000), ``patience``, ``lr_overrides`` (see :mod:`frogcore.lrs`), ``dtype``.
    ``workers`` (default: up to 2 on CPU) does not change the numbers and is not part of the cache key.
    Tables: ``runs`` and ``curves``.
    """
    dev = resolve_device(device)
    seed = check_positive_int("seed", seed, minimum=0)
    p = _resolve_params(profile, PROFILES, overrides)
    functions = check_choices("functions", p["functions"], FUNCTIONS)
    n_grid = check_positive_ints("n_grid", p["n_grid"])
    approaches = list(p["approaches"])
    for a in approaches:
        parse_approach(a)
    num_seeds = check_positive_int("num_seeds", p["num_seeds"])
    max_steps = p["max_steps"]
    if max_steps is not None:
        if not isinstance(max_steps, Mapping):
            raise ValueError(f"max_steps must be a dict function → steps or None; got {max_steps!r}")
        for fname, steps in max_steps.items():
            check_choice("max_steps key", fname, FUNCTIONS)
            check_positive_int(f"max_steps[{fname!r}]", steps)
        max_steps = {f: max_steps.get(f, FUNCTIONS[f].max_steps) for f in functions}
    else:
        max_steps = {f: FUNCTIONS[f].max_steps for f in functions}
    patience = None if p["patience"] is None else check_positive_int("patience", p["patience"])
    dtype = str(check_dtype(p.get("dtype", "float32"))).replace("torch.", "")
    lr_overrides = list(p.get("lr_overrides") or [])
    LRTable.shipped(overrides=lr_overrides)  # validate now
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if dev.type == "cpu" else 1
    workers = check_positive_int("workers", workers)
    seeds = list(range(seed, seed + num_seeds))
    params = dict(functions=functions, n_grid=n_grid, approaches=approaches, seeds=seeds, max_steps=max_steps,
                  patience=patience, lr_overrides=lr_overrides, dtype=dtype, lr_tables=["math"])

    def compute() -> dict[str, pd.DataFrame]:
        return closed_form_grid(functions, n_grid, approaches, seeds, max_steps=max_steps, patience=patience,
                                lr_overrides=lr_overrides, dtype=dtype, device=dev, workers=workers)

    return run_cached(SECTION, "closed_form", compute, params=params, profile=profile, device=dev, seed=seed,
                      code=CODE)


def summary_table(runs: pd.DataFrame, value: str = "last") -> pd.DataFrame:
    """The paper-style table: mean ± std over seeds of ``value`` per function, n and approach
    (non-finite runs counted in ``diverged`` and left out of the mean)."""
    df = runs.copy()
    df["finite"] = df[value].map(math.isfinite)
    g = df.groupby(["function", "n", "label"], sort=False)
    out = g.apply(lambda d: pd.Series({
        "mean": d.loc[d.finite, value].mean(), "std": d.loc[d.finite, value].std(ddof=0),
        "gap_mean": (d.loc[d.finite, value] - d["minimum"].iloc[0]).mean(),
        "distance_mean": d.loc[d.finite, "distance"].mean(),
        "diverged": int((~d.finite).sum()), "early_stop": int((d.status == "early_stop").sum()),
        "steps_mean": d["steps"].mean(), "runs": len(d)}), include_groups=False)
    return out.reset_index()


# ----------------------------------------------------------------------------- Section 4.3

def angle_quality(n: int, k_grid: Sequence[int], angles: Sequence[float], num_samples: int, *, seed: int = 0,
                  dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> pd.DataFrame:
    """Cosine similarity and norm ratio to the true gradient ``g = 1 ∈ R^n`` of FG-mean and FROG with
    tangents at fixed angles (and plain normal tangents, ``angle`` NaN), each with unnormalised and
    unit-length tangents (``normalize``). All angles of one k rotate the same raw normal draws, so
    differences between angles are not blurred by sampling noise."""
    g = torch.ones(n, dtype=dtype, device=device)
    rows = []
    for k in k_grid:
        for angle in [None, *angles]:
            gen = torch.Generator(device=device).manual_seed(1_000_003 * seed + k)
            v = sample_tangents(n, k, batch=num_samples, sampler="angle" if angle is not None else "normal",
                                angle=angle, generator=gen, dtype=dtype, device=device)
            for normalize in (False, True):
                vv = v / v.norm(dim=-1, keepdim=True) if normalize else v
                d = vv @ g
                for agg, name in (("mean", "fg-mean"), ("projection", "frog")):
                    est = aggregate(d, vv, agg)
                    norm = est.norm(dim=-1)
                    metrics = {"cosine": (est @ g) / (norm * g.norm()), "norm_ratio": norm / g.norm()}
                    for metric, x in metrics.items():
                        x = x.double()
                        std = x.std().item()
                        rows.append({"n": n, "k": k, "angle": math.nan if angle is None else float(angle),
                                     "sampler": "normal" if angle is None else "angle", "normalize": normalize,
                                     "approach": name, "metric": metric, "mean": x.mean().item(), "std": std,
                                     "ci95": 1.96 * std / math.sqrt(num_samples), "count": num_samples})
    return pd.DataFrame(rows)


def angle_optimization(n: int, k_grid: Sequence[int], angles: Sequence[float], seeds: Sequence[int], *,
                       max_steps: int = 1000, patience: int | None = 50, dtype: str = "float32",
                       device: torch.device | str = "cpu",
                       lr_overrides: Sequence[Mapping[str, Any]] | None = None) -> dict[str, pd.DataFrame]:
    """Styblinski-Tang at dimension ``n``: FG-mean and FROG with angle tangents (learning rates from
    ``math__custom_tangents.csv``), plus reference runs with normal tangents (FROG with the 4.3 table's
    rate; BP and FG-mean where ``math.csv`` has a rate). One batch for everything."""
    fun = get_function("styblinski-tang")
    custom = LRTable.shipped(("math__custom_tangents",), overrides=lr_overrides)
    paper = LRTable.shipped(("math",), overrides=lr_overrides)
    draw = max(k_grid)
    runs, meta = [], []
    for s in seeds:
        for k in k_grid:
            for angle in angles:
                for name in ("fg-mean", "frog"):
                    lr = custom.lookup(fun.name, n, name, k, sampler="angle" if name == "fg-mean" else "normal",
                                       angle=angle if name == "fg-mean" else None)
                    runs.append(Run(name, k, s, lr, sampler="angle", angle=float(angle), draw=draw, normalize=True))
                    meta.append("math__custom_tangents")
            runs.append(Run("frog", k, s, custom.lookup(fun.name, n, "frog", k), draw=draw))
            meta.append("math__custom_tangents")
            try:
                runs.append(Run("fg-mean", k, s, paper.lookup(fun.name, n, "fg-mean", k), draw=draw))
                meta.append("math")
            except ValueError:
                pass  # the 4.2 table has no FG-mean rate for this k
        runs.append(Run("bp", 0, s, paper.lookup(fun.name, n, "bp")))
        meta.append("math")
    res = optimize(fun.fn, fun.start(n), runs, max_steps=max_steps, patience=patience, dtype=dtype, device=device)
    table = res.table(function=fun.name, n=n)
    table["lr_table"] = meta
    fmin = fun.minimum(n)
    table["minimum"] = fmin
    table["gap_last"] = table["last"] - fmin
    table["distance"] = fun.distance(res.x.double()).numpy()
    # curves per (label, angle)
    keys = [(r.label, r.angle) for r in res.runs]
    frames = []
    for key in dict.fromkeys(keys):
        cols = [i for i, kk in enumerate(keys) if kk == key]
        sub = OptimResult([res.runs[i] for i in cols], res.values[:, cols], res.best[cols], res.best_step[cols],
                          res.last[cols], res.x[cols], res.steps[cols], [res.status[i] for i in cols])
        frames.append(summarise_curves(sub, log_steps(max_steps, 80), function=fun.name, n=n))
    curves = pd.concat(frames, ignore_index=True)
    curves["minimum"] = fmin
    return {"runs": table, "curves": curves}


def run_custom_tangents(profile: str = "default", device: str = "auto", seed: int = 0,
                        **overrides: Any) -> StoredResult:
    """Section 4.3 at a profile. Overrides: ``n``, ``quality_k``, ``num_samples``, ``opt_k``, ``angles``,
    ``num_seeds``, ``max_steps``, ``patience``, ``lr_overrides``, ``dtype``.
    Tables: ``quality``, ``runs``, ``curves``."""
    dev = resolve_device(device)
    seed = check_positive_int("seed", seed, minimum=0)
    p = _resolve_params(profile, PROFILES_CUSTOM, overrides)
    n = check_positive_int("n", p["n"], minimum=2)
    quality_k = check_positive_ints("quality_k", p["quality_k"])
    opt_k = check_positive_ints("opt_k", p["opt_k"])
    num_samples = check_positive_int("num_samples", p["num_samples"])
    angles = [float(a) for a in p["angles"]]
    for a in angles:
        if not 0 < a <= 90:
            raise ValueError(f"angles must lie in (0, 90] degrees; got {a!r}")
    num_seeds = check_positive_int("num_seeds", p["num_seeds"])
    max_steps = check_positive_int("max_steps", p["max_steps"])
    patience = None if p["patience"] is None else check_positive_int("patience", p["patience"])
    dtype = str(check_dtype(p.get("dtype", "float32"))).replace("torch.", "")
    lr_overrides = list(p.get("lr_overrides") or [])
    seeds = list(range(seed, seed + num_seeds))
    params = dict(n=n, quality_k=quality_k, num_samples=num_samples, opt_k=opt_k, angles=angles, seeds=seeds,
                  max_steps=max_steps, patience=patience, dtype=dtype, lr_overrides=lr_overrides,
                  lr_tables=["math__custom_tangents", "math"])

    def compute() -> dict[str, pd.DataFrame]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            quality = angle_quality(n, quality_k, angles, num_samples, seed=seed, device=dev)
            opt = angle_optimization(n, opt_k, angles, seeds, max_steps=max_steps, patience=patience, dtype=dtype,
                                     device=dev, lr_overrides=lr_overrides)
        finally:
            torch.set_num_threads(threads)
        return {"quality": quality, **opt}

    return run_cached(SECTION_CUSTOM, "custom_tangents", compute, params=params, profile=profile, device=dev,
                      seed=seed, code=CODE)


# ----------------------------------------------------------------------------- 2-D trajectories

PROFILES_2D = {
    "smoke": dict(functions=list(PAPER_FUNCTIONS), approaches=["bp", "fg-mean:1", "fg-mean:2", "frog:2"],
                  num_seeds=1, max_steps=200, points=200),
    "default": dict(functions=list(PAPER_FUNCTIONS), approaches=["bp", "fg-mean:1", "fg-mean:2", "frog:2"],
                    num_seeds=1, max_steps=None, points=600),
    "paper": dict(functions=list(PAPER_FUNCTIONS), approaches=["bp", "fg-mean:1", "fg-mean:2", "frog:2"],
                  num_seeds=1, max_steps=None, points=600),
}


def trajectories_2d(functions: Sequence[str], approaches: Sequence[str], seeds: Sequence[int], *,
                    max_steps: int | None = None, points: int = 600, patience: int | None = 50,
                    dtype: str = "float64", device: torch.device | str = "cpu") -> pd.DataFrame:
    """Iterates of every run at n = 2 (for contour plots): columns function, label, seed, step, x, y, value,
    at about ``points`` log-spaced steps. float64 by default (2-D runs are cheap), so that FROG with
    k ≥ 2 = n visibly retraces backprop."""
    frames = []
    for fname in functions:
        fun = get_function(fname)
        steps = fun.max_steps if max_steps is None else max_steps
        res = optimize_function(fname, 2, approaches, seeds, max_steps=steps, patience=patience, dtype=dtype,
                                device=device, record_x=True)
        idx = log_steps(steps, points)
        for i, r in enumerate(res.runs):
            xs = res.xs[idx, i].double()
            frames.append(pd.DataFrame({"function": fname, "label": r.label, "seed": r.seed, "step": idx.numpy(),
                                        "x": xs[:, 0].numpy(), "y": xs[:, 1].numpy(),
                                        "value": res.values[idx, i].double().numpy(),
                                        "status": res.status[i], "stop_step": int(res.steps[i])}))
    return pd.concat(frames, ignore_index=True)


def run_trajectories_2d(profile: str = "default", device: str = "auto", seed: int = 0,
                        **overrides: Any) -> StoredResult:
    """2-D iterates of the paper's three functions for contour maps (Section 4.2 figures)."""
    dev = resolve_device(device)
    seed = check_positive_int("seed", seed, minimum=0)
    p = _resolve_params(profile, PROFILES_2D, overrides)
    functions = check_choices("functions", p["functions"], PAPER_FUNCTIONS)
    approaches = list(p["approaches"])
    for a in approaches:
        parse_approach(a)
    num_seeds = check_positive_int("num_seeds", p["num_seeds"])
    max_steps = None if p["max_steps"] is None else check_positive_int("max_steps", p["max_steps"])
    points = check_positive_int("points", p["points"])
    dtype = str(check_dtype(p.get("dtype", "float64"))).replace("torch.", "")
    seeds = list(range(seed, seed + num_seeds))
    params = dict(functions=functions, approaches=approaches, seeds=seeds, max_steps=max_steps, points=points,
                  dtype=dtype)

    def compute() -> pd.DataFrame:
        return trajectories_2d(functions, approaches, seeds, max_steps=max_steps, points=points, dtype=dtype,
                               device=dev)

    return run_cached(SECTION, "trajectories_2d", compute, params=params, profile=profile, device=dev, seed=seed,
                      code=CODE)
