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
"""
from __future__ import annotations

import contextlib
import contextvars
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import check_choice, check_positive_int, check_profile, resolve_device
from ..results import REPO_ROOT, StoredResult, _jsonable, recompute_forced, run_cached, variant_tag

__all__ = ["Chapter", "Experiment", "RunContext", "run", "context", "torch_threads", "checkpoint_root"]



@dataclass(frozen=True)
class Experiment:
    """One stored result of a chapter.

    ``profiles``: ``{"smoke": {...}, "default": {...}, "paper": {...}}``, the parameters of each profile.
    ``compute(params, device, seed)`` returns a DataFrame or ``{table: DataFrame}``.
    ``check(params)`` validates (ValueError naming the parameter) and returns the normalised parameters.
    ``runtime``: options that do not change the numbers, with their defaults (type-checked by them).
    ``threads``: torch intra-op threads per profile (missing or ``None``: torch's setting).
    """

    profiles: Mapping[str, Mapping[str, Any]]
    compute: Callable[..., Any]
    check: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    runtime: Mapping[str, Any] = field(default_factory=dict)
    threads: Mapping[str, int | None] = field(default_factory=dict)

    def resolve(self, profile: str, overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(params, runtime)`` of ``profile`` with ``overrides`` applied and validated."""
        check_profile(profile)
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


def run(chapter: Chapter, name: str, profile: str = "default", device: str | torch.device = "auto", seed: int = 0,
        *, root: str | None = None, force: bool | None = None, **overrides: Any) -> StoredResult:
    """Run (or load) experiment ``name`` of ``chapter`` at ``profile`` on ``device`` with ``seed``.

    ``overrides`` replace profile parameters (or set runtime options such as ``workers``/``threads``);
    ``force`` (default: ``$FROG_RECOMPUTE``) recomputes even when stored results match, including
    any training checkpoints of the run.
    """
    check_checkout()
    exp = chapter.experiment(name)
    dev = resolve_device(device)
    seed = check_positive_int("seed", seed, minimum=0)
    params, runtime = exp.resolve(profile, overrides)
    default_params, _ = exp.resolve(profile, {})
    variant = seed != 0 or _jsonable(params) != _jsonable(default_params)
    threads = runtime.pop("threads", None)
    threads = exp.threads.get(profile) if threads is None else threads
    force = recompute_forced() if force is None else bool(force)
    key = {"section": chapter.section, "name": name, "profile": profile, "device": dev.type, "seed": seed,
           "params": params}
    ckpt = checkpoint_root() / chapter.section / profile / dev.type / (variant_tag(key) if variant else "default") / name
    ctx = RunContext(chapter.section, name, dict(runtime), ckpt, force)

    def compute():
        if force and ckpt.exists():
            shutil.rmtree(ckpt)  # a forced re-run must not replay finished training from checkpoints
        token = _CONTEXT.set(ctx)
        try:
            with torch_threads(threads):
                return exp.compute(params, dev, seed)
        finally:
            _CONTEXT.reset(token)

    return run_cached(chapter.section, name, compute, params=params, profile=profile, device=dev, seed=seed,
                      code=[chapter.module], root=root, force=force, variant=variant)
