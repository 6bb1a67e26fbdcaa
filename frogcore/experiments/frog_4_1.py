"""FROG Section 4.1 (chapter ``frog_4_1``): approximation quality of forward-gradient estimators over an (n, k) grid.

Methods (``method=``):

* ``"brute"`` — :func:`frogcore.approx.sample_quality`: build the tangents, aggregate, measure
  (``O(k n)`` memory and up to ``O(k² n)`` time per sample);
* ``"reduced"`` — :func:`frogcore.reduced.sample_quality_paths`: the exact ``O(k)``-per-sample sampler
  (same law, independent of ``n``; one sequential path of tangents per ``n``, so the cells of one ``n``
  are nested in ``k``);
* ``"auto"`` — brute force where a cell is cheap (``n·k ≤ AUTO_BRUTE_MAX``), reduced elsewhere. The
  ``method`` column of the summary says which sampler produced each cell.

Besides the empirical ``summary`` the run stores ``exact``: the summary joined with the exact
expectations of :mod:`frogcore.theory` and the z-scores ``(empirical − exact)/sem``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch

from .. import reduced
from ..approx import ESTIMATORS, METRICS, sample_quality
from ..config import check_choice, check_choices, check_dtype, check_positive_int, check_positive_ints
from ..seeds import derive
from ..theory import exact_table
from .runner import Chapter, Experiment

METHODS = ("brute", "reduced", "auto")
# "auto" uses brute force for cells with n * k <= AUTO_BRUTE_MAX (a (samples, k, n) tangent tensor of at
# most 4M floats at 1000 samples), the reduced sampler elsewhere
AUTO_BRUTE_MAX = 4096

_PAPER_GRID = dict(n_grid=[2**i for i in range(15)], k_grid=[2**i for i in range(11)], num_samples=1000)
# default = the paper's grid: with the reduced sampler it costs seconds, so the book shows the full grid.
# It runs "auto" (tangents built explicitly wherever that is cheap) while "paper" runs the reduced
# sampler everywhere: two independent computations of the same experiment.
_COMMON = dict(estimators=list(ESTIMATORS), dtype="float32")
PROFILES = {
    "smoke": dict(n_grid=[1, 4, 16, 64], k_grid=[1, 4, 16], num_samples=20, method="auto", **_COMMON),
    "default": dict(_PAPER_GRID, method="auto", **_COMMON),
    "paper": dict(_PAPER_GRID, method="reduced", **_COMMON),
}


def summarise(samples: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation, standard error and the paper's 95% CI half-width (1.96·std/√count),
    plus the mean of the squares and its standard error (for checking exact second moments)."""
    x = samples.double()
    count = x.numel()
    std = x.std(unbiased=True).item() if count > 1 else 0.0
    x2 = x * x
    std2 = x2.std(unbiased=True).item() if count > 1 else 0.0
    return {"mean": x.mean().item(), "std": std, "sem": std / math.sqrt(count),
            "ci95": 1.96 * std / math.sqrt(count), "count": count,
            "mean_sq": x2.mean().item(), "sem_sq": std2 / math.sqrt(count)}


def cell_method(method: str, n: int, k: int) -> str:
    """The sampler that ``method`` uses for the cell ``(n, k)``."""
    if method == "auto":
        return "brute" if n * k <= AUTO_BRUTE_MAX else "reduced"
    return method


def quality_grid(
    n_grid: Sequence[int],
    k_grid: Sequence[int],
    num_samples: int,
    estimators: Sequence[str] = ESTIMATORS,
    *,
    method: str = "brute",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Tidy summary table with columns n, k, estimator, metric, method, mean, std, sem, ci95, count,
    mean_sq, sem_sq.

    ``"single"`` estimators do not depend on k and are computed once per n (reported with k = 1).
    Brute-force cells use a generator seeded from ``(seed, n, k)``, reduced paths one seeded from
    ``(seed, n, 0)``, so a cell's numbers do not depend on which other cells are in the grid.
    """
    check_choice("method", method, METHODS)
    single = [e for e in estimators if e.startswith("single")]
    multi = [e for e in estimators if not e.startswith("single")]
    cells = {}  # (n, k) -> list of estimators to report there
    for n in n_grid:
        for k in k_grid:
            todo = multi + (single if k == 1 else [])
            if todo:
                cells[(n, k)] = todo
        if single and 1 not in k_grid:
            cells[(n, 1)] = list(single)
    results, used = {}, {}
    red_ns = sorted({n for (n, k) in cells if cell_method(method, n, k) == "reduced"})
    if red_ns:
        red_ks = sorted({k for (n, k) in cells if n in red_ns})
        gens = [torch.Generator().manual_seed(derive(seed, "frog_4_1", n, 0)) for n in red_ns]
        paths = reduced.sample_quality_paths(red_ns, red_ks, num_samples, sorted(set(estimators)),
                                             generators=gens, dtype=dtype)
    for (n, k), todo in cells.items():
        how = cell_method(method, n, k)
        if how == "reduced":
            results[(n, k)] = paths[(n, k)]
        else:
            gen = torch.Generator(device=device).manual_seed(derive(seed, "frog_4_1", n, k))
            results[(n, k)] = sample_quality(n, k, num_samples, todo, generator=gen, dtype=dtype, device=device)
        used[(n, k)] = how
    rows = []
    for (n, k), todo in sorted(cells.items()):
        for e in todo:
            for m in METRICS:
                rows.append({"n": n, "k": k, "estimator": e, "metric": m, "method": used[(n, k)],
                             **summarise(results[(n, k)][e][m])})
    return pd.DataFrame(rows)


def compare_exact(summary: pd.DataFrame) -> pd.DataFrame:
    """Join the summary with the exact expectations; add z-scores of the mean and of the mean square.

    ``z = (mean − exact_mean)/sem`` and ``z_sq`` likewise for the second moment; both are ``nan``
    where no closed form exists or where the exact law is a point mass (the projection for k ≥ n, the
    cosine at n = 1: there ``abs_err = |mean − exact_mean|`` measures floating-point rounding only).
    """
    exact = exact_table(sorted(summary.n.unique()), sorted(summary.k.unique()), sorted(summary.estimator.unique()))
    t = summary.merge(exact, on=["n", "k", "estimator", "metric"], how="left")
    random = (t["exact_std"] > 0) | t["exact_std"].isna()
    t["z"] = ((t["mean"] - t["exact_mean"]) / t["sem"]).where(random & (t["sem"] > 0))
    t["z_sq"] = ((t["mean_sq"] - t["exact_mean_sq"]) / t["sem_sq"]).where(random & (t["sem_sq"] > 0))
    t["abs_err"] = (t["mean"] - t["exact_mean"]).abs()
    return t[["n", "k", "estimator", "metric", "method", "mean", "sem", "exact_mean", "z",
              "mean_sq", "sem_sq", "exact_mean_sq", "z_sq", "abs_err", "closed_form"]]


def check(p: dict) -> dict:
    """Validate the parameters of the ``quality`` experiment."""
    return {
        "n_grid": check_positive_ints("n_grid", p["n_grid"]),
        "k_grid": check_positive_ints("k_grid", p["k_grid"]),
        "num_samples": check_positive_int("num_samples", p["num_samples"]),
        "estimators": check_choices("estimators", p["estimators"], ESTIMATORS),
        "method": check_choice("method", p["method"], METHODS),
        "dtype": str(check_dtype(p["dtype"])).replace("torch.", ""),
    }


def compute(p: dict, device: torch.device, seed: int) -> dict[str, pd.DataFrame]:
    """Tables ``summary`` (empirical statistics per cell, estimator and metric) and ``exact`` (joined
    with the exact expectations, see :func:`compare_exact`)."""
    summary = quality_grid(p["n_grid"], p["k_grid"], p["num_samples"], p["estimators"], method=p["method"],
                           seed=seed, dtype=check_dtype(p["dtype"]), device=device)
    return {"summary": summary, "exact": compare_exact(summary)}


CHAPTER = Chapter("frog_4_1", {"quality": Experiment(PROFILES, compute, check)})


def run(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the 4.1 grid; ``overrides``: ``n_grid``, ``k_grid``, ``num_samples``, ``estimators``,
    ``method``, ``dtype`` (see :data:`PROFILES`)."""
    return CHAPTER.run("quality", profile, device, seed, **overrides)
