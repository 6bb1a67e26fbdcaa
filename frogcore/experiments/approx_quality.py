"""Section 4.1 driver: approximation quality of forward-gradient estimators over an (n, k) grid."""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch

from ..approx import ESTIMATORS, METRICS, sample_quality
from ..config import check_choice, check_choices, check_dtype, check_positive_int, check_positive_ints, pick_profile, resolve_device
from ..results import StoredResult, run_cached

SECTION = "frog_4_1"
METHODS = ("brute",)

PROFILES = {
    "smoke": dict(n_grid=[1, 4, 16, 64], k_grid=[1, 4, 16], num_samples=20),
    "default": dict(n_grid=[2**i for i in range(13)], k_grid=[2**i for i in range(9)], num_samples=200),
    "paper": dict(n_grid=[2**i for i in range(15)], k_grid=[2**i for i in range(11)], num_samples=1000),
}


def summarise(samples: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation, standard error and the paper's 95% CI half-width (1.96·std/√count)."""
    x = samples.double()
    count = x.numel()
    std = x.std(unbiased=True).item() if count > 1 else 0.0
    return {"mean": x.mean().item(), "std": std, "sem": std / math.sqrt(count),
            "ci95": 1.96 * std / math.sqrt(count), "count": count}


def quality_grid(
    n_grid: Sequence[int],
    k_grid: Sequence[int],
    num_samples: int,
    estimators: Sequence[str] = ESTIMATORS,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Tidy summary table with columns n, k, estimator, metric, mean, std, sem, ci95, count.

    ``"single"`` estimators do not depend on k and are computed once per n (reported with k = 1).
    Each (n, k) cell uses its own generator seeded from ``(seed, n, k)``, so a cell's numbers do not
    depend on which other cells are in the grid.
    """
    rows = []
    single = [e for e in estimators if e.startswith("single")]
    multi = [e for e in estimators if not e.startswith("single")]
    for n in n_grid:
        for k in k_grid:
            todo = multi + (single if k == 1 else [])
            if not todo:
                continue
            gen = torch.Generator(device=device).manual_seed(hash_seed(seed, n, k))
            res = sample_quality(n, k, num_samples, todo, generator=gen, dtype=dtype, device=device)
            for e in todo:
                for m in METRICS:
                    rows.append({"n": n, "k": k, "estimator": e, "metric": m, **summarise(res[e][m])})
        if single and 1 not in k_grid:
            gen = torch.Generator(device=device).manual_seed(hash_seed(seed, n, 1))
            res = sample_quality(n, 1, num_samples, single, generator=gen, dtype=dtype, device=device)
            for e in single:
                for m in METRICS:
                    rows.append({"n": n, "k": 1, "estimator": e, "metric": m, **summarise(res[e][m])})
    return pd.DataFrame(rows)


def hash_seed(seed: int, n: int, k: int) -> int:
    """A deterministic per-cell seed (independent of Python's randomised ``hash``)."""
    return (seed * 1_000_003 + n * 10_007 + k) % (2**63 - 1)


def run(
    profile: str = "default",
    device: str = "auto",
    seed: int = 0,
    *,
    n_grid: Sequence[int] | None = None,
    k_grid: Sequence[int] | None = None,
    num_samples: int | None = None,
    estimators: Sequence[str] | None = None,
    method: str = "brute",
    dtype: str = "float32",
    force: bool | None = None,
) -> StoredResult:
    """Run (or load) the 4.1 grid. ``None`` parameters take the profile's value."""
    prof = pick_profile(profile, PROFILES)
    dev = resolve_device(device)
    check_choice("method", method, METHODS)
    dt = check_dtype(dtype)
    seed = check_positive_int("seed", seed, minimum=0)
    params = {
        "n_grid": check_positive_ints("n_grid", prof["n_grid"] if n_grid is None else n_grid),
        "k_grid": check_positive_ints("k_grid", prof["k_grid"] if k_grid is None else k_grid),
        "num_samples": check_positive_int("num_samples", prof["num_samples"] if num_samples is None else num_samples),
        "estimators": check_choices("estimators", list(ESTIMATORS) if estimators is None else estimators, ESTIMATORS),
        "method": method,
        "dtype": dtype,
    }
    return run_cached(
        SECTION, "quality",
        lambda: {"summary": quality_grid(params["n_grid"], params["k_grid"], params["num_samples"],
                                          params["estimators"], seed=seed, dtype=dt, device=dev)},
        params=params, profile=profile, device=dev, seed=seed,
        code=["frogcore.experiments.approx_quality"], force=force,
    )
