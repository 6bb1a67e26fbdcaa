"""Paper vs ours: the papers' claims and the authors' recorded numbers next to this companion's results.

Data (``frogcore/data``, sources in ``frogcore/data/SOURCE.md``):

* ``paper_claims.csv`` — one row per claim: ``chapter`` (one of :data:`CHAPTERS`), ``claim_id``, ``claim``
  (short text), ``source`` (paper abstract, blog section or repository file @ commit), ``metric`` (what
  this module computes from our results for it, see the extractors below), ``value`` (the paper's number
  or, for the share rules, the required share; empty where the authors' data files supply it),
  ``comparison`` (one of :data:`RULES`), ``tolerance`` and ``floor`` (see :func:`verdict`), ``kind`` (one of
  :data:`KINDS`: a paper's statement, the authors' recorded numbers, or one of the paper's settings — a
  setting that differs in a run at another profile than ``paper`` is *not comparable*: those profiles
  deliberately use other settings);
* ``authors_frog_<table>.csv`` — the FROG authors' learning-rate-search tables with their ``loss`` column
  (Helmholtz-AI-Energy/frog ``lrs/*.csv`` at commit ``fdd31d2``): one recorded final loss per
  (function, n, approach) of Sections 4.2/4.3 and per (model, dataset, approach) of Sections 4.4/4.5.

:func:`compare` builds a chapter's paper-vs-ours table from our stored tables (``{name: DataFrame or
StoredResult}``, e.g. :func:`load_ours`); :func:`summary` counts the verdicts of every chapter for the
book's introduction; :func:`authors_runs` lists the authors' recorded runs one by one against ours.

Verdicts (:data:`VERDICTS`): ``agrees``, ``differs`` or ``not comparable`` (the metric is missing from our
results — e.g. a smoke run without n = 1024 — or measures something else, e.g. digits instead of MNIST),
always with the rule and its tolerance spelled out (:func:`rule_text`).
"""
from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .approach import Approach
from .narrative import fmt, pct

__all__ = ["AUTHORS_TABLES", "CHAPTERS", "CLAIM_COLUMNS", "COMPARE_COLUMNS", "KINDS", "RULES", "VERDICTS",
           "NotComparable", "authors_frog", "authors_runs", "claims", "compare", "load_ours", "markdown_table",
           "ours_metrics", "paper_metrics", "rule_text", "source_markdown", "summary", "summary_markdown", "markdown",
           "verdict", "write_summary_page", "CHAPTER_TITLES"]

DATA_DIR = Path(__file__).resolve().parent / "data"
CHAPTERS = ("frog_4_1", "frog_4_2", "frog_4_3", "frog_4_4", "frog_4_5", "fomoh_rosenbrock", "fomoh_subspace",
            "fomoh_networks")
AUTHORS_TABLES = ("math", "math__custom_tangents", "fc_nns", "sota_nns")
VERDICTS = ("agrees", "differs", "not comparable")
#: comparison rules of ``paper_claims.csv`` (see :func:`verdict`)
RULES = ("within_factor", "within_abs", "less", "greater", "increasing", "decreasing", "same_order", "runs_agree")
CLAIM_COLUMNS = ("chapter", "claim_id", "claim", "source", "metric", "value", "comparison", "tolerance", "floor",
                 "kind")
#: ``kind`` of a claim: a statement of a paper, the authors' recorded numbers, or a setting of the paper
KINDS = ("claim", "recorded", "setting")
#: columns of :func:`compare`'s table
COMPARE_COLUMNS = ("chapter", "claim_id", "kind", "claim", "source", "paper", "ours", "verdict", "rule", "detail")


# ----------------------------------------------------------------------------- data files

def _check_chapter(chapter: str) -> str:
    if chapter not in CHAPTERS:
        raise ValueError(f"chapter={chapter!r} is not valid; allowed values: {', '.join(map(repr, CHAPTERS))}")
    return chapter


@lru_cache(maxsize=None)
def _claims_file() -> pd.DataFrame:
    df = pd.read_csv(DATA_DIR / "paper_claims.csv", dtype={"value": float, "tolerance": float, "floor": float})
    missing = [c for c in CLAIM_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"paper_claims.csv lacks columns {missing}")
    bad_chapter = sorted(set(df.chapter) - set(CHAPTERS))
    bad_rule = sorted(set(df.comparison) - set(RULES))
    bad_kind = sorted(set(df.kind) - set(KINDS))
    if bad_chapter or bad_rule or bad_kind:
        raise ValueError(f"paper_claims.csv: unknown chapters {bad_chapter}, comparison rules {bad_rule} or kinds "
                         f"{bad_kind}")
    if df.claim_id.duplicated().any():
        raise ValueError(f"paper_claims.csv: duplicate claim_id {sorted(df.claim_id[df.claim_id.duplicated()])}")
    return df


def claims(chapter: str | None = None) -> pd.DataFrame:
    """The claims of ``paper_claims.csv`` (of one chapter, or all), a fresh copy."""
    df = _claims_file()
    if chapter is not None:
        df = df[df.chapter == _check_chapter(chapter)]
    return df.reset_index(drop=True).copy()


@lru_cache(maxsize=None)
def _authors_file(table: str) -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / f"authors_frog_{table}.csv")


def authors_frog(table: str) -> pd.DataFrame:
    """The FROG authors' recorded table ``table`` (one of :data:`AUTHORS_TABLES`) with a ``label`` column
    (:attr:`frogcore.approach.Approach.label`) and, for the closed-form tables, an ``angle`` column (NaN for
    the normal sampler)."""
    if table not in AUTHORS_TABLES:
        raise ValueError(f"table={table!r} is not valid; allowed values: {', '.join(map(repr, AUTHORS_TABLES))}")
    df = _authors_file(table).copy()
    k = df["k"].fillna(0).astype(int)
    df["k"] = k
    df["label"] = [Approach(a, kk).label for a, kk in zip(df.gradient_approach, k)]
    if "optimizer" in df:
        angle = df.optimizer.str.extract(r"specific_angle_(\d+)")[0]
        df["angle"] = angle.astype(float)
    return df


# ----------------------------------------------------------------------------- verdict rules

@dataclass(frozen=True)
class NotComparable:
    """What an extractor returns when our results have no counterpart of a claim's metric."""

    reason: str


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _small(x: float, floor: float | None) -> bool:
    return floor is not None and not math.isnan(floor) and math.isfinite(x) and abs(x) <= floor


def _within_factor(a: float, b: float, tol: float, floor: float | None) -> bool | None:
    """True/False, or None where a ratio means nothing (a sign change, a NaN)."""
    if math.isnan(a) or math.isnan(b):
        return None
    if _small(a, floor) and _small(b, floor):
        return True
    if math.isinf(a) or math.isinf(b):
        return a == b
    if a == b:
        return True
    if a < 0 and b < 0:
        a, b = -a, -b
    elif a <= 0 or b <= 0:
        return None
    return max(a, b) / min(a, b) <= tol


def _monotone(s: pd.Series, tol: float, floor: float | None, sign: int) -> list[str]:
    """Violations of "falls" (sign = −1) or "grows" (sign = +1) along ``s``."""
    out = []
    vals = [(i, _num(v)) for i, v in s.items() if not math.isnan(_num(v))]
    for (ia, a), (ib, b) in zip(vals, vals[1:]):
        if _small(a, floor) and _small(b, floor):
            continue
        slack = tol * abs(a) if math.isfinite(a) else 0.0
        ok = (b <= a + slack) if sign < 0 else (b >= a - slack)
        if not ok:
            out.append(f"{ia} {fmt(a)} → {ib} {fmt(b)}")
    return out


def _pairs(ours: pd.Series, paper: pd.Series, tol: float, floor: float | None) -> tuple[int, list[str]]:
    """(number of clear pairs, the clear pairs ours orders the other way) — see :func:`verdict`."""
    common = [i for i in paper.index if i in ours.index and not math.isnan(_num(paper[i]))
              and not math.isnan(_num(ours[i]))]
    clear, wrong = 0, []
    for x in range(len(common)):
        for y in range(x + 1, len(common)):
            i, j = common[x], common[y]
            pa, pb, oa, ob = (_num(paper[i]), _num(paper[j]), _num(ours[i]), _num(ours[j]))
            if _small(pa, floor) and _small(pb, floor):
                continue
            if math.isfinite(pa) and math.isfinite(pb) and abs(pa - pb) <= tol * max(abs(pa), abs(pb)):
                continue  # a tie in the paper's numbers
            clear += 1
            if not (oa - ob) * (pa - pb) > 0:
                wrong.append(f"{i} vs {j}")
    return clear, wrong


def _series(x: Any) -> pd.Series | None:
    if isinstance(x, pd.Series):
        return x
    if isinstance(x, Mapping) and x and all(not isinstance(v, (Mapping, pd.Series, pd.DataFrame)) for v in x.values()):
        return pd.Series(dict(x))
    return None


def _is_groups(x: Any) -> bool:
    return isinstance(x, Mapping) and bool(x) and all(isinstance(v, (pd.Series, Mapping, NotComparable))
                                                      for v in x.values())


def verdict(rule: str, ours: Any, paper: Any = None, *, tolerance: float = 0.0,
            floor: float | None = None) -> tuple[str, str]:
    """``(verdict, detail)`` of one comparison; ``verdict`` is one of :data:`VERDICTS`.

    Rules (``paper`` is the paper's number, the authors' series, or the required share):

    * ``within_factor`` — ``max/min(ours, paper) ≤ tolerance`` (both positive), or both ``|·| ≤ floor``;
    * ``within_abs`` — ``|ours − paper| ≤ tolerance``;
    * ``less`` / ``greater`` — ``ours < paper + tolerance`` / ``ours > paper − tolerance``;
    * ``decreasing`` / ``increasing`` — ``ours`` (a Series in the claim's order) falls / grows from each
      entry to the next; a move the wrong way by at most ``tolerance·|previous|`` counts as a tie, and so
      do two neighbours both within ``floor`` of 0;
    * ``same_order`` — every pair the authors' series orders clearly (values more than ``tolerance``
      relative apart and not both within ``floor`` of 0) is ordered the same way by ``ours``, for at least
      the share ``paper_share`` of such pairs (``paper`` is ``(authors' series, share)`` or a series: share 1);
    * ``runs_agree`` — ``ours`` is a table with ``paper_cmp`` and ``ours_cmp`` columns (one row per
      recorded run); a run agrees by ``within_factor`` (``tolerance``, ``floor``); the claim agrees when at
      least the share ``paper`` of the comparable runs does.

    ``ours`` may be a :class:`NotComparable`, or for the series rules a ``{group: Series}`` mapping (then
    ``paper`` may be a mapping with the same groups): the claim agrees when every comparable group does.
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is not valid; allowed values: {', '.join(map(repr, RULES))}")
    tol = 0.0 if _nan(tolerance) else float(tolerance)
    floor = None if _nan(floor) else float(floor)
    if isinstance(ours, NotComparable):
        return "not comparable", ours.reason
    if ours is None:
        return "not comparable", "no result for this metric"

    if rule in ("increasing", "decreasing", "same_order") and _is_groups(ours):
        share = None
        if rule == "same_order" and isinstance(paper, tuple):
            paper, share = paper
        results = {}
        for g, s in ours.items():
            p = paper.get(g) if isinstance(paper, Mapping) else paper
            if rule == "same_order" and (p is None or isinstance(p, NotComparable)):
                results[g] = ("not comparable", f"no authors' numbers for {g}")
                continue
            results[g] = verdict(rule, s, p if share is None else (p, share), tolerance=tol, floor=floor)
        done = {g: r for g, r in results.items() if r[0] != "not comparable"}
        if not done:
            return "not comparable", "; ".join(f"{g}: {r[1]}" for g, r in results.items())
        bad = {g: r for g, r in done.items() if r[0] == "differs"}
        detail = f"{len(done) - len(bad)} of {len(done)} groups agree"
        if bad:
            detail += "; " + "; ".join(f"{g}: {r[1]}" for g, r in bad.items())
        skipped = [g for g in results if g not in done]
        if skipped:
            detail += f"; not comparable: {', '.join(map(str, skipped))}"
        return ("differs" if bad else "agrees"), detail

    if rule in ("increasing", "decreasing"):
        s = _series(ours)
        if s is None or s.dropna().size < 2:
            return "not comparable", "fewer than two values"
        bad = _monotone(s, tol, floor, -1 if rule == "decreasing" else +1)
        word = "rises" if rule == "decreasing" else "falls"
        return ("differs", f"{word}: " + "; ".join(bad)) if bad else ("agrees", "")

    if rule == "same_order":
        share = 1.0
        if isinstance(paper, tuple):
            paper, share = paper
            share = 1.0 if _nan(share) else float(share)
        s, p = _series(ours), _series(paper)
        if s is None or p is None:
            return "not comparable", "no authors' series to compare with"
        clear, wrong = _pairs(s, p, tol, floor)
        if clear == 0:
            return "not comparable", "the authors' numbers order no pair clearly"
        got = 1 - len(wrong) / clear
        detail = f"{clear - len(wrong)} of {clear} pairs in the authors' order"
        if wrong:
            detail += "; other order: " + ", ".join(wrong[:6]) + (" …" if len(wrong) > 6 else "")
        return ("agrees" if got >= share - 1e-12 else "differs"), detail

    if rule == "runs_agree":
        if not isinstance(ours, pd.DataFrame) or not {"paper_cmp", "ours_cmp"} <= set(ours.columns):
            return "not comparable", "no per-run table"
        ok = [_within_factor(_num(a), _num(b), tol, floor) for a, b in zip(ours.paper_cmp, ours.ours_cmp)]
        done = [o for o in ok if o is not None]
        if not done:
            return "not comparable", "no run has a counterpart in ours"
        need = 1.0 if _nan(paper) else float(paper)
        got = sum(done) / len(done)
        return ("agrees" if got >= need - 1e-12 else "differs"), f"{sum(done)} of {len(done)} runs agree"

    # scalar rules
    o, p = _num(ours), _num(paper)
    if math.isnan(o):
        return "not comparable", "no number in ours"
    if math.isnan(p):
        return "not comparable", "no number from the paper"
    if rule == "within_factor":
        ok = _within_factor(o, p, tol if tol > 0 else 1.0, floor)
        if ok is None:
            return "not comparable", "a ratio of numbers of different sign"
        return ("agrees" if ok else "differs"), ""
    if rule == "within_abs":
        ok = abs(o - p) <= tol + 1e-12 * max(1.0, abs(p))
    elif rule == "less":
        ok = o < p + tol
    else:  # greater
        ok = o > p - tol
    return ("agrees" if ok else "differs"), ""


def rule_text(rule: str, value: Any = None, tolerance: Any = None, floor: Any = None) -> str:
    """The rule of a claim in words, with its tolerance (shown next to every verdict)."""
    tol = None if _nan(tolerance) else float(tolerance)
    fl = None if _nan(floor) else float(floor)
    floor_txt = f"; values within {fmt(fl)} of 0 count as equal" if fl else ""
    if rule == "within_factor":
        return f"ours within {fmt(tol or 1)}× of the paper's{floor_txt}"
    if rule == "within_abs":
        return "ours equals the paper's" if not tol else f"ours within ±{fmt(tol)} of the paper's"
    if rule == "less":
        return f"ours < {fmt(_num(value) + (tol or 0))}"
    if rule == "greater":
        return f"ours > {fmt(_num(value) - (tol or 0))}"
    if rule in ("decreasing", "increasing"):
        word = "falls" if rule == "decreasing" else "grows"
        tie = f" (a step the other way of up to {pct(tol, 2)} is a tie{floor_txt})" if tol else \
            (f" ({floor_txt[2:]})" if fl else "")
        return f"ours {word} along the sequence{tie}"
    if rule == "same_order":
        share = 1.0 if _nan(value) else float(value)
        need = "every pair" if share >= 1 else f"at least {pct(share, 2)} of the pairs"
        return (f"ours orders {need} as the authors' numbers do (authors' values within {pct(tol or 0, 2)} "
                f"are ties{floor_txt})")
    if rule == "runs_agree":
        share = 1.0 if _nan(value) else float(value)
        return (f"per run: ours within {fmt(tol or 1)}× of the authors'{floor_txt}; "
                f"agrees when at least {pct(share, 2)} of the runs do")
    raise ValueError(f"rule={rule!r} is not valid; allowed values: {', '.join(map(repr, RULES))}")


# ----------------------------------------------------------------------------- our tables

class _Ours:
    """Our tables by name (``closed_form__runs`` and its short name ``runs``) and run parameters."""

    def __init__(self, ours: Mapping[str, Any]):
        if not isinstance(ours, Mapping):
            raise ValueError(f"ours must be a dict of DataFrames or StoredResults; got {type(ours).__name__}")
        self.tables: dict[str, pd.DataFrame] = {}
        self.params: dict[str, dict] = {}
        self.meta: dict[str, dict] = {}
        short: dict[str, list[str]] = {}
        for name, value in ours.items():
            if isinstance(value, pd.DataFrame):
                self.tables[name] = value
                if "__" in name:
                    short.setdefault(name.split("__", 1)[1], []).append(name)
            elif hasattr(value, "tables") and hasattr(value, "meta"):  # a StoredResult
                run = value.meta.get("name", name)
                self.params[run] = dict(value.meta.get("params", {}))
                self.meta[run] = dict(value.meta)
                for t, df in value.tables.items():
                    full = f"{run}__{t}" if t else run
                    self.tables[full] = df
                    if t:
                        short.setdefault(t, []).append(full)
            else:
                raise ValueError(f"ours[{name!r}] must be a DataFrame or a StoredResult; got {type(value).__name__}")
        for t, fulls in short.items():
            if t not in self.tables and len(fulls) == 1:
                self.tables[t] = self.tables[fulls[0]]

    def get(self, *names: str) -> pd.DataFrame | None:
        for n in names:
            if n in self.tables:
                return self.tables[n]
        return None

    def profiles(self) -> list[str]:
        return sorted({m.get("profile") for m in self.meta.values() if m.get("profile")})


_NAME_MAP = {"bp": ("bp", 0), "fgd": ("fgd", 0), "fomoh": ("fomoh", 0), "newton": ("newton", 0),
             "fomoh-2d": ("fomoh-kd", 2), "fg": ("fg-mean", 1)}


def _label_of(name: Any, k: Any = None) -> str:
    """The :class:`Approach` label of a table row's approach/method name (and k), or the name itself."""
    text = str(name).strip()
    low = text.lower()
    kk = 0 if k is None or _nan(k) else int(k)
    try:
        if low in _NAME_MAP:
            n, k0 = _NAME_MAP[low]
            return Approach(n, k0 or kk or (1 if n not in ("bp", "fgd", "fomoh", "newton") else 0)).label
        if low in ("fg-mean", "fg-sum", "frog", "fomoh-kd"):
            return Approach(low, max(kk, 1)).label
        return Approach.parse(low).label
    except ValueError:
        m = re.fullmatch(r"mean k=(\d+)", text)
        return f"FG-mean k={m.group(1)}" if m else text


def _labels(df: pd.DataFrame) -> pd.Series:
    k = df["k"] if "k" in df else pd.Series([None] * len(df), index=df.index)
    if "approach" in df:
        return pd.Series([_label_of(a, kk) for a, kk in zip(df["approach"], k)], index=df.index)
    if "method" in df:
        return pd.Series([_label_of(a, kk) for a, kk in zip(df["method"], k)], index=df.index)
    if "label" in df:
        return df["label"].map(_label_of)
    raise ValueError("a table of approaches needs an 'approach', 'method' or 'label' column")


def _minimum(function: str, n: int) -> float:
    from .functions import FUNCTIONS

    return float(FUNCTIONS[function].minimum(int(n)))


def _scaled_gap(f: float, fstar: float) -> float:
    f = _num(f)
    if math.isnan(f) or math.isinf(f):
        return math.inf
    return max(f - fstar, 0.0) / max(1.0, abs(fstar))


def _ordered(s: pd.Series, order: list[str]) -> pd.Series:
    return s.reindex([o for o in order if o in s.index])


def _fg_order(family: str) -> list[str]:
    if family == "fg-mean":
        return ["FG", "FG-mean k=2", "FG-mean k=4", "FG-mean k=16"]
    return ["FG", "FROG k=2", "FROG k=4", "FROG k=16"]


# ---- FROG 4.1

def _ours_frog_4_1(o: _Ours) -> dict[str, Any]:
    s = o.get("quality__summary", "summary")
    if s is None:
        return {}
    cos = s[s.metric == "cosine"]
    nmax = int(cos.n.max())
    out: dict[str, Any] = {}
    for est in ("projection", "mean"):
        c = cos[(cos.estimator == est) & (cos.n == nmax)].groupby("k")["mean"].mean().sort_index()
        c.index = [f"k={k}" for k in c.index]
        out[f"cos_vs_k:{est}"] = c.rename(f"n = {nmax}")
    p = cos[cos.estimator == "projection"].groupby(["n", "k"])["mean"].mean()
    m = cos[cos.estimator == "mean"].groupby(["n", "k"])["mean"].mean()
    both = pd.concat([p.rename("p"), m.rename("m")], axis=1).dropna()
    if len(both):
        out["proj_minus_mean_cos_min"] = float((both.p - both.m).min())
    single = cos[(cos.k == 1) & cos.estimator.isin(["single", "projection"])]
    k1 = single[single.estimator == ("single" if (single.estimator == "single").any() else "projection")]
    k1 = k1.groupby("n")["mean"].mean().sort_index()
    if len(k1):
        out["cos_k1_vs_n"] = pd.Series(k1.values, index=[f"n={n}" for n in k1.index])
        out["cos_k1_at_n1024"] = float(k1.loc[1024]) if 1024 in k1.index else \
            NotComparable(f"our largest n is {int(k1.index.max())}, below 1024")
    return out


# ---- FROG 4.2 / 4.3

def _closed_form_ours(runs: pd.DataFrame) -> pd.DataFrame:
    r = runs.copy()
    r["label"] = _labels(r)
    r["last"] = pd.to_numeric(r["last"], errors="coerce").replace([np.nan], np.inf)
    return r


def _runs_table(keys: pd.DataFrame, authors: pd.Series, ours: pd.Series, fstar: pd.Series) -> pd.DataFrame:
    t = keys.copy()
    t["paper"] = authors.values
    t["ours"] = ours.values
    t["paper_cmp"] = [_scaled_gap(a, f) for a, f in zip(authors.values, fstar.values)]
    t["ours_cmp"] = [_scaled_gap(b, f) if not _nan(b) else math.nan for b, f in zip(ours.values, fstar.values)]
    return t.reset_index(drop=True)


def _runs_4_2(o: _Ours) -> dict[str, pd.DataFrame]:
    runs = o.get("closed_form__runs", "runs")
    if runs is None:
        return {}
    r = _closed_form_ours(runs)
    med = r.groupby(["function", "n", "label"])["last"].median()
    a = authors_frog("math")
    out = {}
    for fn, g in a.groupby("function"):
        keys = g[["function", "n", "label"]].reset_index(drop=True)
        idx = pd.MultiIndex.from_frame(keys)
        ours = pd.Series(med.reindex(idx).values)
        fstar = pd.Series([_minimum(fn, n) for n in keys.n])
        t = _runs_table(keys, g["loss"].reset_index(drop=True), ours, fstar)
        out[fn] = t[t.ours.notna()].reset_index(drop=True)
    return out


def _gap_series(t: pd.DataFrame, col: str, n: int, order: list[str]) -> pd.Series:
    sub = t[t.n == n].set_index("label")[col]
    return _ordered(sub, order)


def _ours_frog_4_2(o: _Ours) -> dict[str, Any]:
    tables = _runs_4_2(o)
    out: dict[str, Any] = {f"runs:{fn}": t for fn, t in tables.items()}
    for fam in ("fg-mean", "frog"):
        groups = {}
        for fn, t in tables.items():
            if len(t):
                n = int(t.n.max())
                groups[f"{fn} (n = {n})"] = _gap_series(t, "ours_cmp", n, _fg_order(fam))
        out[f"gap_vs_k:{fam}"] = groups or NotComparable("no closed-form runs")
    out["frog_le_mean_share"] = _frog_le_mean_share(tables, "ours_cmp")
    return out


def _frog_le_mean_share(tables: Mapping[str, pd.DataFrame], col: str, tol: float = 0.05,
                        floor: float = 1e-6) -> float | NotComparable:
    good = total = 0
    for t in tables.values():
        s = t.set_index(["n", "label"])[col]
        for n in sorted(set(t.n)):
            for k in (2, 4, 16):
                fr, me = (n, f"FROG k={k}"), (n, f"FG-mean k={k}")
                if fr in s.index and me in s.index:
                    a, b = float(s[fr]), float(s[me])
                    total += 1
                    good += (_small(a, floor) and _small(b, floor)) or a <= b * (1 + tol) or (math.isinf(b))
    return good / total if total else NotComparable("no (n, k) cell with both FROG and FG-mean")


def _paper_frog_4_2(o: _Ours | None) -> dict[str, Any]:
    tables = _runs_4_2(o) if o is not None else {}
    a = authors_frog("math")
    full = {}
    for fn, g in a.groupby("function"):
        keys = g[["function", "n", "label"]].reset_index(drop=True)
        fstar = pd.Series([_minimum(fn, n) for n in keys.n])
        full[fn] = _runs_table(keys, g["loss"].reset_index(drop=True), g["loss"].reset_index(drop=True), fstar)
    out: dict[str, Any] = {}
    for fam in ("fg-mean", "frog"):
        groups = {}
        for fn, t in full.items():
            n = int(tables[fn].n.max()) if fn in tables and len(tables[fn]) else int(t.n.max())
            groups[f"{fn} (n = {n})"] = _gap_series(t, "paper_cmp", n, _fg_order(fam))
        out[f"gap_vs_k:{fam}"] = groups
    # the authors' share over the cells we computed (all of theirs when we have none)
    same = {fn: (t[t.n.isin(tables[fn].n)] if fn in tables and len(tables[fn]) else t) for fn, t in full.items()}
    out["frog_le_mean_share"] = _frog_le_mean_share(same, "paper_cmp")
    for fn, t in full.items():
        out[f"runs:{fn}"] = f"{len(t)} recorded runs"
    return out


def _runs_4_3(o: _Ours) -> pd.DataFrame | None:
    runs = o.get("custom_tangents__runs", "runs")
    if runs is None:
        return None
    r = _closed_form_ours(runs)
    a = authors_frog("math__custom_tangents")
    rows = []
    for _, row in a.iterrows():
        sel = (r.label == row.label) & (r.n == row.n)
        if row.gradient_approach != "frog":
            sel &= np.isclose(r["angle"].astype(float), row.angle)
        ours = float(r.loc[sel, "last"].median()) if sel.any() else math.nan
        rows.append({"function": row.function, "n": row.n, "label": row.label,
                     "angle": row.angle, "paper": row.loss, "ours": ours})
    t = pd.DataFrame(rows)
    fstar = [_minimum(f, n) for f, n in zip(t.function, t.n)]
    t["paper_cmp"] = [_scaled_gap(x, f) for x, f in zip(t.paper, fstar)]
    t["ours_cmp"] = [_scaled_gap(x, f) if not _nan(x) else math.nan for x, f in zip(t.ours, fstar)]
    return t[t.ours.notna()].reset_index(drop=True)


def _angle_groups(t: pd.DataFrame, col: str) -> dict[str, pd.Series]:
    groups = {}
    fg = t[t.label.str.startswith("FG-mean") & t.angle.notna()]
    for label, g in fg.groupby("label", sort=False):
        s = g.set_index("angle")[col].sort_index()
        s.index = [f"{a:g}°" for a in s.index]
        groups[label] = s
    return groups


def _ours_frog_4_3(o: _Ours) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs = o.get("custom_tangents__runs", "runs")
    if runs is not None:
        r = _closed_form_ours(runs)
        t = _runs_4_3(o)
        out["runs:styblinski-tang"] = t
        fg = r[r.approach == "fg-mean"] if "approach" in r else r[r.label.str.startswith("FG")]
        groups = {}
        for label, g in fg.groupby("label", sort=False):
            med = g.groupby("angle")["last"].median().sort_index()
            s = pd.Series([_scaled_gap(v, _minimum(g.function.iloc[0], g.n.iloc[0])) for v in med.values],
                          index=[f"{a:g}°" for a in med.index])
            groups[label] = s
        out["gap_vs_angle:fg-mean"] = groups or NotComparable("no FG-mean runs at fixed angles")
    q = o.get("custom_tangents__quality", "quality")
    if q is not None:
        c = q[(q.approach == "frog") & (q.metric == "cosine") & q.angle.notna()]
        if len(c):
            out["proj_cos_range_over_angles"] = float(c.groupby("k")["mean"].agg(lambda s: s.max() - s.min()).max())
    return out


def _paper_frog_4_3(o: _Ours | None) -> dict[str, Any]:
    a = authors_frog("math__custom_tangents")
    fstar = [_minimum(f, n) for f, n in zip(a.function, a.n)]
    a = a.assign(paper_cmp=[_scaled_gap(x, f) for x, f in zip(a["loss"], fstar)])
    return {"gap_vs_angle:fg-mean": _angle_groups(a, "paper_cmp"),
            "runs:styblinski-tang": f"{len(a)} recorded runs"}


# ---- FROG 4.4 / 4.5

def _authors_model(model: str) -> str:
    m = re.match(r"FC-(\d+)", str(model))
    if m:
        return f"fc_w={m.group(1)}"
    low = str(model).lower()
    for name in ("resnet18", "vit"):
        if low.startswith(name):
            return name
    return low


def _net_summary(o: _Ours) -> pd.DataFrame | None:
    s = o.get("training__summary")
    if s is None:
        s = o.get("summary")
    if s is None or "best_val_loss" not in s:
        return None
    s = s.copy()
    s["label"] = _labels(s)
    s["authors_model"] = s.model.map(_authors_model)
    return s


def _net_groups(s: pd.DataFrame, authors: pd.DataFrame) -> dict[str, tuple[pd.Series, pd.Series | None]]:
    """``{group: (ours mean best_val_loss by label, the authors' loss by label or None)}``."""
    out = {}
    for (ds, model, am), g in s.groupby(["dataset", "model", "authors_model"], sort=False):
        ours = g.groupby("label", sort=False)["best_val_loss"].mean()
        ads = ds if ds in set(authors.dataset) else "mnist"
        a = authors[(authors.model == am) & (authors.dataset == ads)]
        paper = a.set_index("label")["loss"] if len(a) else None
        name = f"{model} ({ds}" + ("" if ads == ds else f"; authors: {ads.upper()}") + ")"
        out[name] = (ours, paper)
    return out


_NET_ORDER = ["BP", "FG", "FG-mean k=2", "FG-mean k=4", "FG-mean k=16", "FROG k=2", "FROG k=4", "FROG k=16"]


def _ours_networks(o: _Ours, table: str) -> dict[str, Any]:
    s = _net_summary(o)
    if s is None:
        return {}
    authors = authors_frog(table)
    groups = _net_groups(s, authors)
    out: dict[str, Any] = {}
    rows = []
    for (ds, model, am), g in s.groupby(["dataset", "model", "authors_model"], sort=False):
        a = authors[(authors.model == am) & (authors.dataset == ds)]
        ours = g.groupby("label")["best_val_loss"].mean()
        for _, row in a.iterrows():
            if row.label in ours.index:
                rows.append({"model": model, "dataset": ds, "label": row.label, "paper": row["loss"],
                             "ours": float(ours[row.label])})
    if rows:
        t = pd.DataFrame(rows)
        out["runs"] = t.assign(paper_cmp=t.paper, ours_cmp=t.ours)
    else:
        ds = ", ".join(sorted(set(s.dataset)))
        out["runs"] = NotComparable(f"our runs use {ds}; the authors' were recorded on "
                                    f"{', '.join(sorted(set(authors.dataset))).upper()}")
    out["order"] = {g: _ordered(v[0], _NET_ORDER) for g, v in groups.items()}
    for fam in ("fg-mean", "frog"):
        out[f"loss_vs_k:{fam}"] = {g: _ordered(v[0], _fg_order(fam)) for g, v in groups.items()}
    out["bp_vs_best_fg"] = {g: _bp_vs_best(v[0]) for g, v in groups.items()}
    return out


def _bp_vs_best(s: pd.Series) -> pd.Series | NotComparable:
    fg = s.drop("BP", errors="ignore")
    if "BP" not in s.index or fg.empty:
        return NotComparable("no BP run or no forward-gradient run")
    return pd.Series({f"best forward gradient ({fg.idxmin()})": float(fg.min()), "BP": float(s["BP"])})


def _paper_networks(o: _Ours | None, table: str) -> dict[str, Any]:
    authors = authors_frog(table)
    s = _net_summary(o) if o is not None else None
    if s is None:  # the authors' own groups
        groups = {f"{m} ({d})": (None, g.set_index("label")["loss"]) for (m, d), g in
                  authors.groupby(["model", "dataset"], sort=False)}
    else:
        groups = _net_groups(s, authors)
    out: dict[str, Any] = {"order": {g: v[1] for g, v in groups.items() if v[1] is not None},
                           "runs": f"{len(authors)} recorded runs"}
    for fam in ("fg-mean", "frog"):
        out[f"loss_vs_k:{fam}"] = {g: _ordered(v[1], _fg_order(fam)) for g, v in groups.items() if v[1] is not None}
    out["bp_vs_best_fg"] = {g: _bp_vs_best(v[1]) for g, v in groups.items() if v[1] is not None}
    return out


# ---- FoMoH

def _final(df: pd.DataFrame, keys: list[str], step: str) -> pd.DataFrame:
    last = df[df[step] == df.groupby(keys)[step].transform("max")]
    return last


def _ours_fomoh_rosenbrock(o: _Ours) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tr = o.get("rosenbrock_2d__trajectory", "trajectory")
    if tr is not None:
        tr = tr.assign(label=_labels(tr))
        fin = _final(tr, ["label", "seed"], "iteration").groupby("label")["loss"].median()
        out["final_2d"] = _ordered(fin, ["FGD", "FoMoH", "FoMoH-KD K=2"])
    st = o.get("rosenbrock_2d__status")
    if st is not None:
        st = st.assign(label=_labels(st))
        kd = st[st.label == "FoMoH-KD K=2"]
        tot = float((kd.ok + kd.jitter + kd.failed).sum())
        if tot:
            out["jitter_share_2d"] = float(kd.jitter.sum()) / tot
    cu = o.get("rosenbrock_nd__curves", "curves")
    if cu is not None:
        cu = cu.assign(label=_labels(cu))
        fin = _final(cu, ["n", "label", "seed"], "iteration").groupby(["n", "label"])["loss"].median()
        if 5 in fin.index.get_level_values(0):
            f5 = fin.loc[5]
            f5 = f5[[i.startswith("FoMoH-KD") for i in f5.index]]
            f5 = f5.iloc[np.argsort([int(i.split("=")[1]) for i in f5.index])]
            out["final_5d_vs_k"] = f5
        else:
            out["final_5d_vs_k"] = NotComparable("no 5-D run")
        if 10 in fin.index.get_level_values(0):
            f10 = fin.loc[10]
            out["iterations_10d"] = int(cu[cu.n == 10].iteration.max())
            if "FoMoH-KD K=10" in f10.index and "Newton" in f10.index:
                out["kd_n_minus_newton_10d"] = abs(float(f10["FoMoH-KD K=10"]) - float(f10["Newton"]))
            else:
                out["kd_n_minus_newton_10d"] = NotComparable("no FoMoH-KD K=10 or Newton run at n = 10")
        else:
            out["iterations_10d"] = out["kd_n_minus_newton_10d"] = NotComparable("no 10-D run")
    return out


def _ours_fomoh_subspace(o: _Ours) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sw = o.get("damping_sweep__sweep", "sweep")
    if sw is not None:
        q = sw[sw.problem == "quadratic"]
        frog = q[q.variant == "frog"].groupby("lr")["final_gap"].median()
        kd = q[(q.variant == "damped") & (q.curvature == "raw") & (q.damping == 0)]["final_gap"].median()
        if len(frog) and not math.isnan(kd):
            out["quadratic_frog_vs_kd"] = pd.Series({f"FROG (best lr {fmt(frog.idxmin())})": float(frog.min()),
                                                     "FoMoH-KD (μ = 0)": float(kd)})
    cu = o.get("damping_sweep__curves", "curves")
    if cu is not None:
        sel = cu[(cu.variant == "damped") & (cu.curvature == "raw") & (cu["which"] == "mu=0")]
        better = []
        for _, g in sel.groupby("problem"):
            g = g.sort_values("iteration")
            better.append(float(g.median_gap.iloc[-1]) < float(g.median_gap.iloc[0]))
        if better:
            out["kd_eta1_improves_share"] = sum(better) / len(better)
    return out


def _ours_fomoh_networks(o: _Ours) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cu = o.get("networks__curves", "curves")
    if cu is not None:
        cu = cu.assign(label=_labels(cu))
        test = cu[cu.split == "test"]
        fin = _final(test, ["model", "label", "seed"], "step").groupby(["model", "label"])["loss"].median()
        order = ["FGD", "FoMoH", "FoMoH-KD K=2", "FoMoH-KD K=3"]
        out["test_loss_order"] = {m: _ordered(fin.loc[m], order) for m in fin.index.get_level_values(0).unique()}
    out["mlp_mnist_kd2_val_loss"] = NotComparable("we train logistic regression and the CNN, not the authors' "
                                                  "784-100-10 MLP tutorial model")
    p = o.params.get("networks")
    for model in ("logreg", "cnn"):
        if p is None:
            reason = NotComparable("settings come from the run's metadata: pass the StoredResult")
            out[f"lr:{model}:fomoh"] = out[f"batch:{model}"] = reason
            continue
        out[f"lr:{model}:fomoh"] = p.get("lrs", {}).get(model, {}).get("fomoh", NotComparable(f"no {model} run"))
        out[f"batch:{model}"] = p.get("batch", {}).get(model, NotComparable(f"no {model} run"))
    return out


_OURS: dict[str, Callable[[_Ours], dict[str, Any]]] = {
    "frog_4_1": _ours_frog_4_1,
    "frog_4_2": _ours_frog_4_2,
    "frog_4_3": _ours_frog_4_3,
    "frog_4_4": lambda o: _ours_networks(o, "fc_nns"),
    "frog_4_5": lambda o: _ours_networks(o, "sota_nns"),
    "fomoh_rosenbrock": _ours_fomoh_rosenbrock,
    "fomoh_subspace": _ours_fomoh_subspace,
    "fomoh_networks": _ours_fomoh_networks,
}
_PAPER: dict[str, Callable[[_Ours | None], dict[str, Any]]] = {
    "frog_4_2": _paper_frog_4_2,
    "frog_4_3": _paper_frog_4_3,
    "frog_4_4": lambda o: _paper_networks(o, "fc_nns"),
    "frog_4_5": lambda o: _paper_networks(o, "sota_nns"),
}


def ours_metrics(chapter: str, ours: Mapping[str, Any]) -> dict[str, Any]:
    """Every metric of ``chapter``'s claims that our tables yield: a number, a Series in the claim's order,
    a ``{group: Series}`` mapping, a per-run table or a :class:`NotComparable`."""
    return _OURS[_check_chapter(chapter)](_Ours(ours))


def paper_metrics(chapter: str, ours: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The same metrics computed from the authors' recorded numbers (where they exist), on the cells
    our results cover when ``ours`` is given."""
    f = _PAPER.get(_check_chapter(chapter))
    return f(None if ours is None else _Ours(ours)) if f else {}


def authors_runs(chapter: str, ours: Mapping[str, Any]) -> pd.DataFrame:
    """The authors' recorded runs of ``chapter`` (4.2–4.5) next to ours, one row per run, with the
    per-run verdict of the chapter's ``runs_agree`` claim. Columns: the run's keys, ``paper``, ``ours``
    (for closed-form runs the final f; for networks the validation loss), ``verdict``."""
    m = ours_metrics(chapter, ours)
    rows = claims(chapter)
    frames = []
    for _, c in rows[rows.comparison == "runs_agree"].iterrows():
        t = m.get(c.metric)
        if not isinstance(t, pd.DataFrame):
            continue
        ok = [_within_factor(_num(a), _num(b), c.tolerance, None if _nan(c.floor) else c.floor)
              for a, b in zip(t.paper_cmp, t.ours_cmp)]
        t = t.assign(verdict=["not comparable" if v is None else ("agrees" if v else "differs") for v in ok])
        frames.append(t.drop(columns=["paper_cmp", "ours_cmp"]))
    if not frames:
        return pd.DataFrame(columns=["paper", "ours", "verdict"])
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- tables

def _show(x: Any) -> str:
    """A metric value as a table cell."""
    if x is None:
        return "–"
    if isinstance(x, NotComparable):
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, pd.DataFrame):
        return f"{len(x)} runs"
    if isinstance(x, tuple):
        return _show(x[0])
    if isinstance(x, Mapping) and _is_groups(x):
        return "; ".join(f"{g}: {_show(v)}" for g, v in x.items())
    s = _series(x)
    if s is not None:
        parts = [f"{i} {fmt(v)}" for i, v in s.items()]
        return " → ".join(parts)
    return fmt(x, 4)


def compare(chapter: str, ours: Mapping[str, Any]) -> pd.DataFrame:
    """The paper-vs-ours table of ``chapter``: one row per claim of ``paper_claims.csv`` with its source,
    the paper's side (number, the authors' recorded numbers, or ``claimed``), ours, the computed verdict,
    the rule with its tolerance in words and a detail (which runs/pairs/groups differ, or why a claim is
    not comparable). Columns :data:`COMPARE_COLUMNS`.

    ``ours``: ``{name: DataFrame}`` with the chapter's result tables by file stem
    (``"closed_form__runs"``) or table name (``"runs"``), or ``{name: StoredResult}`` (then settings stored
    in the run's parameters are compared too), e.g. :func:`load_ours`.
    """
    _check_chapter(chapter)
    mine = ours_metrics(chapter, ours)
    theirs = paper_metrics(chapter, ours)
    o_profiles = _Ours(ours).profiles()
    rows = []
    for _, c in claims(chapter).iterrows():
        o = mine.get(c.metric)
        p = theirs.get(c.metric)
        if c.comparison in ("runs_agree",):
            arg, paper_shown = c.value, (p if p is not None else "recorded runs")
        elif c.comparison == "same_order":
            arg, paper_shown = (p if p is not None else NotComparable("no authors' numbers"), c.value), p
        elif c.comparison in ("increasing", "decreasing"):
            arg, paper_shown = None, (p if p is not None else "claimed")
        else:
            arg = c.value if not _nan(c.value) else p
            paper_shown = arg
        v, detail = verdict(c.comparison, o, arg, tolerance=c.tolerance, floor=c.floor)
        if isinstance(o, NotComparable):
            detail = o.reason
        profiles = [p for p in o_profiles if p != "paper"]
        if c.kind == "setting" and v == "differs" and profiles:
            v, detail = "not comparable", (f"the {', '.join(profiles)} profile uses its own setting (ours: "
                                           f"{_show(o)}); the paper profile uses the paper's")
        rows.append({"chapter": chapter, "claim_id": c.claim_id, "kind": c.kind, "claim": c.claim, "source": c.source,
                     "paper": _show(paper_shown), "ours": _show(o),
                     "verdict": v, "rule": rule_text(c.comparison, c.value, c.tolerance, c.floor),
                     "detail": detail})
        if isinstance(o, pd.DataFrame) and c.comparison == "runs_agree":
            rows[-1]["ours"] = detail
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def summary(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per chapter of ``results`` (``{chapter: ours}``, as for :func:`compare`): the number of
    claims and how many agree, differ or are not comparable (for the book's introduction)."""
    rows = []
    for chapter, ours in results.items():
        t = compare(chapter, ours)
        counts = t.verdict.value_counts()
        rows.append({"chapter": chapter, "claims": len(t), **{v: int(counts.get(v, 0)) for v in VERDICTS}})
    return pd.DataFrame(rows, columns=["chapter", "claims", *VERDICTS])


def load_ours(chapter: str, profile: str, device: str = "cpu", root: str | os.PathLike | None = None,
              variant: str | None = None) -> dict[str, Any]:
    """Every stored run of ``chapter`` at ``profile``/``device`` as ``{run name: StoredResult}`` (the
    input of :func:`compare`); empty if nothing is stored."""
    from .results import load_folder, run_dir

    folder = run_dir(_check_chapter(chapter), profile, device, variant, root)
    out = {}
    for meta in sorted(folder.glob("*.meta.json")) if folder.exists() else []:
        name = meta.name[: -len(".meta.json")]
        stored = load_folder(folder, name)
        if stored is not None:
            out[name] = stored
    return out


def markdown_table(df: pd.DataFrame, columns: list[str] | None = None, *, headers: Mapping[str, str] | None = None,
                   digits: int = 3) -> str:
    """``df`` as a Markdown pipe table (no index; numbers through :func:`frogcore.narrative.fmt`; ``|``
    escaped), for ``IPython.display.Markdown`` or :func:`frogcore.narrative.glue_markdown`."""
    cols = list(df.columns if columns is None else columns)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the table; its columns: {list(df.columns)}")
    names = [(headers or {}).get(c, c) for c in cols]

    def cell(v: Any) -> str:
        text = v if isinstance(v, str) else fmt(v, digits)
        return text.replace("|", "\\|").replace("\n", " ")

    buf = io.StringIO()
    buf.write("| " + " | ".join(names) + " |\n")
    buf.write("|" + "|".join("---" for _ in cols) + "|\n")
    for _, row in df[cols].iterrows():
        buf.write("| " + " | ".join(cell(row[c]) for c in cols) + " |\n")
    return buf.getvalue()


# ----------------------------------------------------------------------------- Markdown for the pages

#: how the pages name the chapters
CHAPTER_TITLES = {
    "frog_4_1": "FROG 4.1: approximation quality",
    "frog_4_2": "FROG 4.2: closed-form functions",
    "frog_4_3": "FROG 4.3: custom tangents",
    "frog_4_4": "FROG 4.4: fully connected networks",
    "frog_4_5": "FROG 4.5: ResNet18 and ViT",
    "fomoh_rosenbrock": "FoMoH: Rosenbrock",
    "fomoh_subspace": "FoMoH-KD vs FROG: one subspace step",
    "fomoh_networks": "FoMoH: networks",
}
_REPO_FILE = re.compile(r"([\w.-]+/[\w.-]+) ([\w./-]+\.\w+)@([0-9a-f]{40})")
_ARXIV = re.compile(r"arXiv:(\d{4}\.\d{4,5})")
_VERDICT_MARK = {"agrees": "✓ agrees", "differs": "✗ differs", "not comparable": "– not comparable"}


def source_markdown(source: str) -> str:
    """A claim's source with links: ``owner/repo path@commit`` → a GitHub link showing ``path@<7 hex>``,
    ``arXiv:NNNN.NNNNN`` → the abstract page, bare URLs → links."""
    text = _REPO_FILE.sub(lambda m: f"[{m.group(1)} `{m.group(2)}`@`{m.group(3)[:7]}`]"
                                    f"(https://github.com/{m.group(1)}/blob/{m.group(3)}/{m.group(2)})", source)
    text = _ARXIV.sub(lambda m: f"[arXiv:{m.group(1)}](https://arxiv.org/abs/{m.group(1)})", text)
    return re.sub(r"(?<!\])\((https?://[^)\s]+)\)", r"(<\1>)", text)


def markdown(chapter: str, ours: Mapping[str, Any], *, columns: tuple[str, ...] = ("claim", "source", "paper", "ours",
                                                                                      "verdict", "rule"),
             detail: bool = True) -> str:
    """The paper-vs-ours table of ``chapter`` (:func:`compare`) as a Markdown table for the top of its page:
    sources linked (:func:`source_markdown`), verdicts marked ✓/✗/–, the detail (which runs, pairs or groups
    differ, or why a claim is not comparable) appended to the verdict when ``detail``."""
    t = compare(chapter, ours)
    t["source"] = t.source.map(source_markdown)
    t["verdict"] = [_VERDICT_MARK[v] + (f" ({d})" if detail and d else "") for v, d in zip(t.verdict, t.detail)]
    headers = {"claim": "Claim", "source": "Source", "paper": "Paper / authors", "ours": "Ours", "verdict": "Verdict",
               "rule": "Rule", "kind": "Kind", "claim_id": "#", "detail": "Detail"}
    return markdown_table(t, list(columns), headers=headers)


def summary_markdown(results: Mapping[str, Mapping[str, Any]], *, link: bool = True) -> str:
    """The one-screen summary for the introduction: per chapter (linked to its page with a ``{doc}`` role
    relative to the book's root when ``link``), the number of claims and of each verdict."""
    s = summary(results)
    s["chapter"] = [f"{{doc}}`{CHAPTER_TITLES.get(c, c)} <executed/{c}>`" if link else CHAPTER_TITLES.get(c, c)
                    for c in s.chapter]
    return markdown_table(s, headers={"chapter": "Chapter", "claims": "Claims", "agrees": "✓ agree",
                                      "differs": "✗ differ", "not comparable": "– not comparable"})


def write_summary_page(path: str | os.PathLike, profile: str = "default", device: str = "cpu",
                       root: str | os.PathLike | None = None) -> Path:
    """Write :func:`summary_markdown` of every chapter's stored results (each chapter at the profile the book
    builds it with, :func:`frogcore.pipeline.chapter_profile`) to ``path`` — e.g. ``book/executed/
    paper_summary.md``, pulled into the introduction with a MyST ``{include}`` directive."""
    from .pipeline import chapter_profile
    from .results import atomic_write_bytes

    results = {c: load_ours(c, chapter_profile(c, profile), device, root) for c in CHAPTERS}
    text = summary_markdown(results)
    used = ", ".join(f"{c} {chapter_profile(c, profile)}" for c in CHAPTERS)
    text += f"\n<!-- generated by frogcore.paper.write_summary_page from the stored results ({used}) -->\n"
    path = Path(path)
    atomic_write_bytes(path, text.encode())
    return path
