"""Network training shared by FROG Sections 4.4 and 4.5 (chapters ``frog_4_4`` and ``frog_4_5``).

Approaches are :class:`frogcore.approach.Approach` specs from the authors' learning-rate tables:
``"bp"`` (backpropagation), ``"fg-mean:1"`` (the single-tangent forward gradient, *FG*),
``"fg-mean:k"`` (mean of k single-tangent estimates) and ``"frog:k"`` (orthogonal projection
``V(VᵀV)⁻¹Vᵀ∇f`` onto the span of the k tangents). As in the paper, forward gradients perturb
activations (``perturbation="activity"``: one tangent per block output, shared by the batch) and
are simulated (``mode="sim"``: the exact gradient is projected on the tangents, the same update as
real forward mode, ``mode="fwd"``); see :mod:`frogcore.engines`.

* Learning rates: :func:`table_lr` reads the authors' tuned rates (``frogcore/data/fc_nns.csv`` and
  ``sota_nns.csv``, tuned on MNIST/CIFAR-10); :func:`learning_rate` is ``lr_scale ×`` that rate, the
  MNIST entry standing in for scikit-learn's digits.
* :func:`train_one` trains one (model, approach, seed) with :func:`frogcore.training.fit` (plain SGD,
  early stopping on the validation loss, divergence as a result); :func:`train_grid` trains a grid
  of :class:`NetRun` × seeds and returns three tables:

  - ``summary`` — one row per run: ``dataset, model, approach, k, label, seed, lr, status, diverged,
    epochs_run, best_epoch, best_val_loss, best_val_acc, test_loss, test_acc`` (validation/test
    metrics at the epoch with the lowest validation loss; for a run that diverged at its first
    epoch that is epoch 0, the untrained model), ``last_test_acc, final_train_loss``;
  - ``history`` — tidy ``(run ids, epoch, metric, value)`` with every per-epoch metric of
    :data:`frogcore.training.METRIC_COLUMNS` except the wall times;
  - ``times`` — one row per run: ``time_per_step_s`` (mean over the trained epochs),
    ``train_time_s``, ``eval_time_s`` (sums over epochs), ``wall_s`` (the whole call, including a
    replay from a checkpoint) and ``resumed_from`` (the checkpointed epoch a run continued from).

  **Determinism**: on the same machine, device and thread count, ``summary`` and ``history`` are
  bit-identical between identical runs (and after resuming from a checkpoint); ``times`` is not
  (wall-clock measurements), and neither is the step-timing table of :func:`timing_table`.
* :func:`timing_table` — wall time per gradient step vs k for backprop (``bp``), simulated forward
  gradients (``sim``) and real forward mode (``fwd``), with mean and projection aggregation.

``approach`` and ``k`` columns hold :attr:`Approach.name` and :attr:`Approach.k` (``k = 0`` for
backprop), ``label`` holds :attr:`Approach.label` (``"BP"``, ``"FG"``, ``"FG-mean k=4"``, ``"FROG k=16"``).
Every random stream is seeded with :func:`frogcore.seeds.derive` from the run seed: the weights
from ``(seed, "init", model, model_kw)``, the tangents from ``(seed, "tangents", approach, k)`` with
``k = 1`` for backprop (its engine's tangent count), the data order from the seed (see
:func:`frogcore.training.batches`).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ...approach import Approach, parse_approaches
from ...config import check_choice, check_choices, check_positive_int, check_positive_ints
from ...datasets import DATASETS, Splits, load_splits
from ...engines import PERTURBATIONS, make_engine
from ...models import activity_dims, build_model, num_parameters
from ...results import code_hash
from ...seeds import derive
from ...training import TrainResult, cross_entropy, fit, history_long

__all__ = ["NETWORK_APPROACHES", "PAPER_APPROACHES", "BATCH_SIZE", "MODES", "TIME_METRICS", "NetRun", "lr_table",
           "table_lr", "learning_rate", "engine_options", "engine_k", "build_seeded", "train_one", "load_datasets",
           "train_grid", "lr_sweep", "time_steps", "timing_table", "check_approaches", "check_lr_scale",
           "check_patience", "check_epochs", "epochs_for", "check_learning_rates", "check_training",
           "check_timing", "check_scales", "DigitsOnlyProfiles"]

# the learning-rate tables belong to the code: editing them changes the chapters' code hash
__hash_data__ = ("data/fc_nns.csv", "data/sota_nns.csv")

NETWORK_APPROACHES = ("bp", "fg-mean", "frog")  # the approaches of the authors' learning-rate tables
# the paper's grid: BP; FG (k = 1); mean k = 2, 4, 16; FROG k = 2, 4, 16
PAPER_APPROACHES = ["bp", "fg-mean:1", "fg-mean:2", "fg-mean:4", "fg-mean:16", "frog:2", "frog:4", "frog:16"]
BATCH_SIZE = {"digits": 64, "mnist": 64, "cifar10": 128}  # the authors' batch sizes (digits: MNIST's)
MODES = ("sim", "fwd")
TIME_METRICS = ("train_time_s", "eval_time_s", "time_per_step_s")  # the wall times of a training history
_LR_FILES = {"fc": "fc_nns.csv", "sota": "sota_nns.csv"}


@dataclass(frozen=True)
class NetRun:
    """One training configuration (trained once per seed by :func:`train_grid`).

    ``model``/``model_kw``: :func:`frogcore.models.build_model` name and size options; ``label``: the
    model's name in the tables (``"FC-256"``); ``table_model``: its name in the learning-rate tables
    (``"fc_w=256"``, ``"resnet18"``, ``"vit"``).
    """

    dataset: str
    model: str
    model_kw: Mapping[str, Any]
    label: str
    table_model: str
    epochs: int
    approach: Approach


# ----------------------------------------------------------------------------- learning rates

def lr_table(table: str) -> pd.DataFrame:
    """The authors' learning rates: ``"fc"`` (``fc_nns.csv``, Section 4.4) or ``"sota"`` (``sota_nns.csv``, 4.5);
    columns ``model, dataset, gradient_approach, k, lr``."""
    check_choice("table", table, tuple(_LR_FILES))
    with resources.files("frogcore").joinpath("data", _LR_FILES[table]).open() as f:
        return pd.read_csv(f)


def table_lr(model: str, dataset: str, approach: Approach | str | Sequence) -> float:
    """The authors' tuned learning rate for ``model`` (``"fc_w=256"``, ``"resnet18"``, ``"vit"``) on
    ``dataset`` (``"mnist"`` | ``"cifar10"``) and an approach (``"bp"``, ``"fg-mean:4"``, ``"frog:16"``)."""
    a = Approach.parse(approach)
    check_choice("approach", a.name, NETWORK_APPROACHES)
    table = lr_table("fc" if model.startswith("fc") else "sota")
    rows = table[(table.model == model) & (table.dataset == dataset) & (table.gradient_approach == a.name)]
    if a.name != "bp":
        rows = rows[rows.k == a.k]
    if len(rows) != 1:
        raise ValueError(f"no learning rate in the authors' tables for model={model!r}, dataset={dataset!r}, "
                         f"approach={a.spec!r}")
    return float(rows.lr.iloc[0])


def check_lr_overrides(overrides: Any) -> list[dict[str, Any]]:
    """Validate ``lr_overrides``: a list of ``{"model", "dataset", "approach", "k" (not for bp), "lr"}`` — e.g. from
    :func:`frogcore.lrsearch.lr_overrides` on a network search's ``lr_table.csv`` — in a canonical form
    (``approach`` as a spec, ``lr`` a positive float). An override replaces the table's rate for that model,
    dataset (exactly: ``digits`` is not ``mnist`` here) and approach, and is used as is (no ``lr_scale``)."""
    if overrides is None:
        return []
    if not isinstance(overrides, (list, tuple)):
        raise ValueError(f"lr_overrides must be a list of dicts with model, dataset, approach, k, lr; "
                         f"got {overrides!r}")
    out = []
    for i, o in enumerate(overrides):
        if not isinstance(o, Mapping) or not {"model", "dataset", "approach", "lr"} <= set(o):
            raise ValueError(f"lr_overrides[{i}] must be a dict with model, dataset, approach, k (not for bp) and lr; "
                             f"got {o!r}")
        unknown = set(o) - {"model", "dataset", "approach", "k", "lr"}
        if unknown:
            raise ValueError(f"lr_overrides[{i}] has unknown keys {sorted(unknown)}; allowed: model, dataset, "
                             "approach, k, lr")
        name = str(o["approach"])
        a = Approach.parse(name if name == "bp" or ":" in name else f"{name}:{int(o.get('k', 0))}")
        check_choice(f"lr_overrides[{i}] approach", a.name, NETWORK_APPROACHES)
        lr = o["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < float(lr) < float("inf"):
            raise ValueError(f"lr_overrides[{i}] lr must be a positive finite number; got {lr!r}")
        out.append({"model": str(o["model"]), "dataset": str(o["dataset"]), "approach": a.spec, "lr": float(lr)})
    return out


def learning_rate(model: str, dataset: str, approach: Approach | str | Sequence, lr_scale: float = 1.0,
                  overrides: Sequence[Mapping[str, Any]] = ()) -> float:
    """The rate of an override for exactly this ``model``, ``dataset`` and approach (as is), else ``lr_scale`` ×
    the authors' table's rate (digits uses the MNIST entry)."""
    spec = Approach.parse(approach).spec
    for o in overrides:
        if o["model"] == model and o["dataset"] == dataset and o["approach"] == spec:
            return float(o["lr"])
    return lr_scale * table_lr(model, "mnist" if dataset == "digits" else dataset, approach)


# ----------------------------------------------------------------------------- one run

def engine_k(approach: Approach) -> int:
    """The engine's tangent count: ``approach.k``, and 1 for backprop (which draws none)."""
    return max(approach.k, 1)


def engine_options(approach: Approach | str | Sequence, mode: str = "sim",
                   perturbation: str = "activity") -> dict[str, Any]:
    """:func:`frogcore.engines.make_engine` options of an approach (aggregation :attr:`Approach.aggregation`)."""
    a = Approach.parse(approach)
    check_choice("approach", a.name, NETWORK_APPROACHES)
    check_choice("mode", mode, MODES)
    check_choice("perturbation", perturbation, PERTURBATIONS)
    if a.name == "bp":
        return dict(mode="bp", aggregation="mean", k=1, perturbation=perturbation)
    return dict(mode=mode, aggregation=a.aggregation, k=a.k, perturbation=perturbation)


def build_seeded(model: str, input_shape, num_classes: int, seed: int, **kw) -> torch.nn.Module:
    """Build a model with its initialisation drawn from ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model, input_shape, num_classes, **kw)


def train_one(
    data: Splits,
    model: str,
    model_kw: Mapping[str, Any],
    approach: Approach | str | Sequence,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    patience: int | None,
    seed: int,
    mode: str = "sim",
    perturbation: str = "activity",
    device: torch.device | str = "cpu",
    checkpoint: Path | None = None,
    run_key: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train one (model, approach, seed) configuration; returns a :class:`~frogcore.training.TrainResult`.

    ``run_key`` is added to the identity stored in the checkpoint (a checkpoint of another run, or of
    other code, is ignored and overwritten).
    """
    a = Approach.parse(approach)
    device = torch.device(device)
    net = build_seeded(model, data.input_shape, data.num_classes, derive(seed, "init", model, dict(model_kw)),
                       **model_kw)
    gen = torch.Generator(device=device).manual_seed(derive(seed, "tangents", a.name, engine_k(a)))
    engine = make_engine(generator=gen, **engine_options(a, mode, perturbation))
    key = {"dataset": data.name, "model": model, "model_kw": dict(model_kw), "approach": a.spec, "mode": mode,
           "perturbation": perturbation, "device": device.type, **dict(run_key or {})}
    return fit(net, data, engine, lr=lr, epochs=epochs, batch_size=batch_size, patience=patience, seed=seed,
               generator=gen, device=device, loss_fn=cross_entropy, checkpoint=checkpoint, run_key=key,
               progress=progress, desc=f"{model} {a.label} seed {seed}")


def load_datasets(names: Sequence[str], *, seed: int, download: bool = False,
                  device: torch.device | str = "cpu") -> dict[str, Splits]:
    """Every dataset of a grid, loaded before any training (a missing MNIST/CIFAR-10 fails at once with
    :class:`frogcore.datasets.DatasetNotFoundError`, not after hours of training on the others)."""
    device = torch.device(device)
    out = {}
    for name in dict.fromkeys(check_choices("datasets", names, DATASETS)):
        data = load_splits(name, seed=seed, download=download)
        if device.type == "cuda":
            data = Splits(*[(x.to(device), y.to(device)) for x, y in (data.train, data.val, data.test)],
                          num_classes=data.num_classes, name=data.name)
        out[name] = data
    return out


def _checkpoint_file(folder: Path, ident: Mapping[str, Any]) -> Path:
    tag = hashlib.sha256(json.dumps(dict(ident), sort_keys=True, default=str).encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(v) for v in ident.values() if not isinstance(v, Mapping)))
    return Path(folder) / f"{readable}_{tag}.pt"


def train_grid(runs: Sequence[NetRun], *, seeds: Sequence[int], batch_size: int | None, patience: int | None,
               lr_scale: float, mode: str, perturbation: str, device: torch.device | str, data_seed: int,
               download: bool = False, progress: bool = False, checkpoint_dir: Path | None = None,
               code: Sequence[str] = (), lr_overrides: Sequence[Mapping[str, Any]] = ()) -> dict[str, pd.DataFrame]:
    """Train every run for every seed; tables ``summary``, ``history`` and ``times`` (see the module docstring).

    Every dataset is loaded (split by ``data_seed``) before the first run trains. ``batch_size``
    ``None`` uses :data:`BATCH_SIZE`. With ``checkpoint_dir`` each run checkpoints every epoch into
    its own file there and resumes from it; ``lr_overrides`` (:func:`check_lr_overrides`) replace the tables'
    rates of their runs; ``code`` names the modules whose :func:`frogcore.results.code_hash`
    is part of every checkpoint's identity (so edited code never replays old checkpoints).
    """
    device = torch.device(device)
    data = load_datasets([r.dataset for r in runs], seed=data_seed, download=download, device=device)
    key = {"code": code_hash(list(code))} if code and checkpoint_dir is not None else {}
    histories, summary, times = [], [], []
    for r in runs:
        a = r.approach
        bs = batch_size or BATCH_SIZE[r.dataset]
        lr = learning_rate(r.table_model, r.dataset, a, lr_scale, lr_overrides)
        for s in seeds:
            ckpt = None
            if checkpoint_dir is not None:
                ident = {"dataset": r.dataset, "model": r.label, "approach": a.spec, "seed": s, "lr": lr, "bs": bs,
                         "epochs": r.epochs, "patience": patience, "mode": mode, "perturbation": perturbation,
                         "model_kw": dict(r.model_kw)}
                ckpt = _checkpoint_file(checkpoint_dir, ident)
            t0 = time.perf_counter()
            res = train_one(data[r.dataset], r.model, r.model_kw, a, lr=lr, epochs=r.epochs, batch_size=bs,
                            patience=patience, seed=s, mode=mode, perturbation=perturbation, device=device,
                            checkpoint=ckpt, run_key=key, progress=progress)
            wall = time.perf_counter() - t0
            ids = {"dataset": r.dataset, "model": r.label, "approach": a.name, "k": a.k, "label": a.label,
                   "seed": s, "lr": lr}
            h = res.history
            histories.append(history_long(h.drop(columns=[c for c in TIME_METRICS if c in h]), **ids))
            best, last = res.best, res.last
            summary.append({**ids, "status": res.status, "diverged": res.status == "diverged",
                            "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
                            "best_val_loss": best.val_loss, "best_val_acc": best.val_acc,
                            "test_loss": best.test_loss, "test_acc": best.test_acc,
                            "last_test_acc": last.test_acc, "final_train_loss": last.train_loss})
            times.append({**ids, "time_per_step_s": h.time_per_step_s.iloc[1:].mean(),
                          "train_time_s": h.train_time_s.sum(), "eval_time_s": h.eval_time_s.sum(), "wall_s": wall,
                          "resumed_from": res.resumed_from})
    return {"summary": pd.DataFrame(summary), "history": pd.concat(histories, ignore_index=True),
            "times": pd.DataFrame(times)}


def lr_sweep(runs: Sequence[NetRun], scales: Sequence[float], **kw: Any) -> dict[str, pd.DataFrame]:
    """:func:`train_grid` once per factor in ``scales`` (``lr_scale``); every table gains an ``lr_scale`` column."""
    out: dict[str, list[pd.DataFrame]] = {}
    for sc in scales:
        for name, table in train_grid(runs, lr_scale=sc, **kw).items():
            out.setdefault(name, []).append(table.assign(lr_scale=sc))
    return {name: pd.concat(tables, ignore_index=True) for name, tables in out.items()}


# ----------------------------------------------------------------------------- step timing

def time_steps(model: torch.nn.Module, data: Splits, engine, *, batch_size: int, steps: int, warmup: int,
               device: torch.device) -> list[float]:
    """Wall time of ``steps`` engine steps (after ``warmup`` untimed ones) on fixed training batches."""
    x, y = data.train
    xb, yb = x[:batch_size].to(device), y[:batch_size].to(device)
    model.to(device).train()
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        engine.step(model, cross_entropy, xb, yb)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def timing_table(models: Sequence[tuple[str, Mapping[str, Any], str]], dataset: str, *, ks: Sequence[int],
                 steps: int, warmup: int, perturbations: Sequence[str], seed: int, device: torch.device | str,
                 download: bool = False) -> pd.DataFrame:
    """Time per gradient step vs k for ``bp``, ``sim`` and ``fwd`` (mean and projection aggregation).

    ``models``: ``(build_model name, size options, label)`` triples, timed on the first
    ``BATCH_SIZE[dataset]`` training images of ``dataset``. Columns ``model, params, activity_dim,
    mode, aggregation, perturbation, k, batch_size, median_s, min_s, mean_s, steps, threads``.
    In-process wall-clock timings: indicative only, and noisy on a shared CPU (not deterministic).
    """
    device = torch.device(device)
    data = load_splits(dataset, seed=seed, download=download)
    bs = BATCH_SIZE[dataset]
    rows = []
    for name, kw, label in models:
        net = build_seeded(name, data.input_shape, data.num_classes, derive(seed, "init", name, dict(kw)), **kw)
        state = {kk: v.clone() for kk, v in net.state_dict().items()}
        n_params = num_parameters(net)
        n_act = sum(activity_dims(net, data.input_shape).values())
        configs = [("bp", "bp", 1, "-")]
        for pert in perturbations:
            for m in MODES:
                for agg in ("mean", "projection"):
                    configs += [(m, agg, k, pert) for k in ks]
        for m, agg, k, pert in configs:
            net.load_state_dict(state)
            gen = torch.Generator(device=device).manual_seed(derive(seed, "timing", m, agg, k))
            eng = make_engine(mode=m, aggregation="mean" if m == "bp" else agg, k=k,
                              perturbation="weight" if pert == "-" else pert, generator=gen)
            t = pd.Series(time_steps(net, data, eng, batch_size=bs, steps=steps, warmup=warmup, device=device))
            rows.append({"model": label, "params": n_params, "activity_dim": n_act, "mode": m, "aggregation": agg,
                         "perturbation": pert, "k": k, "batch_size": bs, "median_s": t.median(), "min_s": t.min(),
                         "mean_s": t.mean(), "steps": len(t), "threads": torch.get_num_threads()})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- validation

class DigitsOnlyProfiles(dict):
    """The profiles of a learning-rate sweep (``smoke``, ``default``): ``paper`` is a clear error, since
    the sweep chooses the factor on the authors' rates for digits and ``paper`` uses them unchanged."""

    def __missing__(self, profile):
        raise ValueError(f"profile={profile!r} is not valid for the learning-rate sweep (it chooses the factor "
                         "on the authors' rates for digits; the paper profile uses them unchanged); "
                         "allowed values: " + ", ".join(repr(p) for p in self))


def check_approaches(specs: Any) -> list[str]:
    """``approaches``: a non-empty list of ``bp`` / ``fg-mean:k`` / ``frog:k`` specs, returned canonical."""
    return [a.spec for a in parse_approaches("approaches", specs, NETWORK_APPROACHES)]


def check_lr_scale(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"lr_scale must be a positive number; got {value!r}")
    return float(value)


def check_scales(value: Any) -> list[float]:
    """``scales``: a non-empty list of positive factors."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"scales must be a non-empty list of positive numbers; got {value!r}")
    out = []
    for i, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (0 < s < math.inf):
            raise ValueError(f"scales[{i}] must be a positive number; got {s!r}")
        out.append(float(s))
    return out


def check_patience(value: Any) -> int | None:
    """``patience``: epochs without improvement of the validation loss; ``None`` or 0 turn early stopping off."""
    return None if value is None or (value == 0 and not isinstance(value, bool)) else \
        check_positive_int("patience", value)


def check_epochs(value: Any, keys: Sequence[Any]) -> int | dict[str, int]:
    """``epochs``: one number, or a ``{key: epochs}`` table with an entry for every key (widths or models)."""
    if isinstance(value, Mapping):
        table = {str(k): check_positive_int(f"epochs[{k!r}]", v) for k, v in value.items()}
        missing = [k for k in keys if str(k) not in table]
        if missing:
            raise ValueError(f"epochs has no entry for {missing}; it has {sorted(table)}")
        return table
    return check_positive_int("epochs", value)


def epochs_for(epochs: int | Mapping[str, int], key: Any) -> int:
    """The epochs of ``key`` (a width or a model) from a checked ``epochs`` parameter."""
    return epochs[str(key)] if isinstance(epochs, Mapping) else epochs


def check_learning_rates(table_models: Sequence[str], datasets: Sequence[str], approaches: Sequence[str],
                         overrides: Sequence[Mapping[str, Any]] = ()) -> None:
    """Fail before training if neither ``overrides`` nor the authors' tables have a learning rate the grid needs."""
    for m in table_models:
        for ds in datasets:
            for a in approaches:
                try:
                    learning_rate(m, ds, a, 1.0, overrides)
                except ValueError as exc:
                    raise ValueError(f"{exc}; give it in lr_overrides (e.g. frogcore.lrsearch.lr_overrides of a "
                                     "network search's lr_table.csv)") from None


def check_training(p: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the parameters shared by the training grids of 4.4 and 4.5 (those present in ``p``)."""
    out = dict(p)
    if "datasets" in p:
        out["datasets"] = check_choices("datasets", p["datasets"], DATASETS)
    if "num_seeds" in p:
        out["num_seeds"] = check_positive_int("num_seeds", p["num_seeds"])
    if "batch_size" in p:
        out["batch_size"] = None if p["batch_size"] is None else check_positive_int("batch_size", p["batch_size"])
    if "patience" in p:
        out["patience"] = check_patience(p["patience"])
    if "lr_scale" in p:
        out["lr_scale"] = check_lr_scale(p["lr_scale"])
    if "lr_overrides" in p:
        out["lr_overrides"] = check_lr_overrides(p["lr_overrides"])
    if "scales" in p:
        out["scales"] = check_scales(p["scales"])
    if "approaches" in p:
        out["approaches"] = check_approaches(p["approaches"])
    if "mode" in p:
        out["mode"] = check_choice("mode", p["mode"], MODES)
    if "perturbation" in p:
        out["perturbation"] = check_choice("perturbation", p["perturbation"], PERTURBATIONS)
    return out


def check_timing(p: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the step-timing parameters ``ks, steps, warmup, perturbations, dataset``."""
    out = dict(p)
    out["ks"] = check_positive_ints("ks", p["ks"])
    out["steps"] = check_positive_int("steps", p["steps"])
    out["warmup"] = check_positive_int("warmup", p["warmup"], minimum=0)
    out["perturbations"] = check_choices("perturbations", p["perturbations"], PERTURBATIONS)
    out["dataset"] = check_choice("dataset", p["dataset"], DATASETS)
    return out
