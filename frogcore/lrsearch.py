"""Learning-rate search for a new setting (a new k, width, model, function or dimension), run as cells on the
executors of :mod:`frogcore.sweep` (a local process pool or SLURM).

**Grid and early cut.** For every approach the search tries ``num`` log-spaced rates in ``[lr_min, lr_max]``
(``numpy.geomspace``) with *successive halving* (Jamieson & Talwalkar 2016; Li et al., *Hyperband*, JMLR
2018): rung ``r = 0 … rungs−1`` trains the surviving rates for a budget ``budget · eta^r`` (epochs for a
network, gradient steps for a closed-form function) and keeps the best ``⌈m/eta⌉`` of its ``m`` rates (at
least one); diverged rates are cut at once. The rate with the best metric at the last rung is chosen.
Every trial — one (approach, rate, budget) with every seed — is one cell: stored atomically, skipped when
already computed (a re-run resumes), claimed so that concurrent searches never compute it twice.

**Metrics** (the *validation* metric; the test split is never looked at):

* ``kind="network"``: ``val_loss`` (default, lower is better; the validation loss at the best epoch, as
  the early stopping of :func:`frogcore.training.fit` uses it) or ``val_acc`` (higher is better), averaged over
  seeds; a run with status ``diverged`` makes the rate diverged. Training as in the networks chapters:
  :func:`frogcore.experiments.common.networks.train_one` (plain SGD, the authors' batch sizes, simulated
  forward gradients on activations);
* ``kind="closed_form"``: ``gap`` = ``f(x_T) − f*`` after the budget's steps (closed-form functions have no
  validation split: the objective is the metric), averaged over seeds; a run diverged when ``f(x_T)`` is
  not finite or above the start's value ``f(x_0)`` (growing without bound within the budget).
  Optimisation as in 4.2: :func:`frogcore.optimize.optimize` from the paper's start point, the authors'
  early-stopping rule with ``patience``.

**Outputs** (folder ``out``): ``lr_table.csv`` in the shipped tables' format — ``model, dataset,
gradient_approach, k, lr`` like ``frogcore/data/fc_nns.csv`` for networks, ``function, n,
gradient_approach, k, optimizer, lr`` like ``frogcore/data/math.csv`` for closed-form functions (``k``
empty for backprop); ``trials.csv`` (every trial and seed: rung, budget, rate, metric, status,
diverged); ``search.json`` (the setting, the grid, the chosen rates); ``lr_search.png`` (metric vs rate
per approach, one marker per rung, diverged rates as crosses on the top edge, the chosen rate as a star);
``cells/`` (the trials' cells and job logs).

**Using the table.** A closed-form table feeds chapter 4.2 (and 4.3) through the existing ``lr_overrides``
parameter: ``frog_4_2.run(..., lr_overrides=lrsearch.lr_overrides("out/lr_table.csv"))``;
:func:`frogcore.lrs.LRTable.from_csv` reads it too. A network table has the format of ``fc_nns.csv``.

CLI::

    python -m frogcore.lrsearch closed_form --function styblinski-tang --n 64 --approaches fg-mean:8 frog:8 \\
        --lr-min 1e-4 --lr-max 1 --num 9 --budget 100 --rungs 3 --out lr/st64 [--executor slurm ...]
    python -m frogcore.lrsearch network --dataset mnist --model fc --width 2048 --approaches bp frog:8 \\
        --budget 2 --rungs 3 --device cuda --out lr/fc2048 --executor slurm --partition gpu --gpus 1
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .approach import Approach, parse_approaches
from .config import check_choice, check_positive_int
from .lrtrial import KINDS, check_setting, trial
from .results import _jsonable, atomic_write_bytes, code_hash, csv_bytes, results_root

__all__ = ["KINDS", "METRICS", "LR_APPROACHES", "lr_grid", "rung_budgets", "trial", "search", "SearchResult",
           "lr_table", "lr_overrides", "read_table", "plot_search", "main"]

#: metric name → True when lower is better
METRICS = {"network": {"val_loss": True, "val_acc": False}, "closed_form": {"gap": True}}
LR_APPROACHES = ("bp", "fg-mean", "frog")  # the approaches of the authors' learning-rate tables
_CODE = ("frogcore.lrtrial",)  # the trials' code: a cell is valid while its closure's hash is unchanged


# ----------------------------------------------------------------------------- grid

def lr_grid(lr_min: float, lr_max: float, num: int) -> list[float]:
    """``num`` log-spaced rates from ``lr_min`` to ``lr_max`` (both included)."""
    for name, v in (("lr_min", lr_min), ("lr_max", lr_max)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < math.inf):
            raise ValueError(f"{name} must be a positive finite number; got {v!r}")
    if not lr_min < lr_max:
        raise ValueError(f"lr_min must be smaller than lr_max; got lr_min={lr_min!r}, lr_max={lr_max!r}")
    num = check_positive_int("num", num, minimum=2)
    return [float(x) for x in np.geomspace(lr_min, lr_max, num)]


def rung_budgets(budget: int, rungs: int, eta: int) -> list[int]:
    """``budget · eta^r`` for ``r = 0 … rungs−1``."""
    budget = check_positive_int("budget", budget)
    rungs = check_positive_int("rungs", rungs)
    eta = check_positive_int("eta", eta, minimum=2)
    return [budget * eta**r for r in range(rungs)]


# ----------------------------------------------------------------------------- the search

@dataclass
class SearchResult:
    """``trials`` (every trial and seed), ``table`` (the LR table in the shipped format), ``chosen``
    (approach spec → rate, ``None`` when every rate diverged) and the written ``paths``."""

    trials: pd.DataFrame
    table: pd.DataFrame
    chosen: dict[str, float | None]
    paths: dict[str, Path]


def _score(rows: pd.DataFrame) -> tuple[bool, float]:
    """(diverged, mean metric over seeds) of one trial."""
    if rows["diverged"].any():
        return True, math.nan
    return False, float(rows["metric"].mean())


def search(kind: str, *, approaches: Sequence[str], lr_min: float = 1e-4, lr_max: float = 1.0, num: int = 9,
           budget: int = 1, rungs: int = 3, eta: int = 3, seeds: Sequence[int] = (0,), metric: str | None = None,
           out: str | Path | None = None, executor: Any = None, progress: bool = True, figure: str | Path | None = None,
           poll: float = 1.0, **setting: Any) -> SearchResult:
    """Successive-halving learning-rate search (see the module docstring); ``setting``: for ``closed_form``
    ``function, n, patience=50, dtype="float32", device``; for ``network`` ``dataset, model, model_kw,
    table_model (default fc_w=<width> / the model), batch_size (default: the authors'), patience=10,
    mode="sim", perturbation="activity", data_seed=0, download, device``. ``executor``: a
    :class:`frogcore.sweep.Executor` (default: a local pool). ``out`` defaults to
    ``<results>/lr_search/<tag>``; ``figure`` to ``<out>/lr_search.png``."""
    from . import sweep

    s = check_setting(kind, setting)
    metrics = METRICS[kind]
    metric = metric or next(iter(metrics))
    check_choice("metric", metric, tuple(metrics))
    if kind == "network":
        s["metric"] = metric
    lower_better = metrics[metric]
    specs = [a.spec for a in parse_approaches("approaches", approaches, LR_APPROACHES)]
    grid = lr_grid(lr_min, lr_max, num)
    budgets = rung_budgets(budget, rungs, eta)
    seeds = [check_positive_int(f"seeds[{i}]", x, minimum=0) for i, x in enumerate(seeds)]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    ident = {"setting": s, "grid": grid, "budgets": budgets, "eta": eta, "seeds": seeds, "metric": metric}
    out = Path(out) if out is not None else results_root() / "lr_search" / sweep.cell_tag(_slug(s), ident)
    store = sweep.CellStore(out / "cells")
    executor = executor or sweep.LocalExecutor()
    chash = code_hash(list(_CODE))

    alive = {a: list(grid) for a in specs}
    try:
        frames = _halving(specs, alive, budgets, s, seeds, store, executor, chash, eta, lower_better, progress, poll)
    finally:
        executor.close()
    trials = pd.concat(frames, ignore_index=True)
    chosen = {a: (alive[a][0] if alive[a] else None) for a in specs}
    table = lr_table(s, chosen)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"lr_table": out / "lr_table.csv", "trials": out / "trials.csv", "search": out / "search.json"}
    atomic_write_bytes(paths["lr_table"], csv_bytes(table))
    atomic_write_bytes(paths["trials"], csv_bytes(trials))
    summary = {**_jsonable(ident), "approaches": specs, "chosen": chosen,
               "diverged_everywhere": [a for a, v in chosen.items() if v is None]}
    atomic_write_bytes(paths["search"], (json.dumps(summary, indent=2) + "\n").encode())
    title = (f"{s['function']}, n = {s['n']}" if kind == "closed_form"
             else f"{s['table_model']} on {s['dataset']}")
    paths["figure"] = plot_search(trials, metric, Path(figure) if figure else out / "lr_search.png", chosen=chosen,
                                  title=title)
    return SearchResult(trials, table, chosen, paths)


def _halving(specs, alive, budgets, s, seeds, store, executor, chash, eta, lower_better, progress, poll):
    """The rungs of successive halving; updates ``alive`` (approach → surviving rates); returns the trial tables."""
    from . import sweep

    frames = []
    for r, b in enumerate(budgets):
        tasks = []
        for a in specs:
            for lr in alive[a]:
                key = {"setting": s, "approach": a, "lr": lr, "budget": b, "seeds": seeds}
                label = f"{a}_lr{lr:.4g}_b{b}"
                tasks.append(sweep.Task(str(store.folder), sweep.cell_tag(label, key), label, key, _CODE, chash,
                                        "frogcore.lrtrial:trial",
                                        {"setting": s, "approach": a, "lr": lr, "budget": b, "seeds": seeds}))
        if not tasks:
            break
        states = sweep.run_tasks(store, tasks, executor, progress=progress, poll=poll, close=False,
                                 desc=f"lr search rung {r + 1}/{len(budgets)} ({b})")
        if not all(st.state == "done" for st in states):
            raise RuntimeError(f"rung {r + 1} is incomplete; run the search again to retry the missing trials:\n"
                               + sweep.format_status(states))
        for t in tasks:
            frames.append(store.load(t)[""].assign(rung=r))
        rung = pd.concat(frames[-len(tasks):], ignore_index=True)
        for a in specs:
            scored = []
            for lr in alive[a]:
                div, val = _score(rung[(rung.approach == Approach.parse(a).name) & (rung.k == Approach.parse(a).k)
                                       & (rung.lr == lr)])
                if not div:
                    scored.append((val if lower_better else -val, lr))
            scored.sort()
            alive[a] = [lr for _, lr in scored[:max(1, math.ceil(len(alive[a]) / eta))]] if scored else []
    return frames


def _slug(s: Mapping[str, Any]) -> str:
    if s["kind"] == "closed_form":
        return f"{s['function']}_n{s['n']}"
    return f"{s['table_model']}_{s['dataset']}"


# ----------------------------------------------------------------------------- tables

def _optimizer(a: Approach) -> str:
    if a.name == "bp":
        return "Backpropagation"
    agg = "mean" if a.name == "fg-mean" else "orthogonal_projection"
    return f"FG(k={a.k},agg={agg},normalize=False,sampler=normal)"


def lr_table(setting: Mapping[str, Any], chosen: Mapping[str, float | None]) -> pd.DataFrame:
    """The chosen rates in the shipped tables' format (approaches whose every rate diverged are left out)."""
    rows = []
    for spec, lr in chosen.items():
        if lr is None:
            continue
        a = Approach.parse(spec)
        k = math.nan if a.name == "bp" else float(a.k)
        if setting["kind"] == "closed_form":
            rows.append({"function": setting["function"], "n": setting["n"], "gradient_approach": a.name, "k": k,
                         "optimizer": _optimizer(a), "lr": lr})
        else:
            rows.append({"model": setting["table_model"], "dataset": setting["dataset"], "gradient_approach": a.name,
                         "k": k, "lr": lr})
    cols = (["function", "n", "gradient_approach", "k", "optimizer", "lr"] if setting["kind"] == "closed_form"
            else ["model", "dataset", "gradient_approach", "k", "lr"])
    return pd.DataFrame(rows, columns=cols)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a learning-rate table (shipped format) and check it: the columns of ``fc_nns.csv`` or of ``math.csv``,
    known approaches, a positive finite ``lr`` and an integer ``k ≥ 1`` for every forward-gradient row."""
    t = pd.read_csv(path)
    net, closed = {"model", "dataset", "gradient_approach", "k", "lr"}, {"function", "n", "gradient_approach", "k",
                                                                       "lr"}
    if not (net <= set(t.columns) or closed <= set(t.columns)):
        raise ValueError(f"{path}: a learning-rate table needs the columns {sorted(net)} or {sorted(closed)}; "
                         f"it has {list(t.columns)}")
    for i, row in t.iterrows():
        check_choice(f"row {i} gradient_approach", row["gradient_approach"], LR_APPROACHES)
        if not (isinstance(row["lr"], float) and 0 < row["lr"] < math.inf):
            raise ValueError(f"{path}: row {i} has lr={row['lr']!r}; it must be a positive finite number")
        if row["gradient_approach"] != "bp" and not (row["k"] >= 1 and float(row["k"]).is_integer()):
            raise ValueError(f"{path}: row {i} has k={row['k']!r}; forward-gradient rows need an integer k >= 1")
    return t


def lr_overrides(path: str | Path) -> list[dict[str, Any]]:
    """A learning-rate table as a chapter's ``lr_overrides`` parameter (one override per row): a closed-form
    (``math.csv``-format) table for chapters 4.2/4.3 (``function, n, approach, k, lr``), a network
    (``fc_nns.csv``-format) table for chapters 4.4/4.5 (``model, dataset, approach, k, lr``)."""
    t = read_table(path)
    network = "function" not in t.columns
    out = []
    for _, row in t.iterrows():
        o = ({"model": str(row["model"]), "dataset": str(row["dataset"])} if network else
             {"function": str(row["function"]), "n": int(row["n"])})
        o.update(approach=str(row["gradient_approach"]), lr=float(row["lr"]))
        if o["approach"] != "bp":
            o["k"] = int(row["k"])
        out.append(o)
    return out


# ----------------------------------------------------------------------------- figure

def plot_search(trials: pd.DataFrame, metric: str, path: str | Path, *, chosen: Mapping[str, float | None] = (),
                title: str = "") -> Path:
    """Metric vs learning rate per approach (one panel each; marker shade = rung, crosses on the top edge =
    diverged rates, star = the chosen rate); written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from . import style

    style.use()
    labels = list(dict.fromkeys(zip(trials.approach, trials.k)))
    fig, axes = plt.subplots(1, len(labels), figsize=(3.6 * len(labels), 3.2), sharey=True, squeeze=False)
    rungs = sorted(trials.rung.unique())
    finite = trials.metric[np.isfinite(trials.metric)]
    log_y = metric in ("gap", "val_loss") and bool((finite > 0).any())
    # on a log axis, values at or below 0 (a closed-form run that reached the minimum) sit on a floor
    floor = float(finite[finite > 0].min()) / 10 if log_y else -math.inf
    top = float(finite.max()) if len(finite) else 1.0
    for ax, (name, k) in zip(axes[0], labels):
        a = Approach(name, int(k))
        d = trials[(trials.approach == name) & (trials.k == k)]
        for r in rungs:
            dr = d[d.rung == r]
            if dr.empty:
                continue
            g = dr.groupby("lr")
            mean = g.metric.mean()
            div = g.diverged.any()
            shade = 0.35 + 0.65 * (r + 1) / len(rungs)
            ok = mean[~div].clip(lower=floor)
            ax.plot(ok.index, ok.values, "o-", color=(0.1, 0.3, 0.7, shade), ms=4, lw=1,
                    label=f"rung {r + 1} (budget {int(dr.budget.iloc[0])})")
            bad = mean.index[div.values]
            if len(bad):
                ax.plot(bad, [top] * len(bad), "x", color="crimson", ms=6, label="diverged" if r == rungs[0] else None)
        lr = dict(chosen).get(a.spec)
        if lr is not None:
            last = max(d[(d.lr == lr) & (d.rung == d[d.lr == lr].rung.max())].metric.mean(), floor)
            ax.plot([lr], [last], "*", color="goldenrod", ms=14, mec="k", label=f"chosen {lr:.3g}", zorder=5)
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_title(a.label)
        ax.set_xlabel("learning rate")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel({"gap": "f(x_T) − f*", "val_loss": "validation loss", "val_acc": "validation accuracy"}
                          .get(metric, metric))
    if title:
        fig.suptitle(title, y=1.02)
    path = Path(path)
    out = style.save(fig, path.parent, path.stem) if path.suffix == ".png" else None
    plt.close(fig)
    if out is None:
        raise ValueError(f"figure must be a .png path; got {str(path)!r}")
    return out


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    from . import sweep

    parser = argparse.ArgumentParser(prog="python -m frogcore.lrsearch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--approaches", nargs="+", required=True, help="e.g. bp fg-mean:8 frog:8")
    parser.add_argument("--lr-min", type=float, default=1e-4)
    parser.add_argument("--lr-max", type=float, default=1.0)
    parser.add_argument("--num", type=int, default=9, help="rates in the log-spaced grid")
    parser.add_argument("--budget", type=int, default=None,
                        help="budget of the first rung: epochs (network, default 1) or steps (closed_form, "
                             "default 100)")
    parser.add_argument("--rungs", type=int, default=3)
    parser.add_argument("--eta", type=int, default=3, help="keep the best 1/eta of the rates at each rung")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--metric", default=None, help="network: val_loss (default) or val_acc; closed_form: gap")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", default=None, help="output folder (default: <results>/lr_search/<tag>)")
    parser.add_argument("--figure", default=None, help="where to write the figure (default: <out>/lr_search.png)")
    parser.add_argument("--no-progress", action="store_true")
    c = parser.add_argument_group("closed_form")
    c.add_argument("--function", default=None)
    c.add_argument("--n", type=int, default=None)
    c.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    nw = parser.add_argument_group("network")
    nw.add_argument("--dataset", default=None)
    nw.add_argument("--model", default="fc", help="a frogcore.models.build_model name")
    nw.add_argument("--width", type=int, default=None, help="FC width (model_kw width)")
    nw.add_argument("--model-kw", default=None, help="model options as JSON, e.g. '{\"width\": 2048}'")
    nw.add_argument("--table-model", default=None, help="the model's name in the table (default fc_w=<width>)")
    nw.add_argument("--batch-size", type=int, default=None)
    nw.add_argument("--download", action="store_true")
    parser.add_argument("--patience", type=int, default=None,
                        help="early stopping (default: 50 steps closed_form, 10 epochs network; 0: off)")
    sweep.add_executor_options(parser)
    args = parser.parse_args(argv)
    setting: dict[str, Any] = {"device": args.device}
    if args.kind == "closed_form":
        setting.update(function=args.function, n=args.n, dtype=args.dtype)
        if args.patience is not None:
            setting["patience"] = args.patience or None
    else:
        kw = json.loads(args.model_kw) if args.model_kw else {}
        if args.width is not None:
            kw["width"] = args.width
        setting.update(dataset=args.dataset, model=args.model, model_kw=kw, table_model=args.table_model,
                       batch_size=args.batch_size, download=args.download)
        if args.patience is not None:
            setting["patience"] = args.patience
    budget = args.budget if args.budget is not None else (100 if args.kind == "closed_form" else 1)
    res = search(args.kind, approaches=args.approaches, lr_min=args.lr_min, lr_max=args.lr_max, num=args.num,
                 budget=budget, rungs=args.rungs, eta=args.eta, seeds=args.seeds, metric=args.metric, out=args.out,
                 executor=sweep.executor_from_args(args), progress=not args.no_progress, figure=args.figure, **setting)
    for spec, lr in res.chosen.items():
        print(f"{spec:12s} {'every rate diverged' if lr is None else f'lr = {lr:.6g}'}")
    for name, p in res.paths.items():
        print(f"{name}: {p}")
    return 0 if all(v is not None for v in res.chosen.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
