"""Results store: tidy CSV tables plus a metadata JSON per run, written atomically and cached.

Layout (``<device>``: the device *type* the run computed on, ``cpu`` or ``cuda``)::

    results/<section>/<profile>/<device>/<name>.csv              (one table)
    results/<section>/<profile>/<device>/<name>__<table>.csv     (several named tables)
    results/<section>/<profile>/<device>/<name>.meta.json        (parameters, seed, versions, hashes, times)
    results/<section>/<profile>/<device>/figures/<figure>.png    (see frogcore.style.save)
    results/<section>/<profile>/<device>/variants/<tag>/…         (runs with non-default parameters or seed)

A run is identified by its *key* (section, name, profile, device type, seed and parameters) and by
the *code hash* of the frogcore modules its computation imports (:func:`code_hash`: the chapter
module plus every frogcore module it imports, transitively, read from the import statements and
hashed from the syntax tree without docstrings and comments). :func:`run_cached` loads stored
tables when key and code hash match and recomputes otherwise, so the book rebuilds in minutes from
committed results while a changed parameter or changed library code re-runs. A GPU run never
replaces the committed CPU results (another ``<device>`` folder), and a run with other parameters
than its profile's never replaces the profile's results (its own ``variants/<tag>`` folder, ``tag``
derived from the key).

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

__hash_role__ = "infrastructure"

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

def _module_file(module: str, pkg_dir: Path = _PKG_DIR) -> Path:
    pkg = pkg_dir.name
    if module == pkg:
        return pkg_dir / "__init__.py"
    if not module.startswith(pkg + "."):
        raise ValueError(f"code modules must be {pkg} modules; got {module!r}")
    rel = Path(*module.split(".")[1:])
    for cand in (pkg_dir / rel.with_suffix(".py"), pkg_dir / rel / "__init__.py"):
        if cand.exists():
            return cand
    raise ValueError(f"unknown {pkg} module {module!r}")


_PARSED: dict[tuple[str, int, int], ast.Module] = {}


def _parse(file: Path) -> ast.Module:
    """``ast.parse`` of ``file``, cached per process by (path, mtime, size): a sweep worker computes the code
    hash for every cell it runs, and parsing the closure each time costs a noticeable share of a small cell.
    The returned tree is shared: callers must not modify it."""
    st = file.stat()
    key = (str(file), st.st_mtime_ns, st.st_size)
    tree = _PARSED.get(key)
    if tree is None:
        tree = _PARSED[key] = ast.parse(file.read_text())
    return tree


def _is_module(module: str, pkg_dir: Path) -> bool:
    try:
        _module_file(module, pkg_dir)
        return True
    except ValueError:
        return False


def _imports_of(module: str, file: Path, pkg_dir: Path = _PKG_DIR) -> set[str]:
    """The package's modules imported anywhere in ``file`` (top level or inside functions).

    ``from pkg import sub`` counts as importing ``pkg.sub`` only (not the package's ``__init__``);
    ``from pkg.mod import name`` counts ``pkg.mod``.
    """
    pkg = pkg_dir.name
    tree = _parse(file)
    is_pkg = file.name == "__init__.py"
    package = module if is_pkg else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == pkg)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != pkg:
                continue
            subs = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}", pkg_dir)]
            found.update(subs)
            if len(subs) < len(node.names):  # some names are attributes of ``target`` itself
                found.add(target)
    return found


def _is_infrastructure(module: str, pkg_dir: Path) -> bool:
    """A module that declares ``__hash_role__ = "infrastructure"`` (the results store, the chapter runner, the
    sweep executors, worker pools): it moves computations around and never changes their numbers."""
    tree = _parse(_module_file(module, pkg_dir))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__hash_role__"
                                                for t in node.targets):
            return ast.literal_eval(node.value) == "infrastructure"
    return False


def module_closure(modules: Iterable[str], pkg_dir: Path = _PKG_DIR) -> list[str]:
    """The given modules plus every module of the package they import, transitively, except infrastructure
    modules (see :func:`_is_infrastructure`), whose imports are not followed either."""
    todo, seen, skipped = list(modules), set(), set()
    while todo:
        m = todo.pop()
        if m in seen or m in skipped:
            continue
        if _is_infrastructure(m, pkg_dir):
            skipped.add(m)
            continue
        seen.add(m)
        todo.extend(_imports_of(m, _module_file(m, pkg_dir), pkg_dir) - seen)
    return sorted(seen)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _data_files(tree: ast.Module) -> list[str]:
    """Package-data files a module declares with ``__hash_data__ = ("data/x.csv", ...)``."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__hash_data__"
                                                for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


_DUMPED: dict[tuple[str, int, int], tuple[str, list[str]]] = {}


def code_fingerprint(module: str, pkg_dir: Path = _PKG_DIR) -> str:
    """SHA-256 of one module's code: its syntax tree without docstrings (comments never reach the tree),
    plus the bytes of the package-data files it declares in ``__hash_data__``."""
    file = _module_file(module, pkg_dir)
    st = file.stat()
    key = (str(file), st.st_mtime_ns, st.st_size)
    if key not in _DUMPED:
        tree = ast.parse(file.read_text())  # a private tree: docstrings are stripped from it
        _DUMPED[key] = (ast.dump(_strip_docstrings(tree), include_attributes=False), _data_files(tree))
    dump, data = _DUMPED[key]
    h = hashlib.sha256(dump.encode())
    for rel in data:
        h.update(b"\0" + rel.encode() + b"\0" + (pkg_dir / rel).read_bytes())
    return h.hexdigest()


def code_hash(modules: Iterable[str] = ("frogcore",), pkg_dir: Path = _PKG_DIR) -> str:
    """SHA-256 over the code of ``modules`` and every package module they import (see :func:`code_fingerprint`).

    A docstring or comment edit does not change it; a change to the code of any imported module
    does; a module outside the import closure does not take part.
    """
    h = hashlib.sha256()
    for m in module_closure(modules, pkg_dir):
        h.update(m.encode() + b"\0" + code_fingerprint(m, pkg_dir).encode() + b"\0")
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

    @property
    def result_id(self) -> str:
        """:func:`result_id` of this run's metadata (what its figures carry, see :func:`stale_figures`)."""
        return result_id(self.meta)


#: PNG text keys under which a figure records the run it was drawn from: the run's name and its :func:`result_id`
FIGURE_RUN_KEY = "frog:run"
FIGURE_ID_KEY = "frog:result"


def result_id(meta: Mapping[str, Any]) -> str:
    """A short id of one stored run's content: its key, code hash and the sha256 of every table. Two runs
    with the same id stored the same tables; a figure drawn from a run carries the id (PNG text chunk
    :data:`FIGURE_ID_KEY`), so a figure left beside other tables can be told apart."""
    content = {"key": meta.get("key"), "code_hash": meta.get("code_hash"),
               "tables": {t: v.get("sha256") for t, v in sorted(meta.get("tables", {}).items())}}
    return hashlib.sha256(json.dumps(_jsonable(content), sort_keys=True).encode()).hexdigest()[:16]


def figure_record(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """``(run name, result id)`` a figure file records (``(None, None)``: nothing recorded or not a PNG)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", None) or im.info or {})
    except (OSError, ValueError):
        return None, None
    return text.get(FIGURE_RUN_KEY), text.get(FIGURE_ID_KEY)


def stale_figures(folder: str | os.PathLike, name: str, current_id: str | None) -> list[Path]:
    """Figures in ``<folder>/figures`` drawn from the run ``name`` but not from its tables with ``current_id``
    (figures of the folder's other runs, and figures that record no run, are left alone)."""
    figs = Path(folder) / "figures"
    if not figs.is_dir():
        return []
    out = []
    for p in sorted(figs.glob("*.png")):
        run, rid = figure_record(p)
        if run == name and rid != current_id:
            out.append(p)
    return out


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike):
    """An exclusive lock on one results folder (POSIX ``flock`` on the folder itself; no lock file):
    storing tables (with the removal of their stale figures) and storing a figure (with its check against
    the stored tables) each hold it, so the two never interleave between processes."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def current_result_id(folder: str | os.PathLike, name: str) -> str | None:
    """:func:`result_id` of the run stored now in ``folder`` under ``name`` (None: no readable metadata)."""
    try:
        return result_id(json.loads((Path(folder) / f"{name}.meta.json").read_text()))
    except (OSError, ValueError):
        return None


DEVICE_TYPES = ("cpu", "cuda")


def _device_type(device: str | torch.device) -> str:
    dt = device.type if isinstance(device, torch.device) else str(device)
    if dt not in DEVICE_TYPES:
        raise ValueError(f"device={dt!r} is not valid for a stored result; allowed values: 'cpu', 'cuda' "
                         "(resolve 'auto' with frogcore.config.resolve_device first)")
    return dt


def run_dir(section: str, profile: str, device: str | torch.device = "cpu", variant: str | None = None,
            root: str | os.PathLike | None = None) -> Path:
    """``results/<section>/<profile>/<device>`` (plus ``variants/<variant>`` for a non-default run)."""
    check_profile(profile)
    folder = results_root(root) / section / profile / _device_type(device)
    return folder if variant is None else folder / "variants" / variant


def variant_tag(key: Mapping[str, Any]) -> str:
    """A short stable tag of a run key (the folder name of a non-default run)."""
    return hashlib.sha256(json.dumps(_jsonable(key), sort_keys=True).encode()).hexdigest()[:12]


def _table_paths(folder: Path, name: str, table_names: Iterable[str]) -> dict[str, Path]:
    names = list(table_names)
    if names == [""]:
        return {"": folder / f"{name}.csv"}
    return {t: folder / f"{name}__{t}.csv" for t in names}


def load_folder(folder: Path, name: str) -> StoredResult | None:
    """Load a stored run from ``folder`` if its metadata and every table (with matching hashes) exist."""
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


def load(section: str, name: str, profile: str, device: str | torch.device = "cpu", variant: str | None = None,
         root: str | os.PathLike | None = None) -> StoredResult | None:
    """Load a stored run (see :func:`load_folder`)."""
    return load_folder(run_dir(section, profile, device, variant, root), name)


def recompute_forced() -> bool:
    """``$FROG_RECOMPUTE`` is set to something other than ``""`` or ``"0"``."""
    return os.environ.get("FROG_RECOMPUTE", "") not in ("", "0")


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
    variant: bool = False,
) -> StoredResult:
    """Return stored tables for this run, computing and storing them if needed.

    ``compute()`` returns one DataFrame or a dict ``{table_name: DataFrame}``. ``code`` names the
    frogcore modules the computation depends on (their frogcore imports are added automatically).
    ``force`` (default: ``$FROG_RECOMPUTE`` is set) recomputes even on a cache hit. ``variant=True``
    stores the run in its own ``variants/<tag>`` folder (a run whose parameters differ from its profile's).
    """
    device_type = _device_type(device)
    key = _jsonable({"section": section, "name": name, "profile": profile, "device": device_type,
                     "seed": seed, "params": dict(params)})
    folder = run_dir(section, profile, device_type, variant_tag(key) if variant else None, root)
    code = list(code)
    chash = code_hash(code)
    if force is None:
        force = recompute_forced()
    if not force:
        stored = load_folder(folder, name)
        if stored is not None and stored.meta.get("key") == key and stored.meta.get("code_hash") == chash:
            return stored
    check_writable(folder)

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
        "variant": folder.name if variant else None,
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
    # figures and tables are replaced together: figures drawn from other tables go first (a crash after this
    # leaves old tables without figures, never new tables beside old figures); the notebook draws new ones
    new_id = result_id(meta)
    with folder_lock(folder):
        for old in stale_figures(folder, name, new_id):
            old.unlink(missing_ok=True)
        for t, b in blobs.items():
            atomic_write_bytes(paths[t], b)
        atomic_write_bytes(folder / f"{name}.meta.json", (json.dumps(meta, indent=2) + "\n").encode())
    # read back through the same path as a cache hit so both return identical dtypes
    return StoredResult({t: pd.read_csv(io.BytesIO(b)) for t, b in blobs.items()}, meta, paths,
                        cached=False, figures_dir=folder / "figures")


def check_writable(folder: Path) -> None:
    """Fail before computing if results cannot be written into ``folder`` (it is created if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(f"cannot write results into {folder}: {exc.strerror or exc}; set FROG_RESULTS_DIR "
                              "to a writable folder") from None


def _version() -> str:
    from ._version import __version__
    return __version__
