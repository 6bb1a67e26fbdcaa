"""One type for "an approach and its number of tangents", used by every chapter.

FROG's approaches (Flügel et al.): ``bp`` (backpropagation), ``fg-mean`` (k = 1 is the single-tangent
forward gradient *FG*; k > 1 averages), ``fg-sum``, ``frog`` (orthogonal projection onto the k
tangents). FoMoH's (Cobb et al.): ``fgd`` (forward gradient descent), ``fomoh``, ``fomoh-kd`` (K
tangents), ``newton``.

Spellings accepted by :meth:`Approach.parse`: an :class:`Approach`, ``"bp"``, ``"frog:16"``,
``["frog", 16]`` / ``("frog", 16)``, and the FoMoH short form ``"fomoh-kd3"``. The canonical text form
is :attr:`Approach.spec` (``"frog:16"``, ``"bp"``).
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Approach", "APPROACHES", "FROG_APPROACHES", "FOMOH_APPROACHES", "parse_approaches"]

FROG_APPROACHES = ("bp", "fg-mean", "fg-sum", "frog")
FOMOH_APPROACHES = ("fgd", "fomoh", "fomoh-kd", "newton")
APPROACHES = FROG_APPROACHES + FOMOH_APPROACHES
# approaches without a tangent count (k is 0 for them)
_NO_K = ("bp", "fgd", "fomoh", "newton")
_LABELS = {"bp": "BP", "fg-sum": "FG-sum", "frog": "FROG", "fgd": "FGD", "fomoh": "FoMoH", "newton": "Newton"}


@dataclass(frozen=True, order=True)
class Approach:
    """An approach name and its number of tangents ``k`` (0 for approaches that take none)."""

    name: str
    k: int = 0

    def __post_init__(self):
        if self.name not in APPROACHES:
            allowed = ", ".join(repr(a) for a in APPROACHES)
            raise ValueError(f"approach={self.name!r} is not valid; allowed values: {allowed}")
        if self.name in _NO_K:
            if self.k not in (0, 1):
                raise ValueError(f"approach {self.name!r} takes no tangent count; got k={self.k!r}")
            object.__setattr__(self, "k", 0)
            return
        try:
            if isinstance(self.k, bool):
                raise TypeError
            k = operator.index(self.k)
        except TypeError:
            raise ValueError(f"k of approach {self.name!r} must be an integer >= 1; got {self.k!r}") from None
        if k < 1:
            raise ValueError(f"k of approach {self.name!r} must be an integer >= 1; got {k}")
        object.__setattr__(self, "k", k)

    @classmethod
    def parse(cls, spec: Any) -> Approach:
        """Read any accepted spelling (see the module docstring); errors name the spec."""
        if isinstance(spec, Approach):
            return spec
        if isinstance(spec, str):
            name, sep, k = spec.partition(":")
            if not sep and name.startswith("fomoh-kd") and name[len("fomoh-kd"):].isdigit():
                name, k = "fomoh-kd", name[len("fomoh-kd"):]
            if name in _NO_K and not k:
                return cls(name)
            if not k:
                raise ValueError(f"approach {spec!r} needs a tangent count, e.g. '{name}:4'")
            try:
                return cls(name, int(k))
            except ValueError as exc:
                if name not in APPROACHES:
                    raise
                raise ValueError(f"approach {spec!r}: {exc}") from None
        if isinstance(spec, Sequence) and len(spec) == 2 and isinstance(spec[0], str):
            return cls(spec[0], spec[1])
        raise ValueError(f"an approach must be written like 'bp', 'frog:16' or ['frog', 16]; got {spec!r}")

    @property
    def spec(self) -> str:
        """Canonical text: ``"bp"``, ``"fg-mean:4"``, ``"frog:16"``, ``"fomoh-kd:3"``."""
        return self.name if self.name in _NO_K else f"{self.name}:{self.k}"

    @property
    def label(self) -> str:
        """Display name used in every table and figure: ``BP``, ``FG`` (fg-mean, k = 1),
        ``FG-mean k=4``, ``FG-sum k=4``, ``FROG k=16``, ``FGD``, ``FoMoH``, ``FoMoH-KD K=3``, ``Newton``."""
        if self.name == "fg-mean":
            return "FG" if self.k == 1 else f"FG-mean k={self.k}"
        if self.name == "fomoh-kd":
            return f"FoMoH-KD K={self.k}"
        return _LABELS[self.name] if self.name in _NO_K else f"{_LABELS[self.name]} k={self.k}"

    @property
    def aggregation(self) -> str | None:
        """The estimator of :func:`frogcore.estimators.aggregate` (``None`` where there is none)."""
        if self.name == "fg-mean":
            return "single" if self.k == 1 else "mean"
        return {"fg-sum": "sum", "frog": "projection"}.get(self.name)

    @property
    def family(self) -> str:
        """``"bp"``, ``"fg"`` (mean/sum/single), ``"frog"`` or the FoMoH name: one colour per family in figures."""
        return "fg" if self.name in ("fg-mean", "fg-sum") else self.name

    def __str__(self) -> str:
        return self.spec


def parse_approaches(name: str, specs: Any, allowed: Sequence[str] = APPROACHES) -> list[Approach]:
    """Validate a non-empty list parameter of approaches; errors name the parameter and the item."""
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence) or not specs:
        raise ValueError(f"{name} must be a non-empty list of approaches like ['bp', 'frog:16']; got {specs!r}")
    out = []
    for i, s in enumerate(specs):
        try:
            a = Approach.parse(s)
        except ValueError as exc:
            raise ValueError(f"{name}[{i}]: {exc}") from None
        if a.name not in allowed:
            shown = ", ".join(repr(x) for x in allowed)
            raise ValueError(f"{name}[{i}]={a.spec!r} is not valid here; allowed approaches: {shown}")
        out.append(a)
    return out
