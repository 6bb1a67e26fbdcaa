"""Results store: tidy CSV tables plus a metadata JSON per run, written atomically and cached.

Layout::

    results/<section>/<profile>/<name>.csv              (one table)
    results/<section>/<profile>/<name>__<table>.csv     (several named tables)
    results/<section>/<profile>/<name>.meta.json        (parameters, seed, versions, hashes, times)
    results/<section>/<profile>/figures/<figure>.png    (see frogcore.plotting.save_figure)

A run is identified by its *key* (section, name, profile, device type, seed and parameters) and by
the *code hash* of the frogcore modules it depends on (the named modules plus everything they
import from frogcore, found by reading their import statements). :func:`run_cached` loads stored
tables when key and code hash match and recomputes otherwise, so the book rebuilds in minutes from
committed results while a changed parameter or changed library code re-runs.

Every file is written to a temporary file in the same folder and renamed into place; the metadata,
which lists the SHA-256 of each table, is written last. An exception during the computation or the
writing leaves no new file behind, and a table that does not match its recorded hash is treated as
missing.
"""
from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .config import check_profile

_PKG_DIR = Path(__file__).resolve().parent
REPO_ROOT = _PKG_DIR.parent


def results_root(root: str | os.PathLike | None = None) -> Path:
    """Where results live: ``root``, else ``$FROG_RESULTS_DIR``, else ``<repo>/results``.

    ``<repo>`` is the checkout frogcore was imported from (an editable install); for a non-editable
    install it is the current directory.
    """
    if root is not None:
        return Path(root)
    env = os.environ.get("FROG_RESULTS_DIR")
    if env:
        return Path(env)
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / "results"
    return Path.cwd() / "results"


# ----------------------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def csv_bytes(df: pd.DataFrame) -> bytes:
    """Deterministic CSV serialisation (no index, '\\n' line ends, round-trip float format)."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode()


# ----------------------------------------------------------------------------- code hash

def _module_file(module: str) -> Path:
    if module == "frogcore":
        return _PKG_DIR / "__init__.py"
    if not module.startswith("frogcore."):
        raise ValueError(f"code modules must be frogcore modules; got {module!r}")
    rel = Path(*module.split(".")[1:])
    for cand in (_PKG_DIR / rel.with_suffix(".py"), _PKG_DIR / rel / "__init__.py"):
        if cand.exists():
            return cand
    raise ValueError(f"unknown frogcore module {module!r}")


def _imports_of(module: str, file: Path) -> set[str]:
    tree = ast.parse(file.read_text())
    is_pkg = file.name == "__init__.py"
    package = module if is_pkg else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "frogcore")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "frogcore":
                continue
            found.add(target)
            for a in node.names:  # "from . import tangents" imports a submodule
                sub = f"{target}.{a.name}"
                with contextlib.suppress(ValueError):
                    _module_file(sub)
                    found.add(sub)
    return found


def module_closure(modules: Iterable[str]) -> list[str]:
    """The given frogcore modules plus every frogcore module they import, transitively."""
    todo, seen = list(modules), set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(_imports_of(m, _module_file(m)) - seen)
    return sorted(seen)


def code_hash(modules: Iterable[str] = ("frogcore",)) -> str:
    """SHA-256 over the source of ``modules`` and their frogcore imports (plus package data)."""
    h = hashlib.sha256()
    files = [_module_file(m) for m in module_closure(modules)]
    data = _PKG_DIR / "data"
    if data.is_dir():  # package data (e.g. the authors' learning-rate tables)
        files += sorted(p for p in data.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for f in files:
        h.update(f.relative_to(_PKG_DIR).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


# ----------------------------------------------------------------------------- metadata

def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _jsonable(obj: Any) -> Any:
    """Normalise parameters so that equal parameters compare equal after a JSON round trip."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.device):
        return obj.type
    if isinstance(obj, torch.dtype):
        return str(obj).replace("torch.", "")
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"parameter value {obj!r} of type {type(obj).__name__} cannot be stored as JSON")


@dataclass
class StoredResult:
    """Tables and metadata of one run; ``cached`` tells whether they were loaded from disk."""

    tables: dict[str, pd.DataFrame]
    meta: dict[str, Any]
    paths: dict[str, Path]
    cached: bool
    figures_dir: Path = field(default=Path("."))

    @property
    def table(self) -> pd.DataFrame:
        """The only table (raises if the run stored several)."""
        if len(self.tables) != 1:
            raise KeyError(f"this run stored several tables: {sorted(self.tables)}")
        return next(iter(self.tables.values()))

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]


def run_dir(section: str, profile: str, root: str | os.PathLike | None = None) -> Path:
    check_profile(profile)
    return results_root(root) / section / profile


def _table_paths(folder: Path, name: str, table_names: Iterable[str]) -> dict[str, Path]:
    names = list(table_names)
    if names == [""]:
        return {"": folder / f"{name}.csv"}
    return {t: folder / f"{name}__{t}.csv" for t in names}


def load(section: str, name: str, profile: str, root: str | os.PathLike | None = None) -> StoredResult | None:
    """Load a stored run if its metadata and every table (with matching hashes) exist."""
    folder = run_dir(section, profile, root)
    meta_path = folder / f"{name}.meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        paths = _table_paths(folder, name, meta["tables"].keys())
        tables = {}
        for t, p in paths.items():
            data = p.read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["tables"][t]["sha256"]:
                return None
            tables[t] = pd.read_csv(io.BytesIO(data))
    except (OSError, ValueError, KeyError):
        return None
    return StoredResult(tables, meta, paths, cached=True, figures_dir=folder / "figures")


def run_cached(
    section: str,
    name: str,
    compute: Callable[[], pd.DataFrame | Mapping[str, pd.DataFrame]],
    *,
    params: Mapping[str, Any],
    profile: str,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    code: Iterable[str] = ("frogcore",),
    root: str | os.PathLike | None = None,
    force: bool | None = None,
) -> StoredResult:
    """Return stored tables for this run, computing and storing them if needed.

    ``compute()`` returns one DataFrame or a dict ``{table_name: DataFrame}``. ``code`` names the
    frogcore modules the computation depends on (their frogcore imports are added automatically).
    ``force`` (default: ``$FROG_RECOMPUTE`` is set) recomputes even on a cache hit.
    """
    folder = run_dir(section, profile, root)
    device_type = device.type if isinstance(device, torch.device) else str(device)
    key = _jsonable({"section": section, "name": name, "profile": profile, "device": device_type,
                     "seed": seed, "params": dict(params)})
    code = list(code)
    chash = code_hash(code)
    if force is None:
        force = os.environ.get("FROG_RECOMPUTE", "") not in ("", "0")
    if not force:
        stored = load(section, name, profile, root)
        if stored is not None and stored.meta.get("key") == key and stored.meta.get("code_hash") == chash:
            return stored

    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    out = compute()
    elapsed = time.perf_counter() - t0
    tables = {"": out} if isinstance(out, pd.DataFrame) else dict(out)
    if not tables or not all(isinstance(t, pd.DataFrame) for t in tables.values()):
        raise TypeError("compute() must return a DataFrame or a non-empty dict of DataFrames")
    paths = _table_paths(folder, name, tables.keys())
    blobs = {t: csv_bytes(df) for t, df in tables.items()}
    meta = {
        "key": key,
        "code_hash": chash,
        "code": code,
        "code_modules": module_closure(code),
        "section": section, "name": name, "profile": profile, "device": device_type, "seed": seed,
        "params": key["params"],
        "tables": {t: {"file": paths[t].name, "rows": len(tables[t]),
                       "sha256": hashlib.sha256(b).hexdigest()} for t, b in blobs.items()},
        "frogcore_version": _version(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "compute_seconds": round(elapsed, 3),
    }
    for t, b in blobs.items():
        atomic_write_bytes(paths[t], b)
    atomic_write_bytes(folder / f"{name}.meta.json", (json.dumps(meta, indent=2) + "\n").encode())
    # read back through the same path as a cache hit so both return identical dtypes
    return StoredResult({t: pd.read_csv(io.BytesIO(b)) for t, b in blobs.items()}, meta, paths,
                        cached=False, figures_dir=folder / "figures")


def _version() -> str:
    from . import __version__
    return __version__
