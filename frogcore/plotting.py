"""Figures that several chapters draw from the same tables (the networks chapters 4.4 and 4.5), in the style of
:mod:`frogcore.style` (which also saves figures: ``style.save``)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

# ----------------------------------------------------------------------------- networks (4.4, 4.5)
#
# The three figures follow frogcore.style: at most two panels per row, one colour per method (BP black,
# FG grey, FG-mean k and FROG k a light/dark pair of k's hue, FG-mean dashed with open markers, FROG solid
# with filled markers), outliers of the loss and time axes clipped to the frame (style.clip_outliers).

DIVERGED = "#e4002b"  # the diverged-run markers (a red no method uses)
_FAMILY = {"fg-mean": ("FG / FG-mean (open markers)", "#8c8c8c", "--"),
           "frog": ("FROG (filled markers)", "#3a3a3a", "-")}


def _grid(n: int, *, aspect: float, **kw):
    """``n`` panels, at most two per row (:func:`frogcore.style.subplots`); returns the figure, the ``n``
    panels' axes and the spare axis of an odd grid (or ``None``)."""
    from . import style

    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig, axes = style.subplots(nrows, ncols, aspect=aspect, **kw)
    flat = list(axes.flat)
    return fig, flat[:n], (flat[n] if len(flat) > n else None)


def _title(text: str, width: int = 34) -> str:
    """A panel title that fits half the book's column (long model names wrap)."""
    import textwrap

    return text if len(text) <= width else textwrap.fill(text, width)


def _log_ticks(ax) -> None:
    """Tick labels 1, 2, 5 per decade as plain numbers on a logarithmic y axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    lo, hi = ax.get_ylim()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 1.5 else (1.0,)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _kw(label, **overrides):
    """:func:`frogcore.style.line_kw` of an approach label or spec; a label that names no approach gets a
    neutral grey."""
    from . import style

    try:
        return style.line_kw(label, **overrides)
    except ValueError:
        return {"color": "#7f7f7f", "linestyle": "-", "marker": "o", "label": str(label), **overrides}


def _diverged(table):
    """Rows of runs that diverged (``diverged`` column, or ``status == "diverged"``)."""
    if "diverged" in table:
        return table["diverged"].astype(bool)
    if "status" in table:
        return table["status"] == "diverged"
    return pd.Series(False, index=table.index)


def _entries(axes) -> dict:
    """``{label: handle}`` of every axis in ``axes`` (each label once, in order)."""
    entries: dict = {}
    for a in axes:
        for h, lbl in zip(*a.get_legend_handles_labels()):
            entries.setdefault(lbl, h)
    # the methods first, the diverged-run markers last
    return dict(sorted(entries.items(), key=lambda e: "diverged" in e[0]))


def _legend(fig, axes, spare, *, ncol: int = 2, **kw):
    """One legend with the entries of every axis: on the spare panel of an odd grid, on the only panel of
    a one-panel figure, else below the panels."""
    entries = _entries(axes)
    if not entries:
        return None
    handles, labels = list(entries.values()), list(entries)
    if spare is not None:
        spare.axis("off")
        return spare.legend(handles, labels, loc="center", **kw)
    if len(axes) == 1:
        return axes[0].legend(handles, labels, **kw)
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, **kw)


def acc_vs_k(summary, col="test_acc"):
    """Test accuracy (at the best validation epoch) vs k, one panel per (dataset, model), two per row.

    FG / FG-mean (dashed) and FROG (solid) are grey lines through markers in each approach's colour
    (:func:`frogcore.style.line_kw`: FG-mean k open, FROG k filled, a light/dark pair of k's hue; mean ±
    std over seeds as error bars); BP is a black dashed line. Runs that diverged are marked: a red ✗ at
    their accuracy before diverging, a red ○ where that is the untrained model's (``best_epoch == 0``:
    the run diverged before improving on epoch 0); a diverged BP run turns its line red and dotted.
    """
    panels = list(dict.fromkeys(zip(summary.dataset, summary.model)))
    # a legend below the panels (an even number of them, more than one) needs taller panels
    fig, axes, spare = _grid(len(panels), aspect=1.05 if len(panels) > 1 and len(panels) % 2 == 0 else 0.8,
                             sharey=True)
    diverged = _diverged(summary)
    untrained = diverged & (summary["best_epoch"] == 0) if "best_epoch" in summary else diverged & False
    for ax, (ds, model) in zip(axes, panels):
        here = (summary.dataset == ds) & (summary.model == model)
        sub = summary[here]
        for appr, (name, line_color, ls) in _FAMILY.items():
            s = sub[sub.approach == appr]
            if not len(s):
                continue
            stats = s.groupby("k")[col].agg(["mean", "std", "count"]).reset_index()
            filled = line_color if appr == "frog" else "white"
            ax.errorbar(stats.k, stats["mean"], yerr=stats["std"].fillna(0) if stats["count"].max() > 1 else None,
                        color=line_color, ls=ls, lw=1.2, marker="o", markersize=6, markerfacecolor=filled,
                        markeredgecolor=line_color, capsize=3, label=name, zorder=2)
            for k, m in zip(stats.k, stats["mean"]):
                kw = _kw(f"{appr}:{int(k)}")
                ax.plot([k], [m], linestyle="none", marker=kw["marker"], markersize=6, color=kw["color"],
                        markerfacecolor=kw.get("markerfacecolor", kw["color"]),
                        markeredgecolor=kw.get("markeredgecolor", kw["color"]), markeredgewidth=1.4, zorder=3,
                        label="_marker")
        fg = here & (summary.approach != "bp")
        div, unt = summary[fg & diverged & ~untrained], summary[fg & untrained]
        if len(div):
            ax.scatter(div.k, div[col], marker="x", s=60, color=DIVERGED, zorder=5,
                       label="diverged (accuracy before divergence)")
        if len(unt):
            ax.scatter(unt.k, unt[col], marker="o", s=110, facecolors="none", edgecolors=DIVERGED, linewidths=1.5,
                       zorder=6, label="diverged (untrained accuracy)")
        bp = sub[sub.approach == "bp"]
        if len(bp):
            bp_div = bool(diverged[here & (summary.approach == "bp")].any())
            ax.axhline(bp[col].mean(), color=DIVERGED if bp_div else "#000000", ls=":" if bp_div else "--", lw=1.2,
                       label="BP (diverged)" if bp_div else "BP", zorder=1)
        ax.set_xscale("log", base=2)
        ks = sorted(sub[sub.approach != "bp"].k.unique())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_title(_title(f"{model} on {ds}"))
        ax.set_xlabel("tangents k")
    values = pd.to_numeric(summary[col], errors="coerce")
    values = values[np.isfinite(values)]
    if len(values):  # every point and the BP line inside the frame, with a margin
        lo, hi = float(values.min()), float(values.max())
        pad = 0.06 * (hi - lo) if hi > lo else 0.05
        axes[0].set_ylim(lo - pad, hi + pad)
    for i, ax in enumerate(axes):
        if i % 2 == 0:
            ax.set_ylabel("test accuracy")
    _legend(fig, axes, spare, ncol=2)
    return fig


BREAK_AT_LOSS = 10.0  # frogcore.training.fit's default: a validation loss at least this ends a run as diverged


def _diverged_ends(panel, metric):
    """``{label: [(epoch, value), ...]}``: for every run in ``panel`` (one dataset and model, all metrics) that
    diverged — a non-finite metric, or a validation loss of at least :data:`BREAK_AT_LOSS`, at its last epoch
    > 0 — the last finite value of ``metric``."""
    runs = [c for c in ("label", "seed") if c in panel]
    out: dict[str, list] = {}
    for _, r in panel.groupby(runs, sort=False):
        last = r.epoch.max()
        values = pd.to_numeric(r.value, errors="coerce")
        at_last = r.epoch == last
        broke = (values[at_last & (r.metric == "val_loss")] >= BREAK_AT_LOSS).any()
        if last == 0 or (values[at_last].map(math.isfinite).all() and not broke):
            continue
        m = r[(r.metric == metric) & values.map(math.isfinite)].sort_values("epoch")
        if len(m):
            out.setdefault(r.label.iloc[0], []).append((m.epoch.iloc[-1], float(m.value.iloc[-1])))
    return out


_METRIC_NAMES = {"val_acc": "validation accuracy", "train_loss": "training loss", "val_loss": "validation loss",
                 "train_acc": "training accuracy", "test_acc": "test accuracy", "test_loss": "test loss"}


def learning_curves(history, metrics=("val_acc", "train_loss")):
    """Validation accuracy and training loss per epoch (seed mean): one row per (dataset, model), one panel
    per metric (two per row), every approach in its :func:`frogcore.style.line_kw` colour and line style.

    Loss axes are logarithmic with outliers clipped to the frame (:func:`frogcore.style.clip_outliers`).
    A run that diverged (a non-finite loss at its last epoch, see :func:`frogcore.training.fit`; found from
    all metrics of the history) gets a red ✗ at the last finite value of each plotted metric, so that a run
    that diverged in its first epoch (a single point, the untrained model) is visible too.
    """
    from . import style

    metrics = list(metrics)
    panels = list(dict.fromkeys(zip(history.dataset, history.model)))
    n = len(panels) * len(metrics)
    fig, axes, spare = _grid(n, aspect=0.72)
    labels = list(dict.fromkeys(history.label))
    for j, (ds, model) in enumerate(panels):
        panel = history[(history.dataset == ds) & (history.model == model)]
        for i, metric in enumerate(metrics):
            ax = axes[j * len(metrics) + i]
            d = panel[panel.metric == metric]
            mean = d.groupby(["label", "epoch"], sort=False).value.mean().reset_index()
            ends = _diverged_ends(panel, metric)
            marked = False
            for lbl in labels:
                c = mean[mean.label == lbl]
                if len(c):
                    ax.plot(c.epoch, c.value, **_kw(lbl, marker="none", lw=1.4))
                for epoch, value in ends.get(lbl, []):
                    ax.scatter([epoch], [value], marker="x", s=50, color=DIVERGED, zorder=5,
                               label=None if marked else "diverged (last finite value)")
                    marked = True
            if metric.endswith("loss"):
                ax.set_yscale("log")
                if np.isfinite(pd.to_numeric(d.value, errors="coerce")).any():
                    style.clip_outliers(ax)
                _log_ticks(ax)
            ax.set_ylabel(_METRIC_NAMES.get(metric, metric.replace("_", " ")))
            ax.set_title(_title(f"{model} on {ds}"))
            ax.set_xlabel("epoch")
    _legend(fig, axes, spare, ncol=4)
    return fig


_TIME_LINES = {("sim", "mean"): ("#a6a6a6", "--"), ("sim", "projection"): ("#a6a6a6", "-"),
               ("fwd", "mean"): ("#3a3a3a", "--"), ("fwd", "projection"): ("#3a3a3a", "-")}
_TIME_NAMES = {("sim", "mean"): "sim, mean", ("sim", "projection"): "sim, projection (FROG)",
               ("fwd", "mean"): "fwd, mean", ("fwd", "projection"): "fwd, projection (FROG)"}


def time_vs_k(timing):
    """Median wall time per gradient step vs k, one panel per (model, perturbation), two per row.

    Simulated (``sim``, light grey) and real forward mode (``fwd``, dark grey), mean (dashed) and projection
    (solid) aggregation, markers in each approach's colour (FG-mean k open, FROG k filled); backprop is a
    black dashed line. Log–log axes, outliers clipped to the frame.
    """
    from . import style

    perts = [p for p in timing.perturbation.unique() if p != "-"]
    models = list(dict.fromkeys(timing.model))
    panels = [(m, p) for m in models for p in perts]
    fig, axes, spare = _grid(len(panels), aspect=0.8)
    for ax, (model, pert) in zip(axes, panels):
        t = timing[timing.model == model]
        for (mode, agg), (c, ls) in _TIME_LINES.items():
            s = t[(t["mode"] == mode) & (t.aggregation == agg) & (t.perturbation == pert)].sort_values("k")
            if not len(s):
                continue
            ax.plot(s.k, 1e3 * s.median_s, color=c, ls=ls, lw=1.3, marker="o", markersize=5,
                    markerfacecolor=c if agg == "projection" else "white", markeredgecolor=c,
                    label=_TIME_NAMES[(mode, agg)])
        for (mode, agg) in _TIME_LINES:
            s = t[(t["mode"] == mode) & (t.aggregation == agg) & (t.perturbation == pert)]
            fam = "frog" if agg == "projection" else "fg-mean"
            kws = [_kw(f"{fam}:{int(k)}") for k in s.k]
            if kws:
                ax.scatter(s.k, 1e3 * s.median_s, s=26, marker="o", zorder=3, linewidths=1.3,
                           facecolors=[kw.get("markerfacecolor", kw["color"]) for kw in kws],
                           edgecolors=[kw.get("markeredgecolor", kw["color"]) for kw in kws], label="_clip_k")
        bp = t[t["mode"] == "bp"].median_s
        if len(bp):
            ax.axhline(1e3 * bp.iloc[0], color="#000000", ls="--", lw=1.2, label="BP")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ks = sorted(t[t["mode"] != "bp"].k.unique())
        if ks:
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
        if any(line.get_xdata().size for line in ax.get_lines()):
            style.clip_outliers(ax)
        _log_ticks(ax)
        ax.set_title(_title(f"{model}, {pert} perturbation"))
        ax.set_xlabel("tangents k")
        ax.set_ylabel("ms per step (median)")
    _legend(fig, axes, spare, ncol=3)
    return fig
