"""Plotting helpers shared by the notebooks: one seaborn style, atomic figure files, and the figures
that several chapters draw from the same tables (the networks chapters 4.4 and 4.5)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .results import atomic_path


def set_style() -> None:
    """The book's figure style (seaborn whitegrid, readable font sizes)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


def save_figure(fig: plt.Figure, folder: str | os.PathLike, name: str) -> Path:
    """Save ``fig`` as ``<folder>/<name>.png`` atomically and return the path.

    ``folder`` is typically ``StoredResult.figures_dir``. The figure stays open so that the
    notebook still displays it.
    """
    path = Path(folder) / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


# ----------------------------------------------------------------------------- networks (4.4, 4.5)

def acc_vs_k(summary, col="test_acc"):
    """Test accuracy (at the best validation epoch) vs k: FG/mean and FROG lines, BP as a dashed line."""
    panels = list(dict.fromkeys(zip(summary.dataset, summary.model)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.4), squeeze=False, sharey=True)
    colors = {"fg-mean": sns.color_palette()[0], "frog": sns.color_palette()[1]}
    names = {"fg-mean": "FG / mean", "frog": "FROG (projection)"}
    for ax, (ds, model) in zip(axes.flat, panels):
        sub = summary[(summary.dataset == ds) & (summary.model == model)]
        for appr in ("fg-mean", "frog"):
            s = sub[sub.approach == appr]
            if len(s):
                stats = s.groupby("k")[col].agg(["mean", "std", "count"]).reset_index()
                ax.errorbar(stats.k, stats["mean"], yerr=stats["std"].fillna(0) if stats["count"].max() > 1 else None,
                            marker="o", capsize=3, color=colors[appr], label=names[appr])
                div = s[s.status == "diverged"]
                if len(div):
                    ax.scatter(div.k, div[col], marker="x", s=60, color="red", zorder=5,
                               label="diverged (accuracy before divergence)")
        bp = sub[sub.approach == "bp"][col]
        if len(bp):
            ax.axhline(bp.mean(), color="k", ls="--", lw=1, label="BP")
        ax.set_xscale("log", base=2)
        ks = sorted(sub[sub.approach != "bp"].k.unique())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_title(f"{model} on {ds}", fontsize=10)
        ax.set_xlabel("tangents k")
    axes.flat[0].set_ylabel("test accuracy")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def learning_curves(history, metrics=("val_acc", "train_loss")):
    """Validation accuracy and training loss per epoch (seed mean), one column per model."""
    panels = list(dict.fromkeys(zip(history.dataset, history.model)))
    fig, axes = plt.subplots(len(metrics), len(panels), figsize=(4.3 * len(panels), 3.0 * len(metrics)),
                             squeeze=False, sharex="col")
    labels = list(dict.fromkeys(history.label))
    palette = dict(zip(labels, sns.color_palette("tab10", len(labels))))
    for j, (ds, model) in enumerate(panels):
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            d = history[(history.dataset == ds) & (history.model == model) & (history.metric == metric)]
            d = d.groupby(["label", "epoch"], sort=False).value.mean().reset_index()
            for lbl in labels:
                c = d[d.label == lbl]
                if len(c):
                    ax.plot(c.epoch, c.value, color=palette[lbl], ls="--" if lbl == "BP" else "-", label=lbl)
            if metric.endswith("loss"):
                ax.set_yscale("log")
            ax.set_ylabel(metric.replace("_", " "))
            if i == 0:
                ax.set_title(f"{model} on {ds}", fontsize=10)
            if i == len(metrics) - 1:
                ax.set_xlabel("epoch")
    axes[0, -1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def time_vs_k(timing):
    """Median wall time per gradient step vs k; one panel per (model, perturbation)."""
    perts = [p for p in timing.perturbation.unique() if p != "-"]
    models = list(dict.fromkeys(timing.model))
    fig, axes = plt.subplots(len(perts), len(models), figsize=(4.3 * len(models), 3.2 * len(perts)),
                             squeeze=False, sharex=True)
    style = {("sim", "mean"): ("C0", "-"), ("sim", "projection"): ("C1", "-"),
             ("fwd", "mean"): ("C0", ":"), ("fwd", "projection"): ("C1", ":")}
    for i, pert in enumerate(perts):
        for j, model in enumerate(models):
            ax = axes[i, j]
            t = timing[timing.model == model]
            for (mode, agg), (c, ls) in style.items():
                s = t[(t["mode"] == mode) & (t.aggregation == agg) & (t.perturbation == pert)].sort_values("k")
                if len(s):
                    ax.plot(s.k, 1e3 * s.median_s, color=c, ls=ls, marker="o", label=f"{mode} {agg}")
            bp = t[t["mode"] == "bp"].median_s
            if len(bp):
                ax.axhline(1e3 * bp.iloc[0], color="k", ls="--", lw=1, label="bp")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{model}\n{pert} perturbation", fontsize=9)
            ax.set_xlabel("tangents k")
            if j == 0:
                ax.set_ylabel("ms per step (median)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig
