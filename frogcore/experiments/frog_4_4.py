"""FROG Section 4.4 (chapter ``frog_4_4``): fully connected networks trained with forward gradients.

Experiments (``CHAPTER.run(name, profile, device, seed, **overrides)``, or the wrappers below):

* ``"training"`` (:func:`run_training`) — FC nets (two hidden ReLU layers of width 256 / 1024 /
  4096) trained with every approach; tables ``summary``, ``history``, ``times``;
* ``"lr_sweep"`` (:func:`run_lr_sweep`) — the sweep behind the digits learning-rate rule: one FC net
  trained with ``scale ×`` the MNIST table's rates for every ``scale`` in ``scales`` (profiles
  ``smoke`` and ``default`` only: ``paper`` uses the authors' rates unchanged); the same three
  tables with an ``lr_scale`` column;
* ``"timing"`` (:func:`run_timing`) — time per gradient step vs k for backprop, simulated forward
  gradients and real forward mode; table ``timing``.

Approaches are :class:`frogcore.approach.Approach` specs (``"bp"``, ``"fg-mean:1"`` = FG,
``"fg-mean:4"``, ``"frog:16"``); the tables, the seeds and the training are described in
:mod:`frogcore.experiments.common.networks`. **Determinism**: ``summary`` and ``history`` of
``training`` and ``lr_sweep`` are bit-identical between identical runs on the same machine, device
and thread count; ``times`` and ``timing`` hold wall-clock measurements and are not.

Profiles:

* ``smoke`` — seconds (CI): digits, FC-256, one epoch, three approaches, one torch thread;
* ``default`` — laptop CPU, minutes: scikit-learn digits (1×8×8, 1077 training images), widths 256 /
  1024 / 4096 for 40 / 30 / 6 epochs, seed 0, the paper's eight approaches. The authors' learning
  rates are tuned for MNIST and ~780 steps per epoch, so on digits every rate is the MNIST table's
  value × ``lr_scale`` (one factor, 4, chosen by the ``lr_sweep`` experiment: the largest of 1, 4, 16
  at which no approach diverges);
* ``paper`` — the authors' setup: MNIST, batch 64, up to 200 epochs, early stopping with patience 10
  on the validation loss, seeds 0–2, the rates of ``frogcore/data/fc_nns.csv`` unchanged. Meant for CUDA.

Runtime options (they never change the numbers and are not part of the results' key):
``download`` (fetch MNIST into ``data/`` if missing), ``progress`` (tqdm bars per run),
``checkpoints`` (default on: every run checkpoints each epoch into the runner's per-run folder and
resumes from it after an interruption; a forced re-run wipes them) and ``threads``.
"""
from __future__ import annotations

import torch

from ..approach import Approach
from ..config import check_choice, check_positive_int, check_positive_ints
from ..models.fc import WIDTHS  # the widths of the paper and of the authors' learning-rate table
from .common import networks as nets
from .runner import Chapter, Experiment, context

SMOKE_APPROACHES = ["bp", "fg-mean:2", "frog:2"]
_SIM = dict(batch_size=None, mode="sim", perturbation="activity")

TRAINING = {
    "smoke": dict(datasets=["digits"], widths=[256], epochs=1, num_seeds=1, patience=10, lr_scale=4.0,
                  approaches=SMOKE_APPROACHES, lr_overrides=[], **_SIM),
    "default": dict(datasets=["digits"], widths=list(WIDTHS), epochs={256: 40, 1024: 30, 4096: 6}, num_seeds=1,
                    patience=10, lr_scale=4.0, approaches=nets.PAPER_APPROACHES, lr_overrides=[], **_SIM),
    "paper": dict(datasets=["mnist"], widths=list(WIDTHS), epochs=200, num_seeds=3, patience=10, lr_scale=1.0,
                  approaches=nets.PAPER_APPROACHES, lr_overrides=[], **_SIM),
}


LR_SWEEP = nets.DigitsOnlyProfiles({
    "smoke": dict(width=256, epochs=1, scales=[1.0, 4.0, 16.0], patience=10, approaches=SMOKE_APPROACHES),
    "default": dict(width=256, epochs=40, scales=[1.0, 4.0, 16.0], patience=10, approaches=nets.PAPER_APPROACHES),
})

TIMING = {
    "smoke": dict(dataset="digits", widths=[256], ks=[1, 2], steps=1, warmup=1, perturbations=["weight"]),
    "default": dict(dataset="digits", widths=list(WIDTHS), ks=[1, 2, 4, 16], steps=3, warmup=1,
                    perturbations=["activity", "weight"]),
    "paper": dict(dataset="mnist", widths=list(WIDTHS), ks=[1, 2, 4, 16], steps=20, warmup=3,
                  perturbations=["activity", "weight"]),
}

# torch intra-op threads: the smoke models are so small that one thread is fastest (several threads slow
# them down by orders of magnitude on a busy machine); other profiles keep torch's setting
THREADS = {"smoke": 1}


def check_widths(widths, overrides=()) -> list[int]:
    """``widths``: FC widths from :data:`WIDTHS` (the authors' learning-rate table covers only those), or any
    width that ``overrides`` (checked ``lr_overrides``) give rates for (model ``fc_w=<width>``)."""
    extra = tuple(int(o["model"][5:]) for o in overrides if o["model"].startswith("fc_w=")
                  and o["model"][5:].isdigit())
    allowed = tuple(WIDTHS) + tuple(w for w in extra if w not in WIDTHS)
    return [check_choice(f"widths[{i}]", w, allowed) for i, w in enumerate(check_positive_ints("widths", widths))]


def fc_run(dataset: str, width: int, epochs: int, approach: str) -> nets.NetRun:
    """The training configuration of an FC net of ``width`` (label ``FC-<width>``)."""
    return nets.NetRun(dataset, "fc", {"width": width}, f"FC-{width}", f"fc_w={width}", epochs,
                       Approach.parse(approach))


def _training_kw(ctx) -> dict:
    rt = ctx.runtime
    return dict(progress=rt["progress"], checkpoint_dir=ctx.checkpoint_dir if rt["checkpoints"] else None,
                code=[__name__])


# ----------------------------------------------------------------------------- training

def check_training_params(p: dict) -> dict:
    """Validate the ``training`` parameters (and that the authors' tables have every learning rate)."""
    out = nets.check_training(p)
    out["widths"] = check_widths(p["widths"], out.get("lr_overrides", []))
    out["epochs"] = nets.check_epochs(p["epochs"], out["widths"])
    nets.check_learning_rates([f"fc_w={w}" for w in out["widths"]], out["datasets"], out["approaches"],
                              out.get("lr_overrides", []))
    return out


def compute_training(p: dict, device: torch.device, seed: int):
    """Every dataset × width × approach for seeds ``seed … seed + num_seeds − 1`` (the split uses ``seed``)."""
    ctx = context()
    runs = [fc_run(ds, w, nets.epochs_for(p["epochs"], w), a)
            for ds in p["datasets"] for w in p["widths"] for a in p["approaches"]]
    offsets = (ctx.cell or {}).get("seed_offsets", range(p["num_seeds"]))  # a sweep cell trains one seed
    return nets.train_grid(runs, seeds=[seed + i for i in offsets], batch_size=p["batch_size"],
                           patience=p["patience"], lr_scale=p["lr_scale"], mode=p["mode"],
                           perturbation=p["perturbation"], device=device, data_seed=seed,
                           download=ctx.runtime["download"], lr_overrides=p["lr_overrides"], **_training_kw(ctx))


def training_cells(p: dict) -> list[dict]:
    """The sweep cells (:mod:`frogcore.sweep`): one per training run (dataset, width, approach, seed), in the order
    of the tables; ``seed_offsets`` is a selector :func:`compute_training` reads from ``context().cell``."""
    return [{"datasets": [ds], "widths": [w], "approaches": [a], "seed_offsets": [i]}
            for ds in p["datasets"] for w in p["widths"] for a in p["approaches"] for i in range(p["num_seeds"])]


# ----------------------------------------------------------------------------- learning-rate sweep

def check_sweep_params(p: dict) -> dict:
    out = nets.check_training(p)
    out["width"] = check_choice("width", p["width"], WIDTHS)
    out["epochs"] = check_positive_int("epochs", p["epochs"])
    nets.check_learning_rates([f"fc_w={out['width']}"], ["digits"], out["approaches"])
    return out


def compute_sweep(p: dict, device: torch.device, seed: int):
    """FC-``width`` on digits with every approach, once per factor in ``scales`` (seed ``seed``)."""
    ctx = context()
    runs = [fc_run("digits", p["width"], p["epochs"], a) for a in p["approaches"]]
    return nets.lr_sweep(runs, p["scales"], seeds=[seed], batch_size=None, patience=p["patience"], mode="sim",
                         perturbation="activity", device=device, data_seed=seed, **_training_kw(ctx))


# ----------------------------------------------------------------------------- timing

def check_timing_params(p: dict) -> dict:
    out = nets.check_timing(p)
    out["widths"] = check_widths(p["widths"])
    return out


def compute_timing(p: dict, device: torch.device, seed: int):
    """Step timings of every FC width on the first ``BATCH_SIZE[dataset]`` images of ``dataset``."""
    models = [("fc", {"width": w}, f"FC-{w}") for w in p["widths"]]
    return {"timing": nets.timing_table(models, p["dataset"], ks=p["ks"], steps=p["steps"], warmup=p["warmup"],
                                        perturbations=p["perturbations"], seed=seed, device=device,
                                        download=context().runtime["download"])}


CHAPTER = Chapter("frog_4_4", {
    "training": Experiment(TRAINING, compute_training, check_training_params,
                           runtime={"download": False, "progress": False, "checkpoints": True}, threads=THREADS,
                           cells=training_cells),
    "lr_sweep": Experiment(LR_SWEEP, compute_sweep, check_sweep_params,
                           runtime={"progress": False, "checkpoints": True}, threads=THREADS),
    "timing": Experiment(TIMING, compute_timing, check_timing_params, runtime={"download": False}, threads=THREADS),
})


def run_training(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the 4.4 training grid; ``overrides``: ``datasets``, ``widths``, ``epochs`` (a number or
    ``{width: epochs}``), ``num_seeds``, ``batch_size`` (``None``: the authors'), ``patience`` (0 or ``None``:
    no early stopping), ``lr_scale``, ``lr_overrides`` (rates from a network search, e.g.
    ``frogcore.lrsearch.lr_overrides("lr/fc2048/lr_table.csv")``; they also admit new widths), ``approaches``,
    ``mode``, ``perturbation`` (see :data:`TRAINING`);
    runtime ``download``, ``progress``, ``checkpoints``, ``threads``."""
    return CHAPTER.run("training", profile, device, seed, **overrides)


def run_lr_sweep(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the learning-rate sweep on digits; ``overrides``: ``width``, ``epochs``, ``scales``,
    ``patience``, ``approaches`` (see :data:`LR_SWEEP`); runtime ``progress``, ``checkpoints``, ``threads``."""
    return CHAPTER.run("lr_sweep", profile, device, seed, **overrides)


def run_timing(profile: str = "default", device: str = "auto", seed: int = 0, **overrides):
    """Run (or load) the step timings; ``overrides``: ``dataset``, ``widths``, ``ks``, ``steps``, ``warmup``,
    ``perturbations`` (see :data:`TIMING`); runtime ``download``, ``threads``."""
    return CHAPTER.run("timing", profile, device, seed, **overrides)
