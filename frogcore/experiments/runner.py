"""The chapter runner: one way to resolve a profile, validate parameters, seed, pick threads and a
device, and store results, for every chapter of the book.

A *chapter* is one notebook: ``notebooks/X.ipynb`` ↔ ``frogcore/experiments/X.py`` ↔ ``results/X/``.
Its module defines ``CHAPTER = Chapter(section="X", experiments={...})``; each :class:`Experiment`
is one stored result (``results/X/<profile>/<device>/<name>*.csv``) with a table of profiles and a
``compute(params, device, seed)`` that never sees the profile's name::

    from frogcore.experiments import frog_4_2
    res = frog_4_2.CHAPTER.run("closed_form", profile="smoke", device="cpu")
    res["runs"]          # a pandas DataFrame

:func:`run` applies ONE override rule (a keyword replaces the profile's value; ``None`` keeps it;
an unknown keyword is an error that lists the allowed ones), ONE validation (the experiment's
``check``), ONE seed (an integer ≥ 0; computations derive every stream from it with
:func:`frogcore.seeds.derive`), the profile's torch thread count, and the device, then calls the
results store. Runs whose parameters or seed differ from the profile's land in their own
``variants/<tag>`` folder and never replace the profile's results. Options that do not change the
numbers (``runtime``: e.g. ``workers``, ``download``) are not part of the key; a computation reads
them, and its checkpoint folder, from :func:`context`.

**Cells** (for :mod:`frogcore.sweep`): an experiment whose grid splits into independent pieces declares
``cells(params) -> [cell, ...]``, each cell a dict of parameter overrides that selects one piece (e.g.
``{"functions": ["sphere"], "n_grid": [16]}``); keys that are not parameters are *selectors* the
computation reads from ``context().cell`` (e.g. ``{"seeds": [1]}``). :func:`compute_cell` computes one
cell with the experiment's own ``compute`` on the cell's parameters (validated by ``check``), the run's
seed, device and threads; :func:`store_merged` merges the cells' tables (``merge``, default
:func:`concat_cells`: every table concatenated in cell order) and stores them through the results store
under the run's key, exactly where and as :func:`run` would, so the merged run loads as an ordinary
cache hit. :func:`plan` resolves a run (parameters, key, folders) without computing anything.
"""
from __future__ import annotations

import contextlib
import contextvars
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import check_choice, check_positive_int, check_profile, resolve_device
from ..results import REPO_ROOT, StoredResult, _jsonable, recompute_forced, run_cached, run_dir, variant_tag

__hash_role__ = "infrastructure"  # moves computations around; never changes their numbers (results.code_hash)
__all__ = ["Chapter", "Experiment", "RunContext", "RunPlan", "run", "plan", "context", "torch_threads",
           "checkpoint_root", "cells", "compute_cell", "concat_cells", "store_merged"]


@dataclass(frozen=True)
class Experiment:
    """One stored result of a chapter.

    ``profiles``: ``{"smoke": {...}, "default": {...}, "paper": {...}}``, the parameters of each profile.
    ``compute(params, device, seed)`` returns a DataFrame or ``{table: DataFrame}``.
    ``check(params)`` validates (ValueError naming the parameter) and returns the normalised parameters.
    ``runtime``: options that do not change the numbers, with their defaults (type-checked by them).
    ``threads``: torch intra-op threads per profile (missing or ``None``: torch's setting).
    ``cells(params)``: the independent cells of the grid of ``params`` (see the module docstring), in the
    order in which ``merge`` assembles them; ``None``: the experiment runs only as a whole.
    ``merge(list_of_cell_tables)``: the run's tables from every cell's ``{table: DataFrame}`` (cell order);
    ``None``: :func:`concat_cells`. A merged table must equal the serial run's table byte for byte.
    """

    profiles: Mapping[str, Mapping[str, Any]]
    compute: Callable[..., Any]
    check: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    runtime: Mapping[str, Any] = field(default_factory=dict)
    threads: Mapping[str, int | None] = field(default_factory=dict)
    cells: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
    merge: Callable[[list[dict[str, pd.DataFrame]]], Any] | None = None

    def resolve(self, profile: str, overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(params, runtime)`` of ``profile`` with ``overrides`` applied and validated."""
        check_profile(profile)
        if profile not in self.profiles:
            raise ValueError(f"profile={profile!r} is not available for this experiment; allowed values: "
                             f"{', '.join(repr(p) for p in self.profiles)}")
        params = dict(self.profiles[profile])
        runtime = {"threads": None, **self.runtime}
        allowed = sorted(set(params) | set(runtime))
        for key, value in overrides.items():
            if key not in params and key not in runtime:
                raise ValueError(f"unknown parameter {key!r}; allowed parameters: {', '.join(allowed)}")
            if value is None:
                continue
            if key in runtime:
                default = runtime[key]
                if isinstance(default, bool) and not isinstance(value, bool):
                    raise ValueError(f"{key} must be True or False; got {value!r}")
                if key == "threads" or (isinstance(default, int) and not isinstance(default, bool)):
                    value = check_positive_int(key, value)
                runtime[key] = value
            else:
                params[key] = value
        if self.check is not None:
            params = self.check(params)
        return params, runtime


@dataclass(frozen=True)
class Chapter:
    """A notebook's experiments; ``section`` is the notebook's, the module's and the results folder's name."""

    section: str
    experiments: Mapping[str, Experiment]
    module: str = ""

    def __post_init__(self):
        if not self.module:
            object.__setattr__(self, "module", f"frogcore.experiments.{self.section}")

    def run(self, name: str, profile: str = "default", device: str | torch.device = "auto", seed: int = 0,
            **overrides: Any) -> StoredResult:
        """:func:`run` this chapter's experiment ``name``."""
        return run(self, name, profile, device, seed, **overrides)

    def params(self, name: str, profile: str = "default", **overrides: Any) -> dict[str, Any]:
        """The validated parameters a run would use (nothing is computed)."""
        return self.experiment(name).resolve(profile, overrides)[0]

    def experiment(self, name: str) -> Experiment:
        check_choice("experiment", name, tuple(self.experiments))
        return self.experiments[name]


@dataclass(frozen=True)
class RunContext:
    """What a running computation may read besides its parameters (see :func:`context`)."""

    section: str
    name: str
    runtime: Mapping[str, Any]
    checkpoint_dir: Path
    force: bool
    cell: Mapping[str, Any] | None = None  # the cell being computed (None: the whole run)


_CONTEXT: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("frog_run_context", default=None)


def context() -> RunContext:
    """The context of the running chapter computation (runtime options, checkpoint folder)."""
    ctx = _CONTEXT.get()
    if ctx is None:
        raise RuntimeError("frogcore.experiments.runner.context() is only available inside a chapter computation")
    return ctx


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` torch intra-op threads (``None``: unchanged), restoring the setting afterwards."""
    if n is None:
        yield
        return
    n = check_positive_int("threads", n)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def checkpoint_root() -> Path:
    """``$FROG_CHECKPOINT_DIR`` if set, else ``checkpoints/`` at the repository root (git-ignored)."""
    import os

    env = os.environ.get("FROG_CHECKPOINT_DIR")
    return Path(env) if env else REPO_ROOT / "checkpoints"


def check_checkout(cwd: str | Path | None = None) -> None:
    """Refuse to run when the working folder lies inside ANOTHER checkout of this project than the one
    frogcore was imported from (e.g. a notebook opened from ``other/notebooks/`` with a virtual
    environment whose editable install points here): its code and its ``results/`` would not match."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "frogcore").is_dir() and (folder / "notebooks").is_dir():
            if folder.resolve() != REPO_ROOT.resolve():
                raise RuntimeError(
                    f"this session runs in the checkout {folder} but imports frogcore from {REPO_ROOT}: results and "
                    f"code would come from different checkouts. Install this checkout into the environment "
                    f"(`pip install -e {folder}`, or run `make lab` / `scripts/env.sh` there) and restart the kernel.")
            return


@dataclass(frozen=True)
class RunPlan:
    """A resolved run: what :func:`run` would compute and where it would store it (see :func:`plan`)."""

    chapter: Chapter
    name: str
    experiment: Experiment
    profile: str
    device: torch.device
    seed: int
    params: dict[str, Any]
    runtime: dict[str, Any]
    threads: int | None
    variant: bool
    force: bool
    root: str | None
    key: dict[str, Any]
    checkpoint_dir: Path

    @property
    def folder(self) -> Path:
        """The folder of the run's stored tables (``results/<section>/<profile>/<device>[/variants/<tag>]``)."""
        return run_dir(self.chapter.section, self.profile, self.device.type,
                       variant_tag(self.key) if self.variant else None, self.root)

    def context(self, cell: Mapping[str, Any] | None = None) -> RunContext:
        return RunContext(self.chapter.section, self.name, dict(self.runtime), self.checkpoint_dir, self.force,
                          None if cell is None else dict(cell))


def plan(chapter: Chapter, name: str, profile: str = "default", device: str | torch.device = "auto", seed: int = 0,
         *, root: str | None = None, force: bool | None = None, check_device: bool = True,
         **overrides: Any) -> RunPlan:
    """Resolve a run as :func:`run` does (override rule, validation, seed, threads, device, key, variant,
    checkpoint folder) without computing or loading anything.

    ``check_device=False`` accepts ``device="cuda"`` on a machine without CUDA (planning a sweep on a
    cluster's login node whose cells run on GPU nodes).
    """
    check_checkout()
    check_injected_parameters()  # a misspelled papermill -p NAME fails here instead of running with defaults
    exp = chapter.experiment(name)
    dev = torch.device("cuda") if not check_device and device in ("cuda", torch.device("cuda")) \
        else resolve_device(device)
    seed = check_positive_int("seed", seed, minimum=0)
    params, runtime = exp.resolve(profile, overrides)
    default_params, _ = exp.resolve(profile, {})
    variant = seed != 0 or _jsonable(params) != _jsonable(default_params)
    threads = runtime.pop("threads", None)
    threads = exp.threads.get(profile) if threads is None else threads
    force = recompute_forced() if force is None else bool(force)
    key = _jsonable({"section": chapter.section, "name": name, "profile": profile, "device": dev.type,
                     "seed": seed, "params": params})
    tag = variant_tag(key) if variant else "default"
    ckpt = checkpoint_root() / chapter.section / profile / dev.type / tag / name
    return RunPlan(chapter, name, exp, profile, dev, seed, params, runtime, threads, variant, force,
                   None if root is None else str(root), key, ckpt)


def run(chapter: Chapter, name: str, profile: str = "default", device: str | torch.device = "auto", seed: int = 0,
        *, root: str | None = None, force: bool | None = None, **overrides: Any) -> StoredResult:
    """Run (or load) experiment ``name`` of ``chapter`` at ``profile`` on ``device`` with ``seed``.

    ``overrides`` replace profile parameters (or set runtime options such as ``workers``/``threads``);
    ``force`` (default: ``$FROG_RECOMPUTE``) recomputes even when stored results match, including
    any training checkpoints of the run.
    """
    p = plan(chapter, name, profile, device, seed, root=root, force=force, **overrides)

    def compute():
        if p.force and p.checkpoint_dir.exists():
            shutil.rmtree(p.checkpoint_dir)  # a forced re-run must not replay finished training from checkpoints
        token = _CONTEXT.set(p.context())
        try:
            with torch_threads(p.threads):
                return p.experiment.compute(p.params, p.device, p.seed)
        finally:
            _CONTEXT.reset(token)

    return _store(p, compute)


def _store(p: RunPlan, compute: Callable[[], Any]) -> StoredResult:
    return run_cached(p.chapter.section, p.name, compute, params=p.params, profile=p.profile, device=p.device,
                      seed=p.seed, code=[p.chapter.module], root=p.root, force=p.force, variant=p.variant)


# ----------------------------------------------------------------------------- cells

def cells(p: RunPlan) -> list[dict[str, Any]]:
    """The cells of a planned run (``experiment.cells(params)``), checked: dicts of JSON values, no duplicates,
    parameter keys only among the experiment's parameters or selectors (other keys), no runtime options."""
    if p.experiment.cells is None:
        raise ValueError(f"experiment {p.chapter.section}.{p.name} declares no cells; it runs only as a whole")
    out, seen = [], set()
    for i, cell in enumerate(p.experiment.cells(p.params)):
        if not isinstance(cell, Mapping) or not cell:
            raise ValueError(f"cells()[{i}] must be a non-empty dict of parameter overrides; got {cell!r}")
        bad = sorted(set(cell) & (set(p.runtime) | {"threads"}))
        if bad:
            raise ValueError(f"cells()[{i}] sets runtime options {bad}; a cell may set parameters and selectors only")
        cell = _jsonable(dict(cell))
        ident = repr(cell)
        if ident in seen:
            raise ValueError(f"cells()[{i}] repeats the cell {cell!r}")
        seen.add(ident)
        out.append(cell)
    if not out:
        raise ValueError(f"experiment {p.chapter.section}.{p.name} has no cells for these parameters")
    return out


def cell_params(p: RunPlan, cell: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of one cell: the run's parameters with the cell's parameter keys replaced, validated."""
    params = {**p.params, **{k: v for k, v in cell.items() if k in p.params}}
    return p.experiment.check(params) if p.experiment.check is not None else params


def compute_cell(p: RunPlan, cell: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Compute one cell with the experiment's ``compute`` (the run's device, seed, threads and runtime options;
    ``context().cell`` is the cell); returns ``{table: DataFrame}`` (``""`` for a single-table experiment)."""
    params = cell_params(p, cell)
    token = _CONTEXT.set(p.context(cell))
    try:
        with torch_threads(p.threads):
            out = p.experiment.compute(params, p.device, p.seed)
    finally:
        _CONTEXT.reset(token)
    return _as_tables(out)


def _as_tables(out: Any) -> dict[str, pd.DataFrame]:
    tables = {"": out} if isinstance(out, pd.DataFrame) else dict(out)
    if not tables or not all(isinstance(t, pd.DataFrame) for t in tables.values()):
        raise TypeError("compute() must return a DataFrame or a non-empty dict of DataFrames")
    return tables


def concat_cells(cell_tables: list[Mapping[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """The default ``merge``: every table of the cells concatenated in cell order (index renumbered)."""
    if not cell_tables:
        raise ValueError("cannot merge zero cells")
    names = list(cell_tables[0])
    for i, t in enumerate(cell_tables):
        if list(t) != names:
            raise ValueError(f"cell {i} has the tables {list(t)}; cell 0 has {names}")
    return {n: pd.concat([t[n] for t in cell_tables], ignore_index=True) for n in names}


def store_merged(p: RunPlan, cell_tables: list[Mapping[str, pd.DataFrame]]) -> StoredResult:
    """Merge the cells' tables (``experiment.merge`` or :func:`concat_cells`) and store them as the run's
    result, through the results store under the run's key (a stored result that matches is returned as it is)."""
    merge = p.experiment.merge or concat_cells
    tables = _as_tables(merge(list(cell_tables)))
    if list(tables) == [""]:
        return _store(p, lambda: tables[""])
    return _store(p, lambda: tables)


def _assigned_names(source: str) -> set[str] | None:
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


def check_injected_parameters(history: Sequence[str] | None = None) -> None:
    """Refuse a papermill parameter that the notebook does not declare (e.g. ``-p num_sample 5`` for
    ``num_samples``), which papermill itself only warns about and then runs with the defaults.

    papermill executes the notebook's ``parameters`` cell and then the cell it injects (starting with the
    comment ``# Parameters``); ``history`` is the kernel's input history (IPython's ``In``; default: the
    running kernel's, nothing to check outside IPython or without an injected cell). A name assigned in the
    injected cell but not in the parameters cell before it raises ValueError naming it, the closest
    declared parameter and every declared one. Called by every chapter's ``run``.
    """
    import difflib

    if history is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return
        ip = get_ipython()
        history = ip.user_ns.get("In") if ip is not None else None
        if not history:
            return
    history = [h for h in history if isinstance(h, str)]
    injected = [i for i, h in enumerate(history) if h.startswith("# Parameters\n")]
    if not injected or injected[-1] == 0:
        return
    i = injected[-1]
    passed, declared = _assigned_names(history[i]), _assigned_names(history[i - 1])
    if not passed or not declared:
        return
    unknown = sorted(n for n in passed - declared if not n.startswith("PAPERMILL_"))
    if unknown:
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, sorted(declared), n=1)
            hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown notebook parameter {', '.join(hints)}; this notebook's parameters: "
                         f"{', '.join(sorted(declared))}")
