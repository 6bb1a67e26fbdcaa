"""The book's figure style: one colour per method, column-sized figures, clipped outliers, captions with provenance.

**Colours** (:func:`color`, :func:`line_kw`, :func:`palette`). One colour per method on every page:

* ``BP`` black, solid; ``FG`` (one tangent, k = 1) and FoMoH's ``FGD`` (the same estimator, (∇f·v)v)
  grey, solid; ``FoMoH`` goldenrod; ``Newton`` dark brown, dotted;
* every number of tangents k ≥ 2 has its own **hue** (:data:`K_HUES`: k = 2 blue, 4 vermilion,
  16 bluish green, 8 reddish purple, 64 sky blue, … from the Okabe–Ito and Tol colour-blind-safe sets),
  and the methods with k tangents are **shades of that hue**: ``FG-mean k`` the light shade with dashed
  lines and open markers, ``FROG k`` the full hue with solid lines and filled markers, ``FoMoH-KD K`` a
  dark shade with dash-dot lines and square markers, ``FG-sum k`` the light shade dotted. So FG-mean k and
  FROG k at the same k — the FROG paper's central comparison — sit side by side as a light/dark pair of
  one colour, and the line style tells them apart in greyscale too.
* Many k on one axis (e.g. a sweep over k = 1 … 1024) use :func:`sequential` instead: one hue per family
  (FG-mean blue, FROG vermilion, FoMoH-KD green) with lightness growing with k.

**Size** (:func:`figsize`, :func:`subplots`): the book's text column is about 810 px (sphinx-book-theme
at a 1400-px window); a figure is at most two panels per row and 810 px wide at :data:`DISPLAY_DPI`
(150), so fonts set in points stay legible after the page scales the image. :func:`use` sets the rc
parameters; :func:`save` writes PNGs at :data:`SAVE_DPI` (200, never below 150).

**Outliers** (:func:`robust_limits`, :func:`clip_outliers`): the y-range follows robust quantiles of the
plotted data, not its extremes (a band to 10²⁷ or one diverged curve would flatten everything else);
points beyond the range are drawn on the frame as triangles (▲ above, ▼ below) in their line's colour
and counted in a note, so nothing disappears silently.

**Captions** (:func:`caption`, :func:`provenance`, :func:`figure_html`): a caption is the figure's text
plus a provenance line — the results table it was drawn from (relative path ``results/<chapter>/
<profile>/<device>/<file>``), profile, device, git commit and code hash from a
:class:`frogcore.results.StoredResult`'s metadata — as Markdown for a myst-nb ``glue:figure`` caption
or ``IPython.display.Markdown``.
"""
from __future__ import annotations

import base64
import contextlib
import html
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.collections
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np

from .approach import Approach
from .results import FIGURE_ID_KEY, FIGURE_RUN_KEY, StoredResult, atomic_write_bytes, current_result_id, folder_lock

__all__ = ["COLUMN_PX", "DISPLAY_DPI", "FIXED_COLORS", "K_HUES", "SAVE_DPI", "StaleFigure", "caption",
           "clip_outliers", "color", "figsize", "figure_html", "line_kw", "palette", "provenance", "robust_limits",
           "save", "sequential", "subplots", "use"]

COLUMN_PX = 810      # the book's text column at a 1400-px-wide window
DISPLAY_DPI = 150    # figure.dpi: inches × 150 = pixels in the notebook and the book
SAVE_DPI = 200       # PNG files (never below 150)
MAX_COLS = 2         # panels per row

#: methods with a colour of their own (not shades of a k hue)
FIXED_COLORS = {"BP": "#000000", "FG": "#7f7f7f", "FGD": "#7f7f7f", "FoMoH": "#b8860b", "Newton": "#5b3a29"}
#: one hue per number of tangents (Okabe–Ito first, then Paul Tol's colour-blind-safe colours)
K_HUES = {1: "#555555", 2: "#0072b2", 3: "#882255", 4: "#d55e00", 5: "#117733", 6: "#aa4499", 7: "#999933",
          8: "#cc79a7", 9: "#332288", 10: "#44aa99", 16: "#009e73", 32: "#e69f00", 64: "#56b4e9", 128: "#8c564b",
          256: "#6699cc", 512: "#661100", 1024: "#ddaa33"}
_FAMILY_HUES = {"fg-mean": "#0072b2", "fg-sum": "#56b4e9", "frog": "#d55e00", "fomoh-kd": "#009e73"}
_SHADE = {"fg-mean": ("white", 0.45), "fg-sum": ("white", 0.45), "frog": (None, 0.0), "fomoh-kd": ("black", 0.35)}
_LINESTYLE = {"fg-mean": "--", "fg-sum": ":", "frog": "-", "fomoh-kd": "-.", "newton": ":"}
_MARKER = {"fg-mean": "o", "fg-sum": "v", "frog": "o", "fomoh-kd": "s", "bp": "D", "fg": "x", "fgd": "x",
           "fomoh": "^", "newton": "*"}


def _mix(hex_color: str, other: str | None, t: float) -> str:
    if other is None or t == 0:
        return mcolors.to_hex(hex_color)
    a, b = np.array(mcolors.to_rgb(hex_color)), np.array(mcolors.to_rgb(other))
    return mcolors.to_hex((1 - t) * a + t * b)


def _approach(a: Any) -> Approach:
    """An :class:`Approach` from an Approach, a spec (``"frog:16"``) or a label (``"FG-mean k=4"``)."""
    if isinstance(a, Approach):
        return a
    text = str(a).strip()
    m = re.fullmatch(r"(FG-mean|FG-sum|FROG|FoMoH-KD|mean)\s+[kK]\s*=\s*(\d+)", text)
    if m:
        name = {"FG-mean": "fg-mean", "mean": "fg-mean", "FG-sum": "fg-sum", "FROG": "frog",
                "FoMoH-KD": "fomoh-kd"}[m.group(1)]
        return Approach(name, int(m.group(2)))
    fixed = {"BP": "bp", "FG": "fg-mean:1", "FGD": "fgd", "FoMoH": "fomoh", "Newton": "newton",
             "FoMoH-2D": "fomoh-kd:2"}
    try:
        return Approach.parse(fixed.get(text, text))
    except ValueError:
        raise ValueError(f"{a!r} is not an approach label ('BP', 'FG', 'FG-mean k=4', 'FROG k=16', 'FGD', "
                         "'FoMoH', 'FoMoH-KD K=3', 'Newton') or spec ('bp', 'frog:16')") from None


def _k_hue(k: int) -> str:
    if k in K_HUES:
        return K_HUES[k]
    # a k without a hue of its own borrows the hue of the nearest listed k on a log scale
    nearest = min(K_HUES, key=lambda x: (abs(math.log2(x) - math.log2(k)), x))
    return K_HUES[nearest]


def color(approach: Any) -> str:
    """The method's colour (hex) on every page; ``approach`` is an :class:`Approach`, a spec or a label."""
    a = _approach(approach)
    label = a.label
    if label in FIXED_COLORS:
        return FIXED_COLORS[label]
    other, t = _SHADE[a.name]
    return _mix(_k_hue(a.k), other, t)


def line_kw(approach: Any, **overrides: Any) -> dict[str, Any]:
    """``color``, ``linestyle``, ``marker``, ``label`` (and open markers for FG-mean) for ``ax.plot``."""
    a = _approach(approach)
    c = color(a)
    name = "fg" if a.label == "FG" else a.name
    kw: dict[str, Any] = {"color": c, "linestyle": _LINESTYLE.get(name, "-"), "marker": _MARKER.get(name, "o"),
                          "label": a.label}
    if a.name == "fg-mean" and a.k > 1:
        kw.update(markerfacecolor="white", markeredgecolor=c)
    kw.update(overrides)
    return kw


def palette(approaches: Iterable[Any]) -> dict[str, str]:
    """``{label: colour}`` for seaborn's ``palette=`` (keys are :attr:`Approach.label`)."""
    return {_approach(a).label: color(a) for a in approaches}


def sequential(ks: Sequence[int], family: str = "frog") -> dict[int, str]:
    """Many k on one axis: ``{k: colour}`` in one hue per family (``fg-mean`` blue, ``frog`` vermilion,
    ``fomoh-kd`` green), light for small k and dark for large k (log-spaced)."""
    if family not in _FAMILY_HUES:
        raise ValueError(f"family={family!r} is not valid; allowed values: {', '.join(map(repr, _FAMILY_HUES))}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers; got {ks!r}")
    lo, hi = math.log2(ks[0]), math.log2(ks[-1])
    out = {}
    for k in ks:
        t = 0.5 if hi == lo else (math.log2(k) - lo) / (hi - lo)
        # from 60 % white (light) through the hue (t = 0.6) to 40 % black (dark)
        out[k] = _mix(_FAMILY_HUES[family], "white", 0.6 * (1 - t / 0.6)) if t < 0.6 else \
            _mix(_FAMILY_HUES[family], "black", 0.4 * (t - 0.6) / 0.4)
    return out


# ----------------------------------------------------------------------------- size and rc parameters

def figsize(ncols: int = 1, nrows: int = 1, *, aspect: float = 0.62, width_px: int = COLUMN_PX) -> tuple[float, float]:
    """``(width, height)`` in inches for ``nrows × ncols`` panels filling the book column (``width_px`` at
    :data:`DISPLAY_DPI`); ``aspect`` is one panel's height/width. At most :data:`MAX_COLS` panels per row."""
    for name, v in (("ncols", ncols), ("nrows", nrows)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    if ncols > MAX_COLS:
        raise ValueError(f"ncols={ncols}: at most {MAX_COLS} panels per row fit the book's column; use more rows")
    if not (isinstance(aspect, (int, float)) and 0.1 <= aspect <= 3):
        raise ValueError(f"aspect must be a number from 0.1 to 3; got {aspect!r}")
    if not (isinstance(width_px, int) and 200 <= width_px <= 2000):
        raise ValueError(f"width_px must be an integer from 200 to 2000; got {width_px!r}")
    width = width_px / DISPLAY_DPI
    return width, nrows * (width / ncols) * aspect


def subplots(nrows: int = 1, ncols: int = 1, *, aspect: float = 0.62, width_px: int = COLUMN_PX, **kw: Any):
    """``plt.subplots`` at :func:`figsize` with constrained layout; ``axes`` always a 2-D array."""
    kw.setdefault("squeeze", False)
    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=figsize(ncols, nrows, aspect=aspect, width_px=width_px), **kw)


RC = {
    "figure.dpi": DISPLAY_DPI, "savefig.dpi": SAVE_DPI, "savefig.bbox": "tight", "savefig.pad_inches": 0.05,
    "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "legend.title_fontsize": 8.5, "legend.frameon": False, "lines.linewidth": 1.6,
    "lines.markersize": 4.5, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "image.cmap": "viridis",
}


def use() -> None:
    """Set the book's rc parameters (:data:`RC`): 150 dpi on screen, 200 dpi files, fonts legible at the
    column width (8–9.5 pt ≈ 17–20 px), light grid, no top/right spines."""
    matplotlib.rcParams.update(RC)


class StaleFigure(RuntimeError):
    """The tables a figure was drawn from were replaced (by another run) before the figure was written."""


def save(fig: plt.Figure, result: Any, name: str, *, dpi: int | None = SAVE_DPI) -> Path:
    """Write ``fig`` as ``<figures folder>/<name>.png`` atomically and return the path.

    ``result`` is the :class:`frogcore.results.StoredResult` the figure was drawn from: the PNG goes to its
    ``figures_dir`` and records the run (PNG text ``frog:run`` and ``frog:result``, see
    :func:`frogcore.results.result_id`), so a table and the figures drawn from it are replaced together
    (storing new tables removes that run's older figures) and a figure whose tables were replaced meanwhile
    by another process is refused (:class:`StaleFigure`) instead of being left beside them. A plain folder
    writes an unrecorded figure. ``dpi``: at least 150 (``None``: the rc ``savefig.dpi``). The file's bytes
    depend only on the figure (no timestamps), so an unchanged figure is an unchanged file.
    """
    if dpi is not None and (isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 150):
        raise ValueError(f"dpi must be an integer >= 150; got {dpi!r}")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file name without '/'; got {name!r}")
    metadata: dict[str, Any] = {"Software": None}
    if isinstance(result, StoredResult):
        folder = Path(result.figures_dir)
        run, rid = result.meta.get("name"), result.result_id
        metadata.update({FIGURE_RUN_KEY: str(run), FIGURE_ID_KEY: rid})
    elif isinstance(result, (str, os.PathLike)):
        folder, run, rid = Path(result), None, None
    else:
        raise TypeError(f"result must be the StoredResult the figure was drawn from (or a folder); got "
                        f"{type(result).__name__}")
    path = folder / f"{name}.png"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi if dpi is not None else matplotlib.rcParams["savefig.dpi"],
                metadata=metadata)
    with folder_lock(folder.parent) if run is not None else contextlib.nullcontext():
        # the check and the write happen while no other process stores tables in this folder
        if run is not None and current_result_id(folder.parent, run) != rid:
            raise StaleFigure(f"not saving {path.name}: the tables in {folder.parent} were replaced by another "
                              "run after this figure's data was loaded; run the notebook again")
        atomic_write_bytes(path, buf.getvalue())
    return path


# ----------------------------------------------------------------------------- outliers

def robust_limits(values: Any, q: tuple[float, float] = (0.05, 0.95), *, log: bool = False, reach: float = 1.0,
                  pad: float = 0.05) -> tuple[float, float]:
    """Axis limits from the finite ``values`` (positive ones on a log axis) that ignore outliers: the range of
    the values that lie within ``reach`` times the ``q``-quantile range beyond those quantiles (in decades
    on a log axis), padded by ``pad`` of that range. Ordinary data keeps its full range; a value 10²⁷ where
    the rest lies below 10² is left outside. Raises ValueError without usable values."""
    lo_q, hi_q = q
    if not 0 <= lo_q < hi_q <= 1:
        raise ValueError(f"q must be two quantiles 0 <= low < high <= 1; got {q!r}")
    if reach < 0 or pad < 0:
        raise ValueError(f"reach and pad must be >= 0; got reach={reach!r}, pad={pad!r}")
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if log:
        v = v[v > 0]
    if v.size == 0:
        raise ValueError("no finite values" + (" > 0 for a log axis" if log else "") + " to set limits from")
    x = np.log10(v) if log else v
    qlo, qhi = np.quantile(x, [lo_q, hi_q])
    span = qhi - qlo
    if span == 0:
        span = abs(qlo) * 0.1 if qlo != 0 else 1.0
    inside = x[(x >= qlo - reach * span) & (x <= qhi + reach * span)]
    lo, hi = float(inside.min()), float(inside.max())
    if hi - lo <= 0:
        lo, hi = lo - span / 2, hi + span / 2
    width = hi - lo
    lo, hi = lo - pad * width, hi + pad * width
    return (float(10 ** lo), float(10 ** hi)) if log else (float(lo), float(hi))


def _plotted(ax) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(x, y, colour) of every line and scatter collection on ``ax``."""
    out = []
    for line in ax.get_lines():
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if x.size and not line.get_label().startswith("_clip"):
            out.append((x, y, mcolors.to_hex(line.get_color())))
    for coll in ax.collections:
        if isinstance(coll, matplotlib.collections.PathCollection) and not coll.get_label().startswith("_clip"):
            off = np.asarray(coll.get_offsets(), float)
            if off.size:
                fc = coll.get_facecolor()
                col = mcolors.to_hex(fc[0]) if len(fc) else "#000000"
                out.append((off[:, 0], off[:, 1], col))
    return out


def clip_outliers(ax, q: tuple[float, float] = (0.05, 0.95), *, values: Any = None, reach: float = 1.0,
                  pad: float = 0.05, note: bool = True) -> tuple[float, float, int]:
    """Set ``ax``'s y-range to :func:`robust_limits` of the plotted lines and points (or of ``values``) and
    mark every point outside it: a ▲ on the top edge or a ▼ on the bottom edge in the line's colour.
    Returns ``(low, high, number of marked points)``; with ``note`` a small text in the axes counts them.
    Call it after plotting (on a log axis after ``set_yscale("log")``)."""
    log = ax.get_yscale() == "log"
    series = _plotted(ax)
    data = values if values is not None else (np.concatenate([s[1] for s in series]) if series else [])
    lo, hi = robust_limits(data, q, log=log, reach=reach, pad=pad)
    ax.set_ylim(lo, hi)
    n = 0
    for x, y, c in series:
        with np.errstate(invalid="ignore"):
            above, below = np.isfinite(y) & (y > hi), np.isfinite(y) & (y < lo)
            if log:
                below |= np.isfinite(y) & (y <= 0)
        if above.any():
            ax.plot(x[above], np.full(above.sum(), hi), linestyle="none", marker="^", markersize=6, color=c,
                    clip_on=False, zorder=5, label="_clip_above")
        if below.any():
            ax.plot(x[below], np.full(below.sum(), lo), linestyle="none", marker="v", markersize=6, color=c,
                    clip_on=False, zorder=5, label="_clip_below")
        n += int(above.sum() + below.sum())
    ax.set_ylim(lo, hi)
    if note and n:
        ax.text(0.99, 0.98, f"{n} off-scale ▲▼", transform=ax.transAxes, ha="right", va="top", fontsize=7,
                color="#555555")
    return lo, hi, n


# ----------------------------------------------------------------------------- captions and provenance

def _short(h: Any, n: int) -> str:
    return str(h)[:n] if h else "unknown"


def provenance(result: Any, table: str | None = None) -> str:
    """One line (Markdown) saying where a figure's numbers come from, from a
    :class:`frogcore.results.StoredResult`'s metadata: the results table file as
    ``results/<chapter>/<profile>/<device>/[variants/<tag>/]<file>`` (relative: no build-machine path),
    profile, device, git commit and code hash. ``table``: the table drawn (default: all of the run's)."""
    meta = getattr(result, "meta", result)
    if not isinstance(meta, Mapping) or "section" not in meta:
        raise ValueError("result must be a StoredResult (or its meta dict) with 'section', 'profile', 'device'")
    tables = meta.get("tables", {})
    if table is not None and table not in tables:
        raise ValueError(f"table={table!r} is not a table of this run; its tables: {sorted(tables)}")
    folder = f"results/{meta['section']}/{meta['profile']}/{meta['device']}"
    if meta.get("variant"):
        folder += f"/variants/{meta['variant']}"
    names = [table] if table is not None else list(tables)
    files = ", ".join(f"`{folder}/{tables[t]['file']}`" for t in names) or f"`{folder}`"
    return (f"Data: {files} — profile {meta['profile']}, device {meta['device']}, "
            f"commit `{_short(meta.get('git_commit'), 7)}`, code hash `{_short(meta.get('code_hash'), 8)}`.")


def caption(text: str, result: Any, *, table: str | None = None, number: int | str | None = None) -> str:
    """The figure's caption as one Markdown paragraph: ``**Figure N.**`` (if ``number``), ``text``, then
    the :func:`provenance` line in italics — for the caption of a ``{glue:figure}`` (paste it with
    ``{glue:md}``), or ``IPython.display.Markdown``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("caption text must be a non-empty string that says what the figure shows")
    head = f"**Figure {number}.** " if number is not None else ""
    body = text.strip()
    if not body.endswith((".", "!", "?")):
        body += "."
    return f"{head}{body} *{provenance(result, table)}*"


def _md_inline_to_html(md: str) -> str:
    text = html.escape(md, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def figure_html(fig: plt.Figure, caption_md: str, alt: str, *, dpi: int = SAVE_DPI):
    """``IPython.display.HTML`` of ``fig`` as ``<figure><img alt=…><figcaption>…</figcaption></figure>``
    (the PNG inline at ``dpi``, shown at its :data:`DISPLAY_DPI` size, at most the column's width): a
    captioned figure straight from a code cell, without a glue directive. ``caption_md``: simple inline
    Markdown (``**bold**``, ``*italic*``, ``code``); math in ``\\(…\\)`` is typeset by MathJax."""
    from IPython.display import HTML

    if not isinstance(alt, str) or len(alt.strip()) < 10:
        raise ValueError("alt must describe the figure in words (at least 10 characters)")
    if not isinstance(dpi, int) or dpi < 150:
        raise ValueError(f"dpi must be an integer >= 150; got {dpi!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = base64.b64encode(buf.getvalue()).decode()
    width = int(round(fig.get_figwidth() * DISPLAY_DPI))
    return HTML(f'<figure class="frog-figure" style="margin: 1em 0">'
                f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
                f'style="width: {width}px; max-width: 100%; height: auto"/>'
                f'<figcaption class="mathjax_process">{_md_inline_to_html(caption_md)}</figcaption></figure>')
