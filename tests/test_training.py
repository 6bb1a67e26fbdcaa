"""Trainer: metrics, determinism, early stopping, divergence, checkpoint/resume (the chapters 4.4 and 4.5 are
tested in test_frog_4_4.py and test_frog_4_5.py)."""
import math

import pandas as pd
import pytest
import torch

from frogcore.datasets import Splits
from frogcore.engines import make_engine
from frogcore.models import build_model
from frogcore.training import batches, fit, history_long, load_checkpoint

TIME_COLS = ["train_time_s", "eval_time_s", "time_per_step_s"]


def blobs(n=96, seed=0):
    """Two well-separated Gaussian classes as 1×2×2 images (so every model type accepts them)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 2, 2, generator=g) * 0.5 + (2 * y - 1).view(-1, 1, 1, 1) * 1.5
    parts = [(x[i::3], y[i::3]) for i in range(3)]
    return Splits(*parts, num_classes=2, name="blobs")


class BP:
    """A minimal backprop engine."""

    def step(self, model, loss_fn, x, y):
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss.detach()


class Ascent(BP):
    """Gradient *ascent*: the validation loss rises every epoch."""

    def step(self, model, loss_fn, x, y):
        loss = super().step(model, loss_fn, x, y)
        for p in model.parameters():
            p.grad.neg_()
        return loss


class NaNAfter(BP):
    def __init__(self, n):
        self.n, self.calls = n, 0

    def step(self, model, loss_fn, x, y):
        self.calls += 1
        loss = super().step(model, loss_fn, x, y)
        return loss * math.nan if self.calls > self.n else loss


def fc(seed=0, width=8):
    torch.manual_seed(seed)
    return build_model("fc", (1, 2, 2), 2, width=width)


def metrics(res):
    return res.history.drop(columns=TIME_COLS)


def test_training_learns_and_records_every_metric():
    res = fit(fc(), blobs(), BP(), lr=0.2, epochs=5, batch_size=8, progress=False)
    h = res.history
    assert res.status == "completed" and list(h.epoch) == list(range(6))
    for col in ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "step_loss", "lr",
                *TIME_COLS]:
        assert col in h
    assert (h.lr == 0.2).all() and h.steps.iloc[1] == 4  # 32 training samples, batch 8
    assert h.val_acc.iloc[-1] > 0.9 and h.train_loss.iloc[-1] < 0.5 * h.train_loss.iloc[0]
    assert (h.train_time_s.iloc[1:] > 0).all() and (h.eval_time_s > 0).all()
    assert res.best_epoch == int(h.val_loss.idxmin())


def test_training_is_deterministic_with_the_real_engine():
    def once():
        g = torch.Generator().manual_seed(5)
        eng = make_engine(mode="sim", aggregation="projection", k=2, perturbation="activity", generator=g)
        return fit(fc(), blobs(), eng, lr=0.5, epochs=3, batch_size=8, seed=2, generator=g, progress=False)
    pd.testing.assert_frame_equal(metrics(once()), metrics(once()))


def test_early_stopping_on_validation_loss():
    res = fit(fc(), blobs(), Ascent(), lr=0.05, epochs=50, batch_size=8, patience=3, progress=False)
    assert res.status == "early_stopped" and res.best_epoch == 0 and res.epochs_run == 3


def test_divergence_is_a_result_not_a_crash():
    res = fit(fc(), blobs(), NaNAfter(6), lr=0.1, epochs=10, batch_size=8, progress=False)
    assert res.status == "diverged" and res.epochs_run == 2
    assert math.isnan(res.last.step_loss) and math.isnan(res.last.val_loss)
    assert res.history.steps.iloc[-1] == 3  # stopped at the first non-finite loss


def test_interrupted_run_resumes_to_identical_numbers(tmp_path):
    """Tangent generator, weights and data order are restored: the resumed run equals the uninterrupted one."""
    def run(checkpoint=None, callback=None):
        g = torch.Generator().manual_seed(7)
        eng = make_engine(mode="sim", aggregation="mean", k=3, perturbation="activity", generator=g)
        return fit(fc(), blobs(), eng, lr=0.1, epochs=4, batch_size=8, seed=1, generator=g, progress=False,
                   checkpoint=checkpoint, run_key={"name": "t"}, callback=callback)

    full = run()
    ckpt = tmp_path / "ck" / "run.pt"

    def crash(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(ckpt, crash)
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and state["model"] is not None and state["status"] is None
    resumed = run(ckpt)
    assert resumed.resumed_from == 2
    pd.testing.assert_frame_equal(metrics(resumed), metrics(full))
    # a finished run keeps its metrics but drops the weights; asking again returns the stored result
    assert load_checkpoint(ckpt)["model"] is None and load_checkpoint(ckpt)["status"] == "completed"
    again = run(ckpt)
    pd.testing.assert_frame_equal(metrics(again), metrics(full))
    assert not list(ckpt.parent.glob("*.tmp"))


def test_checkpoint_of_another_run_is_ignored(tmp_path):
    ckpt = tmp_path / "run.pt"
    fit(fc(), blobs(), BP(), lr=0.1, epochs=2, batch_size=8, progress=False, checkpoint=ckpt, run_key={"a": 1})
    with pytest.warns(UserWarning, match="another run"):
        res = fit(fc(), blobs(), BP(), lr=0.1, epochs=2, batch_size=8, progress=False, checkpoint=ckpt,
                  run_key={"a": 2})
    assert res.resumed_from is None and res.epochs_run == 2


def test_batchnorm_running_stats_update_once_per_step():
    torch.manual_seed(0)
    net = build_model("resnet18", (1, 8, 8), 2, width=2)
    data = Splits(*[(torch.randn(20, 1, 8, 8), torch.arange(20) % 2) for _ in range(3)], num_classes=2, name="x")
    g = torch.Generator().manual_seed(0)
    eng = make_engine(mode="sim", aggregation="projection", k=2, perturbation="activity", generator=g)
    res = fit(net, data, eng, lr=0.01, epochs=2, batch_size=8, generator=g, progress=False)
    steps = int(res.history.steps.sum())
    assert steps == 6  # 20 samples in batches of 8, 8, 4; two epochs
    assert net.stem.bn1.num_batches_tracked.item() == steps


def test_batches_cover_the_data_and_drop_a_single_leftover():
    b = batches(17, 8, seed=0, epoch=1)
    assert [len(i) for i in b] == [8, 8]  # the 1-sample batch would break BatchNorm
    assert len(torch.cat(batches(18, 8, seed=0, epoch=1)).unique()) == 18
    assert not torch.equal(batches(18, 8, 0, 1)[0], batches(18, 8, 0, 2)[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="lr"):
        fit(fc(), blobs(), BP(), lr=-1, epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        fit(fc(), blobs(), BP(), lr=0.1, epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="patience"):
        fit(fc(), blobs(), BP(), lr=0.1, epochs=1, batch_size=8, patience=0)


def test_history_long_is_tidy():
    res = fit(fc(), blobs(), BP(), lr=0.1, epochs=1, batch_size=8, progress=False)
    long = history_long(res.history, model="m", seed=0)
    assert list(long.columns) == ["model", "seed", "epoch", "metric", "value"]
    assert len(long) == res.history.shape[0] * (res.history.shape[1] - 1)


def test_sgd_step_equals_torch_optim_sgd():
    from frogcore.training import sgd_step

    a, b = fc(seed=1), fc(seed=1)
    x, y = blobs().train
    for net in (a, b):
        BP().step(net, torch.nn.functional.cross_entropy, x, y)
    sgd_step(list(a.parameters()), 0.3)
    torch.optim.SGD(b.parameters(), lr=0.3).step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))

