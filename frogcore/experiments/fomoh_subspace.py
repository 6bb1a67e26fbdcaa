r"""One subspace step, two metrics (chapter ``fomoh_subspace``): FROG and FoMoH-KD linked by a damped metric.

FROG (Flügel et al., arXiv 2410.17764) and FoMoH-KD (Cobb et al., arXiv 2408.10419) both step inside
the span of ``K`` tangents ``V`` ``(K, n)``: ``Δθ = −η Vᵀ M⁻¹ V∇f`` with the Gram matrix ``M = VVᵀ``
(FROG: the orthogonal projection of the gradient) or the directional Hessian ``M = Ĥ = V∇²fVᵀ``
(FoMoH-KD). The damped metric ``M = Ĥ + μ VVᵀ`` goes from FoMoH-KD (μ = 0) to FROG with learning rate
``η/μ`` (μ → ∞); see :mod:`frogcore.second_order`.

Experiment ``damping_sweep``: on each of ``problems`` in ``n`` dimensions, run ``iterations`` steps with
η = ``eta`` for every μ in ``dampings`` and each treatment in ``curvatures`` of an indefinite ``M``
(``raw``: Cholesky with a growing multiple of the identity added; ``abs``: eigenvalues replaced by their
absolute values; ``softabs``), and FROG for every learning rate in ``frog_lrs``; K = ``k`` tangents per
step. Problems (start points from :data:`frogcore.functions.FUNCTIONS` where registered):

* ``quadratic`` — :func:`frogcore.functions.quadratic`, ``½ Σ λ_i x_i²`` with λ log-spaced in
  [1, ``quadratic_cond``], start all ones, minimum 0;
* ``rosenbrock`` — start (−1, 0, …, 0) (the FROG paper's), minimum 0;
* ``styblinski-tang`` — ``½ Σ (x_i⁴ − 16x_i² + 5x_i)``, start all zeros (the FROG paper's; the Hessian
  there is −16·I: negative curvature), minimum the exact ``−39.16616570377141·n``
  (:data:`frogcore.functions.STYBLINSKI_TANG_MIN_PER_DIM_EXACT`; the rounded −39.16599·n of the papers
  lies above the true minimum and gave negative gaps).

Tables: ``sweep`` (problem, variant ``damped``/``frog``, approach, label, curvature, damping, lr, seed,
final_gap = f(x_T) − f*) and ``curves`` (median gap over the seeds per iteration for μ = 0, the best μ
and the best FROG lr; best = lowest median final gap, non-finite counting as +∞).

Randomness: seed ``s`` of problem ``p`` draws its tangents from ``derive(seed, "fomoh_subspace", p, s)``
(:func:`frogcore.seeds.derive`), so every μ, curvature treatment and FROG learning rate sees the same
tangents at a given seed and step (common random numbers); the start points are fixed. Both tables are
deterministic: identical runs (same parameters, seed, device type and torch build) give bit-identical tables.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..approach import Approach
from ..config import check_choices, check_positive_int
from ..estimators import aggregate
from ..functions import FUNCTIONS, QUADRATIC_COND, quadratic
from ..second_order import CURVATURES, subspace_step
from ..seeds import generator
from .common.fomoh import best_index, check_positive_float, check_positive_floats, optimise, tangent_generators
from .runner import Chapter, Experiment

__all__ = ["CHAPTER", "PROBLEMS", "PROFILES", "identity_metric_check", "problem", "run"]

SECTION = "fomoh_subspace"
PROBLEMS = ("quadratic", "rosenbrock", "styblinski-tang")

_DAMPINGS = [0.0, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5]
_FROG_LRS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
_COMMON = {"n": 20, "quadratic_cond": QUADRATIC_COND, "eta": 1.0}
PROFILES = {
    "smoke": {**_COMMON, "iterations": 20, "seeds": 2, "k": 3, "dampings": [0.0, 1.0, 1e3], "frog_lrs": [1e-4, 1e-3],
              "problems": ["quadratic", "rosenbrock"], "curvatures": ["raw"]},
    "default": {**_COMMON, "iterations": 200, "seeds": 10, "k": 4, "dampings": _DAMPINGS, "frog_lrs": _FROG_LRS,
                "problems": list(PROBLEMS), "curvatures": ["raw", "abs"]},
    "paper": {**_COMMON, "iterations": 1000, "seeds": 10, "k": 4, "dampings": _DAMPINGS, "frog_lrs": _FROG_LRS,
              "problems": list(PROBLEMS), "curvatures": ["raw", "abs"]},
}


def problem(name: str, n: int, quadratic_cond: float = QUADRATIC_COND):
    """``(f, start, minimum)`` of a problem of :data:`PROBLEMS` in ``n`` dimensions (float64 start)."""
    if name not in PROBLEMS:
        raise ValueError(f"problem={name!r} is not valid; allowed values: {', '.join(map(repr, PROBLEMS))}")
    if name == "quadratic":
        cond = check_positive_float("quadratic_cond", quadratic_cond)
        return (lambda x: quadratic(x, cond)), torch.ones(n, dtype=torch.float64), 0.0
    fun = FUNCTIONS[name]
    return fun.fn, fun.start(n), float(fun.minimum(n))


def check(p: dict) -> dict:
    out = {"n": check_positive_int("n", p["n"]),
           "iterations": check_positive_int("iterations", p["iterations"]),
           "seeds": check_positive_int("seeds", p["seeds"]),
           "k": check_positive_int("k", p["k"]),
           "eta": check_positive_float("eta", p["eta"]),
           "quadratic_cond": check_positive_float("quadratic_cond", p["quadratic_cond"]),
           "dampings": check_positive_floats("dampings", p["dampings"], allow_zero=True),
           "frog_lrs": check_positive_floats("frog_lrs", p["frog_lrs"]),
           "problems": check_choices("problems", p["problems"], PROBLEMS),
           "curvatures": check_choices("curvatures", p["curvatures"], CURVATURES)}
    if out["k"] > out["n"]:
        raise ValueError(f"k must be <= n = {out['n']}; got {out['k']}")
    if out["quadratic_cond"] < 1:
        raise ValueError(f"quadratic_cond must be >= 1; got {out['quadratic_cond']}")
    return out


def compute(p: dict, device: torch.device, seed: int) -> dict[str, pd.DataFrame]:
    """Tables ``sweep`` and ``curves`` (see the module docstring)."""
    n, k, seeds = p["n"], p["k"], p["seeds"]
    sweep, curves = [], []
    for name in p["problems"]:
        f, start, fmin = problem(name, n, p["quadratic_cond"])
        variants = [("damped", c, p["dampings"]) for c in p["curvatures"]] + [("frog", "-", p["frog_lrs"])]
        for variant, curv, values in variants:
            vals = torch.tensor(values, dtype=torch.float64, device=device)[:, None]  # (L, 1)
            x0 = start.to(device).expand(len(values), seeds, n)
            gens = tangent_generators(seed, SECTION, name, seeds=seeds)  # the same tangents for every variant
            if variant == "frog":
                a = Approach("frog", k)
                traj = optimise(f, x0, a, p["iterations"], generators=gens, lr=vals)
            else:
                a = Approach("fomoh-kd", k)
                traj = optimise(f, x0, a, p["iterations"], generators=gens, lr=p["eta"], metric="damped",
                                damping=vals, curvature=curv)
            gaps = torch.stack([f(x) - fmin for x in traj.points]).cpu()  # (T, L, seeds)
            final = gaps[-1]
            for li, val in enumerate(values):
                for s in range(seeds):
                    sweep.append({"problem": name, "variant": variant, "approach": a.spec, "label": a.label,
                                  "curvature": curv, "damping": val if variant == "damped" else float("nan"),
                                  "lr": val if variant == "frog" else p["eta"], "seed": s,
                                  "final_gap": float(final[li, s])})
            best = best_index(final)
            keep = {best: "best"} if variant == "frog" else {0: "mu=0", best: "best"}
            for li, tag in keep.items():
                curves.append(pd.DataFrame({
                    "problem": name, "variant": variant, "approach": a.spec, "label": a.label, "curvature": curv,
                    "which": tag, "value": values[li], "iteration": traj.iterations,
                    "median_gap": np.nanmedian(gaps[:, li].numpy(), axis=-1)}))
    return {"sweep": pd.DataFrame(sweep), "curves": pd.concat(curves, ignore_index=True)}


def identity_metric_check(seed: int = 0, n: int = 50, k: int = 3, batch: int = 4, lr: float = 0.1) -> float:
    """``max |subspace_step(d, V, metric="identity", lr) + lr · projection(d, V)|`` on random ``V``, ``∇f``
    (float64): the identity metric is FROG's projection :func:`frogcore.estimators.aggregate` (up to the
    sign and learning rate of a descent step), so this is rounding error only."""
    g = generator(seed, SECTION, "identity_metric_check")
    V = torch.randn(batch, k, n, generator=g, dtype=torch.float64)
    grad = torch.randn(batch, n, generator=g, dtype=torch.float64)
    d = (V @ grad.unsqueeze(-1)).squeeze(-1)
    step, _ = subspace_step(d, V, metric="identity", lr=lr)
    return float((step + lr * aggregate(d, V, "projection")).abs().max())


CHAPTER = Chapter(SECTION, {"damping_sweep": Experiment(PROFILES, compute, check)})


def run(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the damping sweep; overrides: ``problems``, ``n``, ``k``, ``iterations``, ``seeds``,
    ``dampings``, ``curvatures``, ``frog_lrs``, ``eta``, ``quadratic_cond``."""
    return CHAPTER.run("damping_sweep", profile, device, seed, **overrides)
