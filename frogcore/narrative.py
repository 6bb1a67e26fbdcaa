"""Numbers in prose come from the results: formatting and myst-nb ``glue`` helpers for the notebooks.

Every number a page states about a result is computed in a (hidden) code cell and pasted into the
Markdown with a myst-nb role, so it changes with the results and never goes stale:

.. code-block:: python

    from frogcore.narrative import glue
    glue("bp_acc", summary.test_acc.max(), digits=4)        # stores "0.9958" under the key "bp_acc"

and in a Markdown cell of the same notebook::

    Backpropagation reaches a test accuracy of {glue:text}`bp_acc`.

``{glue:text}`` pastes the ``text/plain`` form, which :func:`glue` makes the formatted string itself
(no quotes). ``{glue}`` works too; ``{glue:md}`` pastes Markdown glued with :func:`glue_markdown`
(inline Markdown, e.g. a number with a link or emphasis). A Markdown *page* of the book (``book/*.md``)
can paste a value glued in a notebook with the notebook's path relative to the page and a format after a
second colon (myst-nb reads the last ``:…`` as the format): ``{glue:text}`executed/frog_4_2.ipynb::key:s```.

Formatting (:func:`fmt`) is the one place that decides how a number reads: ``digits`` significant
digits (never fewer than the integer part has), scientific notation as ``1.2 × 10⁻⁵`` outside
[10⁻³, 10⁶), ``∞``, and an en dash for a missing value.
"""
from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PARAMETER_NAMES", "ProseNumber", "Text", "find_prose_numbers", "fmt", "fmt_range", "glue", "glue_many",
           "glue_markdown", "pct", "scan_prose_numbers"]

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
MISSING = "–"


class Text(str):
    """A string that displays as itself (no quotes) in every notebook output format.

    IPython shows ``repr(str)`` — with quotes — as a string's ``text/plain``; a glued :class:`Text`
    pastes as the bare text in ``{glue:text}`` and ``{glue}``.
    """

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p, cycle) -> None:  # IPython's plain-text formatter
        p.text(str(self))


def _check_digits(digits: Any) -> int:
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or not 1 <= digits <= 17:
        raise ValueError(f"digits must be an integer from 1 to 17; got {digits!r}")
    return int(digits)


def _scientific(x: float, digits: int, style: str) -> str:
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    exp = int(exponent)
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    if style == "e":
        return f"{mantissa}e{exp}"
    if style == "latex":
        body = f"10^{{{exp}}}" if mantissa in ("1", "-1") else f"{mantissa} \\times 10^{{{exp}}}"
        return ("-" if mantissa == "-1" else "") + body
    power = "10" + str(exp).translate(_SUPERSCRIPT)
    if mantissa in ("1", "-1"):
        return ("−" if mantissa == "-1" else "") + power
    return f"{mantissa.replace('-', '−')} × {power}"


def fmt(x: Any, digits: int = 3, *, sci: str = "unicode", thousands: bool = True) -> str:
    """A number as prose shows it.

    * integers (and integral floats below 10⁶): all digits, ``12,345`` with ``thousands=True`` for five
      digits and more (four-digit numbers such as 1024 stay unseparated);
    * other floats: ``digits`` significant digits, but never fewer than the integer part has
      (``fmt(2996.3) == "2996"``), trailing zeros dropped (``fmt(0.5) == "0.5"``);
    * outside [10⁻³, 10⁶): scientific, ``sci="unicode"`` → ``1.2 × 10⁻⁵``, ``"latex"`` →
      ``1.2 \\times 10^{-5}`` (for use inside ``$…$``), ``"e"`` → ``1.2e-5``;
    * ``inf`` → ``∞``, ``None``/NaN → ``–``; booleans → ``yes``/``no``; strings pass through.
    """
    digits = _check_digits(digits)
    if sci not in ("unicode", "latex", "e"):
        raise ValueError(f"sci must be one of 'unicode', 'latex', 'e'; got {sci!r}")
    if x is None:
        return MISSING
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "yes" if x else "no"
    if hasattr(x, "item") and not isinstance(x, numbers.Number):
        x = x.item()  # numpy / torch scalars
    if isinstance(x, numbers.Integral):
        return _int(int(x), thousands)
    if not isinstance(x, numbers.Real):
        raise ValueError(f"fmt needs a real number; got {x!r} of type {type(x).__name__}")
    x = float(x)
    if math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax < 1e-3 or ax >= 1e6:
        return _scientific(x, digits, sci)
    if x == round(x) and ax >= 10 ** (digits - 1):
        return _int(int(round(x)), thousands)
    int_digits = max(1, int(math.floor(math.log10(ax))) + 1)
    decimals = max(0, max(digits, int_digits) - int_digits) if ax >= 1 else \
        digits - 1 - int(math.floor(math.log10(ax)))
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if "." not in text and text not in ("-0", "0"):
        return _int(int(text), thousands)
    if text in ("-0", "0") and x != 0:
        return _scientific(x, digits, sci)
    return text.replace("-", "−")


def _int(v: int, thousands: bool) -> str:
    text = f"{abs(v):,}" if thousands and abs(v) >= 10_000 else str(abs(v))
    return ("−" if v < 0 else "") + text


def pct(x: Any, digits: int = 3) -> str:
    """A fraction as a percentage: ``pct(0.1234) == "12.3 %"`` (``digits`` significant digits)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    return f"{fmt(float(x) * 100, digits)} %"


def fmt_range(lo: Any, hi: Any, digits: int = 3) -> str:
    """``lo … hi`` with both ends formatted alike (``fmt_range(7.78, 1.99) == "7.78 … 1.99"``)."""
    return f"{fmt(lo, digits)} … {fmt(hi, digits)}"


def glue(name: str, value: Any, digits: int = 3, *, display: bool = False, **fmt_kw: Any) -> Text:
    """Format ``value`` with :func:`fmt` (strings as they are) and glue it under ``name``.

    Paste it in Markdown with ``{glue:text}`name``` (or ``{glue}`name```). Returns the glued text.
    ``display=False`` (the default) keeps the value out of the cell's visible output.
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or ":" in name:
        raise ValueError(f"glue name must be a non-empty string without spaces or ':'; got {name!r}")
    text = Text(value if isinstance(value, str) else fmt(value, digits, **fmt_kw))
    from myst_nb import glue as _glue

    _glue(name, text, display=display)
    return text


def glue_markdown(name: str, markdown: str, *, display: bool = False) -> str:
    """Glue a Markdown snippet (paste inline with ``{glue:md}`name```, or as a block with the
    ``{glue:md}`` directive and ``:format: myst``)."""
    if not isinstance(markdown, str):
        raise ValueError(f"markdown must be a string; got {type(markdown).__name__}")
    from IPython.display import Markdown
    from myst_nb import glue as _glue

    _glue(name, Markdown(markdown), display=display)
    return markdown


def glue_many(values: Mapping[str, Any], digits: int = 3, *, prefix: str = "", **fmt_kw: Any) -> dict[str, Text]:
    """:func:`glue` every ``name → value`` of ``values`` (names prefixed with ``prefix``)."""
    return {prefix + k: glue(prefix + k, v, digits, **fmt_kw) for k, v in values.items()}


# ----------------------------------------------------------------------------- hand-typed numbers in prose

#: names whose value a sentence may state as a setting: ``k = 16``, ``n ∈ {1, …, 1024}``, ``η = 10⁻⁴``
PARAMETER_NAMES = (
    "k", "K", "n", "N", "D", "d", "W", "T", "B", "L", "m", "M", "η", "eta", "μ", "mu", "lr", "ε", "eps", "epsilon",
    "β", "beta", "λ", "lambda", "τ", "tau", "κ", "kappa", "θ", "σ", "sigma", "α", "alpha", "γ", "gamma", "ρ", "r",
    "seed", "seeds", "batch", "batch size", "epochs", "width", "widths", "steps", "iterations", "angle", "angles",
    "patience", "samples", "dim", "depth", "heads", "hidden", "patch", "workers", "threads", "lr_scale", "scale",
    "scales", "profile", "max_steps", "num_seeds", "num_samples", "points",
)
_SUP = "⁰¹²³⁴⁵⁶⁷⁸⁹"
_NUM = (r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+−]?\d+)?"
        r"(?:\s*[×x·]\s*10(?:\^\{?[-−]?\d+\}?|[⁻⁺]?[" + _SUP + r"]+)|[⁻⁺]?[" + _SUP + r"]+)?")
_NUMBER = re.compile(r"(?<![\w.\-\\/#])(?<![A-Za-z]-)" + _NUM + r"(?![\w])")
_PARAM_RE = re.compile(
    r"(?<![\w\\])(?:" + "|".join(sorted((re.escape(p) for p in PARAMETER_NAMES), key=len, reverse=True)) + r")"
    r"\s*(?:=|≤|≥|<|>|∈|≈|≠|\\in|\\le|\\ge|:=)\s*[\{\(\[]?\s*"
    r"(?:(?:" + _NUM + r"|…|\.\.\.|[A-Za-z]\b(?!\s*(?:=|≤|≥|<|>|∈)))\s*(?:,|…|\.\.\.|–|-|to|and|or|/|\}|\)|\])?\s*)+")
_SECTION_RE = re.compile(
    r"(?:Sections?|Sec\.|§+|[Cc]hapters?|Figures?|Figs?\.|Tables?|Algorithms?|Eqs?\.|Equations?|Appendix|"
    r"Theorem|Lemma|Proposition|Corollary|Definition|Part|pages?|pp?\.|FROG|FoMoH|Cobb et al\.|Flügel et al\.)"
    r"\s*\(?\d+(?:\.\d+)*[a-z]?\)?(?:\s*(?:,|–|-|and|to|&|or)\s*\(?\d+(?:\.\d+)*[a-z]?\)?)*")
_MASKS_INLINE = [
    re.compile(r"\{[\w:.-]+\}`[^`]*`"),                      # MyST roles, {glue:text}`key` included
    re.compile(r"``.+?``|`[^`]*`"),                          # inline code
    re.compile(r"\$\$.+?\$\$|(?<!\\)\$[^$\n]+?(?<!\\)\$"),   # inline math
    re.compile(r"\\\(.+?\\\)"),
    re.compile(r"<!--.*?-->"),
    re.compile(r"https?://\S+|www\.\S+"),
    re.compile(r"\]\([^)]*\)"),                              # link targets
    re.compile(r"<[^>\n]+>"),                                # HTML tags
    _SECTION_RE,
    re.compile(r"\b\d\.\d\s*[–-]\s*\d\.\d\b"),               # section ranges 4.1–4.5
    re.compile(r"(?<![=≈<>≤≥]\s)(?<![=≈<>≤≥\d.])\b4\.[1-5]\b(?!\.\d|\s*(?:%|s\b|×))"),  # the papers' sections
    re.compile(r"\b\d{4}\.\d{4,5}(?:v\d+)?\b"),              # arXiv ids
    re.compile(r"\b10\.\d{4,9}/\S+"),                        # DOIs
    re.compile(r"\b(?:v|version|Python|PyTorch|torch|jupyter-book|Jupyter Book|Sphinx|CUDA|myst-nb|IJCNN|"
               r"ICML|NeurIPS|ICLR|Debian|Ubuntu|Chromium)\s*\d+(?:\.\d+)*(?:\.x)?", re.I),
    re.compile(r"\b\d+\.\d+\.\d+\b|\b\d+\.x\b"),             # versions
    re.compile(r"\[\d+(?:\s*[,–-]\s*\d+)*\]"),               # numeric citations
    re.compile(r"\b\d+\s*[×x]\s*\d+(?![\d.⁰¹²³⁴⁵⁶⁷⁸⁹⁻])(?:\s*[×x]\s*\d+)*\b"),  # shapes 28×28, 1×8×8
    re.compile(r"\b95\s*%\s*(?:CI|confidence)"),
    _PARAM_RE,
]
_UNIT = re.compile(r"\s*(?:%|‰|ms\b|µs\b|s\b|min\b|minutes?\b|seconds?\b|hours?\b|h\b|GB\b|MB\b|GiB\b|MiB\b|"
                   r"times\b|×(?!\s*\d)|x\b(?!\s*\d))")
_CODE_DIRECTIVES = {"code-cell", "code-block", "code", "sourcecode", "math", "raw", "bibliography", "literalinclude",
                    "glue", "glue:any", "glue:md", "glue:math", "mermaid", "eval-rst", "toctree", "tableofcontents"}
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,}|:{3,})\s*(\{([^}]+)\})?\s*(\S*)")


@dataclass(frozen=True)
class ProseNumber:
    """A number typed into prose: where (1-based line, column) and the text around it."""

    line: int
    col: int
    number: str
    context: str


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def _mask_blocks(text: str) -> str:
    """Blank out what is not prose (code and math blocks, front matter, comments, directive options,
    headings), keeping every line in place."""
    lines = text.split("\n")
    out = []
    i = 0
    if lines and lines[0].strip() == "---":  # front matter
        j = next((j for j in range(1, len(lines)) if lines[j].strip() == "---"), None)
        if j is not None:
            out += [""] * (j + 1)
            i = j + 1
    in_math = False
    fence: tuple[str, bool] | None = None  # (closing marker, body is code)
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if fence is not None:
            marker, code = fence
            if s.startswith(marker) and set(s) <= set(marker[0]) and len(s) >= len(marker):
                fence = None
                out.append("")
            elif code or re.match(r"^\s*:[\w-]+:", line):
                out.append("")
            else:
                out.append(line)
            i += 1
            continue
        m = _FENCE.match(line)
        if m and not in_math:
            directive = (m.group(4) or "").strip()
            lang = m.group(5)
            is_code = (not directive and m.group(2)[0] != ":") or directive in _CODE_DIRECTIVES \
                or directive.startswith("glue")
            if directive.startswith("glue:figure"):
                is_code = False
            fence = (m.group(2), is_code and not (m.group(2)[0] == ":" and not directive and lang))
            out.append("")
            i += 1
            continue
        if in_math or s.startswith("$$") or re.match(r"\\begin\{", s):
            opens = s.count("$$")
            if in_math:
                if "$$" in s or re.match(r"\\end\{", s):
                    in_math = False
            elif s.startswith("$$"):
                in_math = opens == 1
            elif s.startswith("\\begin{") and not re.search(r"\\end\{", s):
                in_math = True
            out.append("")
            i += 1
            continue
        if re.match(r"^\s{0,3}#{1,6}\s", line) or s.startswith("%") or re.match(r"^\s*\[[^\]]+\]:\s", line):
            out.append("")
        else:
            out.append(line)
        i += 1
    return "\n".join(out)


def find_prose_numbers(text: str) -> list[ProseNumber]:
    """Numbers in Markdown ``text`` that read as results typed by hand.

    A number counts when it has a decimal point, an exponent (``1e-5``, ``10⁻⁴``, ``3 × 10⁻⁴``) or a unit of
    a measurement after it (``%``, ``s``, ``ms``, ``minutes``, ``×`` as a factor), and it is none of:
    inside a MyST role (``{glue:text}`key```, ``{cite}``…), inline code, math (``$…$``, ``$$…$$``,
    ``\\begin…``), a code block or a code-like directive, a heading, a comment, front matter, a URL or link
    target; a parameter setting (``k = 16``, ``n ∈ {1, 2, …, 1024}``, ``η = 10⁻⁴``: see
    :data:`PARAMETER_NAMES`); a section, figure or table reference (``Section 4.2``, ``FROG 4.4``,
    ``4.1–4.5``); an arXiv id, DOI, version or year; a shape (``28×28``); part of a name (``ResNet18``,
    ``CIFAR-10``). Plain integers (counts, dimensions, seeds) are not flagged.
    """
    masked = _mask_blocks(text)
    found = []
    for lineno, (line, orig) in enumerate(zip(masked.split("\n"), text.split("\n")), start=1):
        if not line.strip():
            continue
        for rx in _MASKS_INLINE:
            line = rx.sub(lambda m: _blank(m.group(0)), line)
        for m in _NUMBER.finditer(line):
            tok = m.group(0)
            result_like = ("." in tok.replace(",", "") and re.search(r"\d\.\d", tok)) or re.search(
                r"[eE][-+−]?\d|[×x·]\s*10|[" + _SUP + "]", tok) or _UNIT.match(line, m.end())
            if result_like:
                a, b = max(0, m.start() - 30), min(len(orig), m.end() + 30)
                found.append(ProseNumber(lineno, m.start() + 1, tok.strip(), orig[a:b].strip()))
    return found


def scan_prose_numbers(book_dir: str | os.PathLike, notebook_dir: str | os.PathLike) -> list[str]:
    """``"<file>:<line>: <number> in '…context…'"`` for every hand-typed number (:func:`find_prose_numbers`)
    in ``book_dir/*.md`` and in the Markdown cells of ``notebook_dir/*.ipynb`` (``<file>: cell <i>, line
    <line>`` there)."""
    import json

    out = []
    for p in sorted(Path(book_dir).glob("*.md")):
        for f in find_prose_numbers(p.read_text()):
            out.append(f"{p.name}:{f.line}: {f.number} in {f.context!r}")
    for p in sorted(Path(notebook_dir).glob("*.ipynb")):
        cells = json.loads(p.read_text()).get("cells", [])
        for i, cell in enumerate(cells):
            if cell.get("cell_type") != "markdown":
                continue
            src = cell.get("source", "")
            src = "".join(src) if isinstance(src, list) else src
            for f in find_prose_numbers(src):
                out.append(f"{p.name}: cell {i}, line {f.line}: {f.number} in {f.context!r}")
    return out
