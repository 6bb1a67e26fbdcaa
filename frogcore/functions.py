"""Closed-form test functions (FROG Section 4.2, FoMoH Rosenbrock experiments).

Every function maps ``x`` of shape ``(..., n)`` to values of shape ``(...)`` so that many runs can be
evaluated at once; all are written with plain tensor ops, so ``torch.func.jvp``/``vmap``/``hessian``
apply.
"""
from __future__ import annotations

import torch

STYBLINSKI_TANG_ARGMIN = -2.903534
STYBLINSKI_TANG_MIN_PER_DIM = -39.16599


def sphere(x: torch.Tensor) -> torch.Tensor:
    """``Σ x_i²``; minimum 0 at the origin."""
    return (x * x).sum(-1)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """``Σ_{i<n} [100 (x_{i+1} − x_i²)² + (1 − x_i)²]``; minimum 0 at all ones (0 for n = 1)."""
    a, b = x[..., :-1], x[..., 1:]
    return (100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2).sum(-1)


def styblinski_tang(x: torch.Tensor) -> torch.Tensor:
    """``½ Σ (x_i⁴ − 16 x_i² + 5 x_i)``; minimum −39.16599·n at x_i = −2.903534."""
    return 0.5 * (x**4 - 16.0 * x**2 + 5.0 * x).sum(-1)
