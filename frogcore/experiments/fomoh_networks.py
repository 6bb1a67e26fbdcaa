r"""FoMoH on networks (chapter ``fomoh_networks``; the network experiments of Cobb et al., arXiv 2408.10419).

Logistic regression and the FoMoH paper's CNN (:mod:`frogcore.models.fomoh_nets`) trained without a
backward pass by :func:`frogcore.second_order.forward_step`, against backpropagation with SGD:

* ``bp``: ``θ ← θ − η∇L``; ``fgd``: ``θ ← θ − η(∇L·v)v``;
* ``fomoh``: ``θ ← θ − η(∇L·v)v / (|vᵀ∇²Lv| + ε)``;
* ``fomoh-kd:K``: ``θ ← θ − η Vᵀ(V∇²LVᵀ + εI)⁻¹V∇L`` with K tangents (ε = :data:`NETWORK_EPS`).

``L`` is the cross-entropy of a minibatch. The ``paper`` profile uses MNIST (28×28; 7,850 / 431,080
parameters, the paper's batch sizes and FoMoH learning rates); ``smoke`` and ``default`` use
scikit-learn's 8×8 digits offline (650 / 131,080 parameters, see :mod:`frogcore.models.fomoh_nets`).

Experiment ``networks``, tables:

* ``curves`` (model, approach, label, seed, step, split, loss, accuracy): validation and test loss and
  accuracy at step 0, every ``eval_every`` steps and after the last, plus the training-batch loss;
* ``params`` (model, input_shape, parameters);
* ``timing`` (model, approach, label, batch, forward_ms, step_ms, step_over_forward): the median wall time
  of one training step (over all steps of all seeds except each run's first) and of one forward pass (loss
  of a batch, no gradient) of the same model and batch, and their ratio.

``curves`` and ``params`` are deterministic: identical runs (same parameters, seed, device type, torch
build and thread count) give bit-identical tables. ``timing`` is wall clock: it differs between any two
runs and machines, and is kept in its own table so that it never mixes with the deterministic numbers.

Randomness (:func:`frogcore.seeds.derive`): training seed ``s`` (in ``seeds``) of run seed ``seed``
initialises model ``m`` from ``derive(seed, "fomoh_networks", "init", m, s)``, draws its minibatch order
from ``derive(seed, "fomoh_networks", "data", s)`` and its tangents from ``derive(seed,
"fomoh_networks", "tangents", s)``: every approach of a training seed starts from the same weights and sees
the same minibatches and tangent stream (common random numbers). The train/validation split is the
dataset's split of ``seed`` (:func:`frogcore.datasets.load_splits`, shared with the FROG network chapters).

Runtime option ``download`` (default ``False``; does not change the results): fetch MNIST into
``data/`` if missing; otherwise a missing dataset is an error that says where to put the files.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from ..approach import Approach, parse_approaches
from ..config import check_choice, check_choices, check_positive_int, check_positive_ints
from ..datasets import Splits, load_splits
from ..fomoh_training import train as fomoh_train
from ..hyperdual import module_loss, module_params
from ..models.fomoh_nets import MODELS, build_model, count_parameters
from ..seeds import derive
from .runner import Chapter, Experiment, context

__all__ = ["APPROACHES", "CHAPTER", "NETWORK_EPS", "PROFILES", "build_network", "median_ms", "run"]

SECTION = "fomoh_networks"
NETWORK_EPS = 1e-5  # added to |vᵀHv| (FoMoH) and to the diagonal of Ĥ (FoMoH-KD) on networks
#: approaches this chapter trains with (any K >= 1 for fomoh-kd)
APPROACHES = ("bp", "fgd", "fomoh", "fomoh-kd")
NETWORK_MODELS = tuple(m for m in MODELS if m != "mlp")
NETWORK_DATASETS = ("digits", "mnist")

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
_ALL = ["bp", "fgd", "fomoh", "fomoh-kd:2", "fomoh-kd:3"]
PROFILES = {
    "smoke": {"dataset": "digits", "models": ["logreg"], "approaches": ["bp", "fgd", "fomoh", "fomoh-kd:2"],
              "steps": {"logreg": 10}, "batch": {"logreg": 256}, "seeds": [0], "eval_every": 5,
              "timing_repeats": 3, "lrs": _DIGITS_LRS, "eps": NETWORK_EPS},
    "default": {"dataset": "digits", "models": ["logreg", "cnn"], "approaches": _ALL,
                "steps": {"logreg": 500, "cnn": 200}, "batch": {"logreg": 256, "cnn": 128}, "seeds": [0, 1],
                "eval_every": 25, "timing_repeats": 10, "lrs": _DIGITS_LRS, "eps": NETWORK_EPS},
    # the paper trains 2000 (logreg) / 3000 (CNN) epochs; steps here = epochs × ⌈60000/batch⌉
    "paper": {"dataset": "mnist", "models": ["logreg", "cnn"], "approaches": _ALL,
              "steps": {"logreg": 2000 * 59, "cnn": 3000 * 30}, "batch": {"logreg": 1024, "cnn": 2048},
              "seeds": {"logreg": [0, 1, 2, 3, 4], "cnn": [0, 1, 3]},
              "eval_every": 500, "timing_repeats": 20, "lrs": _PAPER_LRS, "eps": NETWORK_EPS},
}


# ----------------------------------------------------------------------------- training

def _check_float(name: str, value: Any, minimum: float = 0.0, allow_equal: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value >= minimum if allow_equal else value > minimum)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>=' if allow_equal else '>'} {minimum:g}; got {value!r}")
    return float(value)


def build_network(model_name: str, splits: Splits, init_seed: int, device: torch.device | str = "cpu"):
    """A FoMoH model (:func:`frogcore.models.fomoh_nets.build_model`) for ``splits``' input shape,
    initialised by torch's default initialisers from the global generator seeded with ``init_seed``
    (inside :func:`torch.random.fork_rng`, so the caller's global random state is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return build_model(model_name, splits.input_shape, splits.num_classes).to(device)


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call, in milliseconds."""
    fn()
    times = []
    for _ in range(check_positive_int("repeats", repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


# ----------------------------------------------------------------------------- the experiment

def check(p: dict) -> dict:
    models = check_choices("models", p["models"], NETWORK_MODELS)
    approaches = parse_approaches("approaches", p["approaches"], APPROACHES)
    out = {"dataset": check_choice("dataset", p["dataset"], NETWORK_DATASETS), "models": models,
           "approaches": [a.spec for a in approaches],
           "eval_every": check_positive_int("eval_every", p["eval_every"]),
           "timing_repeats": check_positive_int("timing_repeats", p["timing_repeats"]),
           "eps": _check_float("eps", p["eps"], allow_equal=True)}
    # training seeds: one list for every model, or a dict model → list (the paper: logreg 0–4, CNN 0, 1, 3)
    seeds = p["seeds"]
    per_model = seeds if isinstance(seeds, Mapping) else {m: seeds for m in models}
    out["seeds"] = {}
    for m in models:
        if m not in per_model:
            raise ValueError(f"seeds must give the training seeds of every model; missing {m!r}")
        lst = check_positive_ints(f"seeds[{m!r}]", per_model[m], minimum=0)
        if len(set(lst)) != len(lst):
            raise ValueError(f"seeds[{m!r}] must not repeat; got {lst}")
        out["seeds"][m] = lst
    for key in ("steps", "batch"):
        table = p[key]
        if not isinstance(table, Mapping) or any(m not in table for m in models):
            raise ValueError(f"{key} must be a dict model → integer with an entry for every model {models}; "
                             f"got {table!r}")
        out[key] = {m: check_positive_int(f"{key}[{m!r}]", table[m]) for m in models}
    lrs = p["lrs"]
    out["lrs"] = {}
    for m in models:
        row = lrs.get(m) if isinstance(lrs, Mapping) else None
        for a in approaches:
            if not isinstance(row, Mapping) or a.name not in row:
                raise ValueError(f"lrs must give a learning rate for model {m!r}, approach {a.name!r}; got {lrs!r}")
            out["lrs"].setdefault(m, {})[a.name] = _check_float(f"lrs[{m!r}][{a.name!r}]", row[a.name])
    return out


def compute(p: dict, device: torch.device, seed: int) -> dict[str, pd.DataFrame]:
    """Tables ``curves``, ``params`` and ``timing`` (see the module docstring)."""
    splits = load_splits(p["dataset"], seed=seed, download=context().runtime["download"])
    curves, timing, counts, summaries = [], [], [], []
    for m in p["models"]:
        model = build_network(m, splits, derive(seed, SECTION, "init", m, p["seeds"][m][0]), device)
        counts.append({"model": m, "input_shape": "x".join(map(str, splits.input_shape)),
                       "parameters": count_parameters(model)})
        b = min(p["batch"][m], splits.train[0].shape[0])
        xb, yb = splits.train[0][:b].to(device), splits.train[1][:b].to(device)
        f = module_loss(model, F.cross_entropy, xb, yb)
        params0 = module_params(model)

        def forward(f=f, params0=params0):
            with torch.no_grad():
                out = f(params0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        fwd_ms = median_ms(forward, p["timing_repeats"])
        for spec in p["approaches"]:
            a = Approach.parse(spec)
            step_times = []
            for s in p["seeds"][m]:
                res = fomoh_train(
                    m, a.spec, splits, steps=p["steps"][m], batch=b, lr=p["lrs"][m][a.name],
                    init_seed=derive(seed, SECTION, "init", m, s), data_seed=derive(seed, SECTION, "data", s),
                    tangent_seed=derive(seed, SECTION, "tangents", s), eval_every=p["eval_every"], device=device,
                    eps=p["eps"], columns={"model": m, "approach": a.spec, "label": a.label, "seed": s})
                curves.append(res.history)
                summaries.append(res.summary())
                times = res.times
                step_times += times[1:] if len(times) > 1 else times  # the first step includes warm-up
            step_ms = 1e3 * statistics.median(step_times)
            timing.append({"model": m, "approach": a.spec, "label": a.label, "batch": b, "forward_ms": fwd_ms,
                           "step_ms": step_ms, "step_over_forward": step_ms / fwd_ms})
    return {"curves": pd.concat(curves, ignore_index=True), "summary": pd.concat(summaries, ignore_index=True),
            "params": pd.DataFrame(counts), "timing": pd.DataFrame(timing)}


CHAPTER = Chapter(SECTION, {"networks": Experiment(PROFILES, compute, check, runtime={"download": False})})


def run(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the network experiment; overrides: ``dataset``, ``models``, ``approaches`` (e.g.
    ``["bp", "fomoh-kd:3"]``), ``steps`` / ``batch`` (dict model → value), ``seeds`` (training seeds),
    ``eval_every``, ``timing_repeats``, ``lrs`` (dict model → approach name → η), ``eps``; runtime option
    ``download`` (fetch MNIST if missing; never changes the results)."""
    return CHAPTER.run("networks", profile, device, seed, **overrides)
