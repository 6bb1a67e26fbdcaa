r"""FoMoH on Rosenbrock (chapter ``fomoh_rosenbrock``; the Rosenbrock experiments of Cobb et al., arXiv 2408.10419).

Rosenbrock ``f(x) = Σ_{i<n} [100 (x_{i+1} − x_i²)² + (1 − x_i)²]`` (:func:`frogcore.functions.rosenbrock`),
minimum 0 at all ones; every run starts from ``x_0 ~ N(0, I)`` (float64). Steps are
:func:`frogcore.second_order.forward_step` through :func:`frogcore.experiments.common.fomoh.optimise`:

* FGD ``θ ← θ − η (∇f·v) v``; FoMoH ``θ ← θ − η (∇f·v) v / |vᵀ∇²f v|``;
* FoMoH-KD ``θ ← θ − η Vᵀ (V∇²fVᵀ)⁻¹ V∇f`` with ``K`` tangents (``K = n``: Newton's method in a random
  basis), Newton ``θ ← θ − η ∇²f⁻¹ ∇f``; FROG ``θ ← θ − η Vᵀ(VVᵀ)⁻¹V∇f`` (the projection, first order).

Experiment ``rosenbrock_2d`` (the paper's 2-D runs): FGD (η = 10⁻⁴), FoMoH and FoMoH-KD with K = 2
(η = 1) for ``iterations`` steps from ``seeds`` starts. Tables ``trajectory`` (approach, label, seed,
iteration, x1, x2, loss at every iteration) and ``status`` (approach, label and the counts ``ok`` /
``jitter`` / ``failed`` of how the K × K systems were solved, see :mod:`frogcore.second_order`).

Experiment ``rosenbrock_nd`` (the paper's 5-D and 10-D runs): FoMoH-KD (η = ``fomoh_lr``) for K in
``n5_ks`` on 5-D and K in ``n10_ks`` plus Newton on 10-D Rosenbrock, and FROG with the same K, its
learning rate picked per (n, K) from ``frog_lrs`` by the lowest median final loss over the seeds
(non-finite counts as +∞). Tables ``curves`` (problem, n, approach, label, k, lr, seed, iteration, loss
every ``log_every`` iterations), ``frog_lr`` (the FROG sweep: median final loss and number of
diverged seeds per lr, the chosen one marked) and ``status``.

Randomness (:func:`frogcore.seeds.derive`): seed ``s`` starts from ``derive(seed, "fomoh_rosenbrock",
"start", n, s)``; its tangents come from ``derive(seed, "fomoh_rosenbrock", <experiment>, "tangents",
n, K, s)``, so approaches with the same K (FGD and FoMoH in 2-D; FoMoH-KD and every FROG learning
rate with the same K in N-D) see the same tangents. Every table of both experiments is deterministic:
identical runs (same parameters, seed, device type and torch build) give bit-identical tables.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch

from ..approach import Approach, parse_approaches
from ..config import check_positive_int, check_positive_ints
from ..functions import rosenbrock
from ..hyperdual import derivatives_1d
from .common.fomoh import (
    SECOND_ORDER_APPROACHES,
    best_index,
    check_positive_float,
    check_positive_floats,
    loss_curves,
    median_final,
    optimise,
    start_points,
    tangent_generators,
)
from .runner import Chapter, Experiment

__all__ = ["CHAPTER", "PROFILES_2D", "PROFILES_ND", "hyperdual_sin", "run_rosenbrock_2d", "run_rosenbrock_nd"]

SECTION = "fomoh_rosenbrock"

# the paper's learning rates: FGD 1e-4, FoMoH and FoMoH-KD η = 1
_COMMON_2D = {"approaches": ["fgd", "fomoh", "fomoh-kd:2"], "lrs": {"fgd": 1e-4, "fomoh": 1.0, "fomoh-kd": 1.0}}
PROFILES_2D = {
    "smoke": {**_COMMON_2D, "iterations": 40, "seeds": 2},
    "default": {**_COMMON_2D, "iterations": 1000, "seeds": 5},
    "paper": {**_COMMON_2D, "iterations": 1000, "seeds": 10},
}

_FROG_LRS = [5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1.5e-3]
_PAPER_ND = {"n5_iterations": 1000, "n5_ks": [1, 2, 3, 4, 5], "n10_iterations": 100,
             "n10_ks": [2, 3, 4, 5, 6, 7, 8, 9, 10], "seeds": 10, "frog_lrs": _FROG_LRS, "fomoh_lr": 1.0}
PROFILES_ND = {
    "smoke": {"n5_iterations": 20, "n5_ks": [1, 5], "n10_iterations": 10, "n10_ks": [2, 10], "seeds": 2,
              "frog_lrs": [1e-4, 1e-3], "fomoh_lr": 1.0, "log_every": 5},
    "default": {**_PAPER_ND, "log_every": 10},
    "paper": {**_PAPER_ND, "log_every": 1},
}
#: the dimensions of ``rosenbrock_nd`` and whether Newton runs there
ND_PROBLEMS = {5: False, 10: True}


# ----------------------------------------------------------------------------- Rosenbrock 2-D

def check_2d(p: dict) -> dict:
    approaches = parse_approaches("approaches", p["approaches"], SECOND_ORDER_APPROACHES)
    lrs = p["lrs"]
    for a in approaches:
        if not isinstance(lrs, Mapping) or a.name not in lrs:
            raise ValueError(f"lrs must be a dict approach name → learning rate with an entry for {a.name!r}; "
                             f"got {lrs!r}")
    used = sorted({a.name for a in approaches})
    return {"approaches": [a.spec for a in approaches],
            "lrs": {name: check_positive_float(f"lrs[{name!r}]", lrs[name]) for name in used},
            "iterations": check_positive_int("iterations", p["iterations"]),
            "seeds": check_positive_int("seeds", p["seeds"])}


def compute_2d(p: dict, device: torch.device, seed: int) -> dict[str, pd.DataFrame]:
    """Tables ``trajectory`` and ``status`` (see the module docstring)."""
    x0 = start_points(seed, SECTION, 2, p["seeds"], device=device)
    rows, status = [], []
    for spec in p["approaches"]:
        a = Approach.parse(spec)
        gens = tangent_generators(seed, SECTION, "rosenbrock_2d", "tangents", 2, max(a.k, 1), seeds=p["seeds"])
        traj = optimise(rosenbrock, x0, a, p["iterations"], generators=gens, lr=p["lrs"][a.name])
        X = torch.stack(traj.points).cpu()  # (T, seeds, 2)
        loss = rosenbrock(X)
        for s in range(p["seeds"]):
            rows.append(pd.DataFrame({"approach": a.spec, "label": a.label, "seed": s, "iteration": traj.iterations,
                                      "x1": X[:, s, 0].numpy(), "x2": X[:, s, 1].numpy(), "loss": loss[:, s].numpy()}))
        status.append({"approach": a.spec, "label": a.label, **traj.status})
    return {"trajectory": pd.concat(rows, ignore_index=True), "status": pd.DataFrame(status)}


# ----------------------------------------------------------------------------- Rosenbrock N-D

def check_nd(p: dict) -> dict:
    out = {"seeds": check_positive_int("seeds", p["seeds"]),
           "log_every": check_positive_int("log_every", p["log_every"]),
           "frog_lrs": check_positive_floats("frog_lrs", p["frog_lrs"]),
           "fomoh_lr": check_positive_float("fomoh_lr", p["fomoh_lr"])}
    for n in ND_PROBLEMS:
        ks = check_positive_ints(f"n{n}_ks", p[f"n{n}_ks"])
        if max(ks) > n:
            raise ValueError(f"n{n}_ks must hold integers between 1 and {n}; got {ks}")
        out[f"n{n}_ks"] = ks
        out[f"n{n}_iterations"] = check_positive_int(f"n{n}_iterations", p[f"n{n}_iterations"])
    return out


def compute_nd(p: dict, device: torch.device, seed: int) -> dict[str, pd.DataFrame]:
    """Tables ``curves``, ``frog_lr`` and ``status`` (see the module docstring)."""
    seeds, log_every, lrs = p["seeds"], p["log_every"], p["frog_lrs"]
    curves, sweep, status = [], [], []
    for n, newton in ND_PROBLEMS.items():
        ks, iters = p[f"n{n}_ks"], p[f"n{n}_iterations"]
        name = f"rosenbrock-{n}d"
        x0 = start_points(seed, SECTION, n, seeds, device=device)
        parts = (SECTION, "rosenbrock_nd", "tangents", n)
        second = [Approach("fomoh-kd", k) for k in ks] + ([Approach("newton")] if newton else [])
        for a in second:
            gens = tangent_generators(seed, *parts, max(a.k, 1), seeds=seeds)
            traj = optimise(rosenbrock, x0, a, iters, generators=gens, lr=p["fomoh_lr"], log_every=log_every)
            cols = {"problem": name, "n": n, "approach": a.spec, "label": a.label, "k": a.k, "lr": p["fomoh_lr"]}
            curves.append(loss_curves(traj, rosenbrock, cols))
            status.append({"problem": name, "n": n, "approach": a.spec, "label": a.label, "k": a.k, **traj.status})
        lr_t = torch.tensor(lrs, dtype=torch.float64, device=device)[:, None]  # (L, 1): one sweep, shared tangents
        for k in ks:
            a = Approach("frog", k)
            gens = tangent_generators(seed, *parts, k, seeds=seeds)  # FoMoH-KD's with the same K
            traj = optimise(rosenbrock, x0.expand(len(lrs), seeds, n), a, iters, generators=gens, lr=lr_t,
                            log_every=log_every)
            final = rosenbrock(traj.points[-1]).cpu()  # (L, seeds)
            best, medians = best_index(final), median_final(final)
            for li, lr in enumerate(lrs):
                sweep.append({"problem": name, "n": n, "approach": a.spec, "label": a.label, "k": k, "lr": lr,
                              "median_final_loss": float(medians[li]),
                              "diverged": int((~torch.isfinite(final[li])).sum()), "chosen": li == best})
            picked = traj._replace(points=[x[best] for x in traj.points])
            cols = {"problem": name, "n": n, "approach": a.spec, "label": a.label, "k": k, "lr": lrs[best]}
            curves.append(loss_curves(picked, rosenbrock, cols))
    return {"curves": pd.concat(curves, ignore_index=True), "frog_lr": pd.DataFrame(sweep),
            "status": pd.DataFrame(status)}


# ----------------------------------------------------------------------------- hyper-dual example

def hyperdual_sin(num: int = 200) -> pd.DataFrame:
    """The paper's hyper-dual example: one evaluation of ``sin`` on ``num`` points of [−3, 3] with
    ``v₁ = v₂ = 1`` (:func:`frogcore.hyperdual.derivatives_1d`) gives ``f``, ``f'`` and ``f''``.
    Columns x, primal, eps1 (the ε₁ part, cos x), eps12 (the ε₁ε₂ part, −sin x). Not stored: it takes
    a millisecond."""
    x = torch.linspace(-3, 3, check_positive_int("num", num), dtype=torch.float64)
    f0, f1, f2 = derivatives_1d(torch.sin, x)
    return pd.DataFrame({"x": x.numpy(), "primal": f0.numpy(), "eps1": f1.numpy(), "eps12": f2.numpy()})


CHAPTER = Chapter(SECTION, {
    "rosenbrock_2d": Experiment(PROFILES_2D, compute_2d, check_2d),
    "rosenbrock_nd": Experiment(PROFILES_ND, compute_nd, check_nd),
})


def run_rosenbrock_2d(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the 2-D experiment; overrides: ``approaches`` (e.g. ``["fgd", "fomoh", "fomoh-kd:2"]``),
    ``lrs`` (approach name → η), ``iterations``, ``seeds`` (number of starts)."""
    return CHAPTER.run("rosenbrock_2d", profile, device, seed, **overrides)


def run_rosenbrock_nd(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the N-D experiment; overrides: ``n5_ks``, ``n5_iterations``, ``n10_ks``,
    ``n10_iterations``, ``seeds``, ``frog_lrs``, ``fomoh_lr``, ``log_every``."""
    return CHAPTER.run("rosenbrock_nd", profile, device, seed, **overrides)
