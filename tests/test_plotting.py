"""The shared figures of the networks chapters draw what their tables hold."""
import matplotlib
import pandas as pd
import pytest

from frogcore import style
from frogcore.plotting import acc_vs_k, learning_curves, time_vs_k


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    matplotlib.pyplot.close("all")


def _summary():
    rows = [("bp", 1, 0.95, "completed"), ("fg-mean", 1, 0.2, "completed"), ("fg-mean", 4, 0.5, "completed"),
            ("frog", 2, 0.4, "completed"), ("frog", 4, 0.1, "diverged")]
    return pd.DataFrame([{"dataset": "digits", "model": m, "approach": a, "k": k, "test_acc": acc, "status": st}
                         for m in ("A", "B") for a, k, acc, st in rows])


def test_acc_vs_k_one_panel_per_model_with_bp_line_and_divergence_marks():
    fig = acc_vs_k(_summary())
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_title() == "A on digits"
    bp = [l for l in ax.get_lines() if list(l.get_ydata()) == [0.95, 0.95]]
    assert len(bp) == 1  # the dashed BP reference
    xs = sorted({tuple(l.get_xdata()) for l in ax.get_lines() if len(l.get_xdata()) > 2 or l not in bp})
    assert (1, 4) in xs and (2, 4) in xs  # FG/mean and FROG lines over their k
    assert any(c.get_offsets().tolist() == [[4.0, 0.1]] for c in ax.collections)  # the diverged run's ✗


def test_learning_curves_and_time_vs_k(tmp_path):
    hist = pd.DataFrame([{"dataset": "digits", "model": "A", "label": lbl, "epoch": e, "metric": m,
                          "value": v * (e + 1)}
                         for lbl, v in (("BP", 0.5), ("FROG k=2", 0.2)) for e in range(3)
                         for m in ("val_acc", "train_loss")])
    fig = learning_curves(hist)
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) == 2
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == [0.5, 1.0, 1.5]
    timing = pd.DataFrame([{"model": "A", "mode": mode, "aggregation": agg, "perturbation": pert, "k": k,
                            "median_s": 0.01 * k}
                           for mode, agg, pert in (("sim", "mean", "activity"), ("fwd", "projection", "activity"))
                           for k in (1, 2, 4)] + [{"model": "A", "mode": "bp", "aggregation": "mean",
                                                   "perturbation": "-", "k": 1, "median_s": 0.005}])
    fig = time_vs_k(timing)
    assert len(fig.axes) == 1
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3 and list(lines[0].get_ydata()) == pytest.approx([10.0, 20.0, 40.0])
    path = style.save(fig, tmp_path, "t")
    assert path.read_bytes()[:4] == b"\x89PNG"
