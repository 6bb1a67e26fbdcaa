"""Parameter validation shared by the library and the notebooks.

Every public entry point validates its inputs with these helpers so that bad input fails
at once with a message that names the parameter and the allowed values.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

import torch

PROFILES = ("smoke", "default", "paper")
DEVICES = ("auto", "cpu", "cuda")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; otherwise raise ``ValueError`` naming both."""
    allowed = tuple(allowed)
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}={value!r} is not valid; allowed values: {shown}")
    return value


def check_choices(name: str, values: Sequence[Any], allowed: Iterable[Any]) -> list[Any]:
    """Validate every element of a list parameter (e.g. a list of aggregators)."""
    allowed = tuple(allowed)
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of values from {allowed!r}; got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty; allowed values: {allowed!r}")
    for v in values:
        if v not in allowed:
            shown = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"{name} contains {v!r}, which is not valid; allowed values: {shown}")
    return values


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` if it is an integer (not a bool or float) >= ``minimum``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return value


def check_positive_ints(name: str, values: Any, *, minimum: int = 1) -> list[int]:
    """Validate a non-empty list of integers >= ``minimum`` (e.g. a grid of k or n)."""
    if isinstance(values, (int,)) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of integers >= {minimum}; got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must be a non-empty list of integers >= {minimum}")
    return [check_positive_int(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(values)]


def check_profile(profile: str) -> str:
    """Validate a size profile: ``"smoke"`` (CI, seconds), ``"default"`` (laptop CPU), ``"paper"``."""
    return check_choice("profile", profile, PROFILES)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda"`` into a ``torch.device``.

    ``"auto"`` picks CUDA when available, else CPU. Asking for ``"cuda"`` on a machine without
    CUDA raises instead of silently falling back.
    """
    if isinstance(device, torch.device):
        device = device.type
    check_choice("device", device, DEVICES)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available; use device='cpu' or 'auto'")
    return torch.device(device)


def check_dtype(dtype: Any) -> torch.dtype:
    """Accept ``torch.float32``/``torch.float64`` or their names."""
    names = {"float32": torch.float32, "float64": torch.float64}
    if isinstance(dtype, str):
        check_choice("dtype", dtype, names)
        return names[dtype]
    check_choice("dtype", dtype, (torch.float32, torch.float64))
    return dtype


def pick_profile(profile: str, table: dict[str, Any]) -> Any:
    """Return ``table[profile]`` after validating the profile name."""
    check_profile(profile)
    return table[profile]
