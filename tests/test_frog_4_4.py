"""Chapter frog_4_4 (FC networks) and the shared network training of frogcore.experiments.common.networks."""
import matplotlib
import pandas as pd
import pytest
import torch

from frogcore.approach import Approach
from frogcore.experiments import frog_4_4 as C
from frogcore.experiments import runner
from frogcore.experiments.common import networks as nets
from frogcore.plotting import acc_vs_k, learning_curves
from frogcore.seeds import derive
from frogcore.training import METRIC_COLUMNS

SUMMARY = ["dataset", "model", "approach", "k", "label", "seed", "lr", "status", "diverged", "epochs_run",
           "best_epoch", "best_val_loss", "best_val_acc", "test_loss", "test_acc", "last_test_acc", "final_train_loss"]
TIMES = ["dataset", "model", "approach", "k", "label", "seed", "lr", "time_per_step_s", "train_time_s", "eval_time_s",
         "wall_s", "resumed_from"]
FAST = dict(widths=[256], epochs=1, approaches=["bp", "frog:2"])


@pytest.fixture(autouse=True)
def _checkpoints(tmp_path, monkeypatch):
    """Checkpoints (on by default) go to a temporary folder, never into the repository; one torch thread
    (the smoke profile's) also for the direct calls of the shared helpers."""
    monkeypatch.setenv("FROG_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    with runner.torch_threads(1):
        yield
    matplotlib.pyplot.close("all")


# ----------------------------------------------------------------------------- shared helpers

def test_learning_rate_tables_and_the_digits_rule():
    assert nets.table_lr("fc_w=256", "mnist", "frog:2") == pytest.approx(0.21136862388228783)
    assert nets.table_lr("fc_w=4096", "mnist", "bp") == pytest.approx(0.038668365591582154)
    assert nets.table_lr("vit", "cifar10", Approach("fg-mean", 16)) == pytest.approx(0.00019345260600167632)
    assert nets.learning_rate("fc_w=1024", "digits", ["fg-mean", 4], lr_scale=4) == pytest.approx(
        4 * nets.table_lr("fc_w=1024", "mnist", "fg-mean:4"))
    with pytest.raises(ValueError, match="no learning rate .* approach='frog:8'"):
        nets.table_lr("fc_w=256", "mnist", "frog:8")
    with pytest.raises(ValueError, match="approach='fg-sum' is not valid"):
        nets.table_lr("fc_w=256", "mnist", "fg-sum:2")


def test_engine_options_follow_the_approach():
    assert nets.engine_options("bp") == dict(mode="bp", aggregation="mean", k=1, perturbation="activity")
    assert nets.engine_options("fg-mean:1")["aggregation"] == "single"
    assert nets.engine_options(["fg-mean", 4])["aggregation"] == "mean"
    assert nets.engine_options("frog:4", "fwd", "weight") == dict(mode="fwd", aggregation="projection", k=4,
                                                                  perturbation="weight")
    assert nets.engine_k(Approach("bp")) == 1 and nets.engine_k(Approach("frog", 16)) == 16
    with pytest.raises(ValueError, match="mode"):
        nets.engine_options("frog:2", "bp")


def test_parameters_are_validated_before_anything_runs():
    cases = [
        (dict(widths=[512]), r"widths\[0\]=512 is not valid"),
        (dict(approaches=[["sgd", 1]]), r"approaches\[0\]"),
        (dict(approaches=["frog:8"]), "no learning rate"),  # the tables have no k = 8: fail before training
        (dict(approaches=["fg-sum:2"]), "not valid here"),
        (dict(datasets=["cifar10"]), "no learning rate"),
        (dict(lr_scale=-1.0), "lr_scale"),
        (dict(mode="bp"), "mode"),
        (dict(perturbation="node"), "perturbation"),
        (dict(epochs={256: 3}, widths=[256, 1024]), "epochs has no entry for"),
        (dict(epochs=0), "epochs"),
        (dict(num_seeds=0), "num_seeds"),
        (dict(batch_size=-2), "batch_size"),
        (dict(patience=-1), "patience"),
        (dict(learning_rate=1.0), "unknown parameter 'learning_rate'"),
        (dict(download="yes"), "download must be True or False"),
        (dict(checkpoints=1), "checkpoints must be True or False"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            C.run_training("smoke", "cpu", **kw)
    with pytest.raises(ValueError, match="profile"):
        C.run_training("huge", "cpu")
    with pytest.raises(ValueError, match="profile='paper' is not available for this experiment"):
        C.run_lr_sweep("paper", "cpu")
    with pytest.raises(ValueError, match="scales"):
        C.run_lr_sweep("smoke", "cpu", scales=[1.0, 0])
    with pytest.raises(ValueError, match="perturbations"):
        C.run_timing("smoke", "cpu", perturbations=["node"])


def test_profiles_use_approach_specs_and_patience_zero_turns_early_stopping_off():
    p = C.CHAPTER.params("training", "default")
    assert p["approaches"] == ["bp", "fg-mean:1", "fg-mean:2", "fg-mean:4", "fg-mean:16", "frog:2", "frog:4", "frog:16"]
    assert p["epochs"] == {"256": 40, "1024": 30, "4096": 6}
    assert C.CHAPTER.params("training", "smoke", approaches=[["bp", 1], ["fg-mean", 2]],
                            patience=0)["approaches"] == ["bp", "fg-mean:2"]
    assert C.CHAPTER.params("training", "smoke", patience=0)["patience"] is None
    assert set(C.CHAPTER.experiments) == {"training", "lr_sweep", "timing"} and C.CHAPTER.section == "frog_4_4"
    for name in C.CHAPTER.experiments:
        assert C.CHAPTER.experiment(name).threads["smoke"] == 1


# ----------------------------------------------------------------------------- training

def test_training_tables_labels_and_cache(results_dir):
    res = C.run_training("smoke", "cpu", **FAST)
    summary, hist, times = res["summary"], res["history"], res["times"]
    assert list(summary.columns) == SUMMARY and list(times.columns) == TIMES
    assert list(summary.label) == ["BP", "FROG k=2"] and list(summary.k) == [0, 2]
    assert list(summary.approach) == ["bp", "frog"] and set(summary.status) == {"completed"}
    assert not summary.diverged.any()
    assert summary.lr.iloc[1] == pytest.approx(4 * 0.21136862388228783)
    assert list(hist.columns) == [*SUMMARY[:7], "epoch", "metric", "value"]
    assert set(hist.epoch) == {0, 1}
    # the wall times live in their own table, never in the compared ones
    assert set(hist.metric) == set(METRIC_COLUMNS) - set(nets.TIME_METRICS)
    assert (times.train_time_s > 0).all() and (times.wall_s > 0).all() and times.resumed_from.isna().all()
    assert "download" not in res.meta["params"] and "checkpoints" not in res.meta["params"]
    again = C.run_training("smoke", "cpu", **FAST)
    assert again.cached and again.paths["summary"].parent == res.paths["summary"].parent


def test_the_labels_are_the_approach_labels():
    res = C.run_training("smoke", "cpu", widths=[256], epochs=1,
                         approaches=["fg-mean:1", "fg-mean:4", "frog:16"], checkpoints=False)
    assert list(res["summary"].label) == ["FG", "FG-mean k=4", "FROG k=16"]
    assert list(dict.fromkeys(res["history"].label)) == ["FG", "FG-mean k=4", "FROG k=16"]


def test_summary_and_history_are_bit_identical_between_identical_runs():
    kw = dict(widths=[256], epochs=2, approaches=["fg-mean:2", "frog:2"], checkpoints=False)
    first = C.run_training("smoke", "cpu", force=True, **kw)
    blobs = {t: first.paths[t].read_bytes() for t in ("summary", "history")}
    second = C.run_training("smoke", "cpu", force=True, **kw)
    assert not second.cached
    for t, b in blobs.items():
        assert second.paths[t].read_bytes() == b, t


def test_seeds_are_the_one_seed_scheme():
    """Weights from derive(seed, "init", model, model_kw), tangents from derive(seed, "tangents", name, k)."""
    data = nets.load_datasets(["digits"], seed=0)["digits"]
    a = nets.train_one(data, "fc", {"width": 256}, "frog:2", lr=0.5, epochs=1, batch_size=64, patience=None, seed=3)
    net = nets.build_seeded("fc", data.input_shape, data.num_classes, derive(3, "init", "fc", {"width": 256}),
                            width=256)
    gen = torch.Generator().manual_seed(derive(3, "tangents", "frog", 2))
    from frogcore.engines import make_engine
    from frogcore.training import fit

    eng = make_engine(mode="sim", aggregation="projection", k=2, perturbation="activity", generator=gen)
    b = fit(net, data, eng, lr=0.5, epochs=1, batch_size=64, seed=3, generator=gen, progress=False)
    cols = [c for c in a.history.columns if c not in nets.TIME_METRICS]
    pd.testing.assert_frame_equal(a.history[cols], b.history[cols], check_exact=True)


def test_a_diverged_run_is_visible_in_the_table_and_the_figures():
    res = C.run_training("smoke", "cpu", widths=[256], epochs=2, approaches=["bp", "frog:2"], lr_scale=1e6,
                         checkpoints=False)
    s = res["summary"]
    assert list(s.status) == ["diverged", "diverged"] and s.diverged.all()
    assert (s.best_epoch == 0).all()  # its accuracy is the untrained model's
    assert s.final_train_loss.isna().all() and s.last_test_acc.isna().all()
    fig = acc_vs_k(s)
    ax = fig.axes[0]
    untrained = [c for c in ax.collections if c.get_offsets().tolist() == [[2.0, s.test_acc.iloc[1]]]]
    assert untrained, "the diverged FROG run has no marker"
    assert any(line.get_linestyle() == ":" and line.get_label() == "BP (diverged)" for line in ax.get_lines())
    assert "diverged (untrained accuracy)" in [t.get_text() for t in ax.get_legend().get_texts()]
    fig = learning_curves(res["history"])
    marks = [c.get_offsets().tolist() for c in fig.axes[0].collections]
    val0 = res["history"].query("metric == 'val_acc' and epoch == 0").value.tolist()
    assert sorted(m[0] for m in marks) == sorted([0.0, v] for v in val0)  # one ✗ per run, at epoch 0


def test_checkpoints_resume_to_the_same_tables_and_a_forced_rerun_wipes_them(tmp_path):
    kw = dict(widths=[256], epochs=2, approaches=["frog:2"])
    first = runner.run(C.CHAPTER, "training", "smoke", "cpu", root=str(tmp_path / "a"), **kw)
    ckpt_dir = runner.checkpoint_root() / "frog_4_4" / "smoke" / "cpu"
    files = sorted(ckpt_dir.rglob("*.pt"))
    assert len(files) == 1
    # another results folder, same checkpoint folder: the run is replayed from its checkpoint
    replay = runner.run(C.CHAPTER, "training", "smoke", "cpu", root=str(tmp_path / "b"), **kw)
    assert not replay.cached and replay["times"].resumed_from.tolist() == [2]
    for t in ("summary", "history"):
        assert replay.paths[t].read_bytes() == first.paths[t].read_bytes()
    forced = runner.run(C.CHAPTER, "training", "smoke", "cpu", root=str(tmp_path / "b"), force=True, **kw)
    assert forced["times"].resumed_from.isna().all()  # trained afresh, not replayed


def test_a_checkpoint_of_other_code_is_not_replayed(tmp_path):
    runs = [C.fc_run("digits", 256, 1, "bp")]
    kw = dict(seeds=[0], batch_size=None, patience=None, lr_scale=1.0, mode="sim", perturbation="activity",
              device="cpu", data_seed=0, checkpoint_dir=tmp_path)
    nets.train_grid(runs, code=["frogcore.experiments.frog_4_4"], **kw)
    same = nets.train_grid(runs, code=["frogcore.experiments.frog_4_4"], **kw)
    assert same["times"].resumed_from.tolist() == [1]
    with pytest.warns(UserWarning, match="another run"):
        other = nets.train_grid(runs, code=["frogcore.experiments.frog_4_5"], **kw)
    assert other["times"].resumed_from.isna().all()


def test_download_is_a_runtime_option_that_reaches_the_loader(monkeypatch):
    calls = []
    real = nets.load_splits

    def spy(name, **kw):
        calls.append((name, kw.get("download")))
        return real(name, seed=kw.get("seed", 0))

    monkeypatch.setattr(nets, "load_splits", spy)
    kw = dict(widths=[256], epochs=1, approaches=["bp"], checkpoints=False)
    a = C.run_training("smoke", "cpu", force=True, download=True, **kw)
    b = C.run_training("smoke", "cpu", **kw)  # download=False: the same stored result
    assert calls == [("digits", True)] and b.cached and a.meta["params"] == b.meta["params"]
    C.run_timing("smoke", "cpu", force=True, download=True)
    assert calls[1:] == [("digits", True)]


# ----------------------------------------------------------------------------- sweep and timing

def test_lr_sweep_tables_have_the_factor():
    res = C.run_lr_sweep("smoke", "cpu", approaches=["bp"], scales=[1.0, 4.0], checkpoints=False)
    s = res["summary"]
    assert list(s.lr_scale) == [1.0, 4.0] and s.lr.iloc[1] == pytest.approx(4 * s.lr.iloc[0])
    assert "lr_scale" in res["history"] and "lr_scale" in res["times"]
    assert set(res["history"].metric).isdisjoint(nets.TIME_METRICS)


def test_timing_table_smoke():
    t = C.run_timing("smoke", "cpu")["timing"]
    assert set(t["mode"]) == {"bp", "sim", "fwd"} and set(t.k) == {1, 2}
    assert (t.median_s > 0).all() and (t.threads == 1).all()  # the smoke profile runs on one thread
    assert list(t.model.unique()) == ["FC-256"] and (t.batch_size == 64).all()
