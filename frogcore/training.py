"""Training loop for the network experiments (FROG Sections 4.4 and 4.5).

:func:`fit` trains a model with plain SGD at a constant learning rate (no momentum, no weight
decay: :func:`sgd_step`), one *gradient engine* step
per mini-batch (``engine.step(model, loss_fn, x, y)`` sets ``.grad`` on every parameter and returns
the batch loss; see :mod:`frogcore.engines`), and records per-epoch metrics:

* train / validation / test loss and accuracy (full passes in ``eval`` mode after each epoch; epoch 0
  is the untrained model), the mean loss of the training steps, the learning rate;
* wall time per phase (training steps, evaluation) and the mean time per training step.

Early stopping ends a run when the validation loss has not improved for ``patience`` epochs.
Divergence ends it as *diverged* (a result, not a crash): a non-finite training loss (the epoch is cut
short at that step), or a validation loss that is non-finite or ``>= break_at_loss`` (default 10). The
latter is the authors' rule (Helmholtz-AI-Energy/frog, ``nn_training/train.py:231``,
``break_at_loss=10``, checked after every evaluation, the untrained model's included, at
``:276–280``: the run stops when the loss is NaN or ``>= break_at_loss``). With a
``checkpoint`` path the state after every epoch (weights, tangent generator, metrics) is
written atomically, and a later call with the same ``run_key`` resumes from it, so an interrupted
run loses at most one epoch and finishes with the same numbers as an uninterrupted one. Finished
runs keep only their metrics in the checkpoint (the weights are dropped unless ``keep_model``).
"""
from __future__ import annotations

import contextlib
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .config import check_positive_int
from .datasets import Splits

STATUSES = ("completed", "early_stopped", "diverged")
CHECKPOINT_VERSION = 1
METRIC_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "step_loss",
                  "lr", "steps", "train_time_s", "eval_time_s", "time_per_step_s")


class Engine(Protocol):
    def step(self, model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


@dataclass
class TrainResult:
    """Per-epoch metrics (one row per epoch, epoch 0 = before training) and how the run ended."""

    history: pd.DataFrame
    status: str
    best_epoch: int
    epochs_run: int
    resumed_from: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> pd.Series:
        """The row of the epoch with the lowest validation loss (model selection on validation)."""
        return self.history.set_index("epoch").loc[self.best_epoch]

    @property
    def last(self) -> pd.Series:
        return self.history.iloc[-1]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy: the loss of every network experiment."""
    return F.cross_entropy(logits, y)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024,
             device: torch.device | str | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in ``eval`` mode) on ``(x, y)``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, correct = 0.0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            logits = model(xb)
            total += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(-1) == yb).sum().item()
    finally:
        model.train(was_training)
    n = max(len(x), 1)
    return total / n, correct / n


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the data order of ``epoch`` (a function of the run seed only, so resuming is exact)."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)


def batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Shuffled mini-batch indices for one epoch; a last batch of a single sample is dropped
    (BatchNorm cannot normalise one sample)."""
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    perm = torch.randperm(n, generator=g)
    out = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) < 2:
        out.pop()
    return out


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(dict(state), tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or ``None`` if there is none or it cannot be read."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated file cannot come from save_checkpoint, but be safe
        warnings.warn(f"ignoring unreadable checkpoint {path}: {e}", stacklevel=2)
        return None


@torch.no_grad()
def sgd_step(params: list[torch.Tensor], lr: float) -> None:
    """Plain SGD, ``p ← p − lr·p.grad`` (what ``torch.optim.SGD`` does without momentum or weight decay;
    written out because importing ``torch.optim`` pulls in ``torch._dynamo``, seconds per process)."""
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        torch._foreach_add_([p for p in params if p.grad is not None], grads, alpha=-lr)


def _finite(v: float) -> bool:
    return math.isfinite(v)


def _positive_real(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """``value`` as a float if it is a positive finite real number (not a bool), else a ValueError naming it."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not (math.isfinite(float(value)) and float(value) > 0):
        allowed = "a positive finite number" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- the loop

def fit(
    model: nn.Module,
    data: Splits,
    engine: Engine,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    patience: int | None = None,
    break_at_loss: float | None = 10.0,
    seed: int = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    eval_batch_size: int = 1024,
    checkpoint: str | os.PathLike | None = None,
    run_key: Mapping[str, Any] | None = None,
    keep_model: bool = False,
    progress: bool = True,
    desc: str | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data.train`` with ``engine`` and plain SGD; see the module docstring.

    ``generator`` is the engine's tangent generator: its state is saved in checkpoints so that a
    resumed run draws the same tangents. ``run_key`` identifies the run in its checkpoint (a
    checkpoint with another key is ignored and overwritten). ``callback(epoch, row)`` is called
    after each epoch's checkpoint has been written.

    ``lr`` must be a positive finite number (``True`` is refused, not read as 1.0). ``break_at_loss``
    (a positive finite number, or ``None`` to disable it): a validation loss ``>= break_at_loss`` ends the
    run as ``"diverged"``, as in the authors' trainer (``nn_training/train.py:231``, ``:276–280``; they
    check it on the untrained model too, and so does ``fit``); a non-finite validation or training loss
    ends it as ``"diverged"`` whatever ``break_at_loss`` is.
    """
    lr = _positive_real("lr", lr)
    break_at_loss = _positive_real("break_at_loss", break_at_loss, allow_none=True)
    epochs = check_positive_int("epochs", epochs, minimum=0)
    batch_size = check_positive_int("batch_size", batch_size)
    eval_batch_size = check_positive_int("eval_batch_size", eval_batch_size)
    seed = check_positive_int("seed", seed, minimum=0)
    if patience is not None:
        patience = check_positive_int("patience", patience)
    device = torch.device(device)
    key = {"lr": lr, "batch_size": batch_size, "patience": patience, "seed": seed,
           "break_at_loss": break_at_loss, **dict(run_key or {})}

    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    history: list[dict[str, Any]] = []
    best_loss, best_epoch, bad_epochs, status, start = math.inf, 0, 0, None, 1
    resumed_from = None

    ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None
    if ckpt is not None and (ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("key") != key):
        warnings.warn(f"checkpoint {checkpoint} belongs to another run; starting afresh", stacklevel=2)
        ckpt = None
    if ckpt is not None:
        history = list(ckpt["history"])
        best_loss, best_epoch, bad_epochs = ckpt["best_loss"], ckpt["best_epoch"], ckpt["bad_epochs"]
        status, resumed_from = ckpt["status"], ckpt["epoch"]
        start = ckpt["epoch"] + 1
        if status is not None and not (status == "completed" and epochs > ckpt["epoch"]):
            return _result(history, status, best_epoch, resumed_from)
        if ckpt.get("model") is None:  # finished without weights, now asked for more epochs
            warnings.warn(f"checkpoint {checkpoint} has no weights to continue from; starting afresh",
                          stacklevel=2)
            history, best_loss, best_epoch, bad_epochs, status, start, resumed_from = [], math.inf, 0, 0, None, 1, None
        else:
            status = None
            model.load_state_dict(ckpt["model"])
            if generator is not None and ckpt.get("generator") is not None:
                generator.set_state(ckpt["generator"])

    def snapshot(epoch: int, final: bool) -> None:
        if checkpoint is None:
            return
        weights = not final or keep_model
        save_checkpoint(checkpoint, {
            "version": CHECKPOINT_VERSION, "key": key, "epoch": epoch, "history": history,
            "best_loss": best_loss, "best_epoch": best_epoch, "bad_epochs": bad_epochs, "status": status,
            "model": model.state_dict() if weights else None,
            "generator": generator.get_state() if generator is not None else None,
        })

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def eval_row(epoch: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch}
        for split in ("train", "val", "test"):
            x, y = getattr(data, split)
            row[f"{split}_loss"], row[f"{split}_acc"] = evaluate(model, x, y, batch_size=eval_batch_size,
                                                                 device=device)
        sync()
        row["eval_time_s"] = time.perf_counter() - t0
        return row

    def too_large(val_loss: float) -> bool:
        """The authors' stop rule: NaN or ``>= break_at_loss`` (an infinite loss is ``>=`` any bound)."""
        return break_at_loss is not None and (math.isnan(val_loss) or val_loss >= break_at_loss)

    if not history:  # epoch 0: the untrained model
        row = eval_row(0)
        row.update(step_loss=math.nan, lr=lr, steps=0, train_time_s=0.0, time_per_step_s=math.nan)
        history.append(row)
        best_loss = row["val_loss"] if _finite(row["val_loss"]) else math.inf
        if too_large(row["val_loss"]):
            status = "diverged"
            snapshot(0, final=True)
            return _result(history, status, best_epoch, resumed_from)

    from tqdm import tqdm

    bar = tqdm(range(start, epochs + 1), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    x_train, y_train = data.train
    model.train()
    for epoch in bar:
        t0 = time.perf_counter()
        losses: list[float] = []
        diverged = False
        for idx in batches(len(x_train), batch_size, seed, epoch):
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            for p in params:
                p.grad = None
            loss = float(engine.step(model, loss_fn, xb, yb))
            losses.append(loss)
            if not _finite(loss):
                diverged = True
                break
            sgd_step(params, lr)
        sync()
        train_time = time.perf_counter() - t0
        if diverged:
            row = {"epoch": epoch, **{f"{s}_{m}": math.nan for s in ("train", "val", "test")
                                      for m in ("loss", "acc")}, "eval_time_s": 0.0}
        else:
            row = eval_row(epoch)
        row.update(step_loss=sum(losses) / max(len(losses), 1), lr=lr, steps=len(losses),
                   train_time_s=train_time, time_per_step_s=train_time / max(len(losses), 1))
        history.append(row)
        if diverged or not _finite(row["val_loss"]) or too_large(row["val_loss"]):
            status = "diverged"
        elif row["val_loss"] < best_loss:
            best_loss, best_epoch, bad_epochs = row["val_loss"], epoch, 0
        else:
            bad_epochs += 1
            if patience is not None and bad_epochs >= patience:
                status = "early_stopped"
        if status is None and epoch == epochs:
            status = "completed"
        bar.set_postfix(loss=f"{row['step_loss']:.3g}", val_acc=f"{row['val_acc']:.3f}")
        snapshot(epoch, final=status is not None)
        if callback is not None:
            callback(epoch, row)
        if status is not None:
            break
    bar.close()
    if status is None:  # epochs == 0 or resumed at the limit
        status = "completed"
        snapshot(history[-1]["epoch"], final=True)
    return _result(history, status, best_epoch, resumed_from)


def _result(history: list[dict[str, Any]], status: str, best_epoch: int, resumed_from: int | None) -> TrainResult:
    cols = ["epoch", *METRIC_COLUMNS]
    df = pd.DataFrame(history)
    df = df[[c for c in cols if c in df.columns]]
    return TrainResult(df, status, best_epoch, int(df["epoch"].iloc[-1]), resumed_from)


def history_long(history: pd.DataFrame, **ids: Any) -> pd.DataFrame:
    """Tidy long table ``(**ids, epoch, metric, value)`` of a :class:`TrainResult` history."""
    long = history.melt(id_vars="epoch", var_name="metric", value_name="value")
    for i, (k, v) in enumerate(ids.items()):
        long.insert(i, k, v)
    return long
