r"""Closed-form test functions (FROG Sections 4.2/4.3, FoMoH Rosenbrock experiments).

Every function maps ``x`` of shape ``(..., n)`` to values of shape ``(...)`` so that many runs (and
many tangent rows) are evaluated at once; all are plain tensor code, so ``torch.func.jvp``, ``vmap``,
``grad`` and ``hessian`` apply.

:data:`FUNCTIONS` is a registry ``name → TestFunction`` with each function's global minimum value,
its global minimiser(s), the starting point used in the FROG paper (for the three N-D functions of
Section 4.2) and plotting bounds for 2-D contour maps. The N-D functions keep the names of the
authors' learning-rate tables (``"sphere"``, ``"rosenbrock"``, ``"styblinski-tang"``).

Forward-mode note
-----------------
The functions are written with ``torch.square``, ``x ** p``, ``1 - x`` and ``torch.add(a, b,
alpha=c)`` instead of ``c * a`` or ``a - c``. With PyTorch's forward AD (``torch.func.jvp``), an
arithmetic op between a dual tensor and a constant without tangent (a Python scalar or a plain
tensor) gets a zero tangent that is routed through Python reference kernels: on our CPU build each
such op costs 0.4–0.6 ms instead of ~10 µs, which made the natural Styblinski-Tang formula 8× slower
under ``jvp`` (6.0 ms vs 0.77 ms per call, 115 rows × 4 coordinates). The values are identical up to
rounding (``torch.add(a, b, alpha=c)`` computes ``a + c·b``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .config import check_choice, check_positive_int

STYBLINSKI_TANG_ARGMIN = -2.9035340288426603
#: the value quoted in the FROG paper (and most benchmark collections), rounded *up*: it lies
#: 1.8e-4 per dimension above the true minimum, so a converged run would show a negative gap
STYBLINSKI_TANG_MIN_PER_DIM = -39.16599
#: the exact minimum per dimension, f(STYBLINSKI_TANG_ARGMIN) (used for gaps)
STYBLINSKI_TANG_MIN_PER_DIM_EXACT = -39.16616570377141


# ----------------------------------------------------------------------------- N-D functions

def sphere(x: torch.Tensor) -> torch.Tensor:
    """``Σ x_i²``; minimum 0 at the origin."""
    return torch.square(x).sum(-1)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """``Σ_{i<n} [100 (x_{i+1} − x_i²)² + (1 − x_i)²]``; minimum 0 at all ones (≡ 0 for n = 1)."""
    a, b = x[..., :-1], x[..., 1:]
    return torch.add(torch.square(1.0 - a), torch.square(b - torch.square(a)), alpha=100.0).sum(-1)


def styblinski_tang(x: torch.Tensor) -> torch.Tensor:
    """``½ Σ (x_i⁴ − 16 x_i² + 5 x_i)``; minimum −39.166166·n (paper: −39.16599·n) at x_i = −2.903534."""
    x2 = torch.square(x)
    s = torch.add(torch.add(torch.square(x2), x2, alpha=-16.0), x, alpha=5.0).sum(-1)
    return torch.add(s, s, alpha=-0.5)  # s − s/2 = s/2 without a dual × constant product


def rastrigin(x: torch.Tensor) -> torch.Tensor:
    """``10 n + Σ (x_i² − 10 cos(2π x_i))``; minimum 0 at the origin, a regular grid of local minima."""
    s = torch.add(torch.square(x), torch.cos(torch.add(x, x, alpha=2.0 * math.pi - 1.0)), alpha=-10.0).sum(-1)
    return 10.0 * x.shape[-1] + s


# ----------------------------------------------------------------------------- 2-D classics

def himmelblau(x: torch.Tensor) -> torch.Tensor:
    """``(x² + y − 11)² + (x + y² − 7)²``; four global minima with value 0."""
    a, b = x[..., 0], x[..., 1]
    return torch.square(torch.square(a) + b - 11.0) + torch.square(a + torch.square(b) - 7.0)


def beale(x: torch.Tensor) -> torch.Tensor:
    """``(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²``; minimum 0 at (3, 0.5)."""
    a, b = x[..., 0], x[..., 1]
    return (torch.square(1.5 - a + a * b) + torch.square(2.25 - a + a * torch.square(b))
            + torch.square(2.625 - a + a * b**3))


def booth(x: torch.Tensor) -> torch.Tensor:
    """``(x + 2y − 7)² + (2x + y − 5)²``; minimum 0 at (1, 3) (a quadratic with condition number 9)."""
    a, b = x[..., 0], x[..., 1]
    return torch.square(torch.add(a, b, alpha=2.0) - 7.0) + torch.square(torch.add(b, a, alpha=2.0) - 5.0)


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class TestFunction:
    """A test function with what the experiments and plots need to know about it.

    ``argmins(n)`` returns the global minimisers as rows of an ``(m, n)`` tensor (an empty ``(0, n)``
    tensor when every point is a minimiser, e.g. Rosenbrock with n = 1); ``start(n)`` the starting
    point; ``dims`` the allowed dimension (``None``: any n ≥ 1). ``bounds`` is the ``(xmin, xmax,
    ymin, ymax)`` box of the 2-D contour plots. ``start_source`` tells where the start comes from.
    """

    __test__ = False  # not a pytest test class

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    minimum: Callable[[int], float]
    argmins: Callable[[int], torch.Tensor]
    start: Callable[[int], torch.Tensor]
    dims: int | None = None
    max_steps: int = 1000
    bounds: tuple[float, float, float, float] = (-2.0, 2.0, -2.0, 2.0)
    start_source: str = "ours"
    description: str = field(default="", compare=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def check_n(self, n: int) -> int:
        n = check_positive_int("n", n)
        if self.dims is not None and n != self.dims:
            raise ValueError(f"n={n} is not valid for function {self.name!r}; allowed values: {self.dims}")
        return n

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of ``x`` ``(..., n)`` to the nearest global minimiser."""
        n = x.shape[-1]
        am = self.argmins(n).to(dtype=x.dtype, device=x.device)
        if am.shape[0] == 0:  # every point is a minimiser
            return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        return (x.unsqueeze(-2) - am).norm(dim=-1).amin(-1)

    def gap(self, values: torch.Tensor, n: int) -> torch.Tensor:
        """Optimality gap ``f − f*``."""
        return values - self.minimum(n)


def _full(value: float) -> Callable[[int], torch.Tensor]:
    return lambda n: torch.full((n,), float(value), dtype=torch.float64)


def _rosenbrock_start(n: int) -> torch.Tensor:
    x = torch.zeros(n, dtype=torch.float64)
    x[0] = -1.0
    return x


def _rosenbrock_argmins(n: int) -> torch.Tensor:
    return torch.ones(1 if n > 1 else 0, n, dtype=torch.float64)


def _points(*pts: tuple[float, ...]) -> Callable[[int], torch.Tensor]:
    return lambda n: torch.tensor(pts, dtype=torch.float64)


FUNCTIONS: dict[str, TestFunction] = {
    "sphere": TestFunction(
        "sphere", sphere, minimum=lambda n: 0.0, argmins=lambda n: torch.zeros(1, n, dtype=torch.float64),
        start=_full(-1.0), max_steps=1000, bounds=(-1.5, 1.5, -1.5, 1.5), start_source="FROG paper (all −1)",
        description="Σ x_i²"),
    "rosenbrock": TestFunction(
        "rosenbrock", rosenbrock, minimum=lambda n: 0.0, argmins=_rosenbrock_argmins,
        start=_rosenbrock_start, max_steps=25000, bounds=(-1.5, 1.5, -0.5, 1.5),
        start_source="FROG paper ((−1, 0, …, 0))", description="Σ 100 (x_{i+1} − x_i²)² + (1 − x_i)²"),
    "styblinski-tang": TestFunction(
        "styblinski-tang", styblinski_tang, minimum=lambda n: STYBLINSKI_TANG_MIN_PER_DIM_EXACT * n,
        argmins=lambda n: torch.full((1, n), STYBLINSKI_TANG_ARGMIN, dtype=torch.float64),
        start=_full(0.0), max_steps=1000, bounds=(-4.5, 4.5, -4.5, 4.5), start_source="FROG paper (all 0)",
        description="½ Σ x_i⁴ − 16 x_i² + 5 x_i"),
    "rastrigin": TestFunction(
        "rastrigin", rastrigin, minimum=lambda n: 0.0, argmins=lambda n: torch.zeros(1, n, dtype=torch.float64),
        start=_full(2.5), max_steps=1000, bounds=(-3.0, 3.0, -3.0, 3.0),
        description="10 n + Σ x_i² − 10 cos(2π x_i)"),
    "himmelblau": TestFunction(
        "himmelblau", himmelblau, minimum=lambda n: 0.0,
        argmins=_points((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)),
        start=lambda n: torch.tensor([0.0, 0.0], dtype=torch.float64), dims=2, bounds=(-5.0, 5.0, -5.0, 5.0),
        description="(x² + y − 11)² + (x + y² − 7)²"),
    "beale": TestFunction(
        "beale", beale, minimum=lambda n: 0.0, argmins=_points((3.0, 0.5)),
        start=lambda n: torch.tensor([1.0, 1.5], dtype=torch.float64), dims=2, bounds=(-1.0, 4.5, -1.5, 2.0),
        description="(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²"),
    "booth": TestFunction(
        "booth", booth, minimum=lambda n: 0.0, argmins=_points((1.0, 3.0)),
        start=lambda n: torch.tensor([-5.0, -5.0], dtype=torch.float64), dims=2, bounds=(-6.0, 6.0, -6.0, 6.0),
        description="(x + 2y − 7)² + (2x + y − 5)²"),
}

#: The three functions of FROG Section 4.2, in the paper's order.
PAPER_FUNCTIONS = ("sphere", "rosenbrock", "styblinski-tang")


def get_function(name: str) -> TestFunction:
    """Look up a registered test function by name (``ValueError`` lists the allowed names)."""
    check_choice("function", name, FUNCTIONS)
    return FUNCTIONS[name]


def contour_grid(name: str, num: int = 200, *, bounds: tuple[float, float, float, float] | None = None):
    """``(X, Y, Z)`` meshgrid tensors of a function over its 2-D plotting box (for contour maps)."""
    fun = get_function(name)
    if fun.dims not in (None, 2):
        raise ValueError(f"function {name!r} is not defined in 2-D")
    x0, x1, y0, y1 = bounds or fun.bounds
    xs = torch.linspace(x0, x1, num, dtype=torch.float64)
    ys = torch.linspace(y0, y1, num, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    return X, Y, fun(torch.stack([X, Y], dim=-1))


# ----------------------------------------------------------------------------- ill-conditioned quadratic

#: condition number of :func:`quadratic` (the FoMoH subspace chapter's default)
QUADRATIC_COND = 1e4


def quadratic(x: torch.Tensor, cond: float = QUADRATIC_COND) -> torch.Tensor:
    """``½ Σ_i λ_i x_i²`` with ``λ_i = cond^{(i−1)/(n−1)}`` log-spaced from 1 to ``cond`` (``λ = 1`` for
    n = 1): an ill-conditioned convex quadratic with Hessian ``diag(λ)``, minimum 0 at the origin.

    Written as ``x² @ (λ/2)`` (a matrix product with a constant) rather than ``λ·x·x``: under forward
    mode that is 3.5× faster (see the module's forward-mode note).
    """
    if not (isinstance(cond, (int, float)) and not isinstance(cond, bool) and math.isfinite(cond) and cond >= 1):
        raise ValueError(f"cond must be a finite number >= 1; got {cond!r}")
    lam = torch.logspace(0, math.log10(cond), x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.square(x) @ (0.5 * lam)
