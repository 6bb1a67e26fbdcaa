"""The book in a real browser: headless Chromium (Debian's package, installed by the fixture when missing)
driven by Playwright, checks of frogcore.bookcheck on small pages with one injected defect each, and on the
built smoke book (every page: console, images, captions, alt text, math, overflow, build paths; a
1400-px-wide screenshot of every page under book/_build/screenshots/)."""
import struct

import pytest

from frogcore import bookcheck
from frogcore.pipeline import BOOK_DIR, build_book


@pytest.fixture(scope="module")
def chromium():
    return bookcheck.ensure_chromium()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = bookcheck.launch(p, chromium)
        yield b
        b.close()


def _mathjax_dir():
    import importlib.util

    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("sphinx-mathjax-offline (the book extra) is needed for the math checks")
    return __import__("pathlib").Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax"


def _png(width=40, height=20):
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width / 20, height / 20), dpi=20)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


HEAD = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title><link rel="icon" href="data:,">
<script>window.MathJax = {options: {processHtmlClass: "tex2jax_process|mathjax_process|math|output_area"}}</script>
<script defer src="mathjax/tex-chtml.js"></script></head>
<body><main><article class="bd-article" style="width: 800px; margin: 0 20px">"""
HEAD_NO_MATHJAX = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>
<link rel="icon" href="data:,"></head>
<body><main><article class="bd-article" style="width: 800px; margin: 0 20px">"""
TAIL = "</article></main></body></html>"
FIGURE = ('<figure><img src="plot.png" alt="A blank test plot with nothing drawn">'
          "<figcaption><p>Fig. 1 A blank plot.</p></figcaption></figure>")
CLEAN_BODY = (
    "<p>Text with math <span class='math notranslate nohighlight'>\\(x^2 + 1\\)</span>.</p>"
    "<div class='math notranslate nohighlight'>\\[ f(\\theta) = \\sum_i \\theta_i^2 \\]</div>"
    + FIGURE +
    "<div class='cell'><div class='cell_input'><div class='highlight-ipython3'><pre>x = 1</pre></div></div>"
    "<div class='cell_output'><pre>1</pre></div></div>"
    "<div class='highlight-bash notranslate'><div class='highlight'><pre>export FROG_RESULTS_DIR=/tmp/mine</pre>"
    "</div></div>"
)
LONG_EQ = " + ".join(f"x_{{{i}}}" for i in range(1, 90))
DEFECTS = {
    # page: (body, the check that must catch it)
    "console_error": (CLEAN_BODY + "<script>console.error('boom')</script>", "console"),
    "uncaught": (CLEAN_BODY + "<script>null.x = 1</script>", "console"),
    "uncaptioned_image": (CLEAN_BODY + '<p><img src="plot.png" alt="A blank test plot"></p>', "figures"),
    "figure_without_caption": (CLEAN_BODY + '<figure><img src="plot.png" alt="A blank test plot"></figure>',
                               "figures"),
    "broken_image": (CLEAN_BODY + '<figure><img src="missing.png" alt="A plot that is missing">'
                     "<figcaption>Missing.</figcaption></figure>", "images"),
    "hash_alt": (CLEAN_BODY + '<figure><img src="plot.png" alt="../_images/' + "ab" * 32 + '.png">'
                 "<figcaption>A plot.</figcaption></figure>", "alt"),
    "overflowing_equation": (CLEAN_BODY + f"<div class='math notranslate nohighlight'>\\[ {LONG_EQ} \\]</div>",
                             "overflow"),
    "overflowing_code_cell": (CLEAN_BODY + "<div class='cell'><div class='cell_input'><div class='highlight'>"
                              "<pre>" + "y = " + "1 + " * 120 + "1</pre></div></div></div>", "overflow"),
    "math_error": (CLEAN_BODY + "<div class='math notranslate nohighlight'>\\[ \\frac{a}{b \\]</div>", "math"),
    "build_path": (CLEAN_BODY + "<div class='cell'><div class='cell_output'><pre>PosixPath('/work/main/results/x')"
                   "</pre></div></div>", "paths"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "mathjax").symlink_to(_mathjax_dir(), target_is_directory=True)
    (root / "plot.png").write_bytes(_png())
    (root / "clean.html").write_text(HEAD + CLEAN_BODY + TAIL)
    for name, (body, _) in DEFECTS.items():
        (root / f"{name}.html").write_text(HEAD + body + TAIL)
    (root / "math_without_mathjax.html").write_text(HEAD_NO_MATHJAX + CLEAN_BODY + TAIL)
    with bookcheck.serve(root) as base:
        yield root, base


def _check(browser, site, page, **kw):
    _, base = site
    context = browser.new_context(viewport=bookcheck.VIEWPORT)
    try:
        return bookcheck.check_page(context.new_page(), base + page, name=page, **kw)
    finally:
        context.close()


def test_a_clean_page_passes_every_check(browser, site):
    report = _check(browser, site, "clean.html")
    assert report.ok, bookcheck.format_reports([report])


@pytest.mark.parametrize("page", sorted(DEFECTS))
def test_each_injected_defect_is_caught_by_its_check(browser, site, page):
    report = _check(browser, site, f"{page}.html")
    check = DEFECTS[page][1]
    assert report.problems[check], f"{check} missed the defect of {page}: {report.problems}"
    others = {c: v for c, v in report.failed().items() if c != check and not (page == "broken_image" and
                                                                               c == "console")}
    assert not others, f"{page} tripped other checks too: {others}"


def test_math_on_a_page_without_mathjax_is_caught(browser, site):
    report = _check(browser, site, "math_without_mathjax.html")
    assert any("MathJax is not loaded" in p for p in report.problems["math"])


def test_the_overflow_report_names_what_overflows(browser, site):
    eq = _check(browser, site, "overflowing_equation.html").problems["overflow"]
    code = _check(browser, site, "overflowing_code_cell.html").problems["overflow"]
    assert any(p.startswith("equation:") or "math" in p for p in eq) and "800-px column" in " ".join(eq)
    assert any(p.startswith("code cell:") for p in code)


def _png_size(path):
    head = path.read_bytes()[:24]
    return struct.unpack(">II", head[16:24])


def test_check_book_serves_every_page_and_saves_1400_px_screenshots(site, browser, tmp_path):
    root, _ = site
    book = tmp_path / "html"
    (book / "executed").mkdir(parents=True)
    (book / "_static").mkdir()
    (book / "mathjax").symlink_to(_mathjax_dir(), target_is_directory=True)
    (book / "plot.png").write_bytes((root / "plot.png").read_bytes())
    (book / "intro.html").write_text(HEAD + CLEAN_BODY + TAIL)
    (book / "executed" / "plot.png").write_bytes((root / "plot.png").read_bytes())
    (book / "executed" / "chapter.html").write_text(
        (HEAD + CLEAN_BODY + TAIL).replace('src="mathjax/', 'src="../mathjax/') + "<script>console.error('x')</script>")
    (book / "search.html").write_text("<html></html>")
    (book / "_static" / "x.html").write_text("<html></html>")
    (book / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=intro.html" />')
    assert bookcheck.book_pages(book) == ["executed/chapter.html", "intro.html"]
    shots = tmp_path / "shots"
    reports = bookcheck.check_book(book, shots, browser=browser)
    assert [r.page for r in reports] == ["executed/chapter.html", "intro.html"]
    assert reports[1].ok and reports[0].failed().keys() == {"console"}
    for name in ("executed__chapter.png", "intro.png"):
        width, height = _png_size(shots / name)
        assert width == 1400 and height >= 600
    text = bookcheck.format_reports(reports)
    assert text.startswith("executed/chapter.html: console (1)")


def test_serve_rejects_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="directory="):
        with bookcheck.serve(tmp_path / "nope"):
            pass


@pytest.mark.slow
def test_every_page_of_the_built_book_passes_in_a_real_browser(executed_book, browser):
    book, _, errors = executed_book
    failed = [n for n, e in errors.items() if e is not None]
    assert not failed, f"notebooks failed: {failed}"
    html = build_book("smoke", "cpu", execute=False, book_dir=book, copy_sources=False)
    shots = BOOK_DIR / "_build" / "screenshots"
    for old in shots.glob("*.png"):
        old.unlink()
    reports = bookcheck.check_book(html, shots, browser=browser)
    assert reports and len(list(shots.glob("*.png"))) == len(reports)
    bad = [r for r in reports if not r.ok]
    assert not bad, f"{len(bad)} of {len(reports)} pages fail:\n" + bookcheck.format_reports(bad)
