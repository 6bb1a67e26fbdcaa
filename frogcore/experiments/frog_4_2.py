"""FROG Section 4.2 (chapter ``frog_4_2``): gradient descent on closed-form functions with forward gradients.

Experiment ``closed_form``: sphere, Rosenbrock and Styblinski-Tang for n = 1, 2, 4, …, 1024; backprop,
FG (k = 1), FG-mean and FROG (k = 2, 4, 16); plain gradient descent with the authors' learning rates
(:mod:`frogcore.lrs`), the authors' early-stopping rule (50 consecutive non-decreasing steps, see
:mod:`frogcore.optimize`) or a non-finite value, seeds 0–4. All runs of one (function, n) form ONE batch of
:func:`frogcore.optimize.optimize`; the batches are spread over ``workers`` processes (a runtime option:
the numbers do not depend on it). Tables ``runs`` and ``curves``.

Experiment ``trajectories_2d``: the iterates of every run at n = 2 (contour plots), table of
function, label, seed, step, x, y, value at about ``points`` log-spaced steps; float64 so that FROG with
k ≥ 2 = n visibly retraces backprop.

See the book page "FROG: deviations from the authors' setup" for every setting compared with the authors' code.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from ..config import check_choice, check_positive_int, check_positive_ints
from ..functions import FUNCTIONS, PAPER_FUNCTIONS, get_function
from ..optimize import log_steps
from .common.closed_form import (
    PAPER_APPROACHES,
    PAPER_N,
    check_common,
    closed_form_grid,
    optimize_function,
    summary_table,
)
from .runner import Chapter, Experiment, context

__all__ = ["CHAPTER", "PROFILES", "PROFILES_2D", "run", "run_trajectories_2d", "summary_table", "trajectories_2d"]

_COMMON = dict(functions=list(PAPER_FUNCTIONS), approaches=list(PAPER_APPROACHES), patience=50, dtype="float32",
               lr_overrides=[])
PROFILES = {
    "smoke": dict(_COMMON, n_grid=[2, 16], num_seeds=2,
                  max_steps={"sphere": 100, "rosenbrock": 200, "styblinski-tang": 100}),
    # every other dimension (1 … 1024, so the high-n regime stays) and 3 seeds at the paper's step limits
    "default": dict(_COMMON, n_grid=[1, 4, 16, 64, 256, 1024], num_seeds=3, max_steps=None),
    "paper": dict(_COMMON, n_grid=list(PAPER_N), num_seeds=5, max_steps=None),
}

_COMMON_2D = dict(functions=list(PAPER_FUNCTIONS), approaches=["bp", "fg-mean:1", "fg-mean:2", "frog:2"], num_seeds=1,
                  patience=50, dtype="float64")
PROFILES_2D = {
    "smoke": dict(_COMMON_2D, max_steps=200, points=200),
    "default": dict(_COMMON_2D, max_steps=None, points=600),
    "paper": dict(_COMMON_2D, max_steps=None, points=600),
}


def check(p: dict) -> dict:
    out = check_common(p)
    out["n_grid"] = check_positive_ints("n_grid", p["n_grid"])
    max_steps = p["max_steps"]
    if max_steps is not None:
        if not isinstance(max_steps, Mapping):
            raise ValueError(f"max_steps must be a dict function → steps or None; got {max_steps!r}")
        for fname, steps in max_steps.items():
            check_choice("max_steps key", fname, tuple(FUNCTIONS))
            check_positive_int(f"max_steps[{fname!r}]", steps)
    out["max_steps"] = {f: (max_steps or {}).get(f, FUNCTIONS[f].max_steps) for f in out["functions"]}
    return out


def closed_form_cells(p: dict) -> list[dict]:
    """The sweep cells (:mod:`frogcore.sweep`): one per (function, n) batch, in the order of the tables."""
    return [{"functions": [f], "n_grid": [n]} for f in p["functions"] for n in p["n_grid"]]


def compute(p: dict, device: torch.device, seed: int) -> dict[str, pd.DataFrame]:
    workers = context().runtime["workers"] or (min(2, os.cpu_count() or 1) if device.type == "cpu" else 1)
    seeds = list(range(seed, seed + p["num_seeds"]))
    return closed_form_grid(p["functions"], p["n_grid"], p["approaches"], seeds, max_steps=p["max_steps"],
                            patience=p["patience"], lr_overrides=p["lr_overrides"], dtype=p["dtype"], device=device,
                            workers=workers)


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




def check_2d(p: dict) -> dict:
    out = check_common(p, PAPER_FUNCTIONS)
    out["max_steps"] = None if p["max_steps"] is None else check_positive_int("max_steps", p["max_steps"])
    out["points"] = check_positive_int("points", p["points"])
    return out


def compute_2d(p: dict, device: torch.device, seed: int) -> pd.DataFrame:
    seeds = list(range(seed, seed + p["num_seeds"]))
    return trajectories_2d(p["functions"], p["approaches"], seeds, max_steps=p["max_steps"], points=p["points"],
                           patience=p["patience"], dtype=p["dtype"], device=device)


CHAPTER = Chapter("frog_4_2", {
    "closed_form": Experiment(PROFILES, compute, check, runtime={"workers": 0}, cells=closed_form_cells),
    "trajectories_2d": Experiment(PROFILES_2D, compute_2d, check_2d),
})


def run(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """The 4.2 grid (tables ``runs``, ``curves``). Overrides: ``functions``, ``n_grid``, ``approaches``
    (e.g. ``"frog:16"``), ``num_seeds`` (seeds ``seed, seed+1, …``), ``max_steps`` (dict function → steps;
    ``None``: the paper's 1000 / 25000 / 1000), ``patience``, ``lr_overrides`` (see :mod:`frogcore.lrs`),
    ``dtype``; runtime option ``workers`` (0: up to 2 on the CPU)."""
    return CHAPTER.run("closed_form", profile, device, seed, **overrides)


def run_trajectories_2d(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """2-D iterates of the paper's three functions for contour maps."""
    return CHAPTER.run("trajectories_2d", profile, device, seed, **overrides)
