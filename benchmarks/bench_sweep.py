"""Benchmark: the 4.4 training grid (default profile) serially vs as cells on the local executor.

* ``serial`` — ``frog_4_4.CHAPTER.run("training", "default", "cpu", force=True)`` in one process with
  ``--serial-threads`` torch threads (default 1: the fair baseline for ``--workers 2 --threads 1`` on 2 cores,
  and the fastest serial setting for these small models on a busy machine; ``0``: torch's own count, how the
  book runs the chapter — several values run the serial grid once each);
* ``sweep``  — the same grid as cells (one training run each) on :class:`frogcore.sweep.LocalExecutor` with
  ``--workers`` processes of ``--threads`` torch threads each (default 2 × 1), merged into the chapter's tables.

Both write into temporary results and checkpoint folders (never ``results/``) with checkpoints off, so
neither replays the other's training. The script prints both wall times, the speed-up, and whether the
deterministic tables (``summary``, ``history``) are byte-identical (they are when both sides use the same
torch thread count; with a different count the BLAS summation order, hence the last bits, may differ).
The default grid is 8 approaches × widths 256/1024/4096 (40/30/6 epochs) on digits; ``--widths 256`` runs a
reduced grid. Target: ≥ 1.7× at 2 workers on a 2-core machine.

Measured on 2026-12-03 on this idle 2-core machine (AMD EPYC, one thread per core; two 1-thread matmul processes
run at 1.98× the throughput of one, so the machine itself allows ~2×), the full default grid (24 cells):

* serial with 1 thread 261.6 s; sweep 2 workers × 1 thread 148.1 s: **1.77×**, ``summary`` and ``history``
  byte-identical. (Before the code hash's per-process parse cache, each cell re-parsed its module closure,
  ~0.3 s, and the sweep took 155.2 s against 257.2 s serial: 1.66×.)
* ``--widths 256`` (8 FC-256 runs of ~2 s; measured on 2026-12-02 on a shared machine): 0.74× — too small
  to pay for the pool: its two spawned workers need ~7 s to import torch and the chapter before the first cell.

With a fixed start-up cost ``c`` and a serial time ``S``, two workers give at most ``S / (S/2 + c)``.

Usage::

    .venv/bin/python benchmarks/bench_sweep.py                   # the full default grid (tens of minutes)
    .venv/bin/python benchmarks/bench_sweep.py --widths 256      # the FC-256 part only
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="FC widths (default: the profile's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--only", nargs="+", choices=("serial", "sweep"), default=("serial", "sweep"))
    parser.add_argument("--serial-threads", type=int, nargs="+", default=[1],
                        help="torch threads of the serial run(s); 0: torch's default")
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench-sweep-")
    os.environ["FROG_CHECKPOINT_DIR"] = os.path.join(tmp, "checkpoints")
    import torch

    from frogcore import sweep
    from frogcore.experiments import frog_4_4

    overrides = {"checkpoints": False}
    if args.widths:
        overrides["widths"] = args.widths
    params = frog_4_4.CHAPTER.params("training", "default", **overrides)
    cells = len(params["widths"]) * len(params["approaches"]) * params["num_seeds"] * len(params["datasets"])
    print(f"4.4 training, default profile: widths {params['widths']}, epochs {params['epochs']}, "
          f"{len(params['approaches'])} approaches, {cells} cells; {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    times, results = {}, {}
    if "serial" in args.only:
        for n in args.serial_threads:
            name = f"serial@{n or torch.get_num_threads()}"
            kw = dict(overrides, threads=n) if n else overrides
            t0 = time.perf_counter()
            results[name] = frog_4_4.CHAPTER.run("training", "default", "cpu", root=os.path.join(tmp, name),
                                                 force=True, **kw)
            times[name] = time.perf_counter() - t0
            print(f"{name}: {times[name]:.1f} s serial with {n or torch.get_num_threads()} torch threads", flush=True)
    if "sweep" in args.only:
        t0 = time.perf_counter()
        sw = sweep.chapter_sweep("frog_4_4", "training", "default", "cpu", root=os.path.join(tmp, "sweep"),
                                 **overrides)
        out = sw.run(sweep.LocalExecutor(workers=args.workers, threads=args.threads), progress=True)
        times["sweep"] = time.perf_counter() - t0
        if isinstance(out, list):
            print(sweep.format_status(out))
            return 1
        results["sweep"] = out
        print(f"sweep:  {times['sweep']:.1f} s ({args.workers} workers × {args.threads} threads)", flush=True)
    if "sweep" in times:
        for name in [n for n in times if n.startswith("serial")]:
            same = {t: results[name].paths[t].read_bytes() == results["sweep"].paths[t].read_bytes()
                    for t in ("summary", "history")}
            print(f"speed-up vs {name}: {times[name] / times['sweep']:.2f}× (target ≥ 1.7×); byte-identical "
                  f"summary/history: {same['summary']}/{same['history']}")
        print(f"load {os.getloadavg()[0]:.1f}")
    print(f"(temporary results in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
