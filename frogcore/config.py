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


def _assigned_names(source: str) -> set[str] | None:
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


def check_injected_parameters(history: Sequence[str] | None = None) -> None:
    """Refuse a papermill parameter that the notebook does not declare (e.g. ``-p num_sample 5`` for
    ``num_samples``), which papermill itself only warns about and then runs with the defaults.

    papermill executes the notebook's ``parameters`` cell and then the cell it injects (starting with the
    comment ``# Parameters``); ``history`` is the kernel's input history (IPython's ``In``; default: the
    running kernel's, nothing to check outside IPython or without an injected cell). A name assigned in the
    injected cell but not in the parameters cell before it raises ValueError naming it, the closest
    declared parameter and every declared one. Called by every chapter's ``run``.
    """
    import difflib

    if history is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return
        ip = get_ipython()
        history = ip.user_ns.get("In") if ip is not None else None
        if not history:
            return
    history = [h for h in history if isinstance(h, str)]
    injected = [i for i, h in enumerate(history) if h.startswith("# Parameters\n")]
    if not injected or injected[-1] == 0:
        return
    i = injected[-1]
    passed, declared = _assigned_names(history[i]), _assigned_names(history[i - 1])
    if not passed or not declared:
        return
    unknown = sorted(n for n in passed - declared if not n.startswith("PAPERMILL_"))
    if unknown:
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, sorted(declared), n=1)
            hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown notebook parameter {', '.join(hints)}; this notebook's parameters: "
                         f"{', '.join(sorted(declared))}")
