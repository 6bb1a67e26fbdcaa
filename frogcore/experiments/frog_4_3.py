"""FROG Section 4.3 (chapter ``frog_4_3``): custom tangents at a fixed angle.

Tangents 2..k at a fixed angle to the first one (sampler ``"angle"``; like the authors' sampler, every
tangent is normalised to unit length before the rotation, see :func:`frogcore.tangents.rotate_to_angle`):
approximation quality at n = 64 (table ``quality``) and optimisation of Styblinski-Tang n = 64 with FG-mean
and FROG (tables ``runs``, ``curves``), with the authors' learning rates (``math__custom_tangents.csv``) and
their early-stopping rule.

See the book page "FROG: deviations from the authors' setup" for every setting compared with the authors' code.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from ..config import check_positive_int, check_positive_ints
from ..estimators import aggregate
from ..functions import get_function
from ..lrs import LRTable
from ..optimize import OptimResult, Run, log_steps, optimize
from ..seeds import derive
from ..tangents import sample_tangents
from .common.closed_form import check_common, summarise_curves
from .runner import Chapter, Experiment

__all__ = ["CHAPTER", "PROFILES", "PAPER_ANGLES", "angle_quality", "angle_optimization", "run"]

PAPER_ANGLES = (15.0, 30.0, 45.0, 60.0, 75.0, 90.0)
_COMMON = dict(n=64, patience=50, dtype="float32", lr_overrides=[])
PROFILES = {
    "smoke": dict(_COMMON, quality_k=[4, 16], num_samples=100, opt_k=[16], angles=[15.0, 45.0, 90.0], num_seeds=2,
                  max_steps=100),
    "default": dict(_COMMON, quality_k=[4, 16, 64], num_samples=1000, opt_k=[16, 64], angles=list(PAPER_ANGLES),
                    num_seeds=5, max_steps=1000),
    "paper": dict(_COMMON, quality_k=[4, 16, 64], num_samples=1000, opt_k=[16, 64], angles=list(PAPER_ANGLES),
                  num_seeds=5, max_steps=1000),
}


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
            gen = torch.Generator(device=device).manual_seed(derive(seed, "frog_4_3", n, k))
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


def check(p: dict) -> dict:
    out = check_common(p)
    out["n"] = check_positive_int("n", p["n"], minimum=2)
    out["quality_k"] = check_positive_ints("quality_k", p["quality_k"])
    out["opt_k"] = check_positive_ints("opt_k", p["opt_k"])
    out["num_samples"] = check_positive_int("num_samples", p["num_samples"])
    angles = p["angles"]
    if isinstance(angles, (str, bytes)) or not isinstance(angles, Sequence) or not angles:
        raise ValueError(f"angles must be a non-empty list of numbers in (0, 90] degrees; got {angles!r}")
    out["angles"] = []
    for i, a in enumerate(angles):
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a <= 90:
            raise ValueError(f"angles[{i}] must be a number in (0, 90] degrees; got {a!r}")
        out["angles"].append(float(a))
    out["max_steps"] = check_positive_int("max_steps", p["max_steps"])
    return out


def compute(p: dict, device: torch.device, seed: int) -> dict[str, pd.DataFrame]:
    seeds = list(range(seed, seed + p["num_seeds"]))
    quality = angle_quality(p["n"], p["quality_k"], p["angles"], p["num_samples"], seed=seed, device=device)
    opt = angle_optimization(p["n"], p["opt_k"], p["angles"], seeds, max_steps=p["max_steps"], patience=p["patience"],
                             dtype=p["dtype"], device=device, lr_overrides=p["lr_overrides"])
    return {"quality": quality, **opt}


CHAPTER = Chapter("frog_4_3", {"custom_tangents": Experiment(PROFILES, compute, check,
                                                             threads={"smoke": 1, "default": 1, "paper": 1})})


def run(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Section 4.3 at a profile. Overrides: ``n``, ``quality_k``, ``num_samples``, ``opt_k``, ``angles``,
    ``num_seeds``, ``max_steps``, ``patience``, ``lr_overrides``, ``dtype``.
    Tables: ``quality``, ``runs``, ``curves``."""
    return CHAPTER.run("custom_tangents", profile, device, seed, **overrides)
