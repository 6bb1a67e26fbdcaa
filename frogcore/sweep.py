"""Chapter grids as independent cells on executors: a local process pool (the default) or SLURM through submitit.

A chapter experiment that declares ``cells`` (see :mod:`frogcore.experiments.runner`) splits into
independent pieces, e.g. one 4.2 batch = (function, n) or one 4.4 training run = (model, approach, k,
seed). A *sweep* computes every missing cell as a job and stores each cell atomically as its own result::

    results/<section>/<profile>/<device>[/variants/<tag>]/cells/<experiment>/
        <cell tag>/cell.meta.json, <table>.csv   a finished cell (a folder renamed into place: all or nothing)
        <cell tag>.claim                         the cell is being computed (owner, job id, log; heartbeat = mtime)
        <cell tag>.failed.json                   the last attempt failed (error, log)
        _queued/<cell tag>.json                  submitted, not started yet (job id, log)
        _logs/<executor>/…                       one log per job (SLURM: submitit's folders)
        _journal.log                             one line per claim, result, failure (append-only)

``collect`` merges the finished cells (:func:`frogcore.experiments.runner.store_merged`) into the
chapter's tables, stored through the results store under the same key, code hash and metadata as a
serial run (only the timings differ), so notebooks and the book load them as an ordinary cache hit.

**Protocol.** A worker *claims* a cell by creating ``<tag>.claim`` with ``O_CREAT | O_EXCL`` (its host,
pid, job id, log and a random token) and touches it every :data:`HEARTBEAT_S` seconds. A claim whose
owner is gone (same host: the pid no longer exists; a SLURM job: no longer in ``squeue``; otherwise: no
heartbeat for :data:`STALE_AFTER_S` seconds) is *stale*; it is removed only under an exclusive ``flock``
on the cells folder (so two sweeps never take over the same claim) and only if it still holds the token
judged stale. The result is written into ``.tmp-<tag>-<token>/`` and renamed into place under the same
lock, so a cell is either complete or absent, whatever kills its worker (SIGTERM from ``scancel`` is
turned into a clean failure; SIGKILL leaves only a stale claim and perhaps a temporary folder that the
next sweep deletes). Two sweeps of the same chapter started at once therefore never compute a cell
twice (the loser of a claim skips it and waits for the winner) and never write a cell partially.

A re-run submits only missing and failed cells (a cell computed with other code or parameters counts
as missing); ``status`` shows done / running / queued / failed / missing with the log of every failure.

Executors (:class:`LocalExecutor`, :class:`SlurmExecutor`) share one small interface: ``submit(fn,
items, names=, log_dir=) -> [Job]`` and ``close()``; a :class:`Job` has ``done()``, ``result() -> (ok,
value or error)``, ``job_id`` and ``log``. :mod:`frogcore.pipeline` runs notebooks on them and
:mod:`frogcore.lrsearch` its learning-rate trials.

CLI::

    python -m frogcore.sweep run frog_4_4 training --profile paper --device cuda \\
        --executor slurm --partition gpu --gpus 1 --cpus 8 --time 720 --parallelism 16
    python -m frogcore.sweep status frog_4_4 training --profile paper --device cuda
    python -m frogcore.sweep collect frog_4_4 training --profile paper --device cuda
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .config import check_choice, check_positive_int
from .results import _jsonable, atomic_write_bytes, code_hash, csv_bytes, results_root

__hash_role__ = "infrastructure"  # moves computations around; never changes their numbers (results.code_hash)

__all__ = ["EXECUTORS", "STATES", "HEARTBEAT_S", "STALE_AFTER_S", "Task", "CellStatus", "CellStore", "Job",
           "Executor", "LocalExecutor", "SlurmExecutor", "make_executor", "execute", "run_tasks", "wait_jobs",
           "ChapterSweep", "chapter_sweep", "Cancelled", "main"]

EXECUTORS = ("local", "slurm")
STATES = ("done", "running", "queued", "failed", "missing")
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
# floats read back bit for bit: pandas 3 parses exactly by default and deprecates the option
_EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
_ACTIVE_SLURM = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
                 "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "PREEMPTED"}


class Cancelled(BaseException):
    """The worker received SIGTERM (``scancel``, preemption, a pool shut down): the cell is abandoned cleanly."""


# ----------------------------------------------------------------------------- owners and liveness

def _utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (guards against reused pids)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _slurm_job_id() -> str | None:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


_CURRENT_LOG: str | None = None  # set by the local executor's worker wrapper


def _job_log() -> str | None:
    """The log file of the running job (local worker or submitit SLURM job), if known."""
    if _CURRENT_LOG:
        return _CURRENT_LOG
    if os.environ.get("SUBMITIT_EXECUTOR"):
        with contextlib.suppress(Exception):
            import submitit

            return str(submitit.JobEnvironment().paths.stdout)
    return None


def owner_info(log: str | None = None) -> dict[str, Any]:
    """Who is computing: host, pid (with its start time), SLURM job id, log file, a random token, start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _proc_start(pid), "job": _slurm_job_id(),
            "log": log if log is not None else _job_log(), "token": uuid.uuid4().hex, "since": _utc()}


_SQUEUE_CACHE: dict[str, Any] = {"t": -1e9, "jobs": None}


def slurm_active_jobs(max_age: float = 1.0) -> dict[str, str] | None:
    """``{job id: state}`` of this user's jobs in ``squeue`` (array tasks as ``<array>_<task>``), or ``None``
    when ``squeue`` is not available. Cached for ``max_age`` seconds."""
    now = time.monotonic()
    if now - _SQUEUE_CACHE["t"] <= max_age:
        return _SQUEUE_CACHE["jobs"]
    jobs = None
    if shutil.which("squeue"):
        try:
            import getpass

            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-u", getpass.getuser()],
                                 capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                jobs = dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)
        except (OSError, subprocess.SubprocessError):
            jobs = None
    _SQUEUE_CACHE.update(t=now, jobs=jobs)
    return jobs


def owner_alive(owner: Mapping[str, Any], mtime: float) -> bool:
    """Is the owner of a claim or a queued record still there? Same host: its pid (and start time);
    a SLURM job: ``squeue``; otherwise: a heartbeat (mtime) younger than :data:`STALE_AFTER_S`."""
    if owner.get("host") == socket.gethostname() and owner.get("pid"):
        pid = int(owner["pid"])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        start = _proc_start(pid)
        return owner.get("pid_start") is None or start is None or start == owner.get("pid_start")
    if owner.get("job"):
        jobs = slurm_active_jobs()
        if jobs is not None:
            return jobs.get(str(owner["job"]), "") in _ACTIVE_SLURM
    return time.time() - mtime < STALE_AFTER_S


# ----------------------------------------------------------------------------- tasks and the cell store

@dataclass(frozen=True)
class Task:
    """One cell to compute: ``target`` (``"package.module:function"``) called with ``args`` returns a DataFrame
    or ``{table: DataFrame}``; the result is valid while ``key`` and the code hash of ``code`` are unchanged."""

    store: str
    tag: str
    label: str
    key: Mapping[str, Any]
    code: tuple[str, ...]
    code_hash: str
    target: str
    args: Mapping[str, Any]
    threads: int | None = None


@dataclass(frozen=True)
class CellStatus:
    tag: str
    label: str
    state: str
    detail: str = ""
    log: str | None = None


def cell_tag(label: str, key: Mapping[str, Any]) -> str:
    """A readable, unique folder name: the label's characters that are safe in a path plus a hash of the key."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in label).strip("-")[:60]
    digest = hashlib.sha256(json.dumps(_jsonable(key), sort_keys=True).encode()).hexdigest()[:12]
    return f"{safe}_{digest}" if safe else digest


def _table_file(name: str) -> str:
    return "table.csv" if name == "" else f"{name}.csv"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class CellStore:
    """The files of one set of cells (see the module docstring for the layout and the protocol)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    # paths
    def result_dir(self, tag: str) -> Path:
        return self.folder / tag

    def claim_path(self, tag: str) -> Path:
        return self.folder / f"{tag}.claim"

    def failure_path(self, tag: str) -> Path:
        return self.folder / f"{tag}.failed.json"

    def queued_path(self, tag: str) -> Path:
        return self.folder / "_queued" / f"{tag}.json"

    @property
    def log_dir(self) -> Path:
        return self.folder / "_logs"

    @property
    def journal_path(self) -> Path:
        return self.folder / "_journal.log"

    @contextlib.contextmanager
    def locked(self):
        """An exclusive ``flock`` on the cells folder (claim take-overs, releases, renames happen under it)."""
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def journal(self, event: str, tag: str, owner: Mapping[str, Any] | None = None, note: str = "") -> None:
        """Append one line (``O_APPEND``: concurrent writers do not interleave lines)."""
        who = f"{owner.get('host')}:{owner.get('pid')}:{owner.get('job') or '-'}" if owner else "-"
        line = f"{_utc()} {event} {tag} {who} {note}".rstrip() + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.journal_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    # results
    def load(self, task: Task, chash: str | None = None) -> dict[str, pd.DataFrame] | None:
        """The finished cell's tables if its key and code hash (default: the task's) match and every table
        matches its recorded SHA-256; else ``None``. Floats are read back bit for bit."""
        folder = self.result_dir(task.tag)
        meta = _read_json(folder / "cell.meta.json")
        if meta is None or meta.get("key") != _jsonable(task.key) or \
                meta.get("code_hash") != (chash or task.code_hash):
            return None
        tables = {}
        try:
            for name, info in meta["tables"].items():
                data = (folder / info["file"]).read_bytes()
                if hashlib.sha256(data).hexdigest() != info["sha256"]:
                    return None
                tables[name] = pd.read_csv(io.BytesIO(data), **_EXACT_FLOATS)
        except (OSError, ValueError, KeyError):
            return None
        return tables

    def write(self, task: Task, tables: Mapping[str, pd.DataFrame], meta: Mapping[str, Any], token: str) -> None:
        """Write the cell into a temporary folder and rename it into place under the lock (all or nothing)."""
        tmp = self.folder / f".tmp-{task.tag}-{token}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        info = {}
        for name, df in tables.items():
            blob = csv_bytes(df)
            (tmp / _table_file(name)).write_bytes(blob)
            info[name] = {"file": _table_file(name), "rows": len(df), "sha256": hashlib.sha256(blob).hexdigest()}
        full = {**meta, "tables": info}
        (tmp / "cell.meta.json").write_text(json.dumps(full, indent=2) + "\n")
        final = self.result_dir(task.tag)
        with self.locked():
            if final.exists():
                if self.load(task, meta["code_hash"]) is not None:  # another owner finished it first
                    shutil.rmtree(tmp)
                    return
                old = self.folder / f".old-{task.tag}-{token}"
                os.rename(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, final)

    # claims
    def claim(self, task: Task, owner: Mapping[str, Any]) -> bool:
        """Claim the cell (``O_EXCL``); a stale claim is taken over under the lock. ``False``: someone else has it."""
        path = self.claim_path(task.tag)
        data = (json.dumps(dict(owner), indent=1) + "\n").encode()
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._create_exclusive(path, data):
            return True
        with self.locked():
            cur = _read_json(path)
            if cur is not None:
                # a requeued SLURM job (same job id, new process) takes over its own earlier claim
                requeued = bool(cur.get("job")) and cur.get("job") == owner.get("job") \
                    and cur.get("token") != owner.get("token")
                if not requeued and owner_alive(cur, _mtime(path)):
                    return False
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # safe: nobody replaces a claim without this lock
                self.journal("stale-claim-removed", task.tag, cur)
            elif path.exists():
                # an unreadable claim: being written right now (a fresh O_EXCL creation) or torn by a crash
                if time.time() - path.stat().st_mtime < STALE_AFTER_S:
                    return False
                os.unlink(path)
            return self._create_exclusive(path, data)

    @staticmethod
    def _create_exclusive(path: Path, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return True

    def release(self, tag: str, token: str) -> None:
        """Remove the claim if it is still ours."""
        path = self.claim_path(tag)
        with self.locked():
            cur = _read_json(path)
            if cur is not None and cur.get("token") == token:
                os.unlink(path)

    # failures and queue records
    def record_failure(self, tag: str, error: str, log: str | None, owner: Mapping[str, Any] | None = None) -> None:
        rec = {"error": error[-20000:], "log": log, "owner": dict(owner or {}), "time": _utc()}
        atomic_write_bytes(self.failure_path(tag), (json.dumps(rec, indent=1) + "\n").encode())

    def mark_queued(self, tag: str, record: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.queued_path(tag), (json.dumps(dict(record), indent=1) + "\n").encode())

    def clear(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    # state
    def status(self, task: Task) -> CellStatus:
        """done | running | queued | failed | missing, with a detail and the log of a running or failed cell."""
        if self.load(task) is not None:
            return CellStatus(task.tag, task.label, "done")
        claim_path, rec_path = self.claim_path(task.tag), self.queued_path(task.tag)
        claim, rec = _read_json(claim_path), _read_json(rec_path)
        claim_alive = claim is not None and owner_alive(claim, _mtime(claim_path))
        if claim_alive:
            return CellStatus(task.tag, task.label, "running", _who(claim), claim.get("log"))
        if rec is not None and owner_alive(rec.get("owner", {}), _mtime(rec_path)):
            return CellStatus(task.tag, task.label, "queued", _who(rec.get("owner", {})), rec.get("log"))
        if claim is not None:
            return CellStatus(task.tag, task.label, "failed", f"worker died: {_who(claim)}", claim.get("log"))
        fail = _read_json(self.failure_path(task.tag))
        if fail is not None:
            return CellStatus(task.tag, task.label, "failed", _last_line(fail.get("error", "")), fail.get("log"))
        meta = _read_json(self.result_dir(task.tag) / "cell.meta.json")
        if meta is not None and meta.get("code_hash") != task.code_hash:
            old = str(meta.get("code_hash", ""))[:8]
            return CellStatus(task.tag, task.label, "missing", f"stale: computed with other code ({old}, now "
                              f"{task.code_hash[:8]}): the code changed; run the sweep again")
        return CellStatus(task.tag, task.label, "missing")

    def cleanup(self) -> None:
        """Delete temporary folders left by killed workers (whose claim is gone or belongs to another token)."""
        if not self.folder.is_dir():
            return
        with self.locked():
            for tmp in self.folder.glob(".tmp-*"):
                tag, _, token = tmp.name[len(".tmp-"):].rpartition("-")
                claim = _read_json(self.claim_path(tag))
                if claim is None or claim.get("token") != token:
                    shutil.rmtree(tmp, ignore_errors=True)
            for old in self.folder.glob(".old-*"):
                shutil.rmtree(old, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _who(owner: Mapping[str, Any]) -> str:
    job = f" job {owner['job']}" if owner.get("job") else ""
    return f"{owner.get('host', '?')}:{owner.get('pid', '?')}{job}"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Cancelled|Interrupt|Exit|Failure)\b")


def _last_line(text: str) -> str:
    """The last ``SomeError: message`` line of a traceback (else its last line), without terminal colours."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(text)).splitlines() if ln.strip()]
    errors = [ln for ln in lines if _EXC_LINE.match(ln)]
    return (errors or lines or [""])[-1][:300]


# ----------------------------------------------------------------------------- the worker side

def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class _Heartbeat(threading.Thread):
    def __init__(self, path: Path, interval: float = HEARTBEAT_S):
        super().__init__(daemon=True, name="frog-cell-heartbeat")
        self.path, self.interval, self.stopped = path, interval, threading.Event()

    def run(self):
        while not self.stopped.wait(self.interval):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def stop(self):
        self.stopped.set()


_DEFER: dict[str, Any] = {"active": False, "pending": None}


def _raise_cancelled(signum, frame):
    if _DEFER["active"]:  # inside _sigterm_deferred: remember it, raise when the protected step is complete
        _DEFER["pending"] = signum
        return
    raise Cancelled(f"received signal {signum} (scancel, preemption or shutdown)")


@contextlib.contextmanager
def _sigterm_deferred():
    """Let a SIGTERM arriving during the block take effect (as :class:`Cancelled`) only when the block is complete,
    so that a claim is made and recorded as one step. (Blocking the signal with ``pthread_sigmask`` would not do:
    another thread may receive it, and Python runs the handler in the main thread anyway.)"""
    _DEFER["active"], _DEFER["pending"] = True, None
    try:
        yield
    finally:
        _DEFER["active"] = False
        pending, _DEFER["pending"] = _DEFER["pending"], None
        if pending is not None:
            raise Cancelled(f"received signal {pending} (scancel, preemption or shutdown)")


def execute(task: Task) -> str:
    """Compute one cell (in a worker or a job): ``"done"`` (computed or already there) or ``"skipped"`` (another
    worker holds it). Claims the cell, heartbeats, writes it atomically, records a failure (and re-raises).

    SIGTERM (``scancel``, preemption, a pool shut down) raises :class:`Cancelled` from the moment the worker
    starts on the cell: the failure is recorded and the claim released; nothing of the cell is left behind."""
    from .experiments.runner import _as_tables, torch_threads

    store = CellStore(task.store)
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_cancelled) if main else None
    owner, beat, claimed = owner_info(), None, False
    try:
        chash = code_hash(list(task.code))
        if store.load(task, chash) is not None:
            return "done"
        with _sigterm_deferred() if main else contextlib.nullcontext():
            claimed = store.claim(task, owner)
        if not claimed:
            store.journal("skip-claimed", task.tag, owner)
            return "skipped"
        store.journal("start", task.tag, owner)
        beat = _Heartbeat(store.claim_path(task.tag))
        beat.start()
        store.clear(store.queued_path(task.tag))
        store.clear(store.failure_path(task.tag))
        started, t0 = _utc(), time.perf_counter()
        with torch_threads(task.threads):
            tables = _as_tables(_resolve(task.target)(**task.args))
        meta = {"key": _jsonable(task.key), "code_hash": chash, "code": list(task.code), "label": task.label,
                "owner": owner, "started_utc": started, "finished_utc": _utc(),
                "compute_seconds": round(time.perf_counter() - t0, 3)}
        store.write(task, tables, meta, owner["token"])
        store.journal("done", task.tag, owner)
        return "done"
    except BaseException as exc:
        if claimed:
            store.record_failure(task.tag, "".join(traceback.format_exception(exc)), owner.get("log"), owner)
            store.journal("failed", task.tag, owner, type(exc).__name__)
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)
        if beat is not None:
            beat.stop()
        if claimed:
            store.release(task.tag, owner["token"])


# ----------------------------------------------------------------------------- executors

class Job(ABC):
    """One submitted item."""

    name: str
    job_id: str
    log: str | None

    @abstractmethod
    def done(self) -> bool: ...

    @abstractmethod
    def result(self) -> tuple[bool, Any]:
        """``(True, value)`` or ``(False, error text)``; only after :meth:`done`."""


class Executor(ABC):
    """Runs ``fn(item)`` for every item as a job; ``fn`` must be importable (a module-level function)."""

    name: str = ""
    #: whether the jobs outlive the submitting process (SLURM) or die with it (the local pool)
    detached: bool = False

    @abstractmethod
    def submit(self, fn: Callable[[Any], Any], items: Sequence[Any], *, names: Sequence[str],
               log_dir: Path) -> list[Job]: ...

    def close(self, error: BaseException | None = None) -> None:
        """Release resources (the local pool: wait for the workers, or terminate them after ``error``)."""
        return None


def _local_call(fn: Callable[[Any], Any], item: Any, log: str, threads: int | None) -> Any:
    """Run ``fn(item)`` in a pool worker with ``threads`` torch threads, stdout/stderr appended to ``log``."""
    global _CURRENT_LOG
    import torch

    if threads:
        torch.set_num_threads(threads)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _CURRENT_LOG = log
    try:
        return fn(item)
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _CURRENT_LOG = None
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


class LocalJob(Job):
    def __init__(self, name: str, future, log: str):
        self.name, self.future, self.log = name, future, log
        self.job_id = f"local:{os.getpid()}:{name}"

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> tuple[bool, Any]:
        exc = self.future.exception()
        if exc is not None:
            return False, f"{type(exc).__name__}: {exc}"
        return True, self.future.result()


class LocalExecutor(Executor):
    """A pool of ``workers`` processes on this machine (:func:`frogcore.parallel.process_pool`: they die with
    the calling process), each with ``threads`` torch threads (default: the cores divided by the workers)."""

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None):
        cores = os.cpu_count() or 1
        self.workers = cores if workers is None else check_positive_int("workers", workers)
        self.threads = max(1, cores // self.workers) if threads is None else check_positive_int("threads", threads)
        self._stack: contextlib.ExitStack | None = None
        self._pool = None

    def submit(self, fn, items, *, names, log_dir):
        from .parallel import process_pool

        if not items:
            return []
        if self._pool is None:
            self._stack = contextlib.ExitStack()
            self._pool = self._stack.enter_context(process_pool(min(self.workers, len(items))))
        log_dir = Path(log_dir)
        jobs = []
        for name, item in zip(names, items):
            log = str(log_dir / f"{name}.log")
            jobs.append(LocalJob(name, self._pool.submit(_local_call, fn, item, log, self.threads), log))
        return jobs

    def close(self, error: BaseException | None = None) -> None:
        stack, self._stack, self._pool = self._stack, None, None
        if stack is None:
            return
        if error is None:
            stack.close()
        else:
            with contextlib.suppress(BaseException):
                stack.__exit__(type(error), error, error.__traceback__)


def _slurm_call(fn: Callable[[Any], Any], item: Any, threads: int | None) -> Any:
    if threads:
        import torch

        torch.set_num_threads(threads)
    return fn(item)


class SlurmJob(Job):
    def __init__(self, name: str, job):
        self.name, self.job = name, job
        self.job_id = str(job.job_id)
        self.log = str(job.paths.stdout)
        self._gone_since: float | None = None

    def _has_result(self) -> bool:
        return Path(self.job.paths.result_pickle).exists()

    def done(self) -> bool:
        if self._has_result():
            return True
        jobs = slurm_active_jobs()
        if jobs is None or jobs.get(self.job_id, "") in _ACTIVE_SLURM:
            self._gone_since = None
            return False
        # left the queue without a result: wait a moment for the result file (shared file systems lag)
        self._gone_since = self._gone_since or time.monotonic()
        return time.monotonic() - self._gone_since > 3.0

    def result(self) -> tuple[bool, Any]:
        if not self._has_result():
            return False, f"job {self.job_id} ended without a result (cancelled, timed out or killed); log: {self.log}"
        try:
            return True, self.job.result()
        except Exception as exc:  # submitit re-raises the job's exception as FailedJobError
            return False, f"job {self.job_id} failed: {_last_line(str(exc))}; log: {self.log}"


class SlurmExecutor(Executor):
    """SLURM through submitit: one array job per submission (``parallelism``: at most that many tasks at once),
    ``partition``, ``time`` (minutes), ``gpus`` and ``cpus`` per job, ``mem`` (e.g. ``"16G"``), ``account``,
    ``qos``, ``constraint``, extra ``#SBATCH`` options (``extra``: ``{"exclusive": True}``) and shell lines run
    before the job (``setup``: e.g. ``["module load cuda"]``). Logs (stdout and stderr together) go to
    ``<log_dir>/<job id>/``. Each job uses ``threads`` torch threads (default: ``cpus``)."""

    name = "slurm"
    detached = True

    def __init__(self, partition: str | None = None, time: int = 60, gpus: int = 0, cpus: int = 1,
                 parallelism: int | None = None, mem: str | None = None, account: str | None = None,
                 qos: str | None = None, constraint: str | None = None, setup: Sequence[str] = (),
                 extra: Mapping[str, Any] | None = None, threads: int | None = None, job_name: str = "frog",
                 python: str | None = None):
        self.partition = partition
        self.time = check_positive_int("time", time)
        self.gpus = check_positive_int("gpus", gpus, minimum=0)
        self.cpus = check_positive_int("cpus", cpus)
        self.parallelism = None if parallelism is None else check_positive_int("parallelism", parallelism)
        self.mem, self.account, self.qos, self.constraint = mem, account, qos, constraint
        self.setup, self.extra = list(setup), dict(extra or {})
        self.threads = self.cpus if threads is None else check_positive_int("threads", threads)
        self.job_name, self.python = job_name, python

    def submit(self, fn, items, *, names, log_dir):
        try:
            import submitit
        except ImportError as exc:
            raise ImportError("the slurm executor needs submitit: pip install -e '.[cluster]'") from exc
        if not items:
            return []
        if shutil.which("sbatch") is None:
            raise RuntimeError("the slurm executor needs SLURM's sbatch on the PATH (run on a cluster login node)")
        ex = submitit.SlurmExecutor(folder=str(Path(log_dir) / "%j"), python=self.python)
        params: dict[str, Any] = dict(time=self.time, cpus_per_task=self.cpus, job_name=self.job_name,
                                      stderr_to_stdout=True,
                                      setup=[f"export OMP_NUM_THREADS={self.threads}", *self.setup])
        if self.partition:
            params["partition"] = self.partition
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.parallelism:
            params["array_parallelism"] = self.parallelism
        if self.mem:
            params["mem"] = self.mem
        extra = dict(self.extra)
        for k in ("account", "qos", "constraint"):
            if getattr(self, k):
                extra[k] = getattr(self, k)
        if extra:
            params["additional_parameters"] = extra
        ex.update_parameters(**params)
        jobs = ex.map_array(_slurm_call, [fn] * len(items), list(items), [self.threads] * len(items))
        _SQUEUE_CACHE["t"] = -1e9  # the new jobs must show up in the next squeue
        return [SlurmJob(n, j) for n, j in zip(names, jobs)]


def make_executor(kind: str = "local", **options: Any) -> Executor:
    """``"local"`` (options ``workers``, ``threads``) or ``"slurm"`` (see :class:`SlurmExecutor`); options that
    are ``None`` take their defaults."""
    check_choice("executor", kind, EXECUTORS)
    options = {k: v for k, v in options.items() if v is not None}
    cls = LocalExecutor if kind == "local" else SlurmExecutor
    import inspect

    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"executor={kind!r} has no option {', '.join(map(repr, unknown))}; its options: "
                         f"{', '.join(sorted(allowed))}")
    return cls(**options)


def _progress(total: int, desc: str, enabled: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="cell", initial=initial, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def wait_jobs(jobs: Sequence[Job], *, progress: bool = True, desc: str = "jobs", poll: float = 1.0,
              on_done: Callable[[Job, bool, Any], None] | None = None) -> list[tuple[bool, Any]]:
    """Wait for every job (tqdm over finished jobs); ``[(ok, value or error)]`` in job order."""
    results: dict[int, tuple[bool, Any]] = {}
    with _progress(len(jobs), desc, progress) as bar:
        while len(results) < len(jobs):
            for i, j in enumerate(jobs):
                if i not in results and j.done():
                    results[i] = j.result()
                    bar.update(1)
                    if on_done is not None:
                        on_done(j, *results[i])
            if len(results) < len(jobs):
                time.sleep(poll)
    return [results[i] for i in range(len(jobs))]


# ----------------------------------------------------------------------------- running a set of cells

def statuses(store: CellStore, tasks: Sequence[Task]) -> list[CellStatus]:
    return [store.status(t) for t in tasks]


def run_tasks(store: CellStore, tasks: Sequence[Task], executor: Executor, *, wait: bool = True,
              progress: bool = True, poll: float = 1.0, desc: str = "cells", close: bool = True) -> list[CellStatus]:
    """Submit the missing and failed cells of ``tasks`` to ``executor`` and (with ``wait``) wait until no cell is
    running or queued any more (also those of another sweep); returns the final statuses in task order.
    ``close=False`` keeps the executor open for another call (the caller closes it); an exception always
    closes it (the local pool's workers are terminated)."""
    if not wait and not executor.detached:
        raise ValueError(f"wait=False needs an executor whose jobs outlive this process (slurm), not {executor.name!r}")
    store.cleanup()
    current = statuses(store, tasks)
    todo = [t for t, s in zip(tasks, current) if s.state in ("missing", "failed")]
    me = owner_info()
    for t in todo:
        store.mark_queued(t.tag, {"owner": me, "executor": executor.name, "submitted": _utc()})
    jobs: list[Job] = []
    try:
        if todo:
            try:
                jobs = executor.submit(execute, todo, names=[t.tag for t in todo],
                                       log_dir=store.log_dir / executor.name)
            except BaseException:
                for t in todo:
                    store.clear(store.queued_path(t.tag))
                raise
            if executor.detached:  # the queue records now name the jobs (alive as long as SLURM lists them)
                for t, j in zip(todo, jobs):
                    owner = {"job": j.job_id, "log": j.log, "host": None, "pid": None}
                    store.mark_queued(t.tag, {"owner": owner, "executor": executor.name, "submitted": _utc(),
                                              "log": j.log})
            store.journal("submitted", f"{len(todo)}-cells", me, executor.name)
        if not wait:
            return statuses(store, tasks)
        by_tag = {t.tag: t for t in todo}
        finished: set[str] = set()

        def settle(job: Job) -> None:
            ok, value = job.result()
            task = by_tag[job.name]
            rec = _read_json(store.queued_path(task.tag))
            if rec is not None and rec.get("owner", {}).get("token") in (me["token"], None):
                store.clear(store.queued_path(task.tag))  # the job ended before claiming (or never started)
            if not ok and store.load(task) is None and not store.failure_path(task.tag).exists() \
                    and not store.claim_path(task.tag).exists():
                store.record_failure(task.tag, str(value), job.log)

        done0 = sum(s.state == "done" for s in current)
        with _progress(len(tasks), desc, progress, initial=done0) as bar:
            while True:
                for j in jobs:
                    if j.name not in finished and j.done():
                        finished.add(j.name)
                        settle(j)
                current = statuses(store, tasks)
                bar.update(sum(s.state == "done" for s in current) - bar.n)
                if len(finished) == len(jobs) and not any(s.state in ("running", "queued") for s in current):
                    break
                time.sleep(poll)
        if close:
            executor.close()
        return current
    except BaseException as exc:
        executor.close(exc)
        raise


# ----------------------------------------------------------------------------- chapter sweeps

def _chapter_cell(module: str, name: str, profile: str, device: str, seed: int, root: str,
                  overrides: Mapping[str, Any], cell: Mapping[str, Any], run_key: Mapping[str, Any]):
    """Worker side of a chapter cell: plan the run again, check it is the one the sweep planned, compute the cell."""
    from .experiments import runner

    chapter = importlib.import_module(module).CHAPTER
    p = runner.plan(chapter, name, profile, device, seed, root=root, force=False, **dict(overrides))
    if p.key != _jsonable(run_key):
        raise RuntimeError(f"the run's parameters changed since the sweep was planned: {p.key} != {run_key}")
    return runner.compute_cell(p, cell)


def _module_name(chapter: str) -> str:
    return chapter if "." in chapter else f"frogcore.experiments.{chapter}"


@dataclass
class ChapterSweep:
    """The cells of one chapter run (``chapter``: ``"frog_4_4"`` or a module path); see :func:`chapter_sweep`."""

    chapter: str
    name: str
    profile: str = "default"
    device: str = "auto"
    seed: int = 0
    root: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        from .experiments import runner

        self.module = _module_name(self.chapter)
        chapter = importlib.import_module(self.module).CHAPTER
        self.root = str(results_root(self.root).resolve())
        self.plan = runner.plan(chapter, self.name, self.profile, self.device, self.seed, root=self.root,
                                force=False, check_device=False, **dict(self.overrides))
        self.cells = runner.cells(self.plan)
        self.store = CellStore(self.plan.folder / "cells" / self.name)
        code = (chapter.module,)
        chash = code_hash(list(code))
        threads = self.plan.threads
        self.tasks = []
        for cell in self.cells:
            key = {"run": self.plan.key, "cell": cell}
            label = "_".join(_short(v) for v in cell.values())
            args = dict(module=self.module, name=self.name, profile=self.profile, device=self.plan.device.type,
                        seed=self.plan.seed, root=self.root, overrides=dict(self.overrides), cell=cell,
                        run_key=self.plan.key)
            self.tasks.append(Task(str(self.store.folder), cell_tag(label, key), label, key, code, chash,
                                   "frogcore.sweep:_chapter_cell", args, threads))

    def status(self) -> list[CellStatus]:
        return statuses(self.store, self.tasks)

    def run(self, executor: Executor | None = None, *, wait: bool = True, progress: bool = True,
            collect: bool = True, poll: float = 1.0):
        """Compute the missing and failed cells on ``executor`` (default: :class:`LocalExecutor`); with ``wait``
        and ``collect``, merge them into the chapter's result when every cell is done. Returns the
        :class:`~frogcore.results.StoredResult` when collected, else the cell statuses."""
        executor = executor or LocalExecutor()
        desc = f"{self.plan.chapter.section}.{self.name} [{self.profile}]"
        states = run_tasks(self.store, self.tasks, executor, wait=wait, progress=progress, poll=poll, desc=desc)
        if wait and collect and all(s.state == "done" for s in states):
            return self.collect()
        return states

    def collect(self):
        """Merge the finished cells into the chapter's tables (stored through the results store, as a serial run
        would); raises if a cell is not done."""
        from .experiments import runner

        tables = []
        for t in self.tasks:
            tab = self.store.load(t)
            if tab is None:
                states = [s for s in self.status() if s.state != "done"]
                raise RuntimeError(f"cannot collect {self.plan.chapter.section}.{self.name}: {len(states)} of "
                                   f"{len(self.tasks)} cells are not done ({_summary(states)}); run the sweep again")
            tables.append(tab)
        return runner.store_merged(self.plan, tables)


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(_short(v) for v in value)
    if isinstance(value, Mapping):
        return "-".join(f"{k}{_short(v)}" for k, v in value.items())
    return str(value).replace(":", "")


def _summary(states: Iterable[CellStatus]) -> str:
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    return ", ".join(f"{counts[k]} {k}" for k in STATES if k in counts) or "no cells"


def chapter_sweep(chapter: str, name: str, profile: str = "default", device: str = "auto", seed: int = 0, *,
                  root: str | None = None, **overrides: Any) -> ChapterSweep:
    """The sweep of ``chapter``'s experiment ``name`` (same arguments as :func:`frogcore.experiments.runner.run`)."""
    return ChapterSweep(chapter, name, profile, device, seed, root, overrides)


def format_status(states: Sequence[CellStatus]) -> str:
    """One summary line, then one line per cell that is not done (failures with their log)."""
    lines = [f"{len(states)} cells: {_summary(states)}"]
    for s in states:
        if s.state != "done":
            extra = f" — {s.detail}" if s.detail else ""
            log = f"\n      log: {s.log}" if s.log else ""
            lines.append(f"  {s.state:8s} {s.tag}{extra}{log}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def add_executor_options(parser: argparse.ArgumentParser, default: str | None = "local",
                         default_help: str = "local") -> None:
    """The executor options shared by the sweep, the pipeline and the learning-rate search CLIs."""
    g = parser.add_argument_group("executor")
    g.add_argument("--executor", default=default, choices=EXECUTORS,
                   help=f"where the jobs run (default: {default_help})")
    g.add_argument("--workers", type=int, default=None, help="local: worker processes (default: the cores)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker/job (default: local cores/workers, slurm --cpus)")
    g.add_argument("--partition", default=None, help="slurm: partition")
    g.add_argument("--time", type=int, default=None, help="slurm: time limit per job in minutes (default 60)")
    g.add_argument("--gpus", type=int, default=None, help="slurm: GPUs per job")
    g.add_argument("--cpus", type=int, default=None, help="slurm: CPUs per job (default 1)")
    g.add_argument("--parallelism", type=int, default=None, help="slurm: at most this many array tasks at once")
    g.add_argument("--mem", default=None, help="slurm: memory per job, e.g. 16G")
    g.add_argument("--account", default=None, help="slurm: account")
    g.add_argument("--qos", default=None, help="slurm: quality of service")
    g.add_argument("--setup", action="append", default=None, metavar="LINE",
                   help="slurm: a shell line run before each job (e.g. 'module load cuda'); repeatable")


def executor_from_args(args: argparse.Namespace) -> Executor:
    if args.executor == "local":
        slurm_only = [o for o in ("partition", "time", "gpus", "cpus", "parallelism", "mem", "account", "qos",
                                  "setup") if getattr(args, o) is not None]
        if slurm_only:
            raise SystemExit(f"--{slurm_only[0]} applies to --executor slurm only")
        return make_executor("local", workers=args.workers, threads=args.threads)
    if args.workers is not None:
        raise SystemExit("--workers applies to --executor local only (slurm: --parallelism)")
    return make_executor("slurm", partition=args.partition, time=args.time, gpus=args.gpus, cpus=args.cpus,
                         parallelism=args.parallelism, mem=args.mem, account=args.account, qos=args.qos,
                         setup=args.setup, threads=args.threads)


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """``["widths=[256]", "epochs=2"]`` → ``{"widths": [256], "epochs": 2}`` (values read as YAML)."""
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise SystemExit(f"--set must look like NAME=VALUE (e.g. widths=[256]); got {item!r}")
        out[name.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    from .config import DEVICES, PROFILES

    parser = argparse.ArgumentParser(prog="python -m frogcore.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "status", "collect"))
    parser.add_argument("chapter", help="chapter name (frog_4_4) or module path")
    parser.add_argument("experiment", help="experiment name (e.g. training)")
    parser.add_argument("--profile", default="default", choices=PROFILES)
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="the device of the cells (pass cuda for GPU jobs planned on a CPU login node)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter override or runtime option of the experiment (YAML value); repeatable")
    parser.add_argument("--root", default=None, help="results folder (default: $FROG_RESULTS_DIR or results/)")
    parser.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    parser.add_argument("--no-collect", action="store_true", help="do not merge the cells when all are done")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between status checks while waiting")
    add_executor_options(parser)
    args = parser.parse_args(argv)
    sweep = chapter_sweep(args.chapter, args.experiment, args.profile, args.device, args.seed, root=args.root,
                          **parse_sets(args.set))
    if args.command == "status":
        print(format_status(sweep.status()))
        return 0
    if args.command == "collect":
        res = sweep.collect()
        print(f"collected {len(sweep.tasks)} cells into {res.paths[next(iter(res.paths))].parent}")
        return 0
    executor = executor_from_args(args)
    out = sweep.run(executor, wait=not args.no_wait, progress=not args.no_progress, collect=not args.no_collect,
                    poll=args.poll)
    if isinstance(out, list):
        print(format_status(out))
        return 0 if args.no_wait or all(s.state == "done" for s in out) else 1
    print(f"all {len(sweep.tasks)} cells done; merged into {next(iter(out.paths.values())).parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
