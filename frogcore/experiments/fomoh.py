"""FoMoH experiments (Cobb et al., arXiv 2408.10419) and the subspace view that links them to FROG.

Sections and drivers:

* ``fomoh_rosenbrock`` — :func:`run_rosenbrock_2d` (trajectories of FGD, FoMoH, FoMoH-2D) and
  :func:`run_rosenbrock_nd` (FoMoH-KD for K = 1…N on 5-D and 10-D Rosenbrock, Newton, and FROG with the
  same K and a learning rate picked from a grid);
* ``fomoh_networks`` — :func:`run_networks` (logistic regression and the paper's CNN trained with BP,
  FGD, FoMoH, FoMoH-KD);
* ``fomoh_subspace`` — :func:`run_subspace` (the damped metric ``Ĥ + μG`` swept from FoMoH-KD, μ = 0,
  to FROG, μ → ∞, on an ill-conditioned quadratic, Rosenbrock and Styblinski-Tang).

Every driver takes ``profile`` (``"smoke"`` | ``"default"`` | ``"paper"``), ``device``, ``seed`` and
overrides of the profile's parameters, and stores tidy tables through :func:`frogcore.results.run_cached`.
Optimisation runs of the test functions are batched: the leading dimension of ``θ`` holds the seeds
(and learning rates / dampings), so one hyper-dual call serves them all.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import check_choice, check_choices, check_positive_int, check_positive_ints, pick_profile, resolve_device
from ..functions import rosenbrock, styblinski_tang
from ..hyperdual import module_loss, module_params
from ..results import run_cached
from ..second_order import forward_step
from ..tangents import sample_tangents

CODE = ["frogcore.experiments.fomoh", "frogcore.second_order", "frogcore.hyperdual", "frogcore.functions",
        "frogcore.tangents"]
NET_CODE = CODE + ["frogcore.models.fomoh_nets", "frogcore.datasets"]

# ----------------------------------------------------------------------------- profiles

ROSENBROCK_2D = {
    "smoke": {"iterations": 40, "seeds": 2},
    "default": {"iterations": 1000, "seeds": 5},
    "paper": {"iterations": 1000, "seeds": 10},
}
# shared by all ROSENBROCK_2D profiles (the paper's values)
ROSENBROCK_2D_FIXED = {"fgd_lr": 1e-4, "fomoh_lr": 1.0, "fomoh_2d_lr": 1.0}

ROSENBROCK_ND = {
    "smoke": {"n5_iterations": 20, "n5_ks": [1, 5], "n10_iterations": 10, "n10_ks": [2, 10], "seeds": 2,
              "frog_lrs": [1e-4, 1e-3], "log_every": 5},
    "default": {"n5_iterations": 1000, "n5_ks": [1, 2, 3, 4, 5], "n10_iterations": 100,
                "n10_ks": [2, 3, 4, 5, 6, 7, 8, 9, 10], "seeds": 10,
                "frog_lrs": [5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1.5e-3], "log_every": 10},
    "paper": {"n5_iterations": 1000, "n5_ks": [1, 2, 3, 4, 5], "n10_iterations": 100,
              "n10_ks": [2, 3, 4, 5, 6, 7, 8, 9, 10], "seeds": 10,
              "frog_lrs": [5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1.5e-3], "log_every": 1},
}

SUBSPACE = {
    "smoke": {"iterations": 20, "seeds": 2, "k": 3, "dampings": [0.0, 1.0, 1e3],
              "frog_lrs": [1e-4, 1e-3], "problems": ["quadratic", "rosenbrock"], "curvatures": ["raw"]},
    "default": {"iterations": 200, "seeds": 10, "k": 4,
                "dampings": [0.0, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5],
                "frog_lrs": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
                "problems": ["quadratic", "rosenbrock", "styblinski_tang"], "curvatures": ["raw", "abs"]},
    "paper": {"iterations": 1000, "seeds": 10, "k": 4,
              "dampings": [0.0, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5],
              "frog_lrs": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
              "problems": ["quadratic", "rosenbrock", "styblinski_tang"], "curvatures": ["raw", "abs"]},
}
SUBSPACE_PROBLEMS = ("quadratic", "rosenbrock", "styblinski_tang")
SUBSPACE_DIM = 20  # n of every subspace problem
QUADRATIC_COND = 1e4

# learning rates: FoMoH uses the paper's MNIST values (logreg 0.1362, CNN 0.544) in every profile. BP and
# FGD were picked by a short sweep on the digits validation split (BP over {0.03, 0.1, 0.3}, FGD over
# {1e-4, 3e-4, 1e-3, 3e-3, 1e-2}; book/fomoh.md). FoMoH-KD with the paper's 0.544 diverged on the digits CNN
# within 200 steps, so the digits profiles use 0.25 for FoMoH-KD on the CNN (the paper profile keeps 0.544).
_DIGITS_LRS = {
    "logreg": {"bp": 0.3, "fgd": 3e-3, "fomoh": 0.1362, "fomoh-kd": 0.1362},
    "cnn": {"bp": 0.3, "fgd": 1e-3, "fomoh": 0.544, "fomoh-kd": 0.25},
}
_PAPER_LRS = {
    "logreg": {"bp": 0.3, "fgd": 3e-3, "fomoh": 0.1362, "fomoh-kd": 0.1362},
    "cnn": {"bp": 0.3, "fgd": 1e-3, "fomoh": 0.544, "fomoh-kd": 0.544},
}
NETWORKS = {
    "smoke": {"dataset": "digits", "models": ["logreg"], "methods": ["bp", "fgd", "fomoh", "fomoh-kd2"],
              "steps": {"logreg": 10}, "batch": {"logreg": 256}, "seeds": [0], "eval_every": 5,
              "timing_repeats": 3, "lrs": _DIGITS_LRS},
    "default": {"dataset": "digits", "models": ["logreg", "cnn"],
                "methods": ["bp", "fgd", "fomoh", "fomoh-kd2", "fomoh-kd3"],
                "steps": {"logreg": 500, "cnn": 200}, "batch": {"logreg": 256, "cnn": 128}, "seeds": [0, 1],
                "eval_every": 25, "timing_repeats": 10, "lrs": _DIGITS_LRS},
    "paper": {"dataset": "mnist", "models": ["logreg", "cnn"],
              "methods": ["bp", "fgd", "fomoh", "fomoh-kd2", "fomoh-kd3"],
              # the paper trains 2000 (logreg) / 3000 (CNN) epochs; steps here = epochs × ⌈60000/batch⌉
              "steps": {"logreg": 2000 * 59, "cnn": 3000 * 30}, "batch": {"logreg": 1024, "cnn": 2048},
              "seeds": [0, 1, 3], "eval_every": 500, "timing_repeats": 20, "lrs": _PAPER_LRS},
}
NETWORK_EPS = 1e-5  # added to |vᵀHv| (FoMoH) and to the diagonal of Ĥ (FoMoH-KD) on networks
NETWORK_METHODS = ("bp", "fgd", "fomoh", "fomoh-kd2", "fomoh-kd3")


def _merge(profile: str, table: Mapping[str, dict], overrides: Mapping[str, Any]) -> dict:
    params = dict(pick_profile(profile, table))
    for key, value in overrides.items():
        if key not in params:
            raise ValueError(f"unknown parameter {key!r}; allowed: {sorted(params)}")
        if value is not None:
            params[key] = value
    return params


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _init_points(shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Start points drawn on the CPU (identical on every device): N(0, I)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- Rosenbrock 2-D

def optimise(f, x0: torch.Tensor, method: str, iterations: int, *, generator: torch.Generator,
             log_every: int = 1, share_first_dim: bool = False, **kw
             ) -> tuple[list[int], list[torch.Tensor], dict[str, int]]:
    """Run ``iterations`` steps of ``method`` from ``x0`` ``(..., n)``; returns logged iterations,
    the logged points and the solve-status counts summed over the run.

    ``share_first_dim``: every slice along the first dimension of ``x0`` (e.g. the learning rates or
    dampings of a sweep) sees the same tangents at each step (common random numbers).
    """
    x = x0.clone()
    its, xs = [0], [x.clone()]
    counts = {"ok": 0, "jitter": 0, "failed": 0}
    k, n = kw.get("k", 1), x0.shape[-1]
    for it in range(1, iterations + 1):
        if share_first_dim and method != "newton":
            kw["tangents"] = sample_tangents(n, k, batch=x0.shape[1:-1], generator=generator,
                                             dtype=x0.dtype, device=x0.device)
        x, info = forward_step(f, x, method, generator=generator, **kw)
        if info.solve is not None:
            for key, val in info.solve.counts().items():
                counts[key] += val
        if it % log_every == 0 or it == iterations:
            its.append(it)
            xs.append(x.clone())
    return its, xs, counts


def run_rosenbrock_2d(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """FGD (lr 1e-4), FoMoH and FoMoH-2D (η = 1) on 2-D Rosenbrock from N(0, I) starts.

    Table ``trajectory``: method, seed, iteration, x1, x2, loss (every iteration);
    table ``status``: how the K × K systems were solved (counts over the run).
    """
    p = _merge(profile, ROSENBROCK_2D, overrides)
    iters = check_positive_int("iterations", p["iterations"])
    seeds = check_positive_int("seeds", p["seeds"])
    dev = resolve_device(device)
    params = {**p, **ROSENBROCK_2D_FIXED, "dtype": "float64"}

    def compute():
        x0 = _init_points((seeds, 2), seed).to(dev)
        runs = {"FGD": ("fgd", {"lr": ROSENBROCK_2D_FIXED["fgd_lr"]}),
                "FoMoH": ("fomoh", {"lr": ROSENBROCK_2D_FIXED["fomoh_lr"]}),
                "FoMoH-2D": ("fomoh-kd", {"k": 2, "lr": ROSENBROCK_2D_FIXED["fomoh_2d_lr"]})}
        rows, status = [], []
        for i, (name, (method, kw)) in enumerate(runs.items()):
            its, xs, counts = optimise(rosenbrock, x0, method, iters, generator=_generator(seed * 1000 + i, dev), **kw)
            X = torch.stack(xs).cpu()  # (T, seeds, 2)
            loss = rosenbrock(X)
            for s in range(seeds):
                rows.append(pd.DataFrame({"method": name, "seed": s, "iteration": its, "x1": X[:, s, 0].numpy(),
                                          "x2": X[:, s, 1].numpy(), "loss": loss[:, s].numpy()}))
            status.append({"method": name, **counts})
        return {"trajectory": pd.concat(rows, ignore_index=True), "status": pd.DataFrame(status)}

    return run_cached("fomoh_rosenbrock", "rosenbrock_2d", compute, params=params, profile=profile, device=dev,
                      seed=seed, code=CODE)


# ----------------------------------------------------------------------------- Rosenbrock N-D

def _curves(name: str, n: int, method: str, k: int, its, xs, f, extra: Mapping[str, Any] | None = None):
    X = torch.stack(xs).cpu()  # (T, ..., seeds, n)
    loss = f(X).numpy()
    T, S = loss.shape[0], loss.shape[-1]
    return pd.DataFrame({"problem": name, "n": n, "method": method, "k": k,
                         "seed": np.tile(np.arange(S), T), "iteration": np.repeat(its, S),
                         "loss": loss.reshape(T, S).reshape(-1), **(extra or {})})


def _pick_lr(final: torch.Tensor, lrs: list[float]) -> int:
    """Index of the learning rate with the lowest median final loss (non-finite = +inf)."""
    f = torch.where(torch.isfinite(final), final, torch.full_like(final, float("inf")))
    return int(f.median(dim=-1).values.argmin())


def run_rosenbrock_nd(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """FoMoH-KD on N-D Rosenbrock: N = 5 with K in ``n5_ks``; N = 10 with K in ``n10_ks`` and Newton;
    FROG with the same K, its learning rate chosen per (N, K) from ``frog_lrs`` by the median final loss.

    Tables: ``curves`` (problem, n, method, k, seed, iteration, loss; every ``log_every`` iterations),
    ``frog_lr`` (the FROG learning-rate sweep: median final loss per lr, the chosen one marked),
    ``status`` (K × K solve statuses per run).
    """
    p = _merge(profile, ROSENBROCK_ND, overrides)
    seeds = check_positive_int("seeds", p["seeds"])
    log_every = check_positive_int("log_every", p["log_every"])
    lrs = [float(v) for v in p["frog_lrs"]]
    if not lrs or any(not v > 0 for v in lrs):
        raise ValueError(f"frog_lrs must be a non-empty list of positive numbers; got {p['frog_lrs']!r}")
    configs = []
    for n, key in ((5, "n5"), (10, "n10")):
        ks = check_positive_ints(f"{key}_ks", p[f"{key}_ks"])
        if max(ks) > n:
            raise ValueError(f"{key}_ks must be <= {n}; got {ks}")
        configs.append((n, ks, check_positive_int(f"{key}_iterations", p[f"{key}_iterations"])))
    dev = resolve_device(device)

    def compute():
        curves, sweep, status = [], [], []
        for n, ks, iters in configs:
            x0 = _init_points((seeds, n), seed + n).to(dev)
            name = f"rosenbrock-{n}d"
            runs = [("fomoh-kd", k) for k in ks] + ([("newton", n)] if n == 10 else [])
            for j, (method, k) in enumerate(runs):
                gen = _generator(seed * 1000 + 10 * n + j, dev)
                its, xs, counts = optimise(rosenbrock, x0, method, iters, k=k, lr=1.0, generator=gen,
                                           log_every=log_every)
                label = "Newton" if method == "newton" else "FoMoH-KD"
                curves.append(_curves(name, n, label, k, its, xs, rosenbrock))
                status.append({"problem": name, "method": label, "k": k, **counts})
            for j, k in enumerate(ks):
                gen = _generator(seed * 1000 + 10 * n + 500 + j, dev)
                lr_t = torch.tensor(lrs, dtype=torch.float64, device=dev)[:, None]  # (L, 1)
                xl = x0.expand(len(lrs), seeds, n)
                its, xs, _ = optimise(rosenbrock, xl, "frog", iters, k=k, lr=lr_t, generator=gen,
                                      log_every=log_every, share_first_dim=True)
                final = rosenbrock(xs[-1]).cpu()
                best = _pick_lr(final, lrs)
                for li, lr in enumerate(lrs):
                    fin = final[li]
                    sweep.append({"problem": name, "n": n, "k": k, "lr": lr,
                                  "median_final_loss": float(fin.median()),
                                  "diverged": int((~torch.isfinite(fin)).sum()), "chosen": li == best})
                curves.append(_curves(name, n, "FROG", k, its, [x[best] for x in xs], rosenbrock,
                                      {"lr": lrs[best]}))
        df = pd.concat(curves, ignore_index=True)
        df["lr"] = df["lr"].fillna(1.0)
        return {"curves": df, "frog_lr": pd.DataFrame(sweep), "status": pd.DataFrame(status)}

    params = {**p, "dtype": "float64", "fomoh_lr": 1.0}
    return run_cached("fomoh_rosenbrock", "rosenbrock_nd", compute, params=params, profile=profile, device=dev,
                      seed=seed, code=CODE)


# ----------------------------------------------------------------------------- subspace view

def quadratic(x: torch.Tensor, cond: float = QUADRATIC_COND) -> torch.Tensor:
    """``½ Σ λ_i x_i²`` with ``λ`` log-spaced from 1 to ``cond``: an ill-conditioned convex quadratic."""
    n = x.shape[-1]
    lam = torch.logspace(0, math.log10(cond), n, dtype=x.dtype, device=x.device)
    return 0.5 * (lam * x * x).sum(-1)


def _subspace_problem(name: str):
    """(function, start point, minimum value) of a subspace-experiment problem (n = SUBSPACE_DIM)."""
    n = SUBSPACE_DIM
    if name == "quadratic":
        return quadratic, torch.ones(n, dtype=torch.float64), 0.0
    if name == "rosenbrock":
        start = torch.zeros(n, dtype=torch.float64)
        start[0] = -1.0  # the FROG paper's Rosenbrock start (−1, 0, …, 0)
        return rosenbrock, start, 0.0
    # Styblinski-Tang from the FROG paper's start (all 0), where the Hessian is −16·I: negative curvature
    return styblinski_tang, torch.zeros(n, dtype=torch.float64), -39.16599 * n


def run_subspace(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """The damped subspace metric ``M = Ĥ + μG`` from μ = 0 (FoMoH-KD) to μ → ∞ (FROG at lr 1/μ).

    For each problem (n = 20, K tangents, same tangents for every μ at a given seed and step) run
    ``iterations`` steps with η = 1 for every μ in ``dampings`` and each curvature treatment, and FROG
    (metric = identity) for every lr in ``frog_lrs``. Tables: ``sweep`` (problem, variant, curvature,
    damping or lr, seed, final loss, final gap to the minimum), ``curves`` (median gap per iteration for
    μ = 0, the best μ, and the best FROG lr).
    """
    p = _merge(profile, SUBSPACE, overrides)
    iters = check_positive_int("iterations", p["iterations"])
    seeds = check_positive_int("seeds", p["seeds"])
    k = check_positive_int("k", p["k"])
    if k > SUBSPACE_DIM:
        raise ValueError(f"k must be <= {SUBSPACE_DIM}; got {k}")
    problems = check_choices("problems", p["problems"], SUBSPACE_PROBLEMS)
    curvatures = check_choices("curvatures", p["curvatures"], ("raw", "abs", "softabs"))
    dampings = [float(v) for v in p["dampings"]]
    lrs = [float(v) for v in p["frog_lrs"]]
    if any(v < 0 for v in dampings) or any(not v > 0 for v in lrs):
        raise ValueError("dampings must be >= 0 and frog_lrs > 0")
    dev = resolve_device(device)

    def compute():
        sweep, curves = [], []
        for pi, name in enumerate(problems):
            f, start, fmin = _subspace_problem(name)
            x_start = start.to(dev)
            variants = [("damped", c, torch.tensor(dampings, dtype=torch.float64, device=dev)) for c in curvatures]
            variants.append(("frog", "-", torch.tensor(lrs, dtype=torch.float64, device=dev)))
            for vi, (variant, curv, values) in enumerate(variants):
                # identical tangents for every variant: the same generator seed
                gen = _generator(seed * 1000 + pi, dev)
                x0 = x_start.expand(len(values), seeds, SUBSPACE_DIM)
                if variant == "frog":
                    kw = {"lr": values[:, None]}
                    method = "frog"
                else:
                    kw = {"lr": 1.0, "metric": "damped", "damping": values[:, None], "curvature": curv}
                    method = "fomoh-kd"
                its, xs, _ = optimise(f, x0, method, iters, k=k, generator=gen, share_first_dim=True, **kw)
                gaps = torch.stack([f(x) - fmin for x in xs]).cpu()  # (T, L, seeds)
                final = gaps[-1]
                for li, val in enumerate(values.tolist()):
                    for s in range(seeds):
                        sweep.append({"problem": name, "variant": variant, "curvature": curv,
                                      "damping": val if variant == "damped" else float("nan"),
                                      "lr": val if variant == "frog" else 1.0, "seed": s,
                                      "final_gap": float(final[li, s])})
                med = torch.where(torch.isfinite(final), final, torch.full_like(final, float("inf"))).median(-1).values
                best = int(med.argmin())
                keep = {best: "best"} if variant == "frog" else {0: "mu=0", best: "best"}
                for li, tag in keep.items():
                    g = gaps[:, li]
                    curves.append(pd.DataFrame({
                        "problem": name, "variant": variant, "curvature": curv, "which": tag,
                        "value": values[li].item(), "iteration": its,
                        "median_gap": g.nanmedian(-1).values.numpy()}))
        return {"sweep": pd.DataFrame(sweep), "curves": pd.concat(curves, ignore_index=True)}

    params = {**p, "n": SUBSPACE_DIM, "quadratic_cond": QUADRATIC_COND, "eta": 1.0, "dtype": "float64"}
    return run_cached("fomoh_subspace", "damping_sweep", compute, params=params, profile=profile, device=dev,
                      seed=seed, code=CODE)


# ----------------------------------------------------------------------------- networks

def _method_spec(name: str) -> tuple[str, int]:
    """``"fomoh-kd3"`` → (``"fomoh-kd"``, 3); others → (name, 1)."""
    if name.startswith("fomoh-kd"):
        return "fomoh-kd", int(name[len("fomoh-kd"):])
    return name, 1


def _evaluate(model, params, x, y) -> tuple[float, float]:
    from torch.func import functional_call

    with torch.no_grad():
        out = functional_call(model, params, (x,))
        return float(F.cross_entropy(out, y)), float((out.argmax(-1) == y).float().mean())


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def train_network(model_name: str, method_name: str, splits, *, steps: int, batch: int, seed: int,
                  eval_every: int, device: torch.device, lr: float | None = None) -> tuple[pd.DataFrame, list[float]]:
    """Train one model with one method; returns the curve table and the per-step wall times (s).

    ``lr`` defaults to the digits learning rates of the default profile."""
    from ..models.fomoh_nets import build_model

    method, k = _method_spec(method_name)
    lr = _DIGITS_LRS[model_name][method] if lr is None else float(lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(model_name, splits.input_shape, splits.num_classes).to(device)
    params = module_params(model)
    xtr, ytr = (t.to(device) for t in splits.train)
    evals = {"val": tuple(t.to(device) for t in splits.val), "test": tuple(t.to(device) for t in splits.test)}
    data_gen = torch.Generator().manual_seed(10_000 + seed)
    tan_gen = _generator(20_000 + seed, device)
    n_train = xtr.shape[0]
    perm, pos = torch.randperm(n_train, generator=data_gen), 0
    rows, times = [], []

    def log(step, split, loss, acc):
        rows.append({"model": model_name, "method": method_name, "seed": seed, "step": step, "split": split,
                     "loss": loss, "accuracy": acc})

    for split, (xe, ye) in evals.items():
        log(0, split, *_evaluate(model, params, xe, ye))
    for step in range(1, steps + 1):
        if pos + batch > n_train:
            perm, pos = torch.randperm(n_train, generator=data_gen), 0
        idx = perm[pos:pos + min(batch, n_train)].to(device)
        pos += batch
        f = module_loss(model, F.cross_entropy, xtr[idx], ytr[idx])
        t0 = time.perf_counter()
        params, info = forward_step(f, params, method, k=k, lr=lr, generator=tan_gen, eps=NETWORK_EPS)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if step % eval_every == 0 or step == steps:
            log(step, "train_batch", float(info.loss), float("nan"))
            for split, (xe, ye) in evals.items():
                log(step, split, *_evaluate(model, params, xe, ye))
    return pd.DataFrame(rows), times


def run_networks(profile: str = "default", device: str = "auto", seed: int = 0, *, download: bool = False,
                 **overrides):
    """Logistic regression and the FoMoH CNN trained with BP, FGD, FoMoH and FoMoH-KD.

    ``download=True`` fetches MNIST (the paper profile) into ``data/`` if it is missing; otherwise a
    missing dataset is an error that says where to put the files. It does not change the results.

    ``seed`` shifts the list of training seeds (run seeds are ``seed + s`` for ``s`` in ``seeds``) and
    seeds the data split. Tables: ``curves`` (model, method, seed, step, split, loss, accuracy),
    ``timing`` (median step time and forward-pass time per model and method, and their ratio; wall
    clock, so it varies between runs unlike the other tables), ``params`` (parameter counts).
    """
    from ..datasets import load_splits
    from ..models.fomoh_nets import MODELS, build_model, count_parameters

    if not isinstance(download, bool):
        raise ValueError(f"download must be True or False; got {download!r}")
    p = _merge(profile, NETWORKS, overrides)
    models = check_choices("models", p["models"], [m for m in MODELS if m != "mlp"])
    methods = check_choices("methods", p["methods"], NETWORK_METHODS)
    seeds = [int(s) for s in p["seeds"]]
    eval_every = check_positive_int("eval_every", p["eval_every"])
    repeats = check_positive_int("timing_repeats", p["timing_repeats"])
    for key in ("steps", "batch"):
        missing = [m for m in models if m not in p[key]]
        if missing:
            raise ValueError(f"{key} must give a value for every model; missing {missing}")
        for m in models:
            check_positive_int(f"{key}[{m}]", p[key][m])
    for m in models:
        for meth in methods:
            lr = p["lrs"].get(m, {}).get(_method_spec(meth)[0])
            if lr is None or not float(lr) > 0:
                raise ValueError(f"lrs must give a positive learning rate for model {m!r}, method {meth!r}")
    dev = resolve_device(device)

    def compute():
        splits = load_splits(p["dataset"], seed=seed, download=download)
        curves, timing, counts = [], [], []
        for m in models:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_model(m, splits.input_shape, splits.num_classes).to(dev)
            counts.append({"model": m, "input_shape": "x".join(map(str, splits.input_shape)),
                           "parameters": count_parameters(model)})
            b = min(p["batch"][m], splits.train[0].shape[0])
            xb, yb = splits.train[0][:b].to(dev), splits.train[1][:b].to(dev)
            f = module_loss(model, F.cross_entropy, xb, yb)
            params0 = module_params(model)

            def fwd():
                with torch.no_grad():
                    out = f(params0)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                return out

            fwd_ms = _median_ms(fwd, repeats)
            for meth in methods:
                step_times = []
                for s in seeds:
                    df, times = train_network(m, meth, splits, steps=p["steps"][m], batch=b, seed=seed + s,
                                              eval_every=eval_every, device=dev,
                                              lr=p["lrs"][m][_method_spec(meth)[0]])
                    curves.append(df)
                    step_times += times[1:] if len(times) > 1 else times
                step_ms = 1e3 * statistics.median(step_times)
                timing.append({"model": m, "method": meth, "batch": b, "forward_ms": fwd_ms, "step_ms": step_ms,
                               "step_over_forward": step_ms / fwd_ms})
        return {"curves": pd.concat(curves, ignore_index=True), "timing": pd.DataFrame(timing),
                "params": pd.DataFrame(counts)}

    params = {**p, "eps": NETWORK_EPS}
    return run_cached("fomoh_networks", "networks", compute, params=params, profile=profile, device=dev,
                      seed=seed, code=NET_CODE)
