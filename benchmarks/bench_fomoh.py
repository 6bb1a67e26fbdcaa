"""Cost of one FoMoH-KD step as a multiple of one forward pass (784-128-10 MLP, batch 1024).

For K = 1, 2, 3 and each way of evaluating the K(K+1)/2 hyper-dual pairs
(``frogcore.hyperdual.directional_hessian`` modes ``block``, ``pairs`` — both batched with vmap —
and ``loop``, a Python loop over the pairs), one subprocess per configuration measures

* the median time of one forward pass (loss of the batch, ``torch.no_grad``), and
* the median time of one full FoMoH-KD step (tangent sampling, hyper-dual evaluation, K × K solve,
  parameter update: ``frogcore.second_order.forward_step``),

and reports their ratio. A forward pass is timed inside every subprocess, so each ratio compares
times taken under the same conditions.

Usage::

    .venv/bin/python benchmarks/bench_fomoh.py               # K = 1 2 3, modes block pairs loop
    .venv/bin/python benchmarks/bench_fomoh.py --ks 3 --modes block loop --repeats 30
    .venv/bin/python benchmarks/bench_fomoh.py --threads 1 --out      # also write the tidy CSV

``--out [PATH]`` writes one row per (K, mode) — model, batch, params, k, mode, threads, repeats, warmup, then
forward_ms, step_ms and step_per_forward — as CSV (default ``results/benchmarks/fomoh/fomoh.csv``) with
``fomoh.meta.json`` beside it (date, machine, torch version, threads, command line, git commit).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

BATCH = 1024
DEFAULT_OUT = "results/benchmarks/fomoh/fomoh.csv"
COLUMNS = ("model", "batch", "params", "k", "mode", "threads", "repeats", "warmup", "forward_ms", "step_ms",
           "step_per_forward")


def worker(k: int, mode: str, repeats: int, warmup: int, threads: int | None) -> dict:
    import torch
    import torch.nn.functional as F

    from frogcore.hyperdual import module_loss, module_params
    from frogcore.models.fomoh_nets import count_parameters, mlp
    from frogcore.second_order import forward_step

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = mlp((1, 28, 28))
    x = torch.randn(BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (BATCH,))
    params = module_params(model)
    f = module_loss(model, F.cross_entropy, x, y)
    gen = torch.Generator().manual_seed(0)

    def forward():
        with torch.no_grad():
            return f(params)

    def step():
        return forward_step(f, params, "fomoh-kd", k=k, lr=1.0, generator=gen, mode=mode)

    def timed(fn):
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    # interleave forward and step timings so that both see the same machine load
    fwd, stp = [], []
    for _ in range(3):
        fwd += timed(forward)
        stp += timed(step)
    return {"k": k, "mode": mode, "params": count_parameters(model), "threads": torch.get_num_threads(),
            "forward_ms": 1e3 * statistics.median(fwd), "step_ms": 1e3 * statistics.median(stp)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--modes", nargs="+", default=["block", "pairs", "loop"], choices=["block", "pairs", "loop"])
    ap.add_argument("--repeats", type=int, default=10, help="timed repetitions per round (3 rounds)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", nargs="?", const=DEFAULT_OUT, default=None, metavar="PATH",
                    help=f"also write the rows as CSV (+ .meta.json) to PATH (default {DEFAULT_OUT}, relative to "
                         "the repository)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.ks[0], args.modes[0], args.repeats, args.warmup, args.threads)))
        return

    rows = []
    for k in args.ks:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--worker", "--ks", str(k), "--modes", mode,
                   "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  measured K={k} {mode:5s}: forward {r['forward_ms']:.2f} ms, step {r['step_ms']:.2f} ms",
                  file=sys.stderr, flush=True)

    print(f"\nFoMoH-KD step on a 784-128-10 MLP ({rows[0]['params']:,} parameters), batch {BATCH}, "
          f"{rows[0]['threads']} thread(s); medians, one subprocess per row\n")
    print(f"{'K':>2} {'mode':>6} {'forward ms':>11} {'step ms':>9} {'step / forward':>15}")
    for r in rows:
        print(f"{r['k']:>2} {r['mode']:>6} {r['forward_ms']:>11.2f} {r['step_ms']:>9.2f} "
              f"{r['step_ms'] / r['forward_ms']:>15.1f}")
    by = {(r["k"], r["mode"]): r["step_ms"] / r["forward_ms"] for r in rows}
    print()
    for k in args.ks:
        for mode in ("block", "pairs"):
            if (k, mode) in by and (k, "loop") in by:
                print(f"K={k}: {mode} is {by[(k, 'loop')] / by[(k, mode)]:.2f}x faster than the loop over pairs "
                      f"(ratio of step/forward multiples)")
    if (3, "block") in by:
        print(f"\nK=3 step (block) = {by[(3, 'block')]:.1f} forward passes (target <= 30; reference ~70)")
    if args.out:
        write_out(rows, args, argv)


def write_out(rows: list[dict], args, argv) -> None:
    """The rows as a tidy CSV with a ``.meta.json`` beside it (``--out``)."""
    from pathlib import Path

    from frogcore.bookgen import write_benchmark_csv

    root = Path(__file__).resolve().parents[1]
    out = root / args.out if args.out == DEFAULT_OUT else Path(args.out)
    recs = [dict(r, model="MLP 784-128-10", batch=BATCH, repeats=3 * args.repeats, warmup=args.warmup,
                 step_per_forward=r["step_ms"] / r["forward_ms"]) for r in rows]
    paths = write_benchmark_csv(recs, out, COLUMNS, bench="fomoh", threads=args.threads,
                                argv=[__file__, *(sys.argv[1:] if argv is None else argv)])
    print("wrote " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
