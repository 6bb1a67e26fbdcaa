"""FROG Section 4.5 (chapter ``frog_4_5``): ResNet18 and a Vision Transformer trained with forward gradients.

Experiments (``CHAPTER.run(name, profile, device, seed, **overrides)``, or the wrappers below):

* ``"training"`` (:func:`run_training`) — ResNet18 and ViT trained with every approach; tables
  ``summary``, ``history``, ``times``;
* ``"timing"`` (:func:`run_timing`) — time per gradient step vs k for backprop, simulated forward
  gradients and real forward mode; table ``timing``;
* ``"lr_sweep"`` (:func:`run_lr_sweep`) — the digits learning-rate sweep of Section 4.4 for these
  models (profiles ``smoke`` and ``default``; not part of the book page: it does not fit its budget).

Approaches are :class:`frogcore.approach.Approach` specs (``"bp"``, ``"fg-mean:1"`` = FG,
``"fg-mean:4"``, ``"frog:16"``); the tables, the seeds and the training are described in
:mod:`frogcore.experiments.common.networks`. **Determinism**: ``summary`` and ``history`` are
bit-identical between identical runs on the same machine, device and thread count; ``times`` and
``timing`` hold wall-clock measurements and are not.

Models (``model_kw``: size options per model, see :data:`MODEL_OPTIONS` and
:func:`frogcore.models.build_model`; an empty entry is the paper's size): torchvision's ResNet18
(``width`` 64) and a ViT (``depth`` 6, ``heads`` 4, ``dim`` 256, ``mlp_dim`` 512, ``patch`` 4).

Profiles:

* ``smoke`` — seconds (CI): digits, tiny models, one epoch, BP and FROG k=2, one torch thread;
* ``default`` — laptop CPU, minutes: scikit-learn digits, a ResNet18 of base width 16 (15 epochs) and a
  ViT with 2 blocks, hidden size 64, MLP 128, patch 4 (30 epochs), seed 0, the paper's eight
  approaches, every rate the MNIST table's × ``lr_scale`` = 4 (the factor chosen in Section 4.4);
* ``paper`` — the authors' setup: MNIST (batch 64) and CIFAR-10 (batch 128), the full models, up to 200
  epochs, patience 10, seeds 0–2, the rates of ``frogcore/data/sota_nns.csv`` unchanged. Meant for
  CUDA. Every dataset is loaded before the first run trains, so a missing CIFAR-10 fails at once.

Runtime options (never part of the results' key): ``download``, ``progress``, ``checkpoints``
(default on), ``threads`` — as in :mod:`frogcore.experiments.frog_4_4`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..approach import Approach
from ..config import check_choices, check_positive_int
from .common import networks as nets
from .runner import Chapter, Experiment, context

MODELS = ("resnet18", "vit")
# size options per model, in the order that keys a model's initialisation seed
MODEL_OPTIONS = {"resnet18": ("width",), "vit": ("depth", "heads", "dim", "mlp_dim", "patch")}
_PAPER_VIT = dict(depth=6, heads=4, dim=256, mlp_dim=512, patch=4)
# model sizes per profile: the default shrinks both models to fit a laptop CPU
SIZES = {
    "smoke": {"resnet18": dict(width=4), "vit": dict(depth=1, heads=2, dim=16, mlp_dim=32, patch=4)},
    "default": {"resnet18": dict(width=16), "vit": dict(depth=2, heads=4, dim=64, mlp_dim=128, patch=4)},
    "paper": {"resnet18": dict(), "vit": dict(_PAPER_VIT)},
}
_SIM = dict(batch_size=None, mode="sim", perturbation="activity")
_EPOCHS_DEFAULT = {"resnet18": 15, "vit": 30}

TRAINING = {
    "smoke": dict(datasets=["digits"], models=list(MODELS), model_kw=SIZES["smoke"], epochs=1, num_seeds=1,
                  patience=10, lr_scale=4.0, approaches=["bp", "frog:2"], lr_overrides=[], **_SIM),
    "default": dict(datasets=["digits"], models=list(MODELS), model_kw=SIZES["default"], epochs=_EPOCHS_DEFAULT,
                    num_seeds=1, patience=10, lr_scale=4.0, approaches=nets.PAPER_APPROACHES, lr_overrides=[],
                    **_SIM),
    "paper": dict(datasets=["mnist", "cifar10"], models=list(MODELS), model_kw=SIZES["paper"], epochs=200,
                  num_seeds=3, patience=10, lr_scale=1.0, approaches=nets.PAPER_APPROACHES, lr_overrides=[],
                  **_SIM),
}


LR_SWEEP = nets.DigitsOnlyProfiles({
    "smoke": dict(models=list(MODELS), model_kw=SIZES["smoke"], epochs=1, scales=[1.0, 4.0, 16.0], patience=10,
                  approaches=["bp", "frog:2"]),
    "default": dict(models=list(MODELS), model_kw=SIZES["default"], epochs=_EPOCHS_DEFAULT,
                    scales=[1.0, 4.0, 16.0], patience=10, approaches=nets.PAPER_APPROACHES),
})

_TIMING = dict(ks=[1, 2, 4, 16], perturbations=["activity", "weight"], models=list(MODELS))
TIMING = {
    "smoke": dict(dataset="digits", models=list(MODELS), model_kw=SIZES["smoke"], ks=[1, 2], steps=1, warmup=1,
                  perturbations=["weight"]),
    "default": dict(dataset="digits", model_kw=SIZES["default"], steps=3, warmup=1, **_TIMING),
    "paper": dict(dataset="mnist", model_kw=SIZES["paper"], steps=20, warmup=3, **_TIMING),
}

THREADS = {"smoke": 1}  # see frog_4_4.THREADS


def model_label(model: str, kw: Mapping[str, Any]) -> str:
    """``ResNet18`` / ``ViT`` for the paper's sizes, with the shrunk options appended otherwise."""
    if model == "resnet18":
        return "ResNet18" if kw.get("width", 64) == 64 else f"ResNet18 (width {kw['width']})"
    full = {**_PAPER_VIT, **kw}
    if full == _PAPER_VIT:
        return "ViT"
    return "ViT (" + ", ".join(f"{k} {full[k]}" for k in _PAPER_VIT) + ")"


def check_model_kw(model_kw: Any, models: Sequence[str]) -> dict[str, dict[str, int]]:
    """``model_kw``: ``{model: {option: positive int}}`` with an entry for every model in ``models``
    (``{}``: the paper's size); options from :data:`MODEL_OPTIONS`, returned in that order."""
    if not isinstance(model_kw, Mapping):
        raise ValueError(f"model_kw must be a mapping {{model: {{option: value}}}}; got {model_kw!r}")
    for m in model_kw:
        if m not in MODELS:
            raise ValueError(f"model_kw has an entry for {m!r}, which is not valid; allowed models: "
                             + ", ".join(repr(x) for x in MODELS))
    out = {}
    for m in models:
        if m not in model_kw:
            raise ValueError(f"model_kw has no entry for {m!r}; give the size options of every model in models "
                             f"({{{m!r}: {{}}}} for the paper's size)")
        kw = model_kw[m]
        if not isinstance(kw, Mapping):
            raise ValueError(f"model_kw[{m!r}] must be a mapping of size options; got {kw!r}")
        bad = [o for o in kw if o not in MODEL_OPTIONS[m]]
        if bad:
            raise ValueError(f"model_kw[{m!r}] has unknown options {bad}; allowed options: "
                             + ", ".join(repr(o) for o in MODEL_OPTIONS[m]))
        out[m] = {o: check_positive_int(f"model_kw[{m!r}][{o!r}]", kw[o]) for o in MODEL_OPTIONS[m] if o in kw}
    return out


def _models(p: dict) -> dict:
    out = dict(p)
    out["models"] = check_choices("models", p["models"], MODELS)
    out["model_kw"] = check_model_kw(p["model_kw"], out["models"])
    return out


def sota_run(dataset: str, model: str, kw: Mapping[str, int], epochs: int, approach: str) -> nets.NetRun:
    """The training configuration of ``model`` with size options ``kw``."""
    return nets.NetRun(dataset, model, dict(kw), model_label(model, kw), model, epochs, Approach.parse(approach))


def _training_kw(ctx) -> dict:
    rt = ctx.runtime
    return dict(progress=rt["progress"], checkpoint_dir=ctx.checkpoint_dir if rt["checkpoints"] else None,
                code=[__name__])


# ----------------------------------------------------------------------------- training

def check_training_params(p: dict) -> dict:
    """Validate the ``training`` parameters (and that the authors' tables have every learning rate)."""
    out = _models(nets.check_training(p))
    out["epochs"] = nets.check_epochs(p["epochs"], out["models"])
    nets.check_learning_rates(out["models"], out["datasets"], out["approaches"], out.get("lr_overrides", []))
    return out


def compute_training(p: dict, device: torch.device, seed: int):
    """Every dataset × model × approach for seeds ``seed … seed + num_seeds − 1`` (the split uses ``seed``)."""
    ctx = context()
    runs = [sota_run(ds, m, p["model_kw"][m], nets.epochs_for(p["epochs"], m), a)
            for ds in p["datasets"] for m in p["models"] for a in p["approaches"]]
    return nets.train_grid(runs, seeds=range(seed, seed + p["num_seeds"]), batch_size=p["batch_size"],
                           patience=p["patience"], lr_scale=p["lr_scale"], mode=p["mode"],
                           perturbation=p["perturbation"], device=device, data_seed=seed,
                           download=ctx.runtime["download"], lr_overrides=p["lr_overrides"], **_training_kw(ctx))


# ----------------------------------------------------------------------------- learning-rate sweep

def check_sweep_params(p: dict) -> dict:
    out = _models(nets.check_training(p))
    out["epochs"] = nets.check_epochs(p["epochs"], out["models"])
    nets.check_learning_rates(out["models"], ["digits"], out["approaches"])
    return out


def compute_sweep(p: dict, device: torch.device, seed: int):
    """Both models on digits with every approach, once per factor in ``scales`` (seed ``seed``)."""
    ctx = context()
    runs = [sota_run("digits", m, p["model_kw"][m], nets.epochs_for(p["epochs"], m), a)
            for m in p["models"] for a in p["approaches"]]
    return nets.lr_sweep(runs, p["scales"], seeds=[seed], batch_size=None, patience=p["patience"], mode="sim",
                         perturbation="activity", device=device, data_seed=seed, **_training_kw(ctx))


# ----------------------------------------------------------------------------- timing

def check_timing_params(p: dict) -> dict:
    return _models(nets.check_timing(p))


def compute_timing(p: dict, device: torch.device, seed: int):
    """Step timings of both models on the first ``BATCH_SIZE[dataset]`` images of ``dataset``."""
    models = [(m, p["model_kw"][m], model_label(m, p["model_kw"][m])) for m in p["models"]]
    return {"timing": nets.timing_table(models, p["dataset"], ks=p["ks"], steps=p["steps"], warmup=p["warmup"],
                                        perturbations=p["perturbations"], seed=seed, device=device,
                                        download=context().runtime["download"])}


CHAPTER = Chapter("frog_4_5", {
    "training": Experiment(TRAINING, compute_training, check_training_params,
                           runtime={"download": False, "progress": False, "checkpoints": True}, threads=THREADS),
    "timing": Experiment(TIMING, compute_timing, check_timing_params, runtime={"download": False}, threads=THREADS),
    "lr_sweep": Experiment(LR_SWEEP, compute_sweep, check_sweep_params,
                           runtime={"progress": False, "checkpoints": True}, threads=THREADS),
})


def run_training(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the 4.5 training grid; ``overrides``: ``datasets``, ``models``, ``model_kw`` (sizes of
    every model in ``models``), ``epochs`` (a number or ``{model: epochs}``), ``num_seeds``, ``batch_size``,
    ``patience``, ``lr_scale``, ``lr_overrides`` (rates from a network search, see
    :func:`frogcore.lrsearch.lr_overrides`), ``approaches``, ``mode``, ``perturbation`` (see :data:`TRAINING`); runtime
    ``download``, ``progress``, ``checkpoints``, ``threads``."""
    return CHAPTER.run("training", profile, device, seed, **overrides)


def run_timing(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the step timings; ``overrides``: ``dataset``, ``models``, ``model_kw``, ``ks``, ``steps``,
    ``warmup``, ``perturbations`` (see :data:`TIMING`); runtime ``download``, ``threads``."""
    return CHAPTER.run("timing", profile, device, seed, **overrides)


def run_lr_sweep(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the learning-rate sweep on digits; ``overrides``: ``models``, ``model_kw``, ``epochs``,
    ``scales``, ``patience``, ``approaches`` (see :data:`LR_SWEEP`); runtime ``progress``, ``checkpoints``,
    ``threads``."""
    return CHAPTER.run("lr_sweep", profile, device, seed, **overrides)
