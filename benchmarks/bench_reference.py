"""Benchmark frogcore against the authors' own implementations, on the same inputs.

The authors' code is *not* part of frogcore: point the environment variables at work trees of their
repositories (any checkout; a ``git worktree`` lets the script read the commit)::

    FROG_REF_FROG   a work tree of https://github.com/Helmholtz-AI-Energy/frog   (FROG, Flügel et al.)
    FROG_REF_FOMOH  a work tree of https://github.com/SRI-CSL/fomoh             (FoMoH, Cobb et al.)

Without them the script says so and exits with status 0. With one of them it runs the benchmarks that
repository serves and skips the others.

Benchmarks (every configuration in its own subprocess, all with the same number of torch threads,
``--threads``, default 1; times are medians of repeats):

``approx``       FROG Section 4.1: the approximation-quality grid (n, k = 2^0..2^10, 100 samples, true
                 gradient 1 ∈ Rⁿ) with the estimators both codes compute — single tangent, mean and sum
                 (each with raw and unit-length tangents) and the projection. Authors:
                 ``approximation_quality.approximation_quality_experiments`` (a Python loop over samples).
                 Ours: ``quality_grid(method="brute")`` (the same tangents built explicitly, batched) and
                 ``method="reduced"`` (our exact O(k)-per-sample sampler).
``closed-form``  FROG Section 4.2, an equal-work sub-grid: sphere, Rosenbrock, Styblinski-Tang at
                 n = 4 and 64, the paper's 8 approaches × seeds 0-4, ``--cf-steps`` steps with early
                 stopping OFF (every run takes every step unless it diverges; the steps actually taken
                 are reported in ``work``), the authors' learning rates. Authors:
                 ``function_optimization.optimize`` one run at a time. Ours: ``frogcore.optimize.optimize``
                 (one batch per function and n) and ``optimize_loop`` (one run at a time).
``fomoh``        FoMoH-KD with K = 3 on a 784-128-10 MLP (101,770 parameters), batch 1024: one step in
                 forward passes (``x_forward`` = time of one step / time of one plain PyTorch forward
                 pass of the same network and batch, measured in the same process). Authors:
                 ``fomoh.opt.optimizer_step_plane_Nd`` (their default loop over the 6 tangent pairs, and
                 their vectorised path). Ours: ``frogcore.second_order.forward_step("fomoh-kd", k=3)``.
``engine``       One training step with real forward mode on the FC-1024 MNIST network (1,863,690
                 parameters), batch 64, K = 16 tangents, FROG (projection) aggregation, weight and
                 activity perturbation; ``x_forward`` as above. Authors: ``nn_training.train.Trainer``
                 with ``fg_models.WeightPerturbedForwardGradientModel`` /
                 ``ActivityPerturbedForwardGradientModel`` (one ``forward_ad`` pass per tangent, their
                 ``fwad`` mode). Ours: ``frogcore.engines.make_engine(mode="fwd")``. The two real-forward-
                 mode implementations are timed as they are; their update rules differ (the authors'
                 ``fwad`` models aggregate per parameter tensor / per block, ours over one global tangent).

Cost: with the defaults the authors' 4.2 loop dominates (one repeat took 564 s with one thread on the shared
2-core machine at load 6-9, their per-run pandas history included; our batched optimiser 5 s), and one full
``--repeats 1`` pass took about 20 minutes there; ``--repeats 3`` roughly triples the grid parts.

``speedup_vs_authors`` = (authors' reference row) / (this row), from ``x_forward`` where both rows have
it (robust to load differences between processes), otherwise from ``median_s``.

Import patches applied to the authors' code at run time, in the subprocess only (nothing is copied or
changed on disk): Python >= 3.11 rejects the ``np.ndarray`` dataclass defaults of FROG's
``function_optimization/optimization_functions.py`` (their plotting limits), so those defaults are
turned into ``default_factory`` copies while that package is imported; modules their packages import but
these benchmarks never use (``torchvision``, ``prefixed``, ``einops``) are replaced by empty stubs when
they are not installed.

Usage::

    git --git-dir=<frog mirror> worktree add --detach /tmp/ref_frog HEAD
    git --git-dir=<fomoh mirror> worktree add --detach /tmp/ref_fomoh HEAD
    FROG_REF_FROG=/tmp/ref_frog FROG_REF_FOMOH=/tmp/ref_fomoh \\
        .venv/bin/python benchmarks/bench_reference.py --threads 1 --out results/benchmarks/reference/reference.csv
    # a quick check (small grids, one repeat):
    ... bench_reference.py --repeats 1 --step-reps 3 --approx-max-log-n 6 --approx-max-log-k 6 \\
        --cf-steps 20 --out /tmp/ref.csv

The CSV has one row per implementation and configuration, with both repositories' commits, our commit
(and whether our work tree had uncommitted changes), the thread count and the torch version.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = "results/benchmarks/reference/reference.csv"
BENCHMARKS = ("approx", "closed-form", "fomoh", "engine")
NEEDS = {"approx": "frog", "closed-form": "frog", "engine": "frog", "fomoh": "fomoh"}
REPOS = {
    "frog": ("FROG_REF_FROG", "Helmholtz-AI-Energy/frog", "function_optimization/gradient_descent.py"),
    "fomoh": ("FROG_REF_FOMOH", "SRI-CSL/fomoh", "src/fomoh/hyperdual.py"),
}
COLUMNS = ("benchmark", "group", "side", "implementation", "config", "threads", "repeats", "median_s", "min_s",
           "forward_s", "x_forward", "speedup_vs_authors", "work", "frog_commit", "fomoh_commit", "our_commit",
           "our_tree_dirty", "torch_version", "python_version", "machine", "timestamp", "error")
PAPER_APPROACHES = (("bp", 0), ("fg-mean", 1), ("fg-mean", 2), ("fg-mean", 4), ("fg-mean", 16),
                    ("frog", 2), ("frog", 4), ("frog", 16))
CF_FUNCTIONS = ("sphere", "rosenbrock", "styblinski-tang")
# the estimators both 4.1 implementations compute (the authors have no "single tangent, unit length")
APPROX_ESTIMATORS = ("single", "mean", "mean-normalized", "sum", "sum-normalized", "projection")
FOMOH_BATCH = 1024
ENGINE_BATCH = 64


# ----------------------------------------------------------------------------- arguments

def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and validate the command line (a ``ValueError`` names the bad parameter)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"CSV file to write (default {DEFAULT_OUT}, relative to the "
                                                       "repository root)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in every configuration (default 1)")
    ap.add_argument("--only", nargs="+", default=list(BENCHMARKS), help=f"benchmarks to run, from {BENCHMARKS}")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions of each grid computation (median)")
    ap.add_argument("--step-reps", type=int, default=10,
                    help="timed steps per round for the step benchmarks (3 rounds, interleaved with forward passes)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (step benchmarks)")
    ap.add_argument("--approx-max-log-n", type=int, default=10, help="4.1 grid: n = 2^0 .. 2^this")
    ap.add_argument("--approx-max-log-k", type=int, default=10, help="4.1 grid: k = 2^0 .. 2^this")
    ap.add_argument("--approx-samples", type=int, default=100, help="4.1 grid: samples per cell")
    ap.add_argument("--cf-steps", type=int, default=200, help="4.2 sub-grid: steps per run")
    ap.add_argument("--cf-n", type=int, nargs="+", default=[4, 64], help="4.2 sub-grid: dimensions")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per configuration")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    _positive("threads", args.threads)
    _positive("repeats", args.repeats)
    _positive("step-reps", args.step_reps)
    _positive("approx-samples", args.approx_samples)
    _positive("cf-steps", args.cf_steps)
    for n in args.cf_n:
        _positive("cf-n", n)
    if isinstance(args.warmup, bool) or args.warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer; got {args.warmup!r}")
    for name in ("approx_max_log_n", "approx_max_log_k"):
        v = getattr(args, name)
        if not 0 <= v <= 14:
            raise ValueError(f"{name.replace('_', '-')} must be in 0..14; got {v!r}")
    if not args.timeout > 0:
        raise ValueError(f"timeout must be positive; got {args.timeout!r}")
    unknown = [b for b in args.only if b not in BENCHMARKS]
    if unknown:
        raise ValueError(f"only: unknown benchmark(s) {unknown}; allowed values: {', '.join(BENCHMARKS)}")
    return args


def reference_paths(environ=None) -> tuple[dict[str, Path | None], list[str]]:
    """The authors' work trees from the environment, and a message for every one that is missing."""
    environ = os.environ if environ is None else environ
    paths, notes = {}, []
    for key, (var, repo, marker) in REPOS.items():
        raw = environ.get(var, "").strip()
        if not raw:
            paths[key] = None
            notes.append(f"{var} is not set (a work tree of {repo})")
            continue
        p = Path(raw).expanduser()
        if not (p / marker).is_file():
            paths[key] = None
            notes.append(f"{var}={raw} is not a work tree of {repo} (no {marker})")
            continue
        paths[key] = p.resolve()
    return paths, notes


# ----------------------------------------------------------------------------- provenance

def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(cwd), *args], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def repo_commit(path: Path | None, override_var: str | None = None, environ=None) -> str:
    """Commit of a work tree (``git rev-parse HEAD``), or ``$override_var``, or ``"unknown"``."""
    environ = os.environ if environ is None else environ
    if override_var and environ.get(override_var):
        return environ[override_var].strip()
    if path is None:
        return "absent"
    return _git(["rev-parse", "HEAD"], path) or "unknown"


def provenance(paths: dict[str, Path | None], threads: int) -> dict[str, object]:
    import torch

    dirty = _git(["status", "--porcelain", "--untracked-files=no"], ROOT)
    return {
        "frog_commit": repo_commit(paths.get("frog"), "FROG_REF_FROG_COMMIT"),
        "fomoh_commit": repo_commit(paths.get("fomoh"), "FROG_REF_FOMOH_COMMIT"),
        "our_commit": _git(["rev-parse", "HEAD"], ROOT) or "unknown",
        "our_tree_dirty": "unknown" if dirty is None else bool(dirty),
        "threads": threads,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} CPUs",
        "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------- the table

def add_speedups(records: list[dict]) -> list[dict]:
    """Fill ``speedup_vs_authors`` of every row from the authors' reference row of its group."""
    refs = {r["group"]: r for r in records if r.get("reference") and r["side"] == "authors"}
    for r in records:
        ref = refs.get(r["group"])
        r["speedup_vs_authors"] = math.nan
        if ref is None or r.get("error"):
            continue
        a, b = ref.get("x_forward"), r.get("x_forward")
        if not (_finite(a) and _finite(b)):
            a, b = ref.get("median_s"), r.get("median_s")
        if _finite(a) and _finite(b) and b > 0:
            r["speedup_vs_authors"] = a / b
    return records


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def write_csv(records: list[dict], path: str | os.PathLike, meta: dict[str, object]) -> Path:
    """Write one row per record with the columns of :data:`COLUMNS` (``meta`` is repeated in every row)."""
    path = Path(path)
    if not path.is_absolute():
        path = ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in records:
            row = {**meta, **{k: v for k, v in r.items() if k in COLUMNS}}
            for k in COLUMNS:
                v = row.get(k, "")
                row[k] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
            w.writerow(row)
    return path


def markdown(records: list[dict]) -> list[str]:
    lines = ["| benchmark | side | implementation | config | median s | × forward | speedup vs authors | work |",
             "|---|---|---|---|---|---|---|---|"]

    def fmt(v, spec):
        return format(v, spec) if _finite(v) else "–"

    for r in records:
        impl = r["implementation"] + (f" (ERROR: {r['error']})" if r.get("error") else "")
        lines.append(f"| {r['benchmark']} | {r['side']} | {impl} | {r['config']} | {fmt(r.get('median_s'), '.4g')} | "
                     f"{fmt(r.get('x_forward'), '.1f')} | {fmt(r.get('speedup_vs_authors'), '.2f')} | "
                     f"{r.get('work', '')} |")
    return lines


# ----------------------------------------------------------------------------- import patches (authors' code)

class _Stub(types.ModuleType):
    """An empty module: any attribute is a placeholder class that refuses to be instantiated."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        full = f"{self.__name__}.{name}"
        top = self.__name__.split(".")[0]

        class Placeholder:
            def __init__(self, *a, **kw):
                raise RuntimeError(f"{full} is a stub installed by bench_reference.py ({top} is not installed)")

        Placeholder.__name__ = Placeholder.__qualname__ = name
        setattr(self, name, Placeholder)
        return Placeholder


STUB_MODULES = {
    "torchvision": ("torchvision", "torchvision.models", "torchvision.models.vision_transformer", "torchvision.ops",
                    "torchvision.ops.misc", "torchvision.datasets", "torchvision.transforms"),
    "prefixed": ("prefixed",),
    "einops": ("einops", "einops.layers", "einops.layers.torch"),
}


def install_stubs(names=tuple(STUB_MODULES)) -> list[str]:
    """Register empty stand-ins for the packages in ``names`` that are not installed; returns their names."""
    installed = []
    for top in names:
        if top in sys.modules or importlib.util.find_spec(top) is not None:
            continue
        for mod in STUB_MODULES[top]:
            stub = _Stub(mod)
            stub.__path__ = []  # a package, so that submodule imports resolve to the stubs below
            sys.modules[mod] = stub
            parent, _, child = mod.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, stub)
        installed.append(top)
    return installed


@contextlib.contextmanager
def ndarray_dataclass_defaults():
    """While active, ``dataclasses.dataclass`` accepts ``np.ndarray`` class-attribute defaults.

    Python >= 3.11 rejects unhashable defaults (``ValueError: mutable default <class 'numpy.ndarray'>``);
    FROG's ``optimization_functions.py`` declares its plotting limits that way. Each such default becomes
    ``field(default_factory=<copy of the array>)``: the same value for every instance.
    """
    import dataclasses

    import numpy as np

    original = dataclasses.dataclass

    def patched(cls=None, /, **kw):
        def wrap(c):
            for name in list(c.__dict__.get("__annotations__", {})):
                value = c.__dict__.get(name)
                if isinstance(value, np.ndarray):
                    setattr(c, name, dataclasses.field(default_factory=lambda v=value: v.copy()))
            return original(c, **kw)

        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = patched
    try:
        yield
    finally:
        dataclasses.dataclass = original


def import_frog(root: Path, *, networks: bool = False):
    """Import the FROG packages from ``root`` with the run-time patches; returns a namespace of modules."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    install_stubs()
    with ndarray_dataclass_defaults():
        import approximation_quality
        import function_optimization
    ns = types.SimpleNamespace(approximation_quality=approximation_quality, function_optimization=function_optimization)
    if networks:
        from nn_training import fg_models, models
        from nn_training import train as nn_train
        ns.fg_models, ns.models, ns.train = fg_models, models, nn_train
    return ns


# ----------------------------------------------------------------------------- timing helpers

def _median_min(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), min(times)


def _time_grid(fn, repeats: int) -> tuple[float, float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    med, mn = _median_min(times)
    return med, mn, out


def _time_steps(step, forward, reps: int, warmup: int, rounds: int = 3) -> dict[str, float]:
    """Median step and forward times, interleaved in ``rounds`` so that both see the same load."""
    for _ in range(warmup):
        step()
        forward()
    st, fw = [], []
    for _ in range(rounds):
        for _ in range(reps):
            t0 = time.perf_counter()
            forward()
            fw.append(time.perf_counter() - t0)
        for _ in range(reps):
            t0 = time.perf_counter()
            step()
            st.append(time.perf_counter() - t0)
    med, mn = _median_min(st)
    f = statistics.median(fw)
    return {"median_s": med, "min_s": mn, "forward_s": f, "x_forward": med / f, "repeats": len(st)}


# ----------------------------------------------------------------------------- workers (one per subprocess)

def _approx(cfg: dict) -> dict:
    ns_ = [2**i for i in range(cfg["max_log_n"] + 1)]
    ks = [2**i for i in range(cfg["max_log_k"] + 1)]
    samples = cfg["samples"]
    cells = len(ns_) * (1 + 5 * len(ks))  # single tangent once per n; 5 estimators per (n, k)
    if cfg["side"] == "authors":
        aq = import_frog(Path(cfg["frog"])).approximation_quality
        aq.approximation_quality_experiments([4], [2], num_samples=4)  # warm-up

        def run():
            return aq.approximation_quality_experiments(ns_, ks, num_samples=samples)
    else:
        try:
            from frogcore.experiments.frog_4_1 import quality_grid
        except ImportError:  # older layout
            from frogcore.experiments.approx_quality import quality_grid
        method = cfg["impl"]
        quality_grid([4], [2], 4, APPROX_ESTIMATORS, method=method)  # warm-up

        def run():
            return quality_grid(ns_, ks, samples, APPROX_ESTIMATORS, method=method, seed=0)
    med, mn, _ = _time_grid(run, cfg["repeats"])
    return {"median_s": med, "min_s": mn, "repeats": cfg["repeats"],
            "work": f"{cells} estimator cells x {samples} samples"}


def _closed_form(cfg: dict) -> dict:
    from frogcore.lrs import LRTable

    lrs = LRTable.shipped()
    steps, seeds = cfg["steps"], range(5)
    jobs = [(f, n) for f in CF_FUNCTIONS for n in cfg["ns"]]
    if cfg["side"] == "authors":
        fo = import_frog(Path(cfg["frog"])).function_optimization

        def algorithm(name, k):
            if name == "bp":
                return fo.get_algorithm("bp")()
            return fo.get_algorithm("fg", k=k, aggregation="mean" if name == "fg-mean" else "orthogonal_projection")()

        def run():
            taken = 0
            for fname, n in jobs:
                func, start_fn, _ = fo.get_function_config(fname)
                start = start_fn(n)
                for name, k in PAPER_APPROACHES:
                    lr = lrs.lookup(fname, n, name, k)
                    grad = algorithm(name, k)
                    for s in seeds:
                        grad.set_seed(s)
                        hist = fo.optimize(func, start, steps, lr, grad, early_stopping_patience=0)
                        taken += len(hist) - 1
            return taken
    else:
        from frogcore.functions import get_function
        from frogcore.optimize import Run, optimize, optimize_loop

        def runs_for(fname, n):
            out = []
            for name, k in PAPER_APPROACHES:
                lr = lrs.lookup(fname, n, name, k)
                out += [Run(name, k, s, lr, draw=None if name == "bp" else 16) for s in seeds]
            return out

        def run():
            taken = 0
            for fname, n in jobs:
                fun = get_function(fname)
                if cfg["impl"] == "batched":
                    res = optimize(fun.fn, fun.start(n), runs_for(fname, n), max_steps=steps, patience=None)
                    taken += int(res.steps.sum())
                else:
                    for r in runs_for(fname, n):
                        taken += int(optimize_loop(fun.fn, fun.start(n), r, max_steps=steps, patience=None).steps[0])
            return taken
    med, mn, taken = _time_grid(run, cfg["repeats"])
    nruns = len(jobs) * len(PAPER_APPROACHES) * len(seeds)
    return {"median_s": med, "min_s": mn, "repeats": cfg["repeats"], "work": f"{nruns} runs, {taken} steps taken"}


def _fomoh(cfg: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from frogcore.models.fomoh_nets import mlp

    torch.manual_seed(0)
    model = mlp((1, 28, 28))
    x = torch.randn(FOMOH_BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (FOMOH_BATCH,))

    def forward():
        with torch.no_grad():
            return F.cross_entropy(model(x), y)

    if cfg["side"] == "authors":
        src = str(Path(cfg["fomoh"]) / "src")
        if src not in sys.path:
            sys.path.insert(0, src)
        from fomoh.hyperdual import HyperTensor
        from fomoh.nn import DenseModel, nll_loss
        from fomoh.opt import optimizer_step_plane_Nd

        hmodel = DenseModel([784, 128, 10])
        hmodel.nn_module_to_htorch_model(model, verbose=False)  # the same weights
        inputs = x.view(FOMOH_BATCH, -1)

        def loss_module(pred, target):
            return nll_loss(pred.logsoftmax(-1), target)

        if cfg["impl"] == "forward":  # their own forward pass (HyperTensor, no tangents), for context
            hx, hy = HyperTensor(inputs), HyperTensor(y)

            def step():
                return loss_module(hmodel(hx, None), hy)
        else:
            vectorized = cfg["impl"] == "vectorized"

            def step():
                return optimizer_step_plane_Nd(hmodel, loss_module, 1, inputs, y, N=3, lr=1e-3, vectorized=vectorized)
    else:
        from frogcore.hyperdual import module_loss, module_params
        from frogcore.second_order import forward_step

        params = module_params(model)
        f = module_loss(model, F.cross_entropy, x, y)
        gen = torch.Generator().manual_seed(0)

        def step():
            return forward_step(f, params, "fomoh-kd", k=3, lr=1e-3, generator=gen, mode=cfg["impl"])
    out = _time_steps(step, forward, cfg["step_reps"], cfg["warmup"])
    out["work"] = f"1 step = 6 hyper-dual tangent pairs; batch {FOMOH_BATCH}"
    return out


def _engine(cfg: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from frogcore.models import build_model

    torch.manual_seed(0)
    x = torch.randn(ENGINE_BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (ENGINE_BATCH,))
    plain = build_model("fc", (1, 28, 28), 10, width=1024).train()

    def forward():
        with torch.no_grad():
            return F.cross_entropy(plain(x), y)

    k, pert = 16, cfg["perturbation"]
    if cfg["side"] == "authors":
        ns_ = import_frog(Path(cfg["frog"]), networks=True)
        base = ns_.models.FCNet(784, 10, 1024, 2)
        cls = (ns_.fg_models.WeightPerturbedForwardGradientModel if pert == "weight"
               else ns_.fg_models.ActivityPerturbedForwardGradientModel)
        net = cls(base, aggregation_mode="orthogonal_projection", seed=1)
        if pert == "activity":
            net.eval()
            net.update_activity_shapes(x.shape)
        opt = torch.optim.SGD(net.parameters(), lr=1e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1)
        trainer = ns_.train.Trainer(net, torch.device("cpu"), [(x, y)], None, None, None, opt, sched, "frog",
                                    num_directions=k, simulated_fg=False, track_additional_stats=False)

        devnull = open(os.devnull, "w")

        def step():
            with contextlib.redirect_stderr(devnull):  # their per-batch progress line
                trainer.train_epoch()
    else:
        from frogcore.engines import make_engine

        net = build_model("fc", (1, 28, 28), 10, width=1024).train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        engine = make_engine(mode="fwd", aggregation="projection", k=k, perturbation=pert, fwd_impl=cfg["impl"],
                             generator=gen)

        def step():
            engine.step(net, F.cross_entropy, x, y)
            opt.step()
    out = _time_steps(step, forward, cfg["step_reps"], cfg["warmup"])
    out["work"] = f"K={k}, batch {ENGINE_BATCH}, {pert} perturbation"
    return out


WORKERS = {"approx": _approx, "closed-form": _closed_form, "fomoh": _fomoh, "engine": _engine}


def run_one(cfg: dict) -> dict:
    import torch

    torch.set_num_threads(cfg["threads"])
    return WORKERS[cfg["benchmark"]](cfg)


# ----------------------------------------------------------------------------- the plan

def plan(args: argparse.Namespace, paths: dict[str, Path | None]) -> list[dict]:
    """Every configuration to run: dicts with benchmark, group, side, implementation, config, reference."""
    common = {"threads": args.threads, "repeats": args.repeats, "step_reps": args.step_reps, "warmup": args.warmup,
              "frog": str(paths["frog"]) if paths.get("frog") else None,
              "fomoh": str(paths["fomoh"]) if paths.get("fomoh") else None}
    out = []

    def add(bench, group, side, impl, label, config, reference=False, **extra):
        out.append({**common, "benchmark": bench, "group": group, "side": side, "impl": impl,
                    "implementation": label, "config": config, "reference": reference, **extra})

    if "approx" in args.only and paths.get("frog"):
        g = dict(max_log_n=args.approx_max_log_n, max_log_k=args.approx_max_log_k, samples=args.approx_samples)
        c = f"n,k <= 2^{args.approx_max_log_n},2^{args.approx_max_log_k}; {args.approx_samples} samples"
        add("approx", "approx", "authors", "-", "approximation_quality.py (loop over samples)", c, True, **g)
        add("approx", "approx", "ours", "brute", "quality_grid(method='brute')", c, **g)
        add("approx", "approx", "ours", "reduced", "quality_grid(method='reduced')", c, **g)
    if "closed-form" in args.only and paths.get("frog"):
        g = dict(steps=args.cf_steps, ns=list(args.cf_n))
        c = (f"3 functions x n {tuple(args.cf_n)} x 8 approaches x 5 seeds, {args.cf_steps} steps, "
             "no early stopping")
        add("closed-form", "closed-form", "authors", "-", "function_optimization.optimize (one run at a time)", c,
            True, **g)
        add("closed-form", "closed-form", "ours", "batched", "frogcore.optimize.optimize (batched)", c, **g)
        add("closed-form", "closed-form", "ours", "loop", "frogcore.optimize.optimize_loop (one run at a time)", c,
            **g)
    if "fomoh" in args.only and paths.get("fomoh"):
        c = f"FoMoH-KD K=3, MLP 784-128-10, batch {FOMOH_BATCH}"
        add("fomoh", "fomoh", "authors", "loop", "fomoh optimizer_step_plane_Nd (default)", c, True)
        add("fomoh", "fomoh", "authors", "vectorized", "fomoh optimizer_step_plane_Nd (vectorized=True)", c)
        add("fomoh", "fomoh-own-forward", "authors", "forward", "fomoh forward pass (HyperTensor, no tangents)", c)
        add("fomoh", "fomoh", "ours", "auto", "frogcore forward_step('fomoh-kd', mode='auto')", c)
    if "engine" in args.only and paths.get("frog"):
        for pert in ("weight", "activity"):
            c = f"FC-1024, K=16, projection, {pert} perturbation, batch {ENGINE_BATCH}"
            grp = f"engine-{pert}"
            add("engine", grp, "authors", "-", f"Trainer fwad ({pert}-perturbed model)", c, True, perturbation=pert)
            add("engine", grp, "ours", "auto", "make_engine(mode='fwd', fwd_impl='auto')", c, perturbation=pert)
    return out


def spawn(cfg: dict, timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"]), "MKL_NUM_THREADS": str(cfg["threads"]),
           "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(cfg)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if out.returncode != 0:
        tail = (out.stderr or "").strip().splitlines()
        return {"error": tail[-1] if tail else f"exit status {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except ValueError as e:
        print(f"bench_reference: {e}", file=sys.stderr)
        return 2
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0

    paths, notes = reference_paths()
    if not any(paths.values()):
        print("bench_reference: the authors' repositories are not available, nothing to compare: "
              + "; ".join(notes) + ". Fetch them and export work trees (see the module docstring).")
        return 0
    for n in notes:
        print(f"bench_reference: {n}; skipping the benchmarks that need it.")
    configs = plan(args, paths)
    if not configs:
        print("bench_reference: no benchmark selected can run with the repositories given.")
        return 0
    meta = provenance(paths, args.threads)
    records = []
    for cfg in configs:
        t0 = time.perf_counter()
        res = spawn(cfg, args.timeout)
        rec = {k: cfg[k] for k in ("benchmark", "group", "side", "implementation", "config", "reference")}
        rec.update(res)
        records.append(rec)
        status = f"ERROR {res['error']}" if res.get("error") else f"median {res['median_s']:.4g} s"
        print(f"  {cfg['benchmark']:<11} {cfg['side']:<7} {cfg['implementation']:<55} {status} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    add_speedups(records)
    path = write_csv(records, args.out, meta)
    print()
    print(f"torch {meta['torch_version']}, {args.threads} thread(s); FROG {meta['frog_commit'][:10]}, "
          f"FoMoH {meta['fomoh_commit'][:10]}, frogcore {str(meta['our_commit'])[:10]}"
          f"{' (uncommitted changes)' if meta['our_tree_dirty'] is True else ''}")
    print("\n".join(markdown(records)))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
