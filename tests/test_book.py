"""The book builds from the smoke-executed notebooks; pages show their figures and offline math."""
import re

import pytest
import yaml

from frogcore.pipeline import BOOK_DIR, build_book, list_notebooks


def toc_files():
    toc = yaml.safe_load((BOOK_DIR / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


def test_every_notebook_is_in_the_table_of_contents():
    files = toc_files()
    for nb in list_notebooks():
        assert f"executed/{nb.stem}" in files, f"{nb.name} is not in book/_toc.yml"


def test_every_book_page_is_in_the_table_of_contents():
    # only_build_toc_files: a page missing from the TOC silently disappears from the book
    files = toc_files()
    for page in sorted(BOOK_DIR.glob("*.md")):
        assert page.stem in files, f"{page.name} is not in book/_toc.yml"


def test_book_has_no_static_javascript_folder():
    # jupyter-book 1 injects every JS/CSS file under a _static/ folder as a script tag
    assert not [p for p in BOOK_DIR.rglob("_static") if "_build" not in p.parts]


@pytest.mark.slow
def test_book_builds_and_pages_show_figures_and_offline_math(executed_book):
    book, _, errors = executed_book
    failed = [n for n, e in errors.items() if e is not None]
    assert not failed, f"notebooks failed: {failed}"
    html = build_book("smoke", "cpu", execute=False, book_dir=book, copy_sources=False)
    page = (html / "executed" / "frog_4_1.html").read_text()
    # figures are captioned <figure>s with the PNG inline (frogcore.style.figure_html)
    figures = re.findall(r'<figure class="frog-figure".*?</figure>', page, re.S)
    assert len(figures) >= 2
    assert all('src="data:image/png;base64,' in f and "<figcaption" in f for f in figures)
    assert 'class="math notranslate nohighlight"' in page
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    mathjax = [s for s in scripts if "mathjax" in s.lower()]
    assert mathjax and all(not s.startswith(("http:", "https:", "//")) for s in mathjax)
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    # every notebook page exists
    for nb in list_notebooks():
        assert (html / "executed" / f"{nb.stem}.html").exists()

