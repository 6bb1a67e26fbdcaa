"""Train a network with tangent-parallel forward gradients: the K tangents of every step split over W processes.

Launch with ``torchrun`` (gloo on CPUs, NCCL with one GPU per process)::

    torchrun --nproc-per-node 2 -m frogcore.experiments.tangent_parallel --tangent-parallel --k 16
    torchrun --nproc-per-node 4 -m frogcore.experiments.tangent_parallel --tangent-parallel --device cuda \\
        --width 1024 --k 64 --perturbation weight --out run.json
    python -m frogcore.experiments.tangent_parallel --k 16      # the same run in one process

Defaults: scikit-learn's digits (offline), the FC network of FROG Section 4.4 (two hidden ReLU layers,
``--width``), real forward mode (``--mode fwd``), FROG's projection with K = 16 tangents, activity
perturbation (the authors' setting for 4.4), plain SGD. Every rank holds the whole model and sees the same
mini-batches; each evaluates its share of the tangents (:mod:`frogcore.distributed`). Tangents come from
per-tangent seeds, so a run with ``--tangent-parallel`` on W processes and the same run in one process
(which then uses ``seeding="per-tangent"``) draw the same tangents and give the same training curve up to
floating-point rounding. After every epoch the ranks check that their model replicas are identical.

The learning rate defaults to the authors' tuned MNIST rate for FC-W, the approach (``projection`` →
FROG, otherwise FG-mean) and K from ``frogcore/data/fc_nns.csv`` when the table lists it (their
activity-perturbation setting), else to 0.01; pass ``--lr`` for anything else.

Rank 0 prints one line per epoch and, with ``--out PATH``, writes a JSON summary (options, world size,
per-epoch metrics, seconds per step, the numbers communicated per step).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..config import check_positive_int
from ..datasets import DATASETS, Splits, load_splits
from ..engines import FWD_IMPLS, PERTURBATIONS, TANGENT_MODES, make_engine
from ..estimators import AGGREGATIONS
from ..models import MODELS, build_model, num_parameters

FALLBACK_LR = 0.01

__all__ = ["FALLBACK_LR", "default_lr", "parse_args", "main"]


def default_lr(width: int, aggregation: str, k: int) -> float:
    """The authors' MNIST learning rate for ``fc_w=<width>`` (FROG for ``projection``, FG-mean otherwise) and
    ``k``, from ``fc_nns.csv``; :data:`FALLBACK_LR` when the table has no such row."""
    import pandas as pd

    with resources.files("frogcore").joinpath("data", "fc_nns.csv").open() as f:
        table = pd.read_csv(f)
    approach = "frog" if aggregation == "projection" else "fg-mean"
    rows = table[(table.model == f"fc_w={width}") & (table.dataset == "mnist")
                 & (table.gradient_approach == approach) & (table.k == k)]
    return float(rows.lr.iloc[0]) if len(rows) else FALLBACK_LR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m frogcore.experiments.tangent_parallel", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tangent-parallel", action="store_true",
                    help="split the tangents over the processes started by torchrun (needs torchrun)")
    ap.add_argument("--dataset", default="digits", choices=DATASETS)
    ap.add_argument("--data-root", default=None, help="folder with MNIST/CIFAR-10 files (default $FROG_DATA_DIR)")
    ap.add_argument("--model", default="fc", choices=tuple(MODELS))
    ap.add_argument("--width", type=int, default=256, help="FC hidden width / ResNet18 base width")
    ap.add_argument("--k", type=int, default=16, help="tangents per step (over all processes)")
    ap.add_argument("--aggregation", default="projection", choices=AGGREGATIONS)
    ap.add_argument("--perturbation", default="activity", choices=PERTURBATIONS)
    ap.add_argument("--tangents", default="global", choices=TANGENT_MODES)
    ap.add_argument("--mode", default="fwd", choices=("sim", "fwd"))
    ap.add_argument("--fwd-impl", default="auto", choices=FWD_IMPLS)
    ap.add_argument("--gram", default="auto", choices=("auto", "gather", "slices"),
                    help="projection: how the ranks form the Gram matrix (frogcore.distributed)")
    ap.add_argument("--lr", type=float, default=None, help="SGD learning rate (default: see the module docstring)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit-train", type=int, default=None, help="use only the first N training samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process (default: unchanged)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a collective may take before failing")
    ap.add_argument("--out", default=None, help="write a JSON summary to this file (rank 0)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    for name in ("width", "k", "epochs", "batch_size"):
        check_positive_int(name, getattr(args, name))
    if args.limit_train is not None:
        check_positive_int("limit_train", args.limit_train, minimum=2)
    check_positive_int("seed", args.seed, minimum=0)
    if args.threads is not None:
        check_positive_int("threads", args.threads)
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"lr must be positive; got {args.lr}")
    if args.tangent_parallel and "RANK" not in os.environ:
        raise ValueError("--tangent-parallel needs torchrun: torchrun --nproc-per-node W -m "
                         "frogcore.experiments.tangent_parallel --tangent-parallel ...")
    return args


def _data(args: argparse.Namespace) -> Splits:
    data = load_splits(args.dataset, seed=args.seed, root=args.data_root)
    if args.limit_train is not None:
        x, y = data.train
        data = Splits((x[: args.limit_train], y[: args.limit_train]), data.val, data.test, data.num_classes,
                      data.name)
    return data


def _model(args: argparse.Namespace, data: Splits) -> torch.nn.Module:
    kw: dict[str, Any] = {"width": args.width} if args.model in ("fc", "resnet18") else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return build_model(args.model, data.input_shape, data.num_classes, **kw)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the training (see the module docstring); returns the summary (on every rank)."""
    from ..training import fit

    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    world, rank = 1, 0
    if args.tangent_parallel:
        from ..distributed import check_replicas, init_from_env, make_tangent_parallel_engine

        rank, world, device = init_from_env(device=args.device, timeout_s=args.timeout)
    else:
        from ..config import resolve_device

        device = resolve_device(args.device)
    verbose = rank == 0 and not args.quiet
    data = _data(args)
    model = _model(args, data).to(device)
    lr = args.lr if args.lr is not None else default_lr(args.width, args.aggregation, args.k)
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    opts = dict(mode=args.mode, aggregation=args.aggregation, k=args.k, perturbation=args.perturbation,
                tangents=args.tangents, fwd_impl=args.fwd_impl, generator=gen)
    if args.tangent_parallel:
        engine = make_tangent_parallel_engine(**opts, gram=args.gram)
    else:
        engine = make_engine(**opts, seeding="per-tangent")
    torch.manual_seed(args.seed)  # dropout masks (global RNG): the same on every rank
    if verbose:
        print(f"tangent-parallel training: {world} process(es), {device}, {args.model} "
              f"({num_parameters(model)} parameters) on {args.dataset}, {args.mode} {args.aggregation} "
              f"K={args.k} ({args.perturbation}), lr={lr:g}", flush=True)

    def on_epoch(epoch: int, row: dict[str, Any]) -> None:
        if args.tangent_parallel:
            check_replicas(model)
        if verbose:
            print(f"epoch {epoch}: step loss {row['step_loss']:.4f}, val loss {row['val_loss']:.4f}, "
                  f"val acc {row['val_acc']:.3f}, {row['time_per_step_s'] * 1e3:.1f} ms/step", flush=True)

    t0 = time.perf_counter()
    try:
        result = fit(model, data, engine, lr=lr, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                     generator=gen, device=device, progress=False, callback=on_epoch)
    finally:
        if args.tangent_parallel:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    hist = result.history
    summary = {
        "tangent_parallel": bool(args.tangent_parallel), "world_size": world, "device": str(device),
        "options": {k: v for k, v in vars(args).items() if k not in ("out", "quiet")}, "lr": lr,
        "status": result.status, "epochs_run": result.epochs_run, "wall_s": time.perf_counter() - t0,
        "time_per_step_s": float(hist.time_per_step_s.iloc[1:].mean()) if len(hist) > 1 else float("nan"),
        "comm_per_step": list(getattr(engine, "comm_log", [])),
        "history": hist.to_dict(orient="records"),
    }
    if rank == 0 and args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=1, default=str))
    if verbose:
        last = hist.iloc[-1]
        print(f"done ({result.status}): test acc {last.test_acc:.3f}, "
              f"{summary['time_per_step_s'] * 1e3:.1f} ms/step", flush=True)
    return summary


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
