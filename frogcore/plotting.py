"""Plotting helpers shared by the notebooks: one seaborn style, atomic figure files, and the figures
that several chapters draw from the same tables (the networks chapters 4.4 and 4.5)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def set_style() -> None:
    """The book's figure style (seaborn whitegrid, readable font sizes)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


def save_figure(fig: plt.Figure, result, name: str) -> Path:
    """Save ``fig`` as ``<figures folder>/<name>.png`` atomically (at the rc ``savefig.dpi``) and return the
    path: :func:`frogcore.style.save` (``result`` is the StoredResult the figure was drawn from, so figure
    and tables are replaced together). The figure stays open so that the notebook still displays it."""
    from .style import save

    return save(fig, result, name, dpi=None)


# ----------------------------------------------------------------------------- networks (4.4, 4.5)

def _diverged(table):
    """Rows of runs that diverged (``diverged`` column, or ``status == "diverged"``)."""
    if "diverged" in table:
        return table["diverged"].astype(bool)
    if "status" in table:
        return table["status"] == "diverged"
    return pd.Series(False, index=table.index)


def _legend(ax, axes, **kw):
    """One legend on ``ax`` with the entries of every axis in ``axes`` (each label once)."""
    entries = {}
    for a in axes:
        for h, lbl in zip(*a.get_legend_handles_labels()):
            entries.setdefault(lbl, h)
    ax.legend(list(entries.values()), list(entries), **kw)


def acc_vs_k(summary, col="test_acc"):
    """Test accuracy (at the best validation epoch) vs k: FG/mean and FROG lines, BP as a dashed line.

    Runs that diverged are marked: a red ✗ at their accuracy before diverging, a red ○ where that
    is the untrained model's (``best_epoch == 0``: the run diverged before improving on epoch 0); a
    diverged BP run turns its line red and dotted.
    """
    panels = list(dict.fromkeys(zip(summary.dataset, summary.model)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.4), squeeze=False, sharey=True)
    colors = {"fg-mean": sns.color_palette()[0], "frog": sns.color_palette()[1]}
    names = {"fg-mean": "FG / mean", "frog": "FROG (projection)"}
    diverged = _diverged(summary)
    untrained = diverged & (summary["best_epoch"] == 0) if "best_epoch" in summary else diverged & False
    for ax, (ds, model) in zip(axes.flat, panels):
        here = (summary.dataset == ds) & (summary.model == model)
        sub = summary[here]
        for appr in ("fg-mean", "frog"):
            s = sub[sub.approach == appr]
            if len(s):
                stats = s.groupby("k")[col].agg(["mean", "std", "count"]).reset_index()
                ax.errorbar(stats.k, stats["mean"], yerr=stats["std"].fillna(0) if stats["count"].max() > 1 else None,
                            marker="o", capsize=3, color=colors[appr], label=names[appr])
        fg = here & (summary.approach != "bp")
        div, unt = summary[fg & diverged & ~untrained], summary[fg & untrained]
        if len(div):
            ax.scatter(div.k, div[col], marker="x", s=60, color="red", zorder=5,
                       label="diverged (accuracy before divergence)")
        if len(unt):
            ax.scatter(unt.k, unt[col], marker="o", s=110, facecolors="none", edgecolors="red", linewidths=1.5,
                       zorder=6, label="diverged (untrained accuracy)")
        bp = sub[sub.approach == "bp"]
        if len(bp):
            bp_div = bool(diverged[here & (summary.approach == "bp")].any())
            ax.axhline(bp[col].mean(), color="red" if bp_div else "k", ls=":" if bp_div else "--", lw=1,
                       label="BP (diverged)" if bp_div else "BP")
        ax.set_xscale("log", base=2)
        ks = sorted(sub[sub.approach != "bp"].k.unique())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_title(f"{model} on {ds}", fontsize=10)
        ax.set_xlabel("tangents k")
    axes.flat[0].set_ylabel("test accuracy")
    _legend(axes.flat[0], axes.flat, fontsize=7)
    fig.tight_layout()
    return fig


def _diverged_ends(panel, metric):
    """``{label: [(epoch, value), ...]}``: for every run in ``panel`` (one dataset and model, all metrics) that
    diverged — a non-finite metric at its last epoch > 0 — the last finite value of ``metric``."""
    runs = [c for c in ("label", "seed") if c in panel]
    out: dict[str, list] = {}
    for _, r in panel.groupby(runs, sort=False):
        last = r.epoch.max()
        values = pd.to_numeric(r.value, errors="coerce")
        if last == 0 or values[r.epoch == last].map(math.isfinite).all():
            continue
        m = r[(r.metric == metric) & values.map(math.isfinite)].sort_values("epoch")
        if len(m):
            out.setdefault(r.label.iloc[0], []).append((m.epoch.iloc[-1], float(m.value.iloc[-1])))
    return out


def learning_curves(history, metrics=("val_acc", "train_loss")):
    """Validation accuracy and training loss per epoch (seed mean), one column per model.

    A run that diverged (a non-finite loss at its last epoch, see :func:`frogcore.training.fit`; found
    from all metrics of the history) gets a red ✗ at the last finite value of each plotted metric, so
    that a run that diverged in its first epoch (a single point, the untrained model) is visible too.
    """
    panels = list(dict.fromkeys(zip(history.dataset, history.model)))
    fig, axes = plt.subplots(len(metrics), len(panels), figsize=(4.3 * len(panels), 3.0 * len(metrics)),
                             squeeze=False, sharex="col")
    labels = list(dict.fromkeys(history.label))
    palette = dict(zip(labels, sns.color_palette("tab10", len(labels))))
    for j, (ds, model) in enumerate(panels):
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            panel = history[(history.dataset == ds) & (history.model == model)]
            d = panel[panel.metric == metric]
            mean = d.groupby(["label", "epoch"], sort=False).value.mean().reset_index()
            ends = _diverged_ends(panel, metric)
            marked = False
            for lbl in labels:
                c = mean[mean.label == lbl]
                if len(c):
                    ax.plot(c.epoch, c.value, color=palette[lbl], ls="--" if lbl == "BP" else "-", label=lbl)
                for epoch, value in ends.get(lbl, []):
                    ax.scatter([epoch], [value], marker="x", s=50, color="red", zorder=5,
                               label=None if marked else "diverged (last finite value)")
                    marked = True
            if metric.endswith("loss"):
                ax.set_yscale("log")
            ax.set_ylabel(metric.replace("_", " "))
            if i == 0:
                ax.set_title(f"{model} on {ds}", fontsize=10)
            if i == len(metrics) - 1:
                ax.set_xlabel("epoch")
    _legend(axes[0, -1], axes.flat, fontsize=7, ncol=2)
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
