"""Step time of tangent-parallel forward gradients on FC-1024 at W = 1, 2, ... processes, and the scaling.

FC-1024 is the FC network of FROG Section 4.4 with two hidden layers of width 1024 on 784-dim (MNIST-shaped)
input, batch 64: 1,863,690 parameters. For every K (default 16 and 64) and every number of processes W, one
run of W new processes (``frogcore.distributed.run_local``; gloo on CPU with ``--threads`` torch threads per
process, default 1; NCCL with one GPU per process on CUDA) times ``--reps`` training steps (engine step +
SGD update) after ``--warmup`` untimed ones. A step's time is the slowest rank's; the table shows the median.

Engines: at W = 1 the plain single-process engine (``make_engine``, default ``seeding="stream"``) and the same
with ``seeding="per-tangent"`` (the tangents the parallel runs draw); at W >= 2 the tangent-parallel engine.
speed-up = (fastest W = 1 time) / time; efficiency = speed-up / W. ``numbers/step`` is what rank 0 put into
collectives in one step (``engine.comm_log``). The 1-minute load average before and after each run is
printed because other processes on a shared machine distort the W = 2 numbers: on a busy machine the W
processes share fewer free cores than W. ``CPU s/step`` (the slowest rank's process CPU time per step,
communication threads included) and the CPU speed-up it gives are far less sensitive to that load; on an
idle machine with a core per process the wall-clock speed-up approaches the CPU speed-up, minus the time
ranks wait for each other.

Usage::

    .venv/bin/python benchmarks/bench_distributed.py                         # CPU: W = 1, 2; K = 16, 64
    .venv/bin/python benchmarks/bench_distributed.py --device cuda           # W = 1 .. all visible GPUs
    .venv/bin/python benchmarks/bench_distributed.py --ks 64 --grams gather regenerate transpose   # gram="auto"
    .venv/bin/python benchmarks/bench_distributed.py --out --markdown table.md   # CSV for the book
    .venv/bin/python benchmarks/bench_distributed.py --collectives     # the collectives behind gram="auto"

``--out [PATH]`` writes the records as a tidy CSV (default ``results/benchmarks/distributed/distributed.csv``,
the table book/tangent_parallel.md is generated from) with ``distributed.meta.json`` beside it (date, machine,
torch version, threads, command line, git commit).

Check printed at the end: the speed-up at W = 2, K = 64 (target >= 1.6x on the 2-core development CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BATCH = 64
DEFAULT_OUT = "results/benchmarks/distributed/distributed.csv"
COLUMNS = ("device", "width", "batch", "perturbation", "aggregation", "k", "world", "engine", "gram", "threads",
           "reps", "warmup", "seconds", "min_seconds", "speedup", "efficiency", "cpu_seconds", "cpu_speedup", "comm",
           "load_before", "load_after", "error")
INPUT = (1, 28, 28)


def _worker(cfg: dict) -> dict:
    """One rank of one configuration: returns the per-step times and the last step's communication."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from frogcore.distributed import make_tangent_parallel_engine
    from frogcore.engines import make_engine
    from frogcore.models import build_model

    device = torch.device("cuda", dist.get_rank()) if cfg["device"] == "cuda" else torch.device("cpu")
    torch.manual_seed(0)
    model = build_model("fc", INPUT, 10, width=cfg["width"]).to(device).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(cfg["batch"], *INPUT, generator=g).to(device)
    y = torch.randint(0, 10, (cfg["batch"],), generator=g).to(device)
    gen = torch.Generator(device=device).manual_seed(2)
    opts = dict(mode="fwd", aggregation=cfg["aggregation"], k=cfg["k"], perturbation=cfg["perturbation"],
                generator=gen)
    if cfg["engine"] == "tangent-parallel":
        engine = make_tangent_parallel_engine(**opts, gram=cfg["gram"])
    else:
        engine = make_engine(**opts, seeding=cfg["engine"])
    params = [p for p in model.parameters()]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times, cpu = [], []
    for i in range(cfg["warmup"] + cfg["reps"]):
        sync()
        dist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        engine.step(model, F.cross_entropy, x, y)
        with torch.no_grad():
            torch._foreach_add_(params, [p.grad for p in params], alpha=-1e-4)
        sync()
        if i >= cfg["warmup"]:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    comm = sum(n for name, n in getattr(engine, "comm_log", []) if name != "seed check")
    return {"times": times, "cpu": cpu, "comm": comm, "threads": torch.get_num_threads()}


def _collectives_worker(sizes: list[int], reps: int, device: str) -> list[dict]:
    """Seconds per collective for messages of ``m`` numbers per rank (float32): what the Gram strategies use."""
    import torch
    import torch.distributed as dist

    dev = torch.device("cuda", dist.get_rank()) if device == "cuda" else torch.device("cpu")
    w, r = dist.get_world_size(), dist.get_rank()
    rows = []
    for m in sizes:
        x = torch.randn(m, device=dev)
        gathered = torch.empty(w * m, device=dev)
        padded = torch.zeros(w * m, device=dev)
        padded[r * m:(r + 1) * m] = x
        ops = [("all_reduce(m)", dist.all_reduce, (x,)),
               ("all_gather(m per rank)", dist.all_gather_into_tensor, (gathered, x)),
               ("zero-padded all_reduce(W m)", dist.all_reduce, (padded,)),
               ("all_to_all(m per rank)", dist.all_to_all_single, (gathered[:m], x))]
        for name, op, op_args in ops:
            op(*op_args)
            times = []
            for _ in range(reps):
                dist.barrier()
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                op(*op_args)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                times.append(time.perf_counter() - t0)
            rows.append({"numbers": m, "op": name, "seconds": statistics.median(times)})
    return rows


def collectives(args) -> int:
    from frogcore.distributed import run_local

    world = max(args.world_sizes or [2])
    backend = "nccl" if args.device == "cuda" else "gloo"
    rows = run_local(_collectives_worker, world, args=(args.sizes, args.reps, args.device), backend=backend,
                     device=args.device, timeout_s=args.timeout, threads=args.threads)[0]
    print(f"\nCollectives on {device_label(args.device, args.threads)}, W = {world} ({backend}); float32, "
          f"median of {args.reps}\n")
    print("| numbers per rank | MB per rank | collective | seconds |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['numbers']:,} | {4 * r['numbers'] / 1e6:.1f} | {r['op']} | {r['seconds']:.4f} |")
    return 0


def run_config(cfg: dict, timeout: float) -> dict:
    from frogcore.distributed import LocalRunError, run_local

    backend = "nccl" if cfg["device"] == "cuda" else "gloo"
    load0 = os.getloadavg()[0]
    try:
        ranks = run_local(_worker, cfg["world"], args=(cfg,), backend=backend, device=cfg["device"],
                          timeout_s=timeout, pg_timeout_s=max(60.0, timeout / 2), threads=cfg["threads"])
    except LocalRunError as exc:
        return dict(cfg, seconds=float("nan"), min_seconds=float("nan"), cpu_seconds=float("nan"), comm=0,
                    error=str(exc).splitlines()[-1], load_before=load0, load_after=os.getloadavg()[0])
    per_step = [max(r["times"][i] for r in ranks) for i in range(cfg["reps"])]
    per_step_cpu = [max(r["cpu"][i] for r in ranks) for i in range(cfg["reps"])]
    return dict(cfg, seconds=statistics.median(per_step), min_seconds=min(per_step),
                cpu_seconds=statistics.median(per_step_cpu), comm=ranks[0]["comm"],
                load_before=load0, load_after=os.getloadavg()[0])


def device_label(device: str, threads: int | None) -> str:
    import torch

    if device == "cuda":
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        return f"CUDA, {torch.cuda.device_count()} x {', '.join(names)}"
    return (f"CPU, {os.cpu_count()} cores, {threads or 'default'} torch thread(s) per process "
            f"({platform.processor() or platform.machine()})")


def table(records: list[dict], label: str) -> list[str]:
    lines = [f"Device: {label}; FC-{records[0]['width']} (784-dim input, batch {records[0]['batch']}), "
             f"fwd, {records[0]['perturbation']} perturbation; seconds per step (median of the slowest rank)", "",
             "| K | W | engine | gram | aggregation | s/step | speed-up | efficiency | CPU s/step | CPU speed-up "
             "| numbers/step | load before/after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['k']} | {r['world']} | {r['engine']} | {r['gram'] if r['world'] > 1 else '-'} | "
                     f"{r['aggregation']} | {r['seconds']:.4f} | {r['speedup']:.2f}x | {r['efficiency']:.2f} | "
                     f"{r['cpu_seconds']:.4f} | {r['cpu_speedup']:.2f}x | "
                     f"{r['comm']:,} | {r['load_before']:.2f}/{r['load_after']:.2f} |"
                     + (f" ERROR: {r['error']}" if "error" in r else ""))
    return lines


def add_scaling(records: list[dict]) -> None:
    for r in records:
        for key, out in (("seconds", "speedup"), ("cpu_seconds", "cpu_speedup")):
            base = [b[key] for b in records if b["k"] == r["k"] and b["world"] == 1
                    and b["aggregation"] == r["aggregation"] and b[key] == b[key]]
            best = min(base) if base else float("nan")
            r[out] = best / r[key] if r[key] == r[key] and r[key] > 0 else float("nan")
        r["efficiency"] = r["speedup"] / r["world"]


def verdict(records: list[dict]) -> list[str]:
    out = []
    for r in records:
        if r["world"] == 2 and r["k"] == 64:
            ok = r["speedup"] >= 1.6
            out.append(f"W=2, K=64, {r['aggregation']} (gram {r['gram']}): speed-up {r['speedup']:.2f}x, efficiency "
                       f"{r['efficiency']:.2f} ({'PASS' if ok else 'FAIL'}: target >= 1.6x); CPU-time speed-up "
                       f"{r['cpu_speedup']:.2f}x (load {r['load_before']:.1f}; with other processes on the machine "
                       "the wall-clock speed-up understates what an idle machine gives)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--world-sizes", type=int, nargs="+", default=None,
                    help="numbers of processes (default: 1 2 on CPU; 1 and every power of two up to all GPUs)")
    ap.add_argument("--ks", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--aggregations", nargs="+", default=["projection"],
                    choices=("single", "mean", "sum", "projection"))
    ap.add_argument("--perturbation", default="weight", choices=("weight", "activity"))
    ap.add_argument("--grams", nargs="+", default=["auto"], choices=("auto", "gather", "regenerate", "transpose"),
                    help="projection's Gram strategies to time at W >= 2")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--no-per-tangent-baseline", action="store_true",
                    help="at W = 1 time only the default engine (seeding='stream')")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    ap.add_argument("--out", nargs="?", const=DEFAULT_OUT, default=None, metavar="PATH",
                    help=f"also write the records as CSV (+ .meta.json) to PATH (default {DEFAULT_OUT}, relative "
                         "to the repository)")
    ap.add_argument("--markdown", help="also write the table as markdown to this file")
    ap.add_argument("--json", help="also write the records as JSON to this file")
    ap.add_argument("--collectives", action="store_true",
                    help="instead: time all_reduce / all_gather / zero-padded all_reduce / all_to_all (--sizes)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1 << 17, 1 << 20, 1 << 23, 30_000_000],
                    help="numbers per rank for --collectives")
    args = ap.parse_args(argv)
    if args.collectives:
        return collectives(args)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_distributed: --device cuda but no CUDA GPU is visible", file=sys.stderr)
        return 2
    worlds = args.world_sizes
    if worlds is None:
        if args.device == "cuda":
            n = torch.cuda.device_count()
            worlds = sorted({1, n} | {w for w in (2, 4, 8, 16) if w <= n})
        else:
            worlds = [1, 2]
    base = dict(device=args.device, width=args.width, batch=args.batch, perturbation=args.perturbation,
                reps=args.reps, warmup=args.warmup, threads=args.threads)
    jobs = []
    for agg in args.aggregations:
        for k in args.ks:
            for w in worlds:
                if w == 1:
                    seedings = ["stream"] if args.no_per_tangent_baseline else ["stream", "per-tangent"]
                    jobs += [dict(base, aggregation=agg, k=k, world=1, engine=s, gram="-") for s in seedings]
                else:
                    grams = args.grams if agg == "projection" else ["auto"]
                    jobs += [dict(base, aggregation=agg, k=k, world=w, engine="tangent-parallel", gram=g)
                             for g in grams]
    records = []
    for cfg in jobs:
        rec = run_config(cfg, args.timeout)
        records.append(rec)
        err = f"  ERROR: {rec['error']}" if "error" in rec else ""
        print(f"  {cfg['aggregation']:10s} K={cfg['k']:<3d} W={cfg['world']} {cfg['engine']:16s} gram={cfg['gram']:7s} "
              f"{rec['seconds']:.4f} s/step  (load {rec['load_before']:.2f} -> {rec['load_after']:.2f}){err}",
              flush=True)
    add_scaling(records)
    lines = table(records, device_label(args.device, args.threads))
    checks = verdict(records)
    print("\n".join(["", *lines, "", *checks]))
    if args.out:
        from frogcore.bookgen import write_benchmark_csv

        out = ROOT / args.out if args.out == DEFAULT_OUT else Path(args.out)
        paths = write_benchmark_csv(records, out, COLUMNS, bench="distributed", threads=args.threads,
                                    device=args.device, device_label=device_label(args.device, args.threads),
                                    argv=[__file__, *(sys.argv[1:] if argv is None else argv)])
        print("wrote " + ", ".join(map(str, paths)))
    if args.markdown:
        Path(args.markdown).write_text("\n".join([*lines, "", *checks]) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
