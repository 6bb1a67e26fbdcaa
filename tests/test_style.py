"""The book's figure style (frogcore.style): colours per method, column-sized figures, outlier clipping,
captions with provenance."""
import colorsys
import io
import struct

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from frogcore import style  # noqa: E402
from frogcore.approach import Approach  # noqa: E402

BOOK_METHODS = ["BP", "FG", "FG-mean k=2", "FG-mean k=4", "FG-mean k=16", "FROG k=2", "FROG k=4", "FROG k=16",
                "FG-mean k=64", "FROG k=64", "FGD", "FoMoH", "FoMoH-KD K=2", "FoMoH-KD K=3", "FoMoH-KD K=5",
                "FoMoH-KD K=10", "Newton"]


def _hls(c):
    return colorsys.rgb_to_hls(*mcolors.to_rgb(c))


def _lum(c):
    r, g, b = mcolors.to_rgb(c)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_one_colour_per_method_across_the_book():
    colours = {m: style.color(m) for m in BOOK_METHODS}
    # FGD is FG under FoMoH's name (the same estimator): the one shared colour
    assert colours["FGD"] == colours["FG"]
    rest = {m: c for m, c in colours.items() if m != "FGD"}
    assert len(set(rest.values())) == len(rest), rest


@pytest.mark.parametrize("k", [2, 4, 16, 64])
def test_fg_mean_and_frog_at_the_same_k_are_a_light_dark_pair_of_one_hue(k):
    mean, frog = style.color(f"FG-mean k={k}"), style.color(f"FROG k={k}")
    assert abs(_hls(mean)[0] - _hls(frog)[0]) < 0.02          # same hue
    assert _lum(mean) > _lum(frog) + 0.1                       # the mean is the light shade
    assert style.line_kw(f"FG-mean k={k}")["linestyle"] == "--" and style.line_kw(f"FROG k={k}")["linestyle"] == "-"


def test_different_k_get_clearly_different_hues():
    hues = [_hls(style.color(f"FROG k={k}"))[0] for k in (2, 4, 16)]
    gaps = [min(abs(a - b), 1 - abs(a - b)) for i, a in enumerate(hues) for b in hues[i + 1:]]
    assert min(gaps) > 0.08


def test_every_spelling_of_an_approach_gets_the_same_colour():
    for spec, label in [("frog:16", "FROG k=16"), ("fg-mean:1", "FG"), ("fomoh-kd3", "FoMoH-KD K=3"),
                        ("bp", "BP"), ("newton", "Newton")]:
        assert style.color(spec) == style.color(label) == style.color(Approach.parse(spec))
    assert style.color("mean k=4") == style.color("FG-mean k=4")     # the committed 4.4 spelling
    assert style.color("FoMoH-2D") == style.color("FoMoH-KD K=2")
    assert style.palette(["bp", "frog:4"]) == {"BP": style.color("bp"), "FROG k=4": style.color("frog:4")}
    with pytest.raises(ValueError, match="not an approach"):
        style.color("Adam")


def test_a_k_without_a_hue_borrows_the_nearest_one():
    assert style.color("FROG k=20") == style.color("FROG k=16")
    assert style.color("FROG k=2048") == style.color("FROG k=1024")


def test_sequential_palette_darkens_with_k():
    pal = style.sequential([1, 2, 4, 8, 16, 1024], "frog")
    lums = [_lum(pal[k]) for k in sorted(pal)]
    assert all(a > b for a, b in zip(lums, lums[1:]))
    with pytest.raises(ValueError, match="family="):
        style.sequential([1, 2], "adam")
    with pytest.raises(ValueError, match="ks"):
        style.sequential([0, 2])


def test_figsize_fills_the_column_with_at_most_two_panels_per_row():
    w, h = style.figsize(2, 1, aspect=0.5)
    assert w * style.DISPLAY_DPI == pytest.approx(style.COLUMN_PX)
    assert h == pytest.approx(w / 2 * 0.5)
    assert style.figsize(1, 3)[1] == pytest.approx(3 * style.figsize(1, 1)[1])
    for bad in [dict(ncols=3), dict(ncols=0), dict(aspect=0), dict(width_px=10)]:
        with pytest.raises(ValueError):
            style.figsize(**bad)
    fig, axes = style.subplots(2, 2)
    assert axes.shape == (2, 2) and fig.get_figwidth() * style.DISPLAY_DPI == pytest.approx(style.COLUMN_PX)
    plt.close(fig)


def _png_width(path):
    with open(path, "rb") as f:
        head = f.read(24)
    return struct.unpack(">I", head[16:20])[0]


def test_save_writes_pngs_at_no_less_than_150_dpi(tmp_path):
    style.use()
    assert matplotlib.rcParams["figure.dpi"] == 150 and matplotlib.rcParams["savefig.dpi"] >= 150
    fig, ax = plt.subplots(figsize=(4, 2), layout=None)
    ax.plot([0, 1], [0, 1])
    path = style.save(fig, tmp_path / "figs", "line")
    assert path == tmp_path / "figs" / "line.png" and path.exists()
    with matplotlib.rc_context({"savefig.bbox": "standard"}):
        assert _png_width(style.save(fig, tmp_path, "exact")) == 4 * style.SAVE_DPI
        assert _png_width(style.save(fig, tmp_path, "exact150", dpi=150)) == 600
    with pytest.raises(ValueError, match="dpi"):
        style.save(fig, tmp_path, "low", dpi=100)
    with pytest.raises(ValueError, match="name"):
        style.save(fig, tmp_path, "a/b")
    plt.close("all")


def test_robust_limits_leave_an_outlier_out_but_keep_ordinary_data():
    rng = np.random.default_rng(0)
    data = rng.normal(size=500)
    lo, hi = style.robust_limits(data)
    assert lo <= data.min() and hi >= data.max()          # nothing of ordinary data is cut
    spiked = np.append(data, [1e27, np.nan, np.inf])
    lo2, hi2 = style.robust_limits(spiked)
    assert hi2 < 10 and lo2 == pytest.approx(lo, rel=0.2)
    llo, lhi = style.robust_limits(np.append(np.logspace(-3, 2, 50), [1e27, 0.0, -1.0]), log=True)
    assert 5e-4 < llo < 1e-3 and 1e2 < lhi < 2e2
    with pytest.raises(ValueError, match="no finite values"):
        style.robust_limits([np.nan, -1.0], log=True)
    with pytest.raises(ValueError, match="quantiles"):
        style.robust_limits([1, 2], q=(0.9, 0.1))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=50))
def test_robust_limits_contain_the_central_quantiles(xs):
    lo, hi = style.robust_limits(xs)
    q05, q95 = np.quantile(xs, [0.05, 0.95])
    assert lo <= q05 and hi >= q95


def test_clip_outliers_marks_the_clipped_points_in_the_line_colour():
    fig, ax = plt.subplots()
    y = np.sin(np.linspace(0, 6, 100))
    y[40] = 1e27
    y[70] = -1e9
    (line,) = ax.plot(y, color=style.color("FROG k=16"))
    lo, hi, n = style.clip_outliers(ax)
    assert n == 2 and hi < 5 and lo > -5 and ax.get_ylim() == pytest.approx((lo, hi))
    marks = [ln for ln in ax.get_lines() if ln.get_label().startswith("_clip")]
    assert {ln.get_marker() for ln in marks} == {"^", "v"}
    assert all(mcolors.to_hex(ln.get_color()) == style.color("FROG k=16") for ln in marks)
    assert any("off-scale" in t.get_text() for t in ax.texts)
    plt.close(fig)
    # on a log axis, with nothing to clip
    fig, ax = plt.subplots()
    ax.plot(np.logspace(0, 3, 30))
    ax.set_yscale("log")
    assert style.clip_outliers(ax)[2] == 0
    plt.close(fig)


META = {"section": "frog_4_2", "profile": "paper", "device": "cpu", "variant": None,
        "tables": {"runs": {"file": "closed_form__runs.csv"}, "curves": {"file": "closed_form__curves.csv"}},
        "git_commit": "e1922c7f3b2a", "code_hash": "ce5be64f33c0774d"}


def test_provenance_and_caption_from_metadata():
    line = style.provenance(META, "runs")
    assert "`results/frog_4_2/paper/cpu/closed_form__runs.csv`" in line and "curves" not in line
    assert "profile paper" in line and "device cpu" in line and "`e1922c7`" in line and "`ce5be64f`" in line
    assert "closed_form__curves.csv" in style.provenance(META)
    cap = style.caption("Final gap against n", META, table="runs", number=3)
    assert cap.startswith("**Figure 3.** Final gap against n. *Data: ") and cap.endswith(".*")
    assert "\n" not in cap
    variant = dict(META, variant="abc123")
    assert "results/frog_4_2/paper/cpu/variants/abc123/" in style.provenance(variant)
    with pytest.raises(ValueError, match="table="):
        style.provenance(META, "nope")
    with pytest.raises(ValueError, match="caption text"):
        style.caption("  ", META)
    with pytest.raises(ValueError, match="StoredResult"):
        style.provenance({"profile": "x"})


def test_provenance_of_a_stored_run_names_no_build_machine_path(tmp_path):
    from frogcore.results import run_cached

    res = run_cached("frog_4_2", "style_test", lambda: {"runs": pd.DataFrame({"a": [1.0]})}, params={"x": 1},
                     profile="smoke", device="cpu", root=tmp_path)
    line = style.provenance(res)
    assert "`results/frog_4_2/smoke/cpu/style_test__runs.csv`" in line
    assert str(tmp_path) not in line and "/tmp/" not in line


def test_figure_html_is_a_captioned_figure_with_alt_text():
    fig, ax = plt.subplots(figsize=style.figsize(1))
    ax.plot([0, 1])
    out = style.figure_html(fig, "**Figure 1.** A line. *Data: `results/x.csv`*", alt="A rising straight line")
    html = out.data
    assert html.startswith("<figure") and "<figcaption" in html and 'alt="A rising straight line"' in html
    assert "<strong>Figure 1.</strong>" in html and "<em>Data: <code>results/x.csv</code></em>" in html
    assert "width: 810px" in html and "max-width: 100%" in html
    with pytest.raises(ValueError, match="alt"):
        style.figure_html(fig, "x", alt="fig")
    buf = io.BytesIO()
    fig.savefig(buf)
    plt.close(fig)
