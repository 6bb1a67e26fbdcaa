"""The library FoMoH training loop (frogcore.fomoh_training): the chapter's numbers, divergence, options."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from frogcore.datasets import load_splits
from frogcore.fomoh_training import FomohTrainResult, parse_method, train
from frogcore.models.fomoh_nets import cifar10_cnn

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", seed=0)


def _same(a: pd.DataFrame, b: pd.DataFrame):
    """Bit for bit: same columns, same values (NaN where NaN)."""
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True)


def test_divergence_stops_the_run_and_is_recorded(digits):
    """Issue 12 item 6: FGD at η = 1 on the digits CNN gives a NaN loss at step 4; the chapter loop trains on
    to the end, this one stops there with status 'diverged'."""

    kw = dict(steps=12, batch=32, eval_every=4, init_seed=0, data_seed=1, tangent_seed=2)
    res = train("cnn", "fgd", digits, lr=1.0, **kw)
    assert isinstance(res, FomohTrainResult)
    assert res.status == "diverged" and res.diverged_at == 4 and res.steps_run == 4
    h = res.history
    assert set(h["status"]) == {"diverged"} and int(h["step"].max()) == 4
    last = h[h["step"] == 4]
    assert not math.isfinite(float(last[last["split"] == "train_batch"]["loss"].iloc[0]))
    assert last[last["split"] != "train_batch"][["loss", "accuracy"]].isna().all().all()  # no fake accuracy
    summary = res.summary()
    assert summary["status"].iloc[0] == "diverged" and int(summary["diverged_at"].iloc[0]) == 4
    assert np.isnan(summary["final_val_accuracy"].iloc[0])


def test_non_finite_validation_loss_is_divergence(digits):
    """A step that leaves the parameters non-finite at the last step is caught by the evaluation."""
    res = train("logreg", "bp", digits, steps=2, batch=64, lr=1e37, eval_every=1)
    assert res.status == "diverged" and res.diverged_at in (1, 2)


def test_completed_run_summary_and_solve_counts(digits):
    res = train("logreg", "fomoh-kd:2", digits, steps=4, batch=64, lr=0.1362, eval_every=2,
                columns={"model": "logreg"})
    s = res.summary()
    assert list(s["status"]) == ["completed"] and int(s["steps_run"].iloc[0]) == 4
    assert int(s["ok"].iloc[0] + s["jitter"].iloc[0] + s["failed"].iloc[0]) == 4  # one 2 × 2 system per step
    val = res.history[res.history["split"] == "val"]
    assert float(s["final_val_accuracy"].iloc[0]) == float(val["accuracy"].iloc[-1])
    assert list(res.history.columns) == ["model", "step", "split", "loss", "accuracy", "status"]


def test_cifar_cnn_with_dropout_and_the_authors_options(digits):
    """The CIFAR-10 CNN (BatchNorm on batch statistics, dropout) trains by FoMoH-KD with averaging, clipping
    and tangent dropout; the run is reproducible and its dropout masks come from dropout_seed."""
    kw = dict(steps=1, batch=4, lr=0.05, eval_every=1, samples=2, clip=0.01, tangent_dropout=0.2,
              step_kw={"mode": "pairs"})
    builder = lambda shape, classes: cifar10_cnn(shape, classes, dropout=0.5)  # noqa: E731
    a = train(builder, "fomoh-kd:2", digits, **kw)
    b = train(builder, "fomoh-kd:2", digits, **kw)
    c = train(builder, "fomoh-kd:2", digits, dropout_seed=99, **kw)
    assert a.status == "completed"
    _same(a.history, b.history)
    la = a.history[a.history["split"] == "train_batch"]["loss"].to_numpy()
    lc = c.history[c.history["split"] == "train_batch"]["loss"].to_numpy()
    assert la[0] != lc[0]  # the first step's loss already sees the dropout mask
    assert a.solves["ok"] + a.solves["jitter"] + a.solves["failed"] == 2  # two tangent sets in the step
    assert int(a.history["step"].max()) == 1


def test_newton_cg_and_frog_methods(digits):
    # undamped Newton on a 64-example batch overshoots in the directions of tiny curvature: λ = 1
    res = train("logreg", "newton-cg", digits, steps=3, batch=64, lr=1.0, step_kw={"cg_max_iter": 5, "damping": 1.0})
    assert res.status == "completed"
    val = res.history[res.history["split"] == "val"]["loss"].to_numpy()
    assert bool((np.diff(val) < 0).all())
    assert train("logreg", "frog:4", digits, steps=2, batch=64, lr=0.5).status == "completed"


def test_bad_input_fails_loudly(digits):
    kw = dict(steps=2, batch=8, lr=0.1)
    for bad, word in ((dict(method="adam"), "method"), (dict(method="fg-mean:2"), "method"),
                      (dict(lr=float("nan")), "lr"), (dict(lr=-1.0), "lr"), (dict(lr=True), "lr"),
                      (dict(steps=0), "steps"), (dict(batch=0), "batch"), (dict(eval_every=0), "eval_every"),
                      (dict(eps=-1.0), "eps"), (dict(seed=-1), "seed"),
                      (dict(step_kw={"lr": 1.0}), "step_kw"), (dict(method="bp", samples=2), "samples")):
        args = {"method": "fomoh", **kw, **bad}
        method = args.pop("method")
        with pytest.raises(ValueError, match=word):
            train("logreg", method, digits, **args)
    with pytest.raises(ValueError, match="model"):
        train("resnet-9000", "fomoh", digits, **kw)
    with pytest.raises(ValueError, match="model"):
        train(42, "fomoh", digits, **kw)
    assert parse_method("fomoh-kd3") == ("fomoh-kd", 3, "fomoh-kd:3")
