"""Geometry of random subspaces (chapter ``frog_geometry``): exact laws of the projection's and the
mean's direction and length against ``k/n``, sampled checks, and the FROG authors' tuned learning rates.

Curves are exact (:mod:`frogcore.theory`); the sampled dots come from the exact reduced sampler
(:mod:`frogcore.reduced`) at ``n = n_dots``. Table ``curves`` (exact cosine mean and 5–95 % band per
``n``, ``k`` and estimator; the mean's length ``E rho`` and ``sqrt(E rho²)``), ``dots`` (sampled means
and standard errors), ``lr_ratios`` (the authors' tuned rates relative to backprop's) and ``lr_slopes``
(fitted exponents of those ratios). Everything runs in NumPy on the CPU whatever the device.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import reduced, theory
from ..config import check_positive_int, check_positive_ints
from ..seeds import derive
from .runner import Chapter, Experiment

_COMMON = dict(n_curves=[16, 256, 4096, 65536], n_dots=4096, k_dots=[2**i for i in range(11)])
PROFILES = {
    "smoke": dict(num_samples=50, **_COMMON),
    "default": dict(num_samples=1000, **_COMMON),
    "paper": dict(num_samples=1000, **_COMMON),
}


def check(p: dict) -> dict:
    return {"num_samples": check_positive_int("num_samples", p["num_samples"]),
            "n_curves": check_positive_ints("n_curves", p["n_curves"]),
            "n_dots": check_positive_int("n_dots", p["n_dots"]),
            "k_dots": check_positive_ints("k_dots", p["k_dots"])}


def exact_curves(n_curves: list[int], points: int = 60) -> pd.DataFrame:
    """Exact cosine laws (mean, 5 % and 95 % quantiles) of the projection and the mean at ~``points``
    log-spaced k per n, and the mean's length law (``E rho`` and ``sqrt(E rho²)``)."""
    rows = []
    for n in n_curves:
        for k in sorted(set(np.unique(np.round(np.geomspace(1, n, points)).astype(int)))):
            for est in ("projection", "mean"):
                c = theory.law(est, "cosine", n, int(k))
                row = {"n": n, "k": int(k), "r": k / n, "estimator": est, "cos_mean": c.mean(),
                       "cos_q05": float(c.ppf(0.05)), "cos_q95": float(c.ppf(0.95))}
                if est == "mean":
                    rho = theory.law("mean", "norm_ratio", n, int(k))
                    row.update(rho_mean=rho.mean(), rho_rms=np.sqrt(rho.moment(2)))
                rows.append(row)
    return pd.DataFrame(rows)


def sampled_dots(n: int, ks: list[int], num_samples: int, seed: int) -> pd.DataFrame:
    """Sampled means (and standard errors) of the cosine and norm ratio at dimension ``n``."""
    gens = [torch.Generator().manual_seed(derive(seed, "frog_geometry", n))]
    paths = reduced.sample_quality_paths([n], ks, num_samples, generators=gens, dtype=torch.float64)
    return pd.DataFrame([{"n": n, "k": k, "r": k / n, "estimator": e, "metric": m,
                          "mean": float(v.mean()), "sem": float(v.std() / np.sqrt(v.numel()))}
                         for k in ks for e in ("projection", "mean", "mean-normalized")
                         for m, v in paths[(n, k)][e].items()])


def compute(p: dict, device: torch.device, seed: int) -> dict[str, pd.DataFrame]:
    ratios = theory.learning_rate_ratios()
    return {"curves": exact_curves(p["n_curves"]),
            "dots": sampled_dots(p["n_dots"], p["k_dots"], p["num_samples"], seed),
            "lr_ratios": ratios, "lr_slopes": theory.fit_lr_exponents(ratios)}


CHAPTER = Chapter("frog_geometry", {"geometry": Experiment(PROFILES, compute, check)})


def run(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the geometry tables; ``overrides``: ``num_samples``, ``n_curves``, ``n_dots``, ``k_dots``."""
    return CHAPTER.run("geometry", profile, device, seed, **overrides)
