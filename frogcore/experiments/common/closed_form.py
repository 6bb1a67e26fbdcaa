"""Closed-form optimisation shared by FROG Sections 4.2 and 4.3 (chapters ``frog_4_2``, ``frog_4_3``).

Runs of one function and dimension form ONE batch of :func:`frogcore.optimize.optimize` (plain
gradient descent with the authors' learning rates from :mod:`frogcore.lrs`, the authors'
early-stopping rule, see :mod:`frogcore.optimize`); approaches are :class:`frogcore.approach.Approach`
specs (``"bp"``, ``"fg-mean:1"`` = FG, ``"frog:16"``).

dtype: float32 by default, like PyTorch's default the authors' code ran with, and 2.4× faster than
float64 at n = 1024 (forward mode and tangent sampling are memory-bound). Pass ``dtype="float64"`` to compare.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from ...approach import FROG_APPROACHES, parse_approaches
from ...config import check_choices, check_dtype, check_positive_int, resolve_device
from ...functions import FUNCTIONS, get_function
from ...lrs import LRTable
from ...optimize import OptimResult, Run, log_steps, optimize

PAPER_APPROACHES = ("bp", "fg-mean:1", "fg-mean:2", "fg-mean:4", "fg-mean:16", "frog:2", "frog:4", "frog:16")
PAPER_N = tuple(2**i for i in range(11))


def check_common(p: dict, functions_allowed: Sequence[str] = tuple(FUNCTIONS)) -> dict:
    """Validate the parameters shared by the closed-form experiments (those present in ``p``)."""
    out = dict(p)
    if "functions" in p:
        out["functions"] = check_choices("functions", p["functions"], functions_allowed)
    if "approaches" in p:
        out["approaches"] = [a.spec for a in parse_approaches("approaches", p["approaches"], FROG_APPROACHES)]
    if "num_seeds" in p:
        out["num_seeds"] = check_positive_int("num_seeds", p["num_seeds"])
    if "patience" in p:
        out["patience"] = None if p["patience"] is None else check_positive_int("patience", p["patience"])
    if "dtype" in p:
        out["dtype"] = str(check_dtype(p["dtype"])).replace("torch.", "")
    if "lr_overrides" in p:
        out["lr_overrides"] = list(p["lr_overrides"] or [])
        LRTable.shipped(overrides=out["lr_overrides"])  # validates them
    return out


def make_runs(function: str, n: int, approaches: Sequence[str], seeds: Sequence[int], lrs: LRTable,
              *, sampler: str = "normal", angle: float | None = None) -> tuple[list[Run], list[str]]:
    """Runs for every approach × seed with learning rates from ``lrs`` (and their sources).

    All forward-gradient runs of one seed draw the same tangents (``draw`` = the largest k), so
    approaches are compared on common random numbers.
    """
    parsed = [(a.name, a.k) for a in parse_approaches("approaches", list(approaches), FROG_APPROACHES)]
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
        cols = [i for i, name in enumerate(labels) if name == lab]
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


def grid_job(args: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    """Tables ``runs`` (one row per run) and ``curves`` (median/min/max over seeds at log-spaced steps).

    The (function, n) batches are spread over ``workers`` processes (the numbers do not depend on it).
    The pool is shut down (its workers terminated) when the computation ends or fails, including on
    KeyboardInterrupt/SIGTERM of the calling process.
    """
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
        from ...parallel import process_pool

        with process_pool(min(workers, len(jobs))) as ex:
            outs = dict(zip(order, ex.map(grid_job, [jobs[i] for i in order])))
    else:
        threads = torch.get_num_threads()
        try:
            outs = {i: grid_job(jobs[i]) for i in order}
        finally:
            torch.set_num_threads(threads)
    tables = [outs[i][0] for i in range(len(jobs))]
    curves = [outs[i][1] for i in range(len(jobs))]
    return {"runs": pd.concat(tables, ignore_index=True), "curves": pd.concat(curves, ignore_index=True)}


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


