"""Worker processes that never outlive the process that started them.

:func:`process_pool` is a ``spawn`` :class:`~concurrent.futures.ProcessPoolExecutor` whose workers
(1) ask the Linux kernel to send them SIGKILL when their parent dies (``prctl(PR_SET_PDEATHSIG)``) and
(2) watch their parent's PID from a daemon thread and exit when it changes (other POSIX systems), so
killing a notebook kernel or papermill with SIGKILL or SIGTERM leaves no orphaned workers; on an
exception or KeyboardInterrupt in the parent the pool's workers are terminated at once instead of
finishing their queued jobs.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

__hash_role__ = "infrastructure"  # moves computations around; never changes their numbers (results.code_hash)
__all__ = ["process_pool"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Worker initializer: exit when the parent process ``parent`` is gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="frog-parent-watch").start()
    if os.getppid() != parent:  # the parent died before the watcher started
        os._exit(1)


@contextlib.contextmanager
def process_pool(workers: int):
    """A ``spawn`` process pool of ``workers`` processes that die with the calling process."""
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        yield ex
    except BaseException:
        for p in list(getattr(ex, "_processes", {}).values()):  # do not wait for queued jobs
            with contextlib.suppress(Exception):
                p.terminate()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        ex.shutdown(wait=True)
