"""Generated parts of the book's Markdown pages, written at build time into ``book/_generated/``.

:func:`write_all` is called by :func:`frogcore.pipeline.build_book` before jupyter-book runs: the
introduction's paper-vs-ours summary (from the stored chapter results), the benchmark tables, and the
figures and Markdown snippets of the performance and tangent-parallel pages (:func:`write_performance`,
:func:`write_tangent_parallel`). Pages pull these files in with MyST ``{include}`` / ``{csv-table}``
directives, so the numbers they show come from stored results and never go stale.

**Benchmark tables.** Each timing benchmark (``benchmarks/bench_<name>.py --out``) writes its records as a
tidy CSV, by default ``results/benchmarks/<name>/<name>.csv`` (one row per configuration: the columns that
identify it, then the measurement), and beside it ``<name>.meta.json`` with the date, the machine (platform,
cores), the torch version, the thread count, the command line and the git commit (:func:`write_benchmark_csv`).
A page's provenance line (:func:`provenance`) is built from that file. A table that is missing gives a note
on the page that says how to produce it, not a failed build.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .results import REPO_ROOT

GENERATED = "_generated"
BENCH_ROOT = Path("results") / "benchmarks"      # relative to the repository (and to ``results=`` folders' parent)

__all__ = ["BENCH_ROOT", "ENGINE_COLUMNS", "GENERATED", "BenchmarkMissing", "benchmark_csv", "provenance",
           "read_benchmark", "run_meta", "write_all", "write_benchmark_csv", "write_performance",
           "write_tangent_parallel"]


def write_all(book: str | os.PathLike, profile: str = "default", device: str = "cpu", *,
              results: str | os.PathLike | None = None) -> list[Path]:
    """Write every generated file under ``<book>/_generated/``; return their paths.

    ``results``: the folder holding ``benchmarks/`` (default: the repository's ``results/``)."""
    from .paper import write_summary_page
    from .pipeline import copy_benchmark_tables

    book = Path(book)
    out = copy_benchmark_tables(book, results)
    out.append(write_summary_page(book / GENERATED / "paper_summary.md", profile, device))
    out += write_performance(book, results)
    out += write_tangent_parallel(book, results)
    return out


# ----------------------------------------------------------------------------- writing benchmark tables

def benchmark_csv(bench: str, results: str | os.PathLike | None = None) -> Path:
    """``<results>/benchmarks/<bench>/<bench>.csv`` (default ``results``: the repository's ``results/``)."""
    root = Path(results) if results is not None else REPO_ROOT / "results"
    return root / "benchmarks" / bench / f"{bench}.csv"


def _meta_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name[: -len(".csv")] + ".meta.json" if csv_path.name.endswith(".csv")
                              else csv_path.name + ".meta.json")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO_ROOT), *args], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_meta(bench: str, *, threads: int | None = None, device: str = "cpu", device_label: str | None = None,
             argv: Sequence[str] | None = None) -> dict[str, Any]:
    """What a benchmark table's ``.meta.json`` records about the run that wrote it."""
    try:
        import torch
        torch_version, torch_threads = torch.__version__, torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_version, torch_threads = None, None
    argv = list(sys.argv if argv is None else argv)
    if argv:
        script = Path(argv[0])
        with_root = script.resolve() if script.exists() else script
        try:
            argv[0] = str(with_root.relative_to(REPO_ROOT))
        except ValueError:
            argv[0] = script.name
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "benchmark": bench,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"description": device_label, "platform": platform.platform(), "machine": platform.machine(),
                    "processor": platform.processor() or None, "cores": os.cpu_count(), "device": device},
        "torch": torch_version,
        "python": platform.python_version(),
        "threads": threads if threads is not None else torch_threads,
        "command": shlex.join(["python", *argv]) if argv else None,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if dirty is None else bool(dirty),
        "load_average": load,
    }


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def write_benchmark_csv(records: Iterable[Mapping[str, Any]], path: str | os.PathLike, columns: Sequence[str], *,
                        bench: str, threads: int | None = None, device: str = "cpu",
                        device_label: str | None = None, argv: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Write ``records`` as a tidy CSV with ``columns`` (missing values empty) and ``<stem>.meta.json`` beside it
    (:func:`run_meta`); return both paths. Used by the benchmark scripts' ``--out``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        wr.writeheader()
        for r in records:
            wr.writerow({c: _cell(r.get(c)) for c in columns})
    meta = run_meta(bench, threads=threads, device=device, device_label=device_label, argv=argv)
    meta["csv"] = path.name
    meta["columns"] = list(columns)
    mpath = _meta_path(path)
    mpath.write_text(json.dumps(meta, indent=1) + "\n")
    return path, mpath


# ----------------------------------------------------------------------------- reading them back

class BenchmarkMissing(FileNotFoundError):
    """A benchmark table the page needs is not stored."""


def read_benchmark(bench: str, results: str | os.PathLike | None = None, required: Sequence[str] = ()):
    """``(DataFrame, meta dict)`` of ``results/benchmarks/<bench>/<bench>.csv``; :class:`BenchmarkMissing`
    (with the command that writes it) if it or a ``required`` column is missing."""
    import pandas as pd

    path = benchmark_csv(bench, results)
    if not path.is_file():
        raise BenchmarkMissing(f"`{_rel(path)}` is not stored")
    df = pd.read_csv(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise BenchmarkMissing(f"`{_rel(path)}` has no column(s) {', '.join(missing)}")
    mpath = _meta_path(path)
    meta = json.loads(mpath.read_text()) if mpath.is_file() else {}
    meta.setdefault("csv_path", _rel(path))
    return df, meta


def _rel(path: Path) -> str:
    """``results/benchmarks/...`` (never a build-machine path)."""
    parts = Path(path).parts
    if "benchmarks" in parts:
        i = len(parts) - 1 - parts[::-1].index("benchmarks")
        return "/".join(("results",) + parts[i:])
    return Path(path).name


def provenance(meta: Mapping[str, Any]) -> str:
    """One Markdown line saying where a figure's or table's numbers come from: the CSV, date, machine, torch
    version, threads and commit of ``meta`` (a benchmark's ``.meta.json``)."""
    parts = [f"Data: `{meta.get('csv_path', meta.get('csv', '?'))}`"]
    date = str(meta.get("date") or "")[:10]
    machine = meta.get("machine") or {}
    desc = machine.get("description") or ", ".join(
        x for x in (machine.get("machine"), f"{machine['cores']} cores" if machine.get("cores") else None) if x)
    run = "measured" + (f" {date}" if date else "") + (f" on {desc}" if desc else "")
    extra = []
    if meta.get("torch"):
        extra.append(f"torch {meta['torch']}")
    if meta.get("threads"):
        extra.append(f"{meta['threads']} torch thread" + ("s" if meta["threads"] != 1 else ""))
    if meta.get("git_commit"):
        extra.append(f"commit `{str(meta['git_commit'])[:7]}`")
    line = f"{parts[0]} — {run}" + (f" ({', '.join(extra)})" if extra else "")
    if meta.get("source"):
        line += f"; {meta['source']}"
    return line + "."


def _missing_note(bench: str, why: str, command: str) -> str:
    return (f"```{{note}}\nNo measurements to show here: {why}. Run\n`{command}`\nand build the book again; "
            "this part of the page is generated from that table.\n```\n")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _figure_md(png: str, name: str, alt: str, caption: str, meta: Mapping[str, Any]) -> str:
    """A MyST ``{figure}`` directive (numbered by Sphinx) with ``caption`` and the provenance line."""
    alt = " ".join(alt.split())
    return (f"```{{figure}} {png}\n:name: {name}\n:alt: {alt}\n:width: 100%\n\n"
            f"{caption.strip()} *{provenance(meta)}*\n```\n")


# ----------------------------------------------------------------------------- the performance page

ENGINES_COMMAND = "python benchmarks/bench_engines.py --threads 1 --out results/benchmarks/engines/engines.csv"
#: columns of ``results/benchmarks/engines/engines.csv`` (``k`` is 0 for the forward pass and backprop rows)
ENGINE_COLUMNS = ("model", "label", "batch", "params", "perturbation", "aggregation", "method", "k", "device",
                  "threads", "reps", "warmup", "seconds", "min_seconds", "auto_impl", "error")
MODEL_NAMES = {"fc": "FC-1024", "resnet18": "ResNet18", "vit": "ViT"}
ENGINE_METHODS = ("sim", "fwd-loop", "fwd-vmap", "fwd-auto", "sample")
#: FC-1024's layers (inputs, hidden, hidden, classes) for the multiply-add count; checked against ``params``
FC_LAYERS = (784, 1024, 1024, 10)


class _Engines:
    """Lookups in the engines table (median seconds per step)."""

    def __init__(self, df):
        df = df[df["error"].isna()] if "error" in df.columns else df
        self.df = df[df["seconds"].notna()]
        order = [m for m in MODEL_NAMES if m in set(self.df["model"])]
        self.models = order + sorted(set(self.df["model"]) - set(order))
        self.ks = sorted(int(k) for k in set(self.df["k"]) if int(k) > 0)

    def name(self, model: str) -> str:
        return MODEL_NAMES.get(model, model)

    def t(self, model: str, method: str, k: int = 0) -> float:
        d = self.df[(self.df["model"] == model) & (self.df["method"] == method)]
        if method not in ("forward", "bp"):
            d = d[d["k"] == k]
        return float(d["seconds"].iloc[0]) if len(d) else float("nan")

    def x_fwd(self, model, method, k=0) -> float:
        return self.t(model, method, k) / self.t(model, "forward")

    def x_bp(self, model, method, k=0) -> float:
        return self.t(model, method, k) / self.t(model, "bp")

    def params(self, model: str) -> int | None:
        if "params" not in self.df.columns:
            return None
        v = self.df.loc[self.df["model"] == model, "params"].dropna()
        return int(v.iloc[0]) if len(v) else None

    def has(self, *pairs) -> bool:
        return all(math.isfinite(self.t(m, meth, k)) for m, meth, k in pairs)


def _k_color(k: int) -> str:
    from . import style

    return style.color("FG" if k == 1 else f"FROG k={k}")


def _publish(fig, out_dir: Path, stem: str, md_name: str, label: str, alt: str, caption: str,
             meta: Mapping[str, Any]) -> list[Path]:
    """Save ``fig`` as ``<out_dir>/<stem>.png``, close it, and write its ``{figure}`` Markdown to ``md_name``."""
    import matplotlib.pyplot as plt

    from . import style

    png = style.save(fig, out_dir, stem)
    plt.close(fig)
    return [png, _write(out_dir / md_name, _figure_md(f"{GENERATED}/performance/{png.name}", label, alt, caption,
                                                      meta))]


def _bar_pair(names: Sequence[str], ks: Sequence[int], panels, ylabel: str, hline: float | None = None):
    """Two panels of :func:`_bars` side by side: ``panels`` is ``[(title, value(name, k)), (title, value)]``;
    one legend (K) below them; ``hline``: a dashed reference line."""
    from . import style

    fig, axes = style.subplots(1, 2, aspect=0.9, sharey=True)
    for ax, (title, value) in zip(axes[0], panels):
        _bars(ax, names, ks, value)
        if hline is not None:
            ax.axhline(hline, color=style.color("BP"), linewidth=1.0, linestyle="--")
        ax.set_title(title)
    axes[0, 0].set_ylabel(ylabel)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=len(ks))
    return fig


def _bars(ax, groups: Sequence[str], ks: Sequence[int], value) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per K (coloured by K) of height ``value(g, k)``."""
    import numpy as np

    width = 0.8 / max(1, len(ks))
    x = np.arange(len(groups))
    for j, k in enumerate(ks):
        vals = [value(g, k) for g in groups]
        ax.bar(x + (j - (len(ks) - 1) / 2) * width, vals, width, color=_k_color(k), label=f"K = {k}",
               edgecolor="white", linewidth=0.4)
    ax.set_xticks(x, groups)
    ax.grid(axis="x", visible=False)


def _fmt(x: float, digits: int = 3) -> str:
    from .narrative import fmt

    return fmt(x, digits)


def _pct(x: float, digits: int = 2) -> str:
    from .narrative import pct

    return pct(x, digits)


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def write_performance(book: str | os.PathLike, results: str | os.PathLike | None = None) -> list[Path]:
    """Figures (PNG) and Markdown snippets of ``book/performance.md`` under ``<book>/_generated/performance/``,
    from ``results/benchmarks/engines/engines.csv`` and ``results/benchmarks/reference/reference.csv``."""
    out_dir = Path(book) / GENERATED / "performance"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*"):
        if old.is_file():
            old.unlink()
    files = _engine_parts(out_dir, results)
    files.append(_reference_part(out_dir, results))
    return files


_ENGINE_SNIPPETS = ("key_findings", "setup", "fig_cost", "fig_batching", "fig_sampling", "sampling", "batching",
                    "auto", "vit", "memory", "tables")


def _engine_parts(out_dir: Path, results) -> list[Path]:
    try:
        df, meta = read_benchmark("engines", results, required=("model", "method", "k", "seconds"))
        eng = _Engines(df)
        if not eng.models or not eng.ks:
            raise BenchmarkMissing("`results/benchmarks/engines/engines.csv` holds no usable rows")
    except BenchmarkMissing as exc:
        note = _missing_note("engines", str(exc), ENGINES_COMMAND)
        return [_write(out_dir / f"{name}.md", note if name in ("key_findings", "tables") else "")
                for name in _ENGINE_SNIPPETS]
    files = [_write(out_dir / f"{name}.md", text) for name, text in (
        ("key_findings", _key_findings(eng)), ("setup", _setup(eng, meta)), ("sampling", _sampling(eng)),
        ("batching", _batching(eng)), ("auto", _auto(eng)), ("vit", _vit(eng)), ("memory", _memory(eng)),
        ("tables", _tables(eng, meta)))]
    files += _engine_figures(eng, meta, out_dir)
    return files


def _key_findings(e: _Engines) -> str:
    k = max(e.ks)
    lines = []
    sim = [(m, e.x_bp(m, "sim", k)) for m in e.models if e.has((m, "sim", k), (m, "bp", 0))]
    if sim:
        lines.append(f"* **What simulating costs.** With $K = {k}$ tangents, a "
                     "`sim` step (backprop, then the estimator on the directional derivatives) costs "
                     + _join([f"{_fmt(v)} backprop steps on {e.name(m)}" for m, v in sim]) + ".")
    if e.has(("fc", "fwd-vmap", k), ("fc", "forward", 0), ("fc", "bp", 0)):
        fwd = [(m, e.x_bp(m, "fwd-auto", k)) for m in e.models if e.has((m, "fwd-auto", k), (m, "bp", 0))]
        text = (f"* **Real forward mode costs many forward passes.** At $K = {k}$ one `fwd-vmap` step of FC-1024 "
                f"costs {_fmt(e.x_fwd('fc', 'fwd-vmap', k))} forward passes "
                f"({_fmt(e.x_bp('fc', 'fwd-vmap', k))} backprop steps)")
        if fwd:
            text += "; the automatic choice `fwd-auto` costs " + _join(
                [f"{_fmt(v)} backprop steps on {e.name(m)}" for m, v in fwd])
        lines.append(text + ".")
    share = [(m, e.t(m, "sample", k) / e.t(m, "fwd-auto", k)) for m in e.models if e.has((m, "sample", k),
                                                                                         (m, "fwd-auto", k))]
    if share:
        lines.append(f"* **Drawing the tangents is a large share of a step.** Sampling the $K n$ normal numbers "
                     f"alone ($K = {k}$) takes " + _join([f"{_pct(v)} of a `fwd-auto` step on {e.name(m)}"
                                                           for m, v in share]) + ".")
    ratio = [(m, e.t(m, "fwd-loop", k) / e.t(m, "fwd-vmap", k)) for m in e.models
             if e.has((m, "fwd-loop", k), (m, "fwd-vmap", k))]
    if ratio:
        lines.append(f"* **Batching all $K$ JVPs in one `vmap` call against a loop of JVPs.** At $K = {k}$ a "
                     "`fwd-loop` step takes " + _join([f"{_fmt(v)} times as long as a `fwd-vmap` step on "
                                                       f"{e.name(m)}" for m, v in ratio])
                     + " (below one: the loop is faster; {numref}`fig-engines-batching`).")
    auto = [(m, kk, e.t(m, "fwd-loop", kk) / e.t(m, "fwd-auto", kk)) for m in e.models for kk in e.ks
            if kk > 1 and e.has((m, "fwd-loop", kk), (m, "fwd-auto", kk))]
    if auto:
        slower = [(m, kk, r) for m, kk, r in auto if r < 1]
        lo, hi = min(r for *_, r in auto), max(r for *_, r in auto)
        text = (f"* **The automatic choice `fwd-auto` against the loop.** For $K \\ge 2$ a `fwd-loop` step takes "
                f"{_fmt(lo)} to {_fmt(hi)} times as long as a `fwd-auto` step; ")
        text += ("`fwd-auto` is faster in every configuration measured." if not slower else
                 "`fwd-auto` is slower than the loop on " + _join([f"{e.name(m)} at $K = {kk}$ ({_fmt(r)})"
                                                                    for m, kk, r in slower]) + ".")
        noise = _noise(e)
        if noise is not None:
            text += (f" Where both variants run the same computation ($K = 1$ for all three; `fwd-auto` and "
                     f"`fwd-vmap` up to the chunk size) their times differ by up to {_pct(noise)}: differences of "
                     "that size are timing noise between processes.")
        lines.append(text)
    cheaper = [kk for kk in e.ks if all(e.t(m, "sim", kk) < e.t(m, "fwd-auto", kk) for m in e.models
                                        if e.has((m, "sim", kk), (m, "fwd-auto", kk)))]
    if cheaper:
        lines.append("* **Simulating is cheaper than forward mode** on every model at $K \\in \\{"
                     + ", ".join(map(str, cheaper)) + "\\}$: the paper's network experiments can be run "
                     "affordably with `sim`, which says nothing about the speed of a forward-only implementation.")
    return "\n".join(lines) + "\n"


def _chunk(e: _Engines, model: str) -> int | None:
    """Tangents per ``vmap`` call of ``fwd-auto`` for ``model`` (weight perturbation), or None."""
    n = e.params(model)
    if not n:
        return None
    from .engines import auto_chunk

    return auto_chunk(max(e.ks), n)


def _noise(e: _Engines) -> float | None:
    """Largest relative difference between variants that run the same computation: every forward-mode variant
    at K = 1, and fwd-auto vs fwd-vmap while K fits in one chunk."""
    spreads = []
    for m in e.models:
        same = [("fwd-loop", "fwd-vmap", "fwd-auto", 1)]
        chunk = _chunk(e, m)
        same += [("fwd-vmap", "fwd-auto", kk) for kk in e.ks if 1 < kk <= (chunk or 0)]
        for *meths, kk in same:
            ts = [e.t(m, meth, kk) for meth in meths]
            ts = [t for t in ts if math.isfinite(t)]
            if len(ts) >= 2:
                spreads.append(max(ts) / min(ts) - 1)
    return max(spreads) if spreads else None


def _setup(e: _Engines, meta: Mapping[str, Any]) -> str:
    sizes = [f"{e.name(m)} has {_fmt(e.params(m))} parameters" for m in e.models if e.params(m)]
    text = ""
    if sizes:
        text += _join(sizes) + ". "
    reps = []
    if "reps" in e.df.columns:
        for m in e.models:
            r = e.df.loc[e.df["model"] == m, "reps"].dropna()
            if len(r):
                reps.append(f"{int(r.iloc[0])} for {e.name(m)}")
    text += ("Every configuration ran in a fresh process; a step's time is the median of the timed steps"
             + (f" ({_join(reps)})" if reps else "") + f". {provenance(meta)}\n")
    return text


def _engine_figures(e: _Engines, meta: Mapping[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)

    from . import style

    style.use()
    files = []
    methods = [m for m in ENGINE_METHODS if any(e.has((mod, m, k)) for mod in e.models for k in e.ks)]

    # Figure: cost of one step in backprop steps, one panel per model
    nrows = (len(e.models) + 2) // 2
    fig, axes = style.subplots(nrows, 2, aspect=0.75)
    flat = axes.ravel()
    for ax, model in zip(flat, e.models):
        _bars(ax, methods, e.ks, lambda meth, k, model=model: e.x_bp(model, meth, k))
        ax.set_yscale("log")
        ax.axhline(1.0, **style.line_kw("BP", marker=None, linewidth=1.0, label="one backprop step"))
        ax.axhline(e.x_bp(model, "forward"), color=style.color("FG"), linestyle=":", linewidth=1.2,
                   label="one forward pass")
        ax.set_title(e.name(model))
        ax.set_ylabel("cost (backprop steps)")
        ax.tick_params(axis="x", labelrotation=30)
    handles, labels = flat[0].get_legend_handles_labels()
    for ax in flat[len(e.models):]:
        ax.axis("off")
    if len(e.models) % 2:
        flat[-1].legend(handles, labels, loc="center")
    else:
        fig.legend(handles, labels, loc="outside lower center", ncols=3)
    files += _publish(
        fig, out_dir, "engines_cost", "fig_cost.md", "fig-engines-cost",
        "Bar charts, one panel per network, of the time of one training step divided by the time of one "
        "backprop step, on a log axis, for the engines sim, fwd-loop, fwd-vmap, fwd-auto and for the tangent "
        "sampling alone, with one coloured bar per number of tangents K; a black line marks one backprop step "
        "and a dotted grey line one forward pass.",
        "Cost of one training step (engine step plus optimiser step) in backprop steps, for each engine and "
        "number of tangents $K$ (bar colour: $K = 1$ grey, larger $K$ in the book's colour for FROG with $K$ "
        "tangents, since the benchmark aggregates by projection). `sample` is the tangent sampling alone, which "
        "every `sim` and `fwd` step contains. Black line: one backprop step; dotted grey line: one forward "
        "pass without gradient tracking. Log scale.", meta)

    # Figure: loop vs batched JVPs
    names = [e.name(m) for m in e.models]
    by_name = dict(zip(names, e.models))

    def ratio(num, den):
        return lambda n, k: e.t(by_name[n], num, k) / e.t(by_name[n], den, k)

    fig = _bar_pair(names, e.ks, [("fwd-loop ÷ fwd-vmap", ratio("fwd-loop", "fwd-vmap")),
                                  ("fwd-loop ÷ fwd-auto", ratio("fwd-loop", "fwd-auto"))],
                    "loop time ÷ batched time", hline=1.0)
    files += _publish(
        fig, out_dir, "engines_batching", "fig_batching.md", "fig-engines-batching",
        "Two bar charts of the time of the fwd-loop step divided by the time of the fwd-vmap step (left) and of "
        "the fwd-auto step (right), for each network, one coloured bar per number of tangents K, with a dashed "
        "line at one.",
        "How much batching the $K$ Jacobian-vector products saves: time of a `fwd-loop` step (one JVP per "
        "tangent) divided by the time of a `fwd-vmap` step (all $K$ tangents in one `vmap` call, left) and of a "
        "`fwd-auto` step (`vmap` over chunks of tangents, right). Above the dashed line the batched variant is "
        "faster. At $K = 1$ all variants run the same single JVP, so those bars show how much the timing of one "
        "configuration varies between processes.", meta)

    # Figure: share of the step spent sampling
    fig = _bar_pair(names, e.ks, [(f"share of a {m} step", lambda n, k, m=m: 100 * ratio("sample", m)(n, k))
                                  for m in ("sim", "fwd-auto")], "tangent sampling (% of the step)")
    files += _publish(
        fig, out_dir, "engines_sampling", "fig_sampling.md", "fig-engines-sampling",
        "Two bar charts of the time of drawing the tangents as a percentage of a sim step (left) and of a "
        "fwd-auto step (right), for each network, one coloured bar per number of tangents K.",
        "Time spent drawing the $K n$ normal tangent entries ($n$ parameters), as a percentage of a `sim` step "
        "(left) and of a `fwd-auto` step (right), both timed separately in fresh processes.", meta)
    return files


def _sampling(e: _Engines) -> str:
    k = max(e.ks)
    parts = []
    for m in e.models:
        n = e.params(m)
        if n and e.has((m, "sample", k), (m, "fwd-vmap", k)):
            parts.append(f"{_fmt(k * n, 3)} normal numbers for {e.name(m)}, drawn in {_fmt(e.t(m, 'sample', k))} s "
                         f"of a {_fmt(e.t(m, 'fwd-vmap', k))}-s `fwd-vmap` step")
    if not parts:
        return ""
    return (f"At $K = {k}$ that is " + _join(parts) + " ({numref}`fig-engines-sampling`).\n")


def _fc_counts(e: _Engines) -> tuple[int, int] | None:
    """Multiply-adds per sample of FC-1024's forward pass (F) and of one weight tangent's JVP part (T)."""
    layers = list(zip(FC_LAYERS[:-1], FC_LAYERS[1:]))
    if e.params("fc") != sum(i * o + o for i, o in layers):
        return None  # not the network the count is for
    f = sum(i * o for i, o in layers)
    # first layer: the input has no tangent, only x·Ẇᵀ; later layers: ẋWᵀ + xẆᵀ
    t = layers[0][0] * layers[0][1] + sum(2 * i * o for i, o in layers[1:])
    return f, t


def _batching(e: _Engines) -> str:
    k = max(e.ks)
    counts = _fc_counts(e)
    text = ""
    if counts:
        f, t = counts
        bound = k * (f + t) / (f + k * t)
        text += ("For FC-1024 (layers " + " → ".join(map(str, FC_LAYERS)) + ") counting multiply-adds per sample "
                 "gives\n\n$$\n\\begin{aligned}\n\\frac{\\text{loop}}{\\text{vmap}} &= \\frac{K\\,(F + T)}{F + K\\,T}"
                 f" \\approx {_fmt(bound, 2)}\\\\\n&\\text{{at }} K = {k},\\ F \\approx {_fmt(f / 1e6, 3)}\\,"
                 f"\\text{{M}},\\ T \\approx {_fmt(t / 1e6, 3)}\\,\\text{{M}},\n\\end{{aligned}}\n$$\n\n"
                 "so on one thread `vmap` can only remove the repeated primal pass and the per-call overhead.")
    if e.has(("fc", "fwd-loop", k), ("fc", "fwd-vmap", k), ("fc", "sample", k)):
        lp, vm, sm = e.t("fc", "fwd-loop", k), e.t("fc", "fwd-vmap", k), e.t("fc", "sample", k)
        text += (f" The measured ratio at $K = {k}$ is {_fmt(lp / vm)}, sampling included; without the sampling "
                 f"both variants share it is ({_fmt(lp)} − {_fmt(sm)}) / ({_fmt(vm)} − {_fmt(sm)}) ≈ "
                 f"{_fmt((lp - sm) / (vm - sm), 2)}. Sampling also bounds what any batching could achieve: even "
                 f"JVPs that cost nothing would make the loop at most {_fmt(lp / sm, 2)} times slower than "
                 "the batched step.")
    return text.strip() + "\n" if text else ""


def _auto(e: _Engines) -> str:
    k = max(e.ks)
    rows = [(m, e.t(m, "fwd-vmap", k), e.t(m, "fwd-loop", k), e.t(m, "fwd-auto", k)) for m in e.models
            if e.has((m, "fwd-vmap", k), (m, "fwd-loop", k), (m, "fwd-auto", k))]
    if not rows:
        return ""
    parts = [f"{e.name(m)}: unchunked `vmap` {_fmt(v)} s, loop {_fmt(lp)} s, chunked {_fmt(a)} s"
             for m, v, lp, a in rows]
    vmap_slow = [e.name(m) for m, v, lp, _ in rows if v > lp]
    best = [e.name(m) for m, v, lp, a in rows if a <= min(v, lp)]
    text = f"Measured at $K = {k}$ ({'; '.join(parts)}): "
    text += ("the unchunked `vmap` of all tangents is slower than the loop on " + _join(vmap_slow)
             if vmap_slow else "the unchunked `vmap` of all tangents is never slower than the loop")
    text += ("; the chunked rule is the fastest of the three on " + _join(best) + "." if best else
             "; the chunked rule is not the fastest variant on any network here.")
    return text + "\n"


def _vit(e: _Engines) -> str:
    if "vit" not in e.models:
        return ""
    per_jvp = [e.x_fwd("vit", "fwd-loop", k) / k for k in e.ks if e.has(("vit", "fwd-loop", k))]
    k = max(e.ks)
    if not per_jvp or not e.has(("vit", "sim", k), ("vit", "bp", 0)):
        return ""
    fwd = [e.x_bp("vit", m, k) for m in ("fwd-loop", "fwd-vmap", "fwd-auto") if e.has(("vit", m, k))]
    return (f"In the loop one JVP of the ViT costs {_fmt(min(per_jvp), 2)} to {_fmt(max(per_jvp), 2)} forward "
            f"passes, so real forward mode at $K = {k}$ costs {_fmt(min(fwd), 2)} to {_fmt(max(fwd), 2)} "
            "backprop steps depending on the variant, "
            f"while `sim` costs {_fmt(e.x_bp('vit', 'sim', k), 2)}.\n")


def _memory(e: _Engines) -> str:
    k = max(e.ks)
    n = e.params("resnet18")
    if not n:
        return ""
    return (f"For ResNet18 at $K = {k}$ the $K n$ weight tangents alone take {_fmt(4 * k * n / 1e9, 2)} GB in "
            "float32.\n")


def _tables(e: _Engines, meta: Mapping[str, Any]) -> str:
    import pandas as pd

    from .paper import markdown_table

    ref = pd.DataFrame([{"network": e.name(m), "parameters": e.params(m) or float("nan"),
                         "forward (s)": e.t(m, "forward"), "backprop (s)": e.t(m, "bp")} for m in e.models])
    cols = ["network"] + (["parameters"] if ref["parameters"].notna().any() else []) + ["forward (s)",
                                                                                      "backprop (s)"]
    text = (":::{dropdown} All measured step times (seconds per step)\n\n"
            "One forward pass (no gradient tracking) and one backprop step:\n\n"
            + markdown_table(ref, cols) + "\n")
    for m in e.models:
        rows = []
        for meth in ENGINE_METHODS:
            vals = {f"K = {k}": e.t(m, meth, k) for k in e.ks}
            if any(math.isfinite(v) for v in vals.values()):
                rows.append({"engine": meth, **vals})
        if rows:
            text += f"**{e.name(m)}**, seconds per step:\n\n" + markdown_table(pd.DataFrame(rows)) + "\n"
    text += f"*{provenance(meta)}*\n:::\n"
    return text


# ----------------------------------------------------------------------------- the authors' code side by side

def _reference_part(out_dir: Path, results) -> Path:
    import pandas as pd

    from .paper import markdown_table

    try:
        df, meta = read_benchmark("reference", results, required=("benchmark", "side", "implementation", "config",
                                                                   "median_s", "speedup_vs_authors"))
    except BenchmarkMissing as exc:
        return _write(out_dir / "reference.md", _missing_note(
            "reference", str(exc), "python benchmarks/bench_reference.py --threads 1"))
    if not meta.get("date") and "timestamp" in df.columns:
        meta = {**meta, "date": str(df["timestamp"].iloc[0])}
    if not meta.get("machine") and "machine" in df.columns:
        meta = {**meta, "machine": {"description": str(df["machine"].iloc[0])}}
    for col, key in (("torch_version", "torch"), ("threads", "threads"), ("our_commit", "git_commit")):
        if not meta.get(key) and col in df.columns:
            v = df[col].iloc[0]
            meta = {**meta, key: int(v) if col == "threads" else str(v)}
    text = ""
    for bench, d in df.groupby("benchmark", sort=False):
        configs = list(dict.fromkeys(d["config"].astype(str)))
        t = pd.DataFrame({"side": d["side"], "implementation": d["implementation"], "s": d["median_s"],
                          "× forward": d["x_forward"] if "x_forward" in d else float("nan"),
                          "vs authors": d["speedup_vs_authors"]})
        cols = ["side", "implementation", "s"] + (["× forward"] if t["× forward"].notna().any() else []) + \
               ["vs authors"]
        text += f"**{bench}** ({'; '.join(configs)}):\n\n" + markdown_table(t, cols) + "\n"
    text += f"*{provenance(meta)}*\n"
    return _write(out_dir / "reference.md", text)


# ----------------------------------------------------------------------------- the tangent-parallel page

DISTRIBUTED_COMMAND = "python benchmarks/bench_distributed.py --out results/benchmarks/distributed/distributed.csv"


def write_tangent_parallel(book: str | os.PathLike, results: str | os.PathLike | None = None) -> list[Path]:
    """``<book>/_generated/tangent_parallel/measured.md``: the measured scaling table of
    ``results/benchmarks/distributed/distributed.csv`` (or a note saying how to measure it)."""
    import pandas as pd

    from .paper import markdown_table

    path = Path(book) / GENERATED / "tangent_parallel" / "measured.md"
    try:
        df, meta = read_benchmark("distributed", results, required=("k", "world", "engine", "gram", "seconds"))
    except BenchmarkMissing as exc:
        return [_write(path, _missing_note("distributed", str(exc), DISTRIBUTED_COMMAND))]
    if "error" in df.columns:
        df = df[df["error"].isna()]
    keep = ["aggregation", "k", "world", "engine", "gram", "seconds", "speedup", "efficiency"]
    t = df[[c for c in keep if c in df.columns]].rename(columns={
        "aggregation": "aggregation", "k": "K", "world": "W", "seconds": "s/step", "speedup": "speed-up",
        "efficiency": "efficiency"})
    if t.get("aggregation") is not None and t["aggregation"].nunique() == 1:
        t = t.drop(columns="aggregation")
    t = t.iloc[:, :7]
    text = ""
    best = df[(df["world"] > 1) & df.get("speedup", pd.Series(dtype=float)).notna()] if "speedup" in df else None
    if best is not None and len(best):
        r = best.loc[best["k"].idxmax()]
        text += (f"With $W = {int(r['world'])}$ processes at $K = {int(r['k'])}$ the step is {_fmt(r['speedup'])} "
                 f"times as fast as the faster single-process engine (efficiency {_fmt(r['efficiency'])}).\n\n")
    text += markdown_table(t) + f"\n*{provenance(meta)}*\n"
    return [_write(path, text)]
