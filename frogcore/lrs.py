"""The FROG authors' tuned learning rates for the closed-form experiments, with user overrides.

The tables ship as package data (``frogcore/data/``, see ``SOURCE.md`` there):

``"math"``                    Section 4.2 — columns function, n, approach, k, lr for
                              ``bp``, ``fg-mean`` (k = 1 is the single-tangent baseline) and ``frog``.
``"math__custom_tangents"``   Section 4.3 — Styblinski-Tang, n = 64: ``fg-mean`` per fixed angle
                              (sampler ``"angle"``) and ``frog`` (sampler ``"normal"``; the projection
                              does not depend on the angle).

:func:`load_table` parses a table into tidy columns ``function, n, approach, k, sampler, angle,
lr, source`` (``k = 0`` for backprop, ``angle`` NaN unless the sampler is ``"angle"``).
:class:`LRTable` looks learning rates up; every failed lookup names the parameter and the values the
table does have. Overrides (a list of dicts, JSON-friendly for notebook parameters) replace table
entries: each override gives ``lr`` and any subset of ``function, n, approach, k, sampler, angle``
(missing keys match everything; later overrides win), e.g. ``[{"approach": "frog", "lr": 0.01}]``.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .config import check_choice

DATA_DIR = Path(__file__).resolve().parent / "data"
TABLES = ("math", "math__custom_tangents")
APPROACHES = ("bp", "fg-mean", "frog")
LR_SAMPLERS = ("normal", "angle")
OVERRIDE_KEYS = ("function", "n", "approach", "k", "sampler", "angle", "lr")

SOURCE = ("Learning rates tuned by Flügel et al. (arXiv 2410.17764), copied unchanged from the lrs/ "
          "folder of their repository (Helmholtz-AI-Energy/frog); see frogcore/data/SOURCE.md.")

_ANGLE_RE = re.compile(r"sampler=specific_angle_(\d+(?:\.\d+)?)")


def _parse_sampler(optimizer: Any) -> tuple[str, float]:
    m = _ANGLE_RE.search(str(optimizer))
    return ("angle", float(m.group(1))) if m else ("normal", math.nan)


def parse_table(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """Normalise an authors'-format table (function, n, gradient_approach, k, optimizer, lr)."""
    missing = {"function", "n", "gradient_approach", "lr"} - set(raw.columns)
    if missing:
        raise ValueError(f"learning-rate table {source!r} lacks columns {sorted(missing)}")
    opt = raw["optimizer"] if "optimizer" in raw.columns else pd.Series([""] * len(raw))
    samplers = [_parse_sampler(o) for o in opt]
    k = raw["k"] if "k" in raw.columns else pd.Series([math.nan] * len(raw))
    return pd.DataFrame({
        "function": raw["function"].astype(str),
        "n": raw["n"].astype(int),
        "approach": raw["gradient_approach"].astype(str),
        "k": k.fillna(0).astype(int),
        "sampler": [s for s, _ in samplers],
        "angle": [a for _, a in samplers],
        "lr": raw["lr"].astype(float),
        "source": source,
    })


def load_table(table: str = "math") -> pd.DataFrame:
    """One of the shipped tables (:data:`TABLES`), parsed by :func:`parse_table`."""
    check_choice("table", table, TABLES)
    return parse_table(pd.read_csv(DATA_DIR / f"{table}.csv"), f"frogcore/data/{table}.csv")


def _check_override(o: Mapping[str, Any], i: int) -> dict[str, Any]:
    if not isinstance(o, Mapping):
        raise ValueError(f"lr_overrides[{i}] must be a dict with keys from {OVERRIDE_KEYS}; got {o!r}")
    for key in o:
        check_choice(f"lr_overrides[{i}] key", key, OVERRIDE_KEYS)
    if "lr" not in o:
        raise ValueError(f"lr_overrides[{i}] needs an 'lr' entry; got {dict(o)!r}")
    lr = o["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr_overrides[{i}]['lr'] must be a positive finite number; got {lr!r}")
    if "approach" in o:
        check_choice(f"lr_overrides[{i}]['approach']", o["approach"], APPROACHES)
    if "sampler" in o:
        check_choice(f"lr_overrides[{i}]['sampler']", o["sampler"], LR_SAMPLERS)
    return dict(o)


@dataclass
class LRTable:
    """Learning-rate lookup over one or more parsed tables plus user overrides."""

    rows: pd.DataFrame
    overrides: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def shipped(cls, tables: Sequence[str] = ("math",),
                overrides: Iterable[Mapping[str, Any]] | None = None) -> "LRTable":
        """The authors' tables shipped with frogcore (default: Section 4.2's ``"math"``).

        Use ``tables=("math__custom_tangents",)`` for Section 4.3: both tables hold a Styblinski-Tang
        n = 64 ``frog`` entry, tuned separately (ambiguous lookups raise).
        """
        rows = pd.concat([load_table(t) for t in tables], ignore_index=True)
        return cls(rows).with_overrides(overrides or [])

    @classmethod
    def from_csv(cls, path: str | os.PathLike, overrides: Iterable[Mapping[str, Any]] | None = None) -> "LRTable":
        """A user table in the authors' format (function, n, gradient_approach, k, [optimizer,] lr)."""
        return cls(parse_table(pd.read_csv(path), str(path))).with_overrides(overrides or [])

    def with_overrides(self, overrides: Iterable[Mapping[str, Any]]) -> "LRTable":
        """A copy with ``overrides`` appended (validated; later ones win)."""
        if isinstance(overrides, Mapping):
            overrides = [overrides]
        checked = [_check_override(o, i) for i, o in enumerate(overrides)]
        return LRTable(self.rows, self.overrides + checked)

    # -------------------------------------------------------------------- lookup
    def lookup(self, function: str, n: int, approach: str, k: int = 0, *, sampler: str = "normal",
               angle: float | None = None) -> float:
        """The learning rate for one configuration (``k`` is ignored for ``bp``)."""
        return self.lookup_with_source(function, n, approach, k, sampler=sampler, angle=angle)[0]

    def lookup_with_source(self, function: str, n: int, approach: str, k: int = 0, *, sampler: str = "normal",
                           angle: float | None = None) -> tuple[float, str]:
        """``(lr, source)``: source is the table file or ``"override"``."""
        check_choice("approach", approach, APPROACHES)
        check_choice("sampler", sampler, LR_SAMPLERS)
        if approach == "bp":
            k = 0
        query = {"function": function, "n": n, "approach": approach, "k": k, "sampler": sampler,
                 "angle": angle if sampler == "angle" else None}
        for o in reversed(self.overrides):
            if all(_matches(key, o[key], query[key]) for key in o if key != "lr"):
                return float(o["lr"]), "override"
        return float(self._table_lookup(query)), self._source(query)

    def _select(self, query: dict[str, Any]) -> pd.DataFrame:
        t = self.rows
        narrowing = [("function", query["function"]), ("n", query["n"]), ("approach", query["approach"]),
                     ("k", query["k"]), ("sampler", query["sampler"])]
        for col, val in narrowing:
            allowed = sorted(t[col].unique().tolist())
            where = ", ".join(f"{c}={query[c]!r}" for c, _ in narrowing[: [c for c, _ in narrowing].index(col)])
            if val not in allowed:
                shown = ", ".join(repr(a) for a in allowed)
                ctx = f" for {where}" if where else ""
                raise ValueError(f"{col}={val!r} has no learning rate{ctx}; allowed values: {shown}")
            t = t[t[col] == val]
        if query["sampler"] == "angle":
            angles = sorted(t["angle"].unique().tolist())
            if query["angle"] is None or not any(math.isclose(query["angle"], a) for a in angles):
                raise ValueError(f"angle={query['angle']!r} has no learning rate for function={query['function']!r}, "
                                 f"n={query['n']}, approach={query['approach']!r}, k={query['k']}; "
                                 f"allowed values: {', '.join(repr(a) for a in angles)}")
            t = t[[math.isclose(query["angle"], a) for a in t["angle"]]]
        return t

    def _table_lookup(self, query: dict[str, Any]) -> float:
        t = self._select(query)
        if t["lr"].nunique() > 1:
            raise ValueError(f"ambiguous learning rate for {query}: the tables {sorted(t['source'].unique())} "
                             f"disagree ({sorted(t['lr'].unique())}); load only one of them or add an override")
        return float(t["lr"].iloc[-1])

    def _source(self, query: dict[str, Any]) -> str:
        return str(self._select(query)["source"].iloc[-1])


def _matches(key: str, want: Any, have: Any) -> bool:
    if key == "angle":
        return have is not None and want is not None and math.isclose(float(want), float(have))
    return want == have


def lookup_lr(function: str, n: int, approach: str, k: int = 0, *, sampler: str = "normal",
              angle: float | None = None, overrides: Iterable[Mapping[str, Any]] | None = None) -> float:
    """Convenience: look up one learning rate in the shipped tables (with optional overrides)."""
    return LRTable.shipped(overrides=overrides).lookup(function, n, approach, k, sampler=sampler, angle=angle)
