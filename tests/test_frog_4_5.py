"""Chapter frog_4_5 (ResNet18 and ViT): parameters, early data checks, tables, and the shared figures."""
import matplotlib
import pandas as pd
import pytest

from frogcore.datasets import DatasetNotFoundError
from frogcore.experiments import frog_4_5 as C
from frogcore.experiments import runner
from frogcore.experiments.common import networks as nets
from frogcore.plotting import acc_vs_k, learning_curves


@pytest.fixture(autouse=True)
def _checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("FROG_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    with runner.torch_threads(1):
        yield
    matplotlib.pyplot.close("all")


def test_chapter_and_profiles():
    assert C.CHAPTER.section == "frog_4_5" and set(C.CHAPTER.experiments) == {"training", "timing", "lr_sweep"}
    p = C.CHAPTER.params("training", "default")
    assert p["model_kw"] == {"resnet18": {"width": 16}, "vit": {"depth": 2, "heads": 4, "dim": 64, "mlp_dim": 128,
                                                                 "patch": 4}}
    assert p["epochs"] == {"resnet18": 15, "vit": 30} and p["approaches"][-1] == "frog:16"
    paper = C.CHAPTER.params("training", "paper")
    assert paper["datasets"] == ["mnist", "cifar10"] and paper["model_kw"] == {"resnet18": {}, "vit": C._PAPER_VIT}
    # model_kw comes back in the canonical option order (it keys the initialisation seed)
    kw = C.CHAPTER.params("training", "smoke", models=["vit"],
                          model_kw={"vit": {"patch": 4, "dim": 16, "depth": 1, "mlp_dim": 32, "heads": 2}})["model_kw"]
    assert list(kw["vit"]) == ["depth", "heads", "dim", "mlp_dim", "patch"] and list(kw) == ["vit"]


def test_model_labels():
    assert C.model_label("resnet18", {}) == "ResNet18" and C.model_label("resnet18", {"width": 16}) == \
        "ResNet18 (width 16)"
    assert C.model_label("vit", C._PAPER_VIT) == "ViT"
    assert C.model_label("vit", {"depth": 2}) == "ViT (depth 2, heads 4, dim 256, mlp_dim 512, patch 4)"


@pytest.mark.parametrize("kw, match", [
    (dict(models=["vgg"]), "models"),
    (dict(model_kw={"resnet18": {"width": 4}}), "model_kw has no entry for 'vit'"),
    (dict(model_kw={"resnet18": {"depth": 4}, "vit": {}}), r"model_kw\['resnet18'\] has unknown options \['depth'\]"),
    (dict(model_kw={"vgg": {}}), "model_kw has an entry for 'vgg'"),
    (dict(model_kw={"resnet18": {"width": 0}, "vit": {}}), r"model_kw\['resnet18'\]\['width'\]"),
    (dict(model_kw=[1]), "model_kw must be a mapping"),
    (dict(epochs={"resnet18": 2}), "epochs has no entry for"),
    (dict(approaches=["frog:8"]), "no learning rate"),
    (dict(datasets=["imagenet"]), "datasets"),
])
def test_bad_parameters_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        C.run_training("smoke", "cpu", **kw)


def test_timing_validates_model_kw_too():
    with pytest.raises(ValueError, match=r"model_kw\['vit'\] has unknown options"):
        C.run_timing("smoke", "cpu", model_kw={"resnet18": {}, "vit": {"width": 3}})


def test_a_missing_dataset_fails_before_any_training(tmp_path, monkeypatch):
    """4.5 at paper must not train every MNIST run before it finds out that CIFAR-10 is missing."""
    monkeypatch.setenv("FROG_DATA_DIR", str(tmp_path / "no-data"))
    trained = []
    monkeypatch.setattr(nets, "train_one", lambda *a, **kw: trained.append(a))
    with pytest.raises(DatasetNotFoundError, match="CIFAR-10 files not found"):
        C.run_training("smoke", "cpu", datasets=["digits", "cifar10"], force=True)
    assert trained == []


def test_training_smoke_tables():
    res = C.run_training("smoke", "cpu", models=["vit"], approaches=["bp", "fg-mean:2", "frog:2"])
    s = res["summary"]
    assert list(s.model.unique()) == ["ViT (depth 1, heads 2, dim 16, mlp_dim 32, patch 4)"]
    assert list(s.label) == ["BP", "FG-mean k=2", "FROG k=2"] and list(s.k) == [0, 2, 2]
    assert "diverged" in s and "time_per_step_s" not in s and "wall_s" not in s
    assert set(res["history"].metric).isdisjoint(nets.TIME_METRICS)
    assert set(res.tables) == {"summary", "history", "times"}
    assert (res["times"].time_per_step_s > 0).all()


def test_timing_smoke():
    t = C.run_timing("smoke", "cpu")["timing"]
    assert list(t.model.unique()) == ["ResNet18 (width 4)", "ViT (depth 1, heads 2, dim 16, mlp_dim 32, patch 4)"]
    assert (t.threads == 1).all() and (t.steps == 1).all()


def _summary(status_frog4="diverged", best_epoch=3):
    rows = [("bp", 0, 0.95, "completed", 5), ("fg-mean", 1, 0.2, "completed", 5), ("frog", 2, 0.1, "diverged", 0),
            ("frog", 4, 0.4, status_frog4, best_epoch)]
    return pd.DataFrame([{"dataset": "digits", "model": "A", "approach": a, "k": k, "test_acc": acc, "status": st,
                          "diverged": st == "diverged", "best_epoch": be} for a, k, acc, st, be in rows])


def test_acc_vs_k_marks_untrained_and_late_divergence_differently():
    ax = acc_vs_k(_summary()).axes[0]
    offsets = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert offsets["diverged (untrained accuracy)"] == [[2.0, 0.1]]
    assert offsets["diverged (accuracy before divergence)"] == [[4.0, 0.4]]
    ax = acc_vs_k(_summary("completed", 5)).axes[0]
    assert {c.get_label() for c in ax.collections} == {"diverged (untrained accuracy)"}
    assert [line.get_label() for line in ax.get_lines() if line.get_label() == "BP"]


def test_learning_curves_mark_every_diverged_run_once():
    nan = float("nan")
    rows = []
    runs = {"BP": ([0.1, 0.5, 0.9], [2.3, 1.0, 0.5]),
            "FROG k=2": ([0.1, nan], [2.3, nan]),  # diverged in its first epoch: one point, the untrained model
            "FROG k=4": ([0.1, 0.3, 0.2], [2.3, 2.0, nan])}  # finite accuracy, non-finite loss at the end
    for label, (acc, loss) in runs.items():
        for metric, values in (("val_acc", acc), ("val_loss", loss)):
            for e, v in enumerate(values):
                rows.append({"dataset": "digits", "model": "A", "label": label, "seed": 0, "epoch": e,
                             "metric": metric, "value": v})
    fig = learning_curves(pd.DataFrame(rows), metrics=("val_acc",))
    marks = sorted(p for c in fig.axes[0].collections for p in c.get_offsets().tolist())
    assert marks == [[0.0, 0.1], [2.0, 0.2]]
