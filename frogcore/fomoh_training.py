r"""Training a network with FoMoH-type steps (Cobb et al., arXiv 2408.10419): the library loop.

:func:`train` trains one model with one method by :func:`frogcore.second_order.forward_step` on minibatches,

.. math::  θ_t = θ_{t-1} + Δθ(L_{B_t}, θ_{t-1}),

where ``L_B`` is the mean cross-entropy of minibatch ``B`` and ``Δθ`` the step of the method: ``bp``
(SGD with the true gradient), ``fgd`` ``−η(∇L·v)v``, ``fomoh`` ``−η(∇L·v)v/(|vᵀ∇²Lv| + ε)``, ``fomoh-kd:K``
``−ηVᵀ(V∇²LVᵀ + εI)⁻¹V∇L``, ``frog:K`` ``−η`` × the projection of ``∇L`` on ``span(V)``, ``newton-cg``
(conjugate gradients on Hessian-vector products). The authors' options — averaging over ``samples`` tangent
sets, elementwise clipping ``clip`` and ``tangent_dropout`` — and any other :func:`forward_step` option
(``refine``, ``curvature``, ``cg_max_iter``, …, through ``step_kw``) pass through.

Semantics (those of ``frogcore.experiments.fomoh_networks.train_network``, which this reproduces number for
number on runs that do not diverge):

* the model is built with the global generator seeded with ``init_seed`` (inside ``fork_rng``);
* minibatches are consecutive slices of a random permutation of the training split (CPU generator
  ``data_seed``), redrawn when fewer than ``batch`` examples are left; tangents come from a generator on
  the device seeded with ``tangent_seed``;
* the validation and test splits are evaluated (cross-entropy and accuracy, model in ``eval()`` mode) at
  step 0, every ``eval_every`` steps and after the last step, together with the loss of that step's
  training batch *before* the step (split ``train_batch``); steps run in ``train()`` mode, so dropout is
  active with one mask per step drawn from the global generator, which is seeded with ``dropout_seed``
  for the run (inside ``fork_rng``: the caller's random state is untouched).

**Divergence.** A non-finite training-batch loss (checked at every step) or a non-finite validation loss
(at every evaluation) ends the run with status ``"diverged"`` (otherwise ``"completed"``): a result, not a
crash, and no further steps. The step where it happened is logged — the training-batch loss as computed,
validation and test rows with NaN loss and NaN accuracy (the parameters are no longer meaningful; an
accuracy of the broken model would look like a result) — and ``diverged_at`` records it. Every row of the
history carries the run's ``status``.

Seeds: ``seed`` gives the defaults ``init_seed = seed``, ``data_seed = 10000 + seed``,
``tangent_seed = 20000 + seed``, ``dropout_seed = 30000 + seed`` (the convention of the first version of
the chapter, ``frogcore.experiments.fomoh.train_network``); the chapter passes its own derived seeds.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .approach import Approach
from .config import check_positive_int
from .datasets import Splits
from .hyperdual import module_loss, module_params
from .second_order import STATUS, forward_step

__all__ = ["STATUSES", "TRAIN_METHODS", "NETWORK_EPS", "FomohTrainResult", "parse_method", "train"]

STATUSES = ("completed", "diverged")
#: methods :func:`train` accepts (``fomoh-kd`` and ``frog`` with a tangent count, e.g. ``"fomoh-kd:3"``)
TRAIN_METHODS = ("bp", "fgd", "frog", "fomoh", "fomoh-kd", "newton-cg")
NETWORK_EPS = 1e-5  # the FoMoH paper's ε on networks: added to |vᵀHv| (FoMoH) and to the diagonal of Ĥ (FoMoH-KD)
HISTORY_COLUMNS = ("step", "split", "loss", "accuracy", "status")


@dataclass
class FomohTrainResult:
    """One training run: the ``history`` table (the given columns, then step, split, loss, accuracy, status),
    the wall time of every step (s), how it ended and how the ``K × K`` systems were solved."""

    history: pd.DataFrame
    times: list[float]
    status: str
    steps: int
    steps_run: int
    diverged_at: int | None = None
    solves: dict[str, int] = field(default_factory=dict)
    columns: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """One row: the given columns, status, steps, steps_run, diverged_at, the last validation and test
        loss/accuracy (NaN after a divergence), the best validation accuracy and the solve counts."""
        h = self.history
        row: dict[str, Any] = {**self.columns, "status": self.status, "steps": self.steps,
                               "steps_run": self.steps_run, "diverged_at": self.diverged_at}
        for split in ("val", "test"):
            part = h[h["split"] == split]
            row[f"final_{split}_loss"] = float(part["loss"].iloc[-1]) if len(part) else math.nan
            row[f"final_{split}_accuracy"] = float(part["accuracy"].iloc[-1]) if len(part) else math.nan
        val = h[(h["split"] == "val")]["accuracy"]
        row["best_val_accuracy"] = float(val.max()) if val.notna().any() else math.nan
        row.update({key: self.solves.get(key, 0) for key in (*STATUS, "refined")})
        return pd.DataFrame([row])


def parse_method(method: Any) -> tuple[str, int, str]:
    """``(forward_step method, k, canonical spec)`` for ``"bp"``, ``"fgd"``, ``"fomoh"``, ``"fomoh-kd:3"`` (or
    ``"fomoh-kd3"``), ``"frog:4"``, ``"newton-cg"``."""
    if method == "newton-cg":
        return "newton-cg", 1, "newton-cg"
    try:
        a = Approach.parse(method)
    except ValueError as exc:
        raise ValueError(f"method: {exc}; allowed methods: {', '.join(TRAIN_METHODS)}") from None
    if a.name not in TRAIN_METHODS:
        raise ValueError(f"method={a.spec!r} is not valid here; allowed methods: {', '.join(TRAIN_METHODS)}")
    return a.name, max(a.k, 1), a.spec


def _check_number(name: str, value: Any, *, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}; got {value!r}")
    return float(value)


def _build(model: Any, splits: Splits, init_seed: int, device: torch.device) -> nn.Module:
    if isinstance(model, nn.Module):
        return model.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if isinstance(model, str):
            from .models import fomoh_nets

            if model in fomoh_nets.MODELS:
                net = fomoh_nets.build_model(model, splits.input_shape, splits.num_classes)
            else:
                from .models import build_model

                net = build_model(model, splits.input_shape, splits.num_classes)
        elif callable(model):
            net = model(splits.input_shape, splits.num_classes)
        else:
            raise ValueError(f"model must be a model name, a builder (input_shape, num_classes) -> nn.Module or "
                             f"an nn.Module; got {model!r}")
    return net.to(device)


def _evaluate(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
              y: torch.Tensor) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = functional_call(model, dict(params), (x,))
            return float(F.cross_entropy(out, y)), float((out.argmax(-1) == y).float().mean())
    finally:
        model.train(was_training)


def train(
    model: str | Callable[..., nn.Module] | nn.Module,
    method: Any,
    splits: Splits,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int = 0,
    init_seed: int | None = None,
    data_seed: int | None = None,
    tangent_seed: int | None = None,
    dropout_seed: int | None = None,
    eval_every: int = 1,
    device: torch.device | str = "cpu",
    eps: float = NETWORK_EPS,
    samples: int = 1,
    clip: float | None = None,
    tangent_dropout: float = 0.0,
    columns: Mapping[str, Any] | None = None,
    step_kw: Mapping[str, Any] | None = None,
) -> FomohTrainResult:
    """Train ``model`` with ``method`` on ``splits``; see the module docstring.

    ``model``: a name of :func:`frogcore.models.build_model` (``"logreg"``, ``"cnn"``, …), a builder
    ``(input_shape, num_classes) -> nn.Module`` (e.g. :func:`frogcore.models.fomoh_nets.cifar10_cnn`) or a
    module (used as it is). ``method``: see :data:`TRAIN_METHODS`. ``lr``: the learning rate ``η``; ``eps``: the
    ``ε`` of FoMoH / FoMoH-KD. ``columns``: constant columns put first in every history row (e.g. model,
    method, seed).
    """
    name, k, spec = parse_method(method)
    steps = check_positive_int("steps", steps)
    batch = check_positive_int("batch", batch)
    eval_every = check_positive_int("eval_every", eval_every)
    lr = _check_number("lr", lr, positive=True)
    eps = _check_number("eps", eps, positive=False)
    seed = check_positive_int("seed", seed, minimum=0)
    seeds = {"init_seed": init_seed if init_seed is not None else seed,
             "data_seed": data_seed if data_seed is not None else 10_000 + seed,
             "tangent_seed": tangent_seed if tangent_seed is not None else 20_000 + seed,
             "dropout_seed": dropout_seed if dropout_seed is not None else 30_000 + seed}
    seeds = {key: check_positive_int(key, value, minimum=0) for key, value in seeds.items()}
    device = torch.device(device)
    step_kw = dict(step_kw or {})
    clash = {"k", "lr", "generator", "eps", "samples", "clip", "tangent_dropout"} & set(step_kw)
    if clash:
        raise ValueError(f"step_kw must not set {sorted(clash)}: they are arguments of train")
    options = {"samples": samples, "clip": clip, "tangent_dropout": tangent_dropout}
    if name in ("bp", "newton-cg"):  # no tangents: only clipping applies
        if samples != 1 or tangent_dropout:
            raise ValueError(f"method={spec!r} draws no tangents: samples must be 1 and tangent_dropout 0")
        options = {"clip": clip}

    net = _build(model, splits, seeds["init_seed"], device)
    params = module_params(net)
    xtr, ytr = (t.to(device) for t in splits.train)
    evals = {"val": tuple(t.to(device) for t in splits.val), "test": tuple(t.to(device) for t in splits.test)}
    data_gen = torch.Generator().manual_seed(seeds["data_seed"])
    tan_gen = torch.Generator(device=device).manual_seed(seeds["tangent_seed"])
    n_train = xtr.shape[0]
    columns = dict(columns or {})
    rows: list[dict[str, Any]] = []
    times: list[float] = []
    solves = dict.fromkeys((*STATUS, "refined"), 0)
    status, diverged_at, steps_run = "completed", None, 0

    def log(step, split, loss, acc):
        rows.append({**columns, "step": step, "split": split, "loss": loss, "accuracy": acc})

    def evaluate_all(step) -> bool:
        """Log the validation and test rows; False where the validation loss is not finite."""
        results = {split: _evaluate(net, params, xe, ye) for split, (xe, ye) in evals.items()}
        if not math.isfinite(results["val"][0]):
            for split in evals:
                log(step, split, math.nan, math.nan)
            return False
        for split, (loss, acc) in results.items():
            log(step, split, loss, acc)
        return True

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seeds["dropout_seed"])
        net.train()
        if not evaluate_all(0):
            status, diverged_at = "diverged", 0
        perm, pos = torch.randperm(n_train, generator=data_gen), 0
        for step in range(1, steps + 1):
            if status == "diverged":
                break
            if pos + batch > n_train:
                perm, pos = torch.randperm(n_train, generator=data_gen), 0
            idx = perm[pos:pos + min(batch, n_train)].to(device)
            pos += batch
            f = module_loss(net, F.cross_entropy, xtr[idx], ytr[idx])
            t0 = time.perf_counter()
            new_params, info = forward_step(f, params, name, k=k, lr=lr, generator=tan_gen, eps=eps,
                                            **options, **step_kw)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            steps_run = step
            if info.solve is not None:
                for key, val in info.solve.counts().items():
                    solves[key] += val
            if info.refined is not None:
                solves["refined"] += int(info.refined.sum())
            loss = float(info.loss)
            if not math.isfinite(loss):  # the loss at θ_{t−1}: stop before using a broken step
                status, diverged_at = "diverged", step
                log(step, "train_batch", loss, math.nan)
                for split in evals:
                    log(step, split, math.nan, math.nan)
                break
            params = new_params
            if step % eval_every == 0 or step == steps:
                log(step, "train_batch", loss, math.nan)
                if not evaluate_all(step):
                    status, diverged_at = "diverged", step
    history = pd.DataFrame(rows, columns=[*columns, *HISTORY_COLUMNS[:-1]])
    history["status"] = status
    return FomohTrainResult(history, times, status, steps, steps_run, diverged_at, solves, columns)
