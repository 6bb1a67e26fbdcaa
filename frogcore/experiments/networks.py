"""Sections 4.4 and 4.5 drivers: training networks with forward gradients.

* :func:`run_fc` (section ``frog_4_4``) — fully connected nets of width 256 / 1024 / 4096;
* :func:`run_sota` (section ``frog_4_5``) — ResNet18 and a Vision Transformer;
* :func:`run_timing` — time per gradient step vs k for backprop (``bp``), simulated forward
  gradients (``sim``) and real forward mode (``fwd``), for either section.

Approaches (the names of the authors' learning-rate tables): ``bp`` (backpropagation), ``fg-mean``
with k = 1 (the single-tangent forward gradient, *FG*) and k > 1 (mean aggregation), ``frog``
(orthogonal projection). As in the paper, forward gradients perturb activations (``"activity"``:
one tangent per block output, shared by the batch) and are simulated (``mode="sim"``: the exact
gradient is projected on the tangents, which gives the same update as real forward mode).

Profiles:

* ``smoke`` — seconds (CI): digits, tiny grid, one epoch;
* ``default`` — laptop CPU, minutes: scikit-learn digits (1×8×8, 1077 training images), the
  paper's models (FC widths 256 / 1024 / 4096; a narrower ResNet18 and a smaller ViT for 4.5),
  seed 0, a few dozen epochs. The authors' learning rates are tuned for MNIST/CIFAR-10 and ~780
  steps per epoch, so on digits every learning rate is the MNIST table's value times ``lr_scale``
  (a single factor per section, chosen by the small sweep :func:`run_lr_sweep`, whose results are
  committed alongside);
* ``paper`` — the authors' setup: MNIST (4.4) / MNIST and CIFAR-10 (4.5), batch 64 (MNIST) or 128
  (CIFAR-10), up to 200 epochs, early stopping with patience 10 on the validation loss, seeds 0–2,
  learning rates from ``frogcore/data/fc_nns.csv`` and ``sota_nns.csv`` unchanged. Meant for CUDA.

Every driver takes ``threads`` (torch intra-op threads while it runs; ``None``: the profile's choice,
one thread for ``smoke``, torch's default otherwise). Long runs checkpoint every epoch under ``checkpoints/<section>/<profile>/`` and resume after an
interruption (see :func:`frogcore.training.fit`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import math
import os
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import (check_choice, check_choices, check_positive_int, check_positive_ints, pick_profile,
                      resolve_device)
from ..datasets import DATASETS, Splits, load_splits
from ..engines import MODES, PERTURBATIONS, make_engine
from ..models import build_model, num_parameters, activity_dims
from ..results import REPO_ROOT, StoredResult, code_hash, run_cached
from ..training import cross_entropy, fit, history_long

SECTIONS = {"fc": "frog_4_4", "sota": "frog_4_5"}
APPROACHES = ("bp", "fg-mean", "frog")
CODE = ["frogcore.experiments.networks"]
BATCH_SIZE = {"digits": 64, "mnist": 64, "cifar10": 128}

# the paper's grid of approaches: bp; FG (k = 1); mean k = 2, 4, 16; FROG k = 2, 4, 16
PAPER_APPROACHES = [["bp", 1], ["fg-mean", 1], ["fg-mean", 2], ["fg-mean", 4], ["fg-mean", 16],
                    ["frog", 2], ["frog", 4], ["frog", 16]]

FC_PROFILES = {
    "smoke": dict(datasets=["digits"], widths=[256], epochs=1, num_seeds=1, patience=10, lr_scale=4.0,
                  approaches=[["bp", 1], ["fg-mean", 2], ["frog", 2]], checkpoints=False),
    "default": dict(datasets=["digits"], widths=[256, 1024, 4096], epochs={256: 40, 1024: 30, 4096: 6},
                    num_seeds=1, patience=10, lr_scale=4.0, approaches=PAPER_APPROACHES, checkpoints=True),
    "paper": dict(datasets=["mnist"], widths=[256, 1024, 4096], epochs=200, num_seeds=3, patience=10,
                  lr_scale=1.0, approaches=PAPER_APPROACHES, checkpoints=True),
}

# model options per profile (4.5): the default shrinks both models to fit a laptop CPU
SOTA_MODELS = {
    "smoke": {"resnet18": dict(width=4), "vit": dict(depth=1, heads=2, dim=16, mlp_dim=32, patch=4)},
    "default": {"resnet18": dict(width=16), "vit": dict(depth=2, heads=4, dim=64, mlp_dim=128, patch=4)},
    "paper": {"resnet18": dict(), "vit": dict(depth=6, heads=4, dim=256, mlp_dim=512, patch=4)},
}
SOTA_PROFILES = {
    "smoke": dict(datasets=["digits"], models=["resnet18", "vit"], epochs=1, num_seeds=1, patience=10,
                  lr_scale=4.0, approaches=[["bp", 1], ["frog", 2]], checkpoints=False),
    "default": dict(datasets=["digits"], models=["resnet18", "vit"], epochs={"resnet18": 15, "vit": 30},
                    num_seeds=1, patience=10,
                    lr_scale=4.0, approaches=PAPER_APPROACHES, checkpoints=True),
    "paper": dict(datasets=["mnist", "cifar10"], models=["resnet18", "vit"], epochs=200, num_seeds=3,
                  patience=10, lr_scale=1.0, approaches=PAPER_APPROACHES, checkpoints=True),
}

TIMING_PROFILES = {
    "smoke": dict(ks=[1, 2], steps=1, warmup=1, perturbations=["weight"]),
    "default": dict(ks=[1, 2, 4, 16], steps=3, warmup=1, perturbations=["activity", "weight"]),
    "paper": dict(ks=[1, 2, 4, 16], steps=20, warmup=3, perturbations=["activity", "weight"]),
}


# torch intra-op threads per profile: the smoke models are so small that one thread is fastest, and
# several threads slow them down by orders of magnitude on a busy machine; None keeps torch's setting
THREADS = {"smoke": 1, "default": None, "paper": None}


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` torch intra-op threads (``None``: unchanged), restoring the setting afterwards."""
    if n is None:
        yield
        return
    n = check_positive_int("threads", n)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _threads(profile: str, threads: int | None) -> int | None:
    return THREADS[profile] if threads is None else check_positive_int("threads", threads)


# ----------------------------------------------------------------------------- learning rates

def lr_table(section: str) -> pd.DataFrame:
    """The authors' learning rates (``fc_nns.csv`` for 4.4, ``sota_nns.csv`` for 4.5)."""
    check_choice("section", section, tuple(SECTIONS))
    name = "fc_nns.csv" if section == "fc" else "sota_nns.csv"
    with resources.files("frogcore").joinpath("data", name).open() as f:
        return pd.read_csv(f)


def table_lr(model: str, dataset: str, approach: str, k: int) -> float:
    """The authors' tuned learning rate for ``model`` ("fc_w=256", "resnet18", "vit") on ``dataset``
    ("mnist" | "cifar10") and an approach (k is ignored for ``bp``)."""
    check_choice("approach", approach, APPROACHES)
    table = lr_table("fc" if model.startswith("fc") else "sota")
    rows = table[(table.model == model) & (table.dataset == dataset) & (table.gradient_approach == approach)]
    if approach != "bp":
        rows = rows[rows.k == k]
    if len(rows) != 1:
        raise ValueError(f"no learning rate in the authors' tables for model={model!r}, dataset={dataset!r}, "
                         f"approach={approach!r}, k={k}")
    return float(rows.lr.iloc[0])


def learning_rate(model: str, dataset: str, approach: str, k: int, lr_scale: float = 1.0) -> float:
    """``lr_scale`` × the table's learning rate; digits uses the MNIST entry (see the module docstring)."""
    return lr_scale * table_lr(model, "mnist" if dataset == "digits" else dataset, approach, k)


# ----------------------------------------------------------------------------- one run

def approach_label(approach: str, k: int) -> str:
    """Readable name: ``BP``, ``FG`` (k = 1), ``mean k=4``, ``FROG k=4``."""
    if approach == "bp":
        return "BP"
    if approach == "fg-mean":
        return "FG" if k == 1 else f"mean k={k}"
    return f"FROG k={k}"


def engine_options(approach: str, k: int, mode: str = "sim", perturbation: str = "activity") -> dict[str, Any]:
    """``make_engine`` options of an approach."""
    check_choice("approach", approach, APPROACHES)
    if approach == "bp":
        return dict(mode="bp", aggregation="mean", k=1, perturbation=perturbation)
    agg = "projection" if approach == "frog" else ("single" if k == 1 else "mean")
    return dict(mode=mode, aggregation=agg, k=k, perturbation=perturbation)


def run_seed(seed: int, *parts: Any) -> int:
    """A deterministic seed from the run seed and the run's identifiers."""
    h = hashlib.sha256(json.dumps([seed, *parts], default=str).encode()).digest()
    return int.from_bytes(h[:8], "little") % (2**63 - 1)


def build_seeded(model: str, input_shape, num_classes: int, seed: int, **kw) -> torch.nn.Module:
    """Build a model with its initialisation drawn from ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model, input_shape, num_classes, **kw)


def train_one(
    data: Splits,
    model: str,
    model_kw: Mapping[str, Any],
    approach: str,
    k: int,
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
    progress: bool = False,
):
    """Train one (model, approach, k, seed) configuration; returns a :class:`~frogcore.training.TrainResult`."""
    device = torch.device(device)
    net = build_seeded(model, data.input_shape, data.num_classes, run_seed(seed, "init", model, dict(model_kw)),
                       **model_kw)
    gen = torch.Generator(device=device).manual_seed(run_seed(seed, "tangents", approach, k))
    engine = make_engine(generator=gen, **engine_options(approach, k, mode, perturbation))
    key = {"dataset": data.name, "model": model, "model_kw": dict(model_kw), "approach": approach, "k": k,
           "mode": mode, "perturbation": perturbation, "device": device.type, "code": code_hash(CODE)}
    return fit(net, data, engine, lr=lr, epochs=epochs, batch_size=batch_size, patience=patience, seed=seed,
               generator=gen, device=device, loss_fn=cross_entropy, checkpoint=checkpoint, run_key=key,
               progress=progress, desc=f"{model} {approach_label(approach, k)} seed {seed}")


def checkpoint_root() -> Path:
    """``$FROG_CHECKPOINT_DIR`` if set, else ``checkpoints/`` at the repository root (git-ignored)."""
    env = os.environ.get("FROG_CHECKPOINT_DIR")
    return Path(env) if env else REPO_ROOT / "checkpoints"


def _checkpoint_path(section: str, profile: str, ident: Mapping[str, Any]) -> Path:
    tag = hashlib.sha256(json.dumps(dict(ident), sort_keys=True, default=str).encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(v) for v in ident.values() if not isinstance(v, Mapping)))
    return checkpoint_root() / section / profile / f"{readable}_{tag}.pt"


def train_grid(section: str, profile: str, runs: Sequence[Mapping[str, Any]], *, seeds: Sequence[int],
               batch_size: int | None, patience: int | None, lr_scale: float, mode: str, perturbation: str,
               device: torch.device, checkpoints: bool, progress: bool, data_seed: int,
               download: bool = False) -> dict[str, pd.DataFrame]:
    """Train every run (dicts with dataset, model, model_kw, label, epochs, approach, k) for every seed.

    Returns the tidy tables ``history`` (run ids, epoch, metric, value) and ``summary`` (one row per
    run: status, epochs run, best epoch, validation/test metrics at the best epoch and at the end,
    mean time per step).
    """
    histories, summary = [], []
    cache: dict[str, Splits] = {}
    for r in runs:
        ds = r["dataset"]
        if ds not in cache:
            data = load_splits(ds, seed=data_seed, download=download)
            if device.type == "cuda":
                data = Splits(*[(x.to(device), y.to(device)) for x, y in (data.train, data.val, data.test)],
                              num_classes=data.num_classes, name=data.name)
            cache[ds] = data
        data = cache[ds]
        bs = batch_size or BATCH_SIZE[ds]
        lr = learning_rate(r["table_model"], ds, r["approach"], r["k"], lr_scale)
        for s in seeds:
            ident = {"dataset": ds, "model": r["label"], "approach": r["approach"], "k": r["k"], "seed": s,
                     "lr": lr, "bs": bs, "epochs": r["epochs"], "patience": patience, "mode": mode,
                     "perturbation": perturbation, "model_kw": dict(r["model_kw"])}
            ckpt = _checkpoint_path(section, profile, ident) if checkpoints else None
            t0 = time.perf_counter()
            res = train_one(data, r["model"], r["model_kw"], r["approach"], r["k"], lr=lr, epochs=r["epochs"],
                            batch_size=bs, patience=patience, seed=s, mode=mode, perturbation=perturbation,
                            device=device, checkpoint=ckpt, progress=progress)
            ids = {"dataset": ds, "model": r["label"], "approach": r["approach"], "k": r["k"],
                   "label": approach_label(r["approach"], r["k"]), "seed": s, "lr": lr}
            histories.append(history_long(res.history, **ids))
            h = res.history
            best, last = res.best, res.last
            summary.append({**ids, "status": res.status, "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
                            "best_val_loss": best.val_loss, "best_val_acc": best.val_acc,
                            "test_loss": best.test_loss, "test_acc": best.test_acc,
                            "last_test_acc": last.test_acc, "final_train_loss": last.train_loss,
                            "time_per_step_s": h.time_per_step_s.iloc[1:].mean(),
                            "train_time_s": h.train_time_s.sum(), "wall_s": time.perf_counter() - t0})
    return {"history": pd.concat(histories, ignore_index=True), "summary": pd.DataFrame(summary)}


def check_download(download: Any) -> bool:
    """``download`` must be ``True`` or ``False`` (MNIST/CIFAR-10 are fetched only when it is ``True``)."""
    if not isinstance(download, bool):
        raise ValueError(f"download must be True or False; got {download!r}")
    return download


def _validate_common(prof, *, datasets, epochs, num_seeds, batch_size, patience, lr_scale, approaches, mode,
                     perturbation, seed, allowed_datasets=DATASETS):
    out = {
        "datasets": check_choices("datasets", prof["datasets"] if datasets is None else datasets, allowed_datasets),
        "num_seeds": check_positive_int("num_seeds", prof["num_seeds"] if num_seeds is None else num_seeds),
        "batch_size": None if batch_size is None else check_positive_int("batch_size", batch_size),
        "patience": prof["patience"] if patience is None else (None if patience == 0 else
                                                               check_positive_int("patience", patience)),
        "mode": check_choice("mode", mode, ("sim", "fwd")),
        "perturbation": check_choice("perturbation", perturbation, PERTURBATIONS),
    }
    lr_scale = prof["lr_scale"] if lr_scale is None else lr_scale
    if isinstance(lr_scale, bool) or not isinstance(lr_scale, (int, float)) or not (0 < lr_scale < math.inf):
        raise ValueError(f"lr_scale must be a positive number; got {lr_scale!r}")
    out["lr_scale"] = float(lr_scale)
    appr = prof["approaches"] if approaches is None else approaches
    if isinstance(appr, (str, bytes)) or not isinstance(appr, Sequence) or not appr:
        raise ValueError(f"approaches must be a non-empty list of [approach, k] pairs; got {appr!r}")
    checked = []
    for i, a in enumerate(appr):
        if isinstance(a, str) or not isinstance(a, Sequence) or len(a) != 2:
            raise ValueError(f"approaches[{i}] must be an [approach, k] pair; got {a!r}")
        check_choice(f"approaches[{i}][0]", a[0], APPROACHES)
        checked.append([a[0], 1 if a[0] == "bp" else check_positive_int(f"approaches[{i}][1]", a[1])])
    out["approaches"] = checked
    ep = prof["epochs"] if epochs is None else epochs
    if isinstance(ep, Mapping):
        out["epochs"] = {str(kk): check_positive_int(f"epochs[{kk}]", v) for kk, v in ep.items()}
    else:
        out["epochs"] = check_positive_int("epochs", ep)
    out["seed"] = check_positive_int("seed", seed, minimum=0)
    return out


def _epochs_for(epochs, key) -> int:
    if isinstance(epochs, Mapping):
        table = {str(kk): v for kk, v in epochs.items()}
        if str(key) not in table:
            raise ValueError(f"epochs has no entry for {key!r}; it has {sorted(table)}")
        return table[str(key)]
    return epochs


# ----------------------------------------------------------------------------- section drivers

def run_fc(profile: str = "default", device: str = "auto", seed: int = 0, *, datasets: Sequence[str] | None = None,
           widths: Sequence[int] | None = None, epochs: int | Mapping | None = None, num_seeds: int | None = None,
           batch_size: int | None = None, patience: int | None = None, lr_scale: float | None = None,
           approaches: Sequence[Sequence] | None = None, mode: str = "sim", perturbation: str = "activity",
           checkpoints: bool | None = None, progress: bool = False, threads: int | None = None,
           download: bool = False, force: bool | None = None) -> StoredResult:
    """Section 4.4: FC networks (``widths``) trained with every approach. ``None`` = the profile's value.

    ``epochs`` may be one number or a ``{width: epochs}`` table; ``patience=0`` turns early stopping
    off; seeds are ``seed, seed+1, …`` (``num_seeds`` of them; the data split uses ``seed``).
    ``download=True`` fetches MNIST into ``data/`` if it is missing (otherwise a missing dataset is an
    error that says where to put the files); it does not change the results.
    """
    download = check_download(download)
    prof = pick_profile(profile, FC_PROFILES)
    dev = resolve_device(device)
    p = _validate_common(prof, datasets=datasets, epochs=epochs, num_seeds=num_seeds, batch_size=batch_size,
                         patience=patience, lr_scale=lr_scale, approaches=approaches, mode=mode,
                         perturbation=perturbation, seed=seed)
    p["widths"] = check_positive_ints("widths", prof["widths"] if widths is None else widths)
    for w in p["widths"]:
        check_choice("width", w, (256, 1024, 4096))  # the widths the authors' learning-rate table covers
    ckpts = prof["checkpoints"] if checkpoints is None else bool(checkpoints)
    runs = [{"dataset": ds, "model": "fc", "model_kw": {"width": w}, "label": f"FC-{w}", "table_model": f"fc_w={w}",
             "epochs": _epochs_for(p["epochs"], w), "approach": a, "k": k}
            for ds in p["datasets"] for w in p["widths"] for a, k in p["approaches"]]
    params = {kk: v for kk, v in p.items() if kk != "seed"}
    with torch_threads(_threads(profile, threads)):
        return run_cached(
            SECTIONS["fc"], "training",
            lambda: train_grid(SECTIONS["fc"], profile, runs, seeds=range(seed, seed + p["num_seeds"]),
                               batch_size=p["batch_size"], patience=p["patience"], lr_scale=p["lr_scale"],
                               mode=p["mode"], perturbation=p["perturbation"], device=dev,
                               checkpoints=ckpts and not force, progress=progress, data_seed=seed,
                               download=download),
            params=params, profile=profile, device=dev, seed=seed, code=CODE, force=force)


def run_sota(profile: str = "default", device: str = "auto", seed: int = 0, *, datasets: Sequence[str] | None = None,
             models: Sequence[str] | None = None, model_kw: Mapping[str, Mapping] | None = None,
             epochs: int | Mapping | None = None, num_seeds: int | None = None, batch_size: int | None = None,
             patience: int | None = None, lr_scale: float | None = None, approaches: Sequence[Sequence] | None = None,
             mode: str = "sim", perturbation: str = "activity", checkpoints: bool | None = None,
             progress: bool = False, threads: int | None = None, download: bool = False,
             force: bool | None = None) -> StoredResult:
    """Section 4.5: ResNet18 and ViT trained with every approach. ``None`` = the profile's value.

    ``model_kw`` maps a model name to its size options (default: the profile's, see ``SOTA_MODELS``);
    ``epochs`` may be one number or a ``{model: epochs}`` table. ``download`` as for :func:`run_fc`.
    """
    download = check_download(download)
    prof = pick_profile(profile, SOTA_PROFILES)
    dev = resolve_device(device)
    p = _validate_common(prof, datasets=datasets, epochs=epochs, num_seeds=num_seeds, batch_size=batch_size,
                         patience=patience, lr_scale=lr_scale, approaches=approaches, mode=mode,
                         perturbation=perturbation, seed=seed)
    p["models"] = check_choices("models", prof["models"] if models is None else models, ("resnet18", "vit"))
    kw = {m: dict(SOTA_MODELS[profile][m]) for m in p["models"]}
    for m, v in (model_kw or {}).items():
        check_choice("model_kw key", m, tuple(p["models"]))
        kw[m].update(v)
    p["model_kw"] = kw
    ckpts = prof["checkpoints"] if checkpoints is None else bool(checkpoints)
    runs = [{"dataset": ds, "model": m, "model_kw": kw[m], "label": model_label(m, kw[m]), "table_model": m,
             "epochs": _epochs_for(p["epochs"], m), "approach": a, "k": k}
            for ds in p["datasets"] for m in p["models"] for a, k in p["approaches"]]
    params = {kk: v for kk, v in p.items() if kk != "seed"}
    with torch_threads(_threads(profile, threads)):
        return run_cached(
            SECTIONS["sota"], "training",
            lambda: train_grid(SECTIONS["sota"], profile, runs, seeds=range(seed, seed + p["num_seeds"]),
                               batch_size=p["batch_size"], patience=p["patience"], lr_scale=p["lr_scale"],
                               mode=p["mode"], perturbation=p["perturbation"], device=dev,
                               checkpoints=ckpts and not force, progress=progress, data_seed=seed,
                               download=download),
            params=params, profile=profile, device=dev, seed=seed, code=CODE, force=force)


def model_label(model: str, kw: Mapping[str, Any]) -> str:
    """``ResNet18`` / ``ViT`` for the paper's sizes, with the shrunk options appended otherwise."""
    if model == "resnet18":
        return "ResNet18" if kw.get("width", 64) == 64 else f"ResNet18 (width {kw['width']})"
    paper = dict(depth=6, heads=4, dim=256, mlp_dim=512, patch=4)
    full = {**paper, **kw}
    if full == paper:
        return "ViT"
    return "ViT (" + ", ".join(f"{k} {full[k]}" for k in paper) + ")"


def run_lr_sweep(section: str = "fc", profile: str = "default", device: str = "auto", seed: int = 0, *,
                 scales: Sequence[float] = (1.0, 4.0, 16.0), width: int = 256, epochs: int | None = None,
                 approaches: Sequence[Sequence] | None = None, threads: int | None = None,
                 force: bool | None = None) -> StoredResult:
    """The sweep behind the digits learning-rate rule: train with ``scale ×`` the MNIST table's rate.

    ``section="fc"``: the FC net of ``width``; ``"sota"``: the profile's ResNet18 and ViT. One seed,
    the profile's epochs; the summary lists the best validation loss per scale (diverged runs count
    as failures).
    """
    check_choice("section", section, tuple(SECTIONS))
    check_choice("profile", profile, ("smoke", "default"))  # the rule is for digits only
    if isinstance(scales, (str, bytes)) or not scales or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive numbers; got {scales!r}")
    scales = [float(s) for s in scales]
    dev = resolve_device(device)
    if section == "fc":
        prof = FC_PROFILES[profile]
        check_choice("width", width, (256, 1024, 4096))
        ep = epochs or _epochs_for(prof["epochs"], width)
        base = [{"dataset": "digits", "model": "fc", "model_kw": {"width": width}, "label": f"FC-{width}",
                 "table_model": f"fc_w={width}", "epochs": ep}]
    else:
        prof = SOTA_PROFILES[profile]
        base = [{"dataset": "digits", "model": m, "model_kw": SOTA_MODELS[profile][m],
                 "label": model_label(m, SOTA_MODELS[profile][m]), "table_model": m,
                 "epochs": epochs or _epochs_for(prof["epochs"], m)} for m in prof["models"]]
    appr = _validate_common(prof, datasets=None, epochs=None, num_seeds=None, batch_size=None, patience=None,
                            lr_scale=None, approaches=approaches, mode="sim", perturbation="activity",
                            seed=seed)["approaches"]
    params = {"scales": scales, "width": width, "epochs": [b["epochs"] for b in base], "approaches": appr,
              "models": [b["label"] for b in base]}

    def compute():
        hist, summ = [], []
        for sc in scales:
            runs = [{**b, "approach": a, "k": k} for b in base for a, k in appr]
            # same checkpoints as the main run: the main run at the chosen scale then costs nothing
            out = train_grid(SECTIONS[section], profile, runs, seeds=[seed], batch_size=None,
                             patience=prof["patience"], lr_scale=sc, mode="sim", perturbation="activity",
                             device=dev, checkpoints=prof["checkpoints"] and not force, progress=False,
                             data_seed=seed)
            hist.append(out["history"].assign(lr_scale=sc))
            summ.append(out["summary"].assign(lr_scale=sc))
        return {"history": pd.concat(hist, ignore_index=True), "summary": pd.concat(summ, ignore_index=True)}

    with torch_threads(_threads(profile, threads)):
        return run_cached(SECTIONS[section], "lr_sweep", compute, params=params, profile=profile, device=dev,
                          seed=seed, code=CODE, force=force)


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


def run_timing(section: str = "fc", profile: str = "default", device: str = "auto", seed: int = 0, *,
               ks: Sequence[int] | None = None, steps: int | None = None, warmup: int | None = None,
               perturbations: Sequence[str] | None = None, threads: int | None = None,
               download: bool = False, force: bool | None = None) -> StoredResult:
    """Time per gradient step vs k for ``bp``, ``sim`` and ``fwd`` (mean and projection aggregation).

    Uses the section's models at the profile's size on the profile's first dataset and batch size
    (4.4: every width). In-process wall-clock timings: indicative only, and noisy on a shared CPU.
    ``download`` as for :func:`run_fc`.
    """
    download = check_download(download)
    check_choice("section", section, tuple(SECTIONS))
    prof = pick_profile(profile, TIMING_PROFILES)
    dev = resolve_device(device)
    seed = check_positive_int("seed", seed, minimum=0)
    p = {"ks": check_positive_ints("ks", prof["ks"] if ks is None else ks),
         "steps": check_positive_int("steps", prof["steps"] if steps is None else steps),
         "warmup": check_positive_int("warmup", prof["warmup"] if warmup is None else warmup, minimum=0),
         "perturbations": check_choices("perturbations", prof["perturbations"] if perturbations is None
                                        else perturbations, PERTURBATIONS)}
    if section == "fc":
        sp = FC_PROFILES[profile]
        models = [("fc", {"width": w}, f"FC-{w}") for w in sp["widths"]]
    else:
        sp = SOTA_PROFILES[profile]
        models = [(m, SOTA_MODELS[profile][m], model_label(m, SOTA_MODELS[profile][m])) for m in sp["models"]]
    dataset = sp["datasets"][0]
    p.update(dataset=dataset, models=[lbl for _, _, lbl in models])

    def compute():
        data = load_splits(dataset, seed=seed, download=download)
        bs = BATCH_SIZE[dataset]
        rows = []
        for name, kw, label in models:
            net = build_seeded(name, data.input_shape, data.num_classes, run_seed(seed, "init", name, kw), **kw)
            state = {kk: v.clone() for kk, v in net.state_dict().items()}
            n_params = num_parameters(net)
            n_act = sum(activity_dims(net, data.input_shape).values())
            configs = [("bp", "bp", 1, "-")]
            for pert in p["perturbations"]:
                for m in ("sim", "fwd"):
                    for agg in ("mean", "projection"):
                        configs += [(m, agg, k, pert) for k in p["ks"]]
            for m, agg, k, pert in configs:
                net.load_state_dict(state)
                gen = torch.Generator(device=dev).manual_seed(run_seed(seed, "timing", m, agg, k))
                eng = make_engine(mode=m, aggregation="mean" if m == "bp" else agg, k=k,
                                  perturbation="weight" if pert == "-" else pert, generator=gen)
                t = time_steps(net, data, eng, batch_size=bs, steps=p["steps"], warmup=p["warmup"], device=dev)
                ts = pd.Series(t)
                rows.append({"model": label, "params": n_params, "activity_dim": n_act, "mode": m,
                             "aggregation": agg, "perturbation": pert, "k": k, "batch_size": bs,
                             "median_s": ts.median(), "min_s": ts.min(), "mean_s": ts.mean(), "steps": len(t),
                             "threads": torch.get_num_threads()})
        return {"timing": pd.DataFrame(rows)}

    with torch_threads(_threads(profile, threads)):
        return run_cached(SECTIONS[section], "timing", compute, params=p, profile=profile, device=dev, seed=seed,
                          code=CODE, force=force)
