"""Time one training step of every gradient engine vs the number of tangents K.

Each configuration (model, method, K) runs in its own subprocess (long-lived processes were
measured 4-40x slow on the shared development machine). A step is ``engine.step`` (tangent
sampling included) plus ``optimizer.step``; the table reports seconds per step and multiples of
one forward pass (train mode, no graph) and of one backprop step.

Methods: ``bp``; ``sim`` (true gradient by backprop, then the estimator); ``fwd-vmap`` (the K
JVPs batched with torch.func.vmap); ``fwd-loop`` (one JVP per tangent: the authors' real-forward-mode
method); ``fwd-auto`` (frogcore's automatic choice); ``sample`` (drawing the K·n tangent entries
alone, weight perturbation: the share of every sim/fwd step spent on sampling).

Usage::

    .venv/bin/python benchmarks/bench_engines.py                       # CPU, FC-1024, ResNet18, ViT
    .venv/bin/python benchmarks/bench_engines.py --device cuda --reps 20
    .venv/bin/python benchmarks/bench_engines.py --models fc --ks 1 16 --perturbation activity
    .venv/bin/python benchmarks/bench_engines.py --markdown table.md   # also write a markdown table
    .venv/bin/python benchmarks/bench_engines.py --threads 1 --out     # the book's table (see below)

``--out [PATH]`` writes the records as a tidy CSV (default ``results/benchmarks/engines/engines.csv``, the
table book/performance.md is generated from): one row per configuration — model, label, batch, params,
perturbation, aggregation, method, k (0 for the forward pass and backprop), device, threads, reps, warmup —
then the measurement (seconds: median step time, min_seconds, auto_impl, error), and beside it
``engines.meta.json`` (date, machine, torch version, threads, command line, git commit).

Checks printed at the end: on FC-1024 with K = 16 and weight perturbation, fwd-vmap is at least
2.5x faster than fwd-loop; and fwd-auto is never slower than fwd-loop (10% noise allowance).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = "results/benchmarks/engines/engines.csv"

# model name -> (build_model name, input shape, batch, model kwargs, label)
MODELS = {
    "fc": ("fc", (1, 28, 28), 64, {"width": 1024}, "FC-1024 (MNIST, batch 64)"),
    "resnet18": ("resnet18", (3, 32, 32), 32, {}, "ResNet18 (CIFAR-10, batch 32)"),
    "vit": ("vit", (3, 32, 32), 32, {}, "ViT 6x256 (CIFAR-10, batch 32)"),
}
METHODS = ("bp", "sim", "fwd-vmap", "fwd-loop", "fwd-auto", "sample")


def run_one(cfg: dict) -> dict:
    """Time one configuration in this process; returns a JSON-able record."""
    import torch
    import torch.nn.functional as F

    from frogcore.config import resolve_device
    from frogcore.engines import choose_fwd_impl, make_engine
    from frogcore.models import build_model

    device = resolve_device(cfg["device"])
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    name, shape, batch, kw, _ = MODELS[cfg["model"]]
    model = build_model(name, shape, 10, **kw).to(device).train()
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    method = cfg["method"]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if method == "forward":
        def step():
            with torch.no_grad():
                F.cross_entropy(model(x), y)
    elif method == "sample":  # the tangent sampling alone (part of every sim/fwd step)
        from frogcore.tangents import sample_tangents
        n = sum(p.numel() for p in model.parameters())
        gen = torch.Generator(device=device).manual_seed(0)

        def step():
            sample_tangents(n, cfg["k"], generator=gen, device=device)
    else:
        if method == "bp":
            engine = make_engine(mode="bp")
        else:
            mode = "sim" if method == "sim" else "fwd"
            impl = method.split("-")[1] if mode == "fwd" else "auto"
            gen = torch.Generator(device=device).manual_seed(0)
            engine = make_engine(mode=mode, aggregation=cfg["aggregation"], k=cfg["k"],
                                 perturbation=cfg["perturbation"], fwd_impl=impl, generator=gen)

        def step():
            engine.step(model, F.cross_entropy, x, y)
            opt.step()

    for _ in range(cfg["warmup"]):
        step()
    sync()
    times = []
    for _ in range(cfg["reps"]):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    rec = dict(cfg, seconds=times[len(times) // 2], min_seconds=times[0], threads=torch.get_num_threads())
    if method == "fwd-auto":
        rec["auto_impl"] = choose_fwd_impl(model)
    rec["params"] = sum(p.numel() for p in model.parameters())
    return rec


def spawn(cfg: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(cfg)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return dict(cfg, seconds=float("nan"), error=f"timeout after {timeout:.0f}s")
    if out.returncode != 0:
        return dict(cfg, seconds=float("nan"), error=out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def device_label(device: str, threads: int | None = None) -> str:
    import os

    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return f"CUDA, {torch.cuda.get_device_name(0)}"
    return (f"CPU, {os.cpu_count()} cores, {threads or torch.get_num_threads()} torch threads "
            f"({platform.processor() or platform.machine()})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 16])
    ap.add_argument("--perturbation", default="weight", choices=("weight", "activity"))
    ap.add_argument("--aggregation", default="projection", choices=("single", "mean", "sum", "projection"))
    ap.add_argument("--reps", type=int, default=None, help="timed steps (default: 5 for FC, 2 otherwise)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads per configuration (default: torch's default, one per core)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per configuration")
    ap.add_argument("--out", nargs="?", const=DEFAULT_OUT, default=None, metavar="PATH",
                    help=f"also write the records as CSV (+ .meta.json) to PATH (default {DEFAULT_OUT}, relative "
                         "to the repository)")
    ap.add_argument("--markdown", help="also write the table as markdown to this file")
    ap.add_argument("--json", help="also write all records as JSON to this file")
    args = ap.parse_args(argv)

    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0

    records = []
    for model in args.models:
        reps = args.reps or (5 if model == "fc" else 2)
        base = dict(model=model, device=args.device, perturbation=args.perturbation,
                    aggregation=args.aggregation, warmup=args.warmup, reps=reps, k=0,
                    threads=args.threads)
        jobs = [dict(base, method="forward")]
        if "bp" in args.methods:
            jobs.append(dict(base, method="bp"))
        for k in args.ks:
            jobs += [dict(base, method=m, k=k) for m in args.methods if m != "bp"]
        for cfg in jobs:
            rec = spawn(cfg, args.timeout)
            rec.update(label=MODELS[model][4], batch=MODELS[model][2])
            records.append(rec)
            extra = f" [{rec['auto_impl']}]" if "auto_impl" in rec else ""
            err = f"  ERROR: {rec['error']}" if "error" in rec else ""
            print(f"  {model:9s} {cfg['method']:9s} K={cfg['k']:<3d} {rec['seconds']:.4f} s{extra}{err}",
                  flush=True)

    label = device_label(args.device, args.threads)
    lines = table(records, args, label)
    print("\n".join(lines))
    checks = verdicts(records)
    print("\n".join(checks))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines + [""] + checks) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    if args.out:
        from frogcore.bookgen import ENGINE_COLUMNS, write_benchmark_csv

        out = Path(args.out) if Path(args.out).is_absolute() or args.out != DEFAULT_OUT else ROOT / args.out
        paths = write_benchmark_csv(records, out, ENGINE_COLUMNS, bench="engines", threads=args.threads,
                                    device=args.device, device_label=label, argv=[__file__, *(argv or sys.argv[1:])])
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def _lookup(records, model, method, k=0):
    for r in records:
        if r["model"] == model and r["method"] == method and (method in ("forward", "bp") or r["k"] == k):
            return r
    return None


def table(records, args, label) -> list[str]:
    lines = [f"Device: {label}; perturbation={args.perturbation}, aggregation={args.aggregation}; "
             "seconds per training step (median), ×fwd = multiple of one forward pass, "
             "×bp = multiple of one backprop step", "",
             "| model | method | K | s/step | ×fwd | ×bp |", "|---|---|---|---|---|---|"]
    for model in args.models:
        fwd = _lookup(records, model, "forward")
        bp = _lookup(records, model, "bp")
        rows = [fwd] + ([bp] if bp else [])
        rows += [_lookup(records, model, m, k) for k in args.ks for m in args.methods if m != "bp"]
        for r in rows:
            if r is None:
                continue
            s = r["seconds"]
            xf = s / fwd["seconds"] if fwd else float("nan")
            xb = s / bp["seconds"] if bp else float("nan")
            meth = r["method"] + (f" ({r['auto_impl']})" if "auto_impl" in r else "")
            k = "-" if r["method"] in ("forward", "bp") else str(r["k"])
            lines.append(f"| {MODELS[model][4]} | {meth} | {k} | {s:.4f} | {xf:.1f} | {xb:.2f} |")
    return lines


def verdicts(records) -> list[str]:
    out = [""]
    vm, lp = _lookup(records, "fc", "fwd-vmap", 16), _lookup(records, "fc", "fwd-loop", 16)
    if vm and lp and vm.get("perturbation") == "weight":
        ratio = lp["seconds"] / vm["seconds"]
        out.append(f"FC-1024, K=16, weight perturbation: fwd-loop / fwd-vmap = {ratio:.2f}x "
                   f"({'PASS' if ratio >= 2.5 else 'FAIL'}: needs >= 2.5x)")
    for r in records:
        if r["method"] != "fwd-auto":
            continue
        lp = _lookup(records, r["model"], "fwd-loop", r["k"])
        if lp:
            ratio = lp["seconds"] / r["seconds"]
            ok = ratio >= 0.9
            out.append(f"{r['model']:9s} K={r['k']:<3d} fwd-loop / fwd-auto ({r.get('auto_impl')}) = {ratio:.2f}x "
                       f"({'PASS' if ok else 'FAIL'}: auto never slower than the loop, 10% noise allowance)")
    return out


if __name__ == "__main__":
    sys.exit(main())
