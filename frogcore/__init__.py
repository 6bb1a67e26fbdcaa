"""frogcore: the library behind the frog-companion book.

Forward gradients from K random tangents (FROG, Flügel et al., arXiv 2410.17764) and second-order
forward mode (FoMoH, Cobb et al., arXiv 2408.10419), built on ``torch.func``.

The verbs::

    V = sample_tangents(n, k, generator=g)            # k random tangents in R^n
    fx, d = directional_derivatives(f, x, V)          # f(x) and ∇f(x)·v_i by forward mode (no backward pass)
    g_hat = aggregate(d, V, "projection")             # FROG: V^T (V V^T)^-1 d ("mean", "sum", "single", ...)
    res = optimize(f, x0, [Run("frog", 16, lr=0.1)], max_steps=1000)   # batched gradient descent
    engine = make_engine(mode="fwd", aggregation="projection", k=16)  # network training steps
    params, info = forward_step(f, params, "fomoh-kd", k=3, lr=1.0)   # FoMoH / FoMoH-KD / FGD / Newton
    law("projection", "cosine", n, k).mean()          # exact laws of the estimators' quality

Chapters of the book: ``frogcore.experiments.<chapter>.run(profile, device, seed, **overrides)``.
"""
from ._version import __version__
from .approach import APPROACHES, Approach
from .config import DEVICES, PROFILES, check_choice, check_profile, resolve_device
from .distributed import TangentParallelEngine, TangentParallelError, make_tangent_parallel_engine
from .engines import make_engine
from .estimators import AGGREGATIONS, aggregate, forward_gradient, scale_factor
from .fomoh_training import FomohTrainResult
from .fomoh_training import train as fomoh_train
from .forward import directional_derivatives, gradient
from .hyperdual import directional_hessian, hvp, hyperdual, second_order_safe
from .linalg import project, projection_norm
from .optimize import OptimResult, Run, optimize, optimize_loop
from .second_order import forward_step, newton_cg_direction
from .seeds import derive
from .tangents import SAMPLERS, sample_tangents
from .theory import exact_table, law

__all__ = [
    "__version__",
    # constants
    "PROFILES", "DEVICES", "AGGREGATIONS", "SAMPLERS", "APPROACHES",
    # tangents and estimators (FROG)
    "sample_tangents", "directional_derivatives", "gradient", "aggregate", "project", "projection_norm",
    "forward_gradient", "scale_factor",
    # optimisation and training
    "Approach", "Run", "OptimResult", "optimize", "optimize_loop", "make_engine",
    "make_tangent_parallel_engine", "TangentParallelEngine", "TangentParallelError",
    # second order (FoMoH)
    "hyperdual", "directional_hessian", "hvp", "second_order_safe", "forward_step", "newton_cg_direction",
    "fomoh_train", "FomohTrainResult",
    # theory
    "law", "exact_table",
    # plumbing
    "derive", "check_choice", "check_profile", "resolve_device",
]
