"""One trial of the learning-rate search of :mod:`frogcore.lrsearch` (the code of its cells).

A trial trains one approach at one rate for one budget with every seed. It lives in its own module so that
the trials' code hash (:func:`frogcore.results.code_hash` of this module and what it imports: the optimiser and
the test functions, or the networks' training) does not change with unrelated code (plots, executors).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .approach import Approach
from .config import check_choice, check_positive_int

__all__ = ["KINDS", "check_setting", "trial"]

KINDS = ("network", "closed_form")


def check_setting(kind: str, setting: Mapping[str, Any]) -> dict[str, Any]:
    check_choice("kind", kind, KINDS)
    s = dict(setting)
    s["kind"] = kind
    s["device"] = check_choice("device", s.get("device", "cpu"), ("cpu", "cuda"))
    if kind == "closed_form":
        from .functions import FUNCTIONS, get_function

        allowed = {"function", "n", "patience", "dtype", "device", "kind"}
        unknown = sorted(set(s) - allowed)
        if unknown:
            raise ValueError(f"closed_form settings have no {unknown}; allowed: {sorted(allowed - {'kind'})}")
        s["function"] = check_choice("function", s.get("function"), tuple(FUNCTIONS))
        s["n"] = get_function(s["function"]).check_n(check_positive_int("n", s.get("n")))
        s["patience"] = None if s.get("patience", 50) is None else check_positive_int("patience", s.get("patience", 50))
        s["dtype"] = check_choice("dtype", s.get("dtype", "float32"), ("float32", "float64"))
    else:
        from .datasets import DATASETS
        from .engines import PERTURBATIONS
        from .experiments.common import networks as nets

        allowed = {"dataset", "model", "model_kw", "table_model", "batch_size", "patience", "mode", "perturbation",
                   "data_seed", "download", "device", "kind"}
        unknown = sorted(set(s) - allowed)
        if unknown:
            raise ValueError(f"network settings have no {unknown}; allowed: {sorted(allowed - {'kind'})}")
        s["dataset"] = check_choice("dataset", s.get("dataset"), DATASETS)
        if not isinstance(s.get("model"), str):
            raise ValueError(f"model must be a frogcore.models.build_model name (e.g. 'fc'); got {s.get('model')!r}")
        s["model_kw"] = dict(s.get("model_kw") or {})
        s["table_model"] = str(s.get("table_model") or _table_model(s["model"], s["model_kw"]))
        bs = s.get("batch_size")
        s["batch_size"] = nets.BATCH_SIZE[s["dataset"]] if bs is None else check_positive_int("batch_size", bs)
        s["patience"] = nets.check_patience(s.get("patience", 10))
        s["mode"] = check_choice("mode", s.get("mode", "sim"), nets.MODES)
        s["perturbation"] = check_choice("perturbation", s.get("perturbation", "activity"), PERTURBATIONS)
        s["data_seed"] = check_positive_int("data_seed", s.get("data_seed", 0), minimum=0)
        s["download"] = bool(s.get("download", False))
    return s


def _table_model(model: str, kw: Mapping[str, Any]) -> str:
    """The learning-rate tables' model name: ``fc_w=<width>`` for an FC net, the model's name otherwise."""
    return f"fc_w={kw['width']}" if model == "fc" and "width" in kw else model


def trial(setting: Mapping[str, Any], approach: str, lr: float, budget: int, seeds: Sequence[int]) -> pd.DataFrame:
    """Train ``approach`` at rate ``lr`` for ``budget`` epochs (network) or steps (closed form), once per seed;
    one row per seed: ``approach, k, lr, budget, seed, metric, status, diverged``."""
    a = Approach.parse(approach)
    rows = []
    if setting["kind"] == "closed_form":
        from .functions import get_function
        from .optimize import Run, optimize

        fun = get_function(setting["function"])
        n = setting["n"]
        runs = [Run(a.name, a.k, int(s), float(lr)) for s in seeds]
        res = optimize(fun.fn, fun.start(n), runs, max_steps=int(budget), patience=setting["patience"],
                       dtype=setting["dtype"], device=setting["device"])
        fmin, f0 = fun.minimum(n), float(fun.fn(fun.start(n)))
        for i, s in enumerate(seeds):
            last = float(res.last[i])
            diverged = res.status[i] == "diverged" or not math.isfinite(last) or last > f0
            rows.append({"approach": a.name, "k": a.k, "lr": float(lr), "budget": int(budget), "seed": int(s),
                         "metric": last - fmin if not diverged else math.nan, "status": res.status[i],
                         "diverged": diverged})
    else:
        from .datasets import load_splits
        from .experiments.common import networks as nets

        data = load_splits(setting["dataset"], seed=setting["data_seed"], download=setting["download"])
        metric = setting.get("metric", "val_loss")
        for s in seeds:
            res = nets.train_one(data, setting["model"], setting["model_kw"], a, lr=float(lr), epochs=int(budget),
                                 batch_size=setting["batch_size"], patience=setting["patience"], seed=int(s),
                                 mode=setting["mode"], perturbation=setting["perturbation"],
                                 device=setting["device"])
            diverged = res.status == "diverged"
            value = float(getattr(res.best, metric))
            rows.append({"approach": a.name, "k": a.k, "lr": float(lr), "budget": int(budget), "seed": int(s),
                         "metric": value if not diverged and math.isfinite(value) else math.nan,
                         "status": res.status, "diverged": diverged or not math.isfinite(value)})
    return pd.DataFrame(rows)
