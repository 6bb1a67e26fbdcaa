"""The notebook → results → book pipeline.

``python -m frogcore.pipeline book --profile default`` executes every notebook in ``notebooks/``
with papermill (the book build itself never executes notebooks) into ``book/executed/`` and then
builds the jupyter-book (1.x) HTML into ``book/_build/html``. Thanks to the results store, a
notebook whose parameters and code are unchanged loads its committed results and only re-plots.
At ``--profile default`` the chapters whose paper scale fits a laptop CPU (FROG 4.1-4.3, see
:data:`PAPER_SCALE_CHAPTERS`) run at ``paper``; ``--uniform`` runs every chapter at ``--profile``.

``python -m frogcore.pipeline execute NOTEBOOK --profile smoke --device cpu`` runs one notebook.
``--executor local|slurm`` (with the options of :mod:`frogcore.sweep`: ``--workers``, ``--partition``,
``--time``, ``--gpus``, ``--cpus``, ``--parallelism``, …) runs the notebooks as jobs, papermill inside each
job, e.g. every chapter at paper scale on a cluster::

    python -m frogcore.pipeline execute --profile paper --device cuda --executor slurm --partition gpu --gpus 1

Job logs go to ``<results>/_jobs/notebooks/``; a failed notebook fails the batch after every other job ended.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import DEVICES, PROFILES, check_choice, check_profile
from .results import REPO_ROOT, atomic_write_bytes

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
EXECUTED = "executed"  # folder inside the book tree that receives the executed notebooks

#: Chapters whose ``paper`` profile runs on a laptop CPU in minutes (FROG 4.1: seconds with the exact
#: reduced sampler; 4.2 and 4.3: minutes on two cores). A book built at the ``default`` profile shows these
#: chapters at the papers' full scale, from the committed ``results/<chapter>/paper/``; every other
#: chapter shows ``default``. A chapter's notebook, module and results folder share its name.
PAPER_SCALE_CHAPTERS = ("frog_4_1", "frog_4_2", "frog_4_3")


def chapter_profile(notebook: str | os.PathLike, profile: str) -> str:
    """The profile at which a book built at ``profile`` executes ``notebook``.

    ``default`` becomes ``paper`` for :data:`PAPER_SCALE_CHAPTERS`; ``smoke`` and ``paper`` apply to
    every chapter as they are.
    """
    check_profile(profile)
    return "paper" if profile == "default" and Path(notebook).stem in PAPER_SCALE_CHAPTERS else profile


def list_notebooks(directory: str | os.PathLike = NOTEBOOK_DIR) -> list[Path]:
    """Every ``*.ipynb`` in ``directory``, sorted by name."""
    return sorted(p for p in Path(directory).glob("*.ipynb") if not p.name.startswith(".") and ".failed" not in p.name)


def execute_notebook(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    profile: str = "default",
    device: str = "auto",
    parameters: Mapping[str, Any] | None = None,
    log_output: bool = False,
) -> Path:
    """Execute ``src`` with papermill into ``dst``, injecting ``profile``, ``device`` and ``parameters``.

    Runs in the notebook's own folder with the kernel ``python3`` (the running interpreter's).
    """
    import papermill as pm

    check_profile(profile)
    check_choice("device", device, DEVICES)
    src, dst = Path(src), Path(dst)
    declared = pm.inspect_notebook(str(src))
    unknown = sorted(set(parameters or {}) - set(declared))
    if unknown:
        raise ValueError(f"{src.name} has no parameter {', '.join(map(repr, unknown))}; its parameters: "
                         f"{', '.join(sorted(declared))}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "device": device, **dict(parameters or {})}
    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", cwd=str(src.parent),
                            progress_bar=False, log_output=log_output)
    except BaseException:
        # a failed chapter keeps its executed copy for inspection, renamed so that no book build picks it up
        if dst.exists():
            os.replace(dst, dst.with_name(dst.stem + ".failed.ipynb"))
        raise
    failed = dst.with_name(dst.stem + ".failed.ipynb")
    if failed.exists():
        failed.unlink()
    _show_one_parameters_cell(dst, params)
    return dst


def _show_one_parameters_cell(path: Path, params: Mapping[str, Any]) -> None:
    """The executed page shows ONE parameters cell: papermill's injected cell is removed from the page
    (tag ``remove-cell``) and the notebook's own parameters cell gets a first comment line with the values
    this run was given (e.g. ``profile="paper"``), so the reader sees both the defaults and what ran."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    given = ", ".join(f"{k}={v!r}" for k, v in params.items())
    changed = False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata.setdefault("tags", []).append("remove-cell")
            changed = True
        elif "parameters" in tags and not cell.source.startswith("# this page ran with"):
            cell.source = f"# this page ran with {given}; the notebook's defaults:\n" + cell.source
            changed = True
    if changed:
        atomic_write_bytes(path, nbformat.writes(nb).encode())


def execute_all(
    profile: str = "default",
    device: str = "auto",
    *,
    out_dir: str | os.PathLike = BOOK_DIR / EXECUTED,
    notebooks: Iterable[str | os.PathLike] | None = None,
    book_profiles: bool = True,
    parameters: Mapping[str, Any] | None = None,
    executor: Any = None,
    progress: bool = True,
) -> list[Path]:
    """Execute every notebook (or the given ones) into ``out_dir``; return the executed paths.

    With ``book_profiles`` (the default) each notebook runs at :func:`chapter_profile`, i.e. the
    paper-scale chapters run at ``paper`` when ``profile="default"``; without, all run at ``profile``.
    ``executor`` (a :class:`frogcore.sweep.Executor`, e.g. ``make_executor("slurm", partition="gpu")``)
    runs each notebook as a job (papermill inside the job); ``None`` runs them here, one after another.
    """
    out_dir = Path(out_dir)
    done, jobs = [], []
    for nb in (list_notebooks() if notebooks is None else [Path(p) for p in notebooks]):
        prof = chapter_profile(nb, profile) if book_profiles else check_profile(profile)
        t0 = time.perf_counter()
        import papermill as pm

        declared = pm.inspect_notebook(str(nb))
        extra = {k: v for k, v in (parameters or {}).items() if k in declared}  # e.g. download: where it applies
        if executor is not None:  # every notebook is inspected (and can fail) before anything is submitted
            jobs.append(dict(src=str(Path(nb).resolve()), dst=str((out_dir / nb.name).resolve()), profile=prof,
                             device=device, parameters=extra))
            continue
        done.append(execute_notebook(nb, out_dir / nb.name, profile=prof, device=device, parameters=extra))
        print(f"executed {nb.name} [{prof}, {device}] in {time.perf_counter() - t0:.1f} s", flush=True)
    if executor is not None:
        done = execute_jobs(jobs, executor, progress=progress)
    return done


def _execute_job(spec: Mapping[str, Any]) -> str:
    """One notebook inside a job (see :func:`execute_jobs`)."""
    t0 = time.perf_counter()
    out = execute_notebook(spec["src"], spec["dst"], profile=spec["profile"], device=spec["device"],
                           parameters=spec["parameters"], log_output=True)
    print(f"executed {Path(spec['src']).name} [{spec['profile']}, {spec['device']}] in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return str(out)


def execute_jobs(specs: list[Mapping[str, Any]], executor: Any, *, progress: bool = True) -> list[Path]:
    """Run notebook specs (``src, dst, profile, device, parameters``) as jobs on ``executor`` and wait for all;
    raise :class:`ChapterFailed` naming each failed notebook and its log."""
    from .results import results_root
    from .sweep import wait_jobs

    names = [Path(s["src"]).stem for s in specs]
    log_dir = results_root() / "_jobs" / "notebooks"
    try:
        jobs = executor.submit(_execute_job, specs, names=names, log_dir=log_dir)
        for j in jobs:
            print(f"submitted {j.name} ({executor.name} job {j.job_id}; log {j.log})", flush=True)
        outcomes = wait_jobs(jobs, progress=progress, desc="notebooks")
    except BaseException as exc:
        executor.close(exc)
        raise
    executor.close()
    failed = [f"{j.name}: {value} (log: {j.log})" for j, (ok, value) in zip(jobs, outcomes) if not ok]
    if failed:
        raise ChapterFailed(f"{len(failed)} of {len(jobs)} notebooks failed: " + "; ".join(failed))
    return [Path(value) for _, value in outcomes]


class ChapterFailed(RuntimeError):
    """An executed notebook holds an error: the book must not publish it."""


def notebook_failure(path: str | os.PathLike) -> str | None:
    """Why the executed notebook at ``path`` must not be published, or ``None`` if it ran cleanly.

    A notebook failed if papermill marked it (``metadata.papermill.exception``), if a cell has an error
    output, or if papermill left cells unexecuted after a failure (``metadata.papermill.status``).
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    pm = nb.metadata.get("papermill", {})
    if pm.get("exception"):
        return "papermill recorded an exception"
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell {i} raised {out.get('ename', 'an error')}: {out.get('evalue', '')}"[:400]
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        if status in ("failed", "pending", "running"):
            return f"cell {i} has papermill status {status!r}"
    return None


GENERATED = "_generated"  # folder inside the book tree with copies of stored tables that pages include


def copy_benchmark_tables(book: str | os.PathLike, results: str | os.PathLike | None = None) -> list[Path]:
    """Copy the committed benchmark tables (``results/benchmarks/**/*.csv``) into ``<book>/_generated/benchmarks/``,
    where book pages include them with ``{csv-table}`` (``:file:``): numbers on those pages come from the tables."""
    src = Path(results) if results is not None else REPO_ROOT / "results"
    src = src / "benchmarks"
    out = []
    dst_root = Path(book) / GENERATED / "benchmarks"
    if dst_root.exists():
        shutil.rmtree(dst_root)
    for f in sorted(src.rglob("*.csv")) if src.is_dir() else []:
        dst = dst_root / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
        out.append(dst)
        out += _summary_table(dst)
    return out


#: columns of a benchmark table that a book page shows (the rest — commits, versions — stay in the CSV)
SUMMARY_COLUMNS = ("benchmark", "side", "implementation", "config", "median_s", "x_forward", "speedup_vs_authors")


def _summary_table(path: Path) -> list[Path]:
    """``<name>__summary.csv`` beside a benchmark table that has :data:`SUMMARY_COLUMNS` (3 significant digits)."""
    import pandas as pd

    df = pd.read_csv(path)
    if not set(SUMMARY_COLUMNS) <= set(df.columns):
        return []
    small = df[list(SUMMARY_COLUMNS)].copy()
    for col in ("median_s", "x_forward", "speedup_vs_authors"):
        small[col] = small[col].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    dst = path.with_name(path.stem + "__summary.csv")
    small.to_csv(dst, index=False)
    return [dst]


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter_book.cli.main"]


def build_book(
    profile: str = "default",
    device: str = "auto",
    *,
    execute: bool = True,
    book_dir: str | os.PathLike | None = None,
    copy_sources: bool = True,
    notebooks: Iterable[str | os.PathLike] | None = None,
    book_profiles: bool = True,
    parameters: Mapping[str, Any] | None = None,
) -> Path:
    """Execute the notebooks (unless ``execute=False``) and build the HTML book; return its folder.

    ``book_dir`` builds in another folder (used by the tests, so that a smoke build does not touch
    ``book/``): the book sources are copied there first unless ``copy_sources=False`` (then the
    folder must already hold them, e.g. with notebooks executed into it).
    """
    check_profile(profile)
    target = BOOK_DIR if book_dir is None else Path(book_dir)
    if target != BOOK_DIR and copy_sources:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(BOOK_DIR, target, ignore=shutil.ignore_patterns("_build", EXECUTED))
    if execute:
        execute_all(profile, device, out_dir=target / EXECUTED, notebooks=notebooks, book_profiles=book_profiles,
                    parameters=parameters)
    from .bookgen import write_all

    write_all(target, profile, "cuda" if device == "cuda" else "cpu")
    missing = [nb.name for nb in list_notebooks() if not (target / EXECUTED / nb.name).exists()]
    if missing:
        raise FileNotFoundError(f"not executed yet (run without --skip-execute): {', '.join(missing)}")
    failed = {nb.name: why for nb in list_notebooks() if (why := notebook_failure(target / EXECUTED / nb.name))}
    if failed:
        lines = "; ".join(f"{name}: {why}" for name, why in failed.items())
        raise ChapterFailed(f"not building the book: executed chapters failed ({lines}); fix them and run "
                            "`python -m frogcore.pipeline execute NOTEBOOK` again")
    cmd = _jupyter_book() + ["build", str(target), "--builder", "html", "--warningiserror", "--keep-going"]
    proc = subprocess.run(cmd, cwd=target, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-20000:] + proc.stderr[-20000:])
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); its output is above")
    html = target / "_build" / "html"
    print(f"book built: {html / 'index.html'}")
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frogcore.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("book", help="execute all notebooks and build the HTML book")
    b.add_argument("--profile", default="default", choices=PROFILES)
    b.add_argument("--device", default="auto", choices=DEVICES)
    b.add_argument("--skip-execute", action="store_true", help="reuse book/executed/ as it is")
    b.add_argument("--uniform", action="store_true",
                   help="run every chapter at --profile (default: the paper-scale chapters 4.1-4.3 run at "
                        "'paper' when --profile is 'default')")
    e = sub.add_parser("execute", help="execute notebooks into book/executed/")
    e.add_argument("notebooks", nargs="*", help="notebook paths (default: all of notebooks/)")
    e.add_argument("--profile", default="default", choices=PROFILES)
    e.add_argument("--device", default="auto", choices=DEVICES)
    e.add_argument("--uniform", action="store_true", help="as for 'book'")
    from .sweep import add_executor_options

    add_executor_options(e, default=None, default_help="here, one notebook after another")
    for p in (b, e):
        p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                       help="a notebook parameter (YAML value, e.g. download=true), passed to every notebook that "
                            "declares it; repeatable")
    args = parser.parse_args(argv)
    params = parse_params(args.param)
    if args.command == "book":
        build_book(args.profile, args.device, execute=not args.skip_execute, book_profiles=not args.uniform,
                   parameters=params)
    else:
        executor = None
        if args.executor is not None:
            from .sweep import executor_from_args

            executor = executor_from_args(args)
        else:
            given = [o for o in ("workers", "threads", "partition", "time", "gpus", "cpus", "parallelism", "mem",
                                 "account", "qos", "setup") if getattr(args, o) is not None]
            if given:
                raise SystemExit(f"--{given[0]} needs --executor local or --executor slurm")
        execute_all(args.profile, args.device, notebooks=args.notebooks or None, book_profiles=not args.uniform,
                    parameters=params, executor=executor)
    return 0


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """``["download=true", "seed=1"]`` → ``{"download": True, "seed": 1}`` (values read as YAML)."""
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise SystemExit(f"--param must look like NAME=VALUE (e.g. download=true); got {item!r}")
        out[name.strip()] = yaml.safe_load(value)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
