"""Numbers for prose (frogcore.narrative): formatting and the myst-nb glue helpers."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from frogcore import narrative
from frogcore.narrative import Text, fmt, pct


@pytest.mark.parametrize("x, digits, expected", [
    (0.9958, 4, "0.9958"),
    (0.99584, 3, "0.996"),
    (2996.3, 3, "2996"),
    (7.78123, 3, "7.78"),
    (1.99, 3, "1.99"),
    (0.5, 3, "0.5"),
    (5.0, 3, "5"),
    (1024, 3, "1024"),
    (20037642, 3, "20,037,642"),
    (12345.0, 3, "12,345"),
    (0.001, 3, "0.001"),
    (0.00012345, 3, "1.23 × 10⁻⁴"),
    (1e-4, 3, "10⁻⁴"),
    (3e27, 2, "3 × 10²⁷"),
    (-0.25, 3, "−0.25"),
    (-2506.6346, 5, "−2506.6"),
    (0.0, 3, "0"),
    (math.inf, 3, "∞"),
    (-math.inf, 3, "−∞"),
    (math.nan, 3, "–"),
    (None, 3, "–"),
    (True, 3, "yes"),
    (np.float32(0.125), 3, "0.125"),
    (np.int64(7), 3, "7"),
    ("diverged", 3, "diverged"),
])
def test_fmt(x, digits, expected):
    assert fmt(x, digits) == expected


def test_fmt_styles_and_errors():
    assert fmt(1.5e-5, 2, sci="latex") == "1.5 \\times 10^{-5}"
    assert fmt(1e-5, 2, sci="latex") == "10^{-5}"
    assert fmt(1.5e-5, 2, sci="e") == "1.5e-5"
    assert fmt(12345, thousands=False) == "12345"
    with pytest.raises(ValueError, match="digits"):
        fmt(1.0, 0)
    with pytest.raises(ValueError, match="sci"):
        fmt(1.0, sci="tex")
    with pytest.raises(ValueError, match="real number"):
        fmt(1 + 2j)
    assert pct(0.1234) == "12.3 %" and pct(1.0) == "100 %" and pct(None) == "–"
    assert narrative.fmt_range(7.781, 1.99) == "7.78 … 1.99"


@given(st.floats(min_value=1e-3, max_value=1e5, allow_nan=False), st.integers(2, 6))
def test_fmt_keeps_the_requested_significant_digits(x, digits):
    back = float(fmt(x, digits).replace(",", ""))
    assert back == pytest.approx(x, rel=10 ** (1 - digits))


def test_text_displays_without_quotes():
    from IPython.core.formatters import format_display_data

    data, _ = format_display_data(Text("0.9958"))
    assert data["text/plain"] == "0.9958"
    data, _ = format_display_data("0.9958")
    assert data["text/plain"] == "'0.9958'"        # why Text exists: a str shows with quotes


def test_glue_stores_the_formatted_text(monkeypatch):
    import myst_nb.ext.glue as glue_mod

    shown = []
    monkeypatch.setattr(glue_mod, "ipy_display", lambda obj, raw, metadata: shown.append((obj, metadata)))
    assert narrative.glue("best_acc", 0.995834, digits=4) == "0.9958"
    bundle, meta = shown[-1]
    assert meta["scrapbook"]["name"] == "best_acc"
    plain = [v for k, v in bundle.items() if k.endswith("text/plain")]
    assert plain == ["0.9958"]
    assert all(k.startswith("application/papermill.record/") for k in bundle)   # display=False hides it
    narrative.glue("label", "FROG k=16", display=True)
    assert shown[-1][0]["text/plain"] == "FROG k=16"
    out = narrative.glue_many({"a": 1.23456, "b": 1e-6}, 2, prefix="x_")
    assert out == {"x_a": "1.2", "x_b": "10⁻⁶"}
    narrative.glue_markdown("tbl", "| a |\n|---|\n| 1 |")
    assert any(k.endswith("text/markdown") for k in shown[-1][0])
    for bad in ("", "has space", "a:b", None):
        with pytest.raises(ValueError, match="glue name"):
            narrative.glue(bad, 1.0)
    with pytest.raises(ValueError, match="markdown"):
        narrative.glue_markdown("m", 3)


def test_large_numbers_read_alike_whether_integral_or_not():
    assert fmt(12345.6, 3) == "12,346" and fmt(12345.0, 3) == "12,345" and fmt(9999.4, 3) == "9999"
