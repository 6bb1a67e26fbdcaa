"""Every number a page states about a result is generated (myst-nb glue or computed Markdown), never typed.

The rule (:func:`frogcore.narrative.find_prose_numbers`): a number in prose counts as hand-typed when it has
a decimal point, an exponent or a measurement unit after it (%, s, ms, minutes, × as a factor), unless it
sits in a glue or other MyST role, inline code, math, a code block, a heading, a comment, a URL, a
parameter setting (``k = 16``, ``n = 1024``, ``η = 10⁻⁴``), a section/figure/table reference, an arXiv
id, a version or a name (``ResNet18``, ``CIFAR-10``). Plain integers are not flagged. The scan covers
``book/*.md`` and the Markdown cells of ``notebooks/*.ipynb`` and reports file and line.
"""
import json

import pytest

from frogcore.narrative import find_prose_numbers, scan_prose_numbers
from frogcore.pipeline import BOOK_DIR, NOTEBOOK_DIR


def flagged(text):
    return [f.number for f in find_prose_numbers(text)]


@pytest.mark.parametrize("text, numbers", [
    ("The CNN with BP reaches 0.9958 test accuracy.", ["0.9958"]),
    ("A paper-scale run takes 2996 s on two cores.", ["2996"]),
    ("about 11 minutes", ["11"]),
    ("10 % of the steps needed jitter and FROG is 3× faster", ["10", "3"]),
    ("medians 7.78 … 1.99 until K = 10", ["7.78", "1.99"]),
    ("the jitter starts at 10⁻³, the FGD rate is 1e-4", ["10⁻³", "1e-4"]),
    ("a gap of 3 × 10⁻⁴ remains", ["3 × 10⁻⁴"]),
    ("a loss = 4.4 after training", ["4.4"]),
    ("A note: FROG ends at −2506.63 on Styblinski-Tang.", ["−2506.63"]),
])
def test_hand_typed_results_are_found(text, numbers):
    assert flagged(text) == numbers


@pytest.mark.parametrize("text", [
    "With k = 16 tangents and n = 1024 dimensions, n ∈ {1, 2, 4, …, 1024}, η = 10⁻⁴ and lr = 0.1362.",
    "FROG Section 4.2 and Sections 4.1–4.5, Figure 3, Table 1, see FROG 4.4 and the 4.2 runs.",
    "Baydin et al. 2022 (arXiv 2202.08587) trained ResNet18 on CIFAR-10 and FC-256 on 28×28 MNIST images.",
    "The accuracy {glue:text}`bp_acc` and {glue:text}`executed/frog_4_2.ipynb::gap:s`, {cite}`flugel2025frog`.",
    "Inline math $0.5\\,x^2$ and \\(1.5\\) and code `lr=0.25` stay.",
    "10 seeds, 1000 iterations, 200 epochs, 7850 parameters and 3 runs are plain integers.",
    "Python 3.11, jupyter-book 1.0.4 and torch 2.3 are versions; see https://arxiv.org/abs/2410.17764v2.",
    "[the paper](https://example.org/a/0.5) and <span style='width: 0.5em'>x</span>",
    "a 95 % confidence interval",
])
def test_parameters_references_and_generated_numbers_are_not(text):
    assert flagged(text) == []


def test_blocks_that_are_not_prose_are_skipped_and_lines_are_reported():
    md = "\n".join([
        "---", "title: 0.5", "---",                      # front matter
        "# FROG 4.2: a heading with 0.5",                 # heading
        "```python", "x = 0.25", "```",                   # code
        "$$", "f = 0.5 x^2", "$$",                        # display math
        "% a comment with 0.9",
        "```{code-cell} ipython3", "y = 0.75", "```",
        "```{note}", "A note that states 0.75.", "```",   # prose inside a directive is scanned
        "```{glue:figure} fig", ":name: fig-0.5", "A caption with 0.33 in it.", "```",
        "Plain prose with 1.5 in it.",
    ])
    found = find_prose_numbers(md)
    assert [(f.line, f.number) for f in found] == [(16, "0.75"), (20, "0.33"), (22, "1.5")]
    assert found[-1].col == 18 and "1.5" in found[-1].context


def test_scan_reports_file_and_line_for_pages_and_notebook_cells(tmp_path):
    book, nbs = tmp_path / "book", tmp_path / "nbs"
    book.mkdir()
    nbs.mkdir()
    (book / "page.md").write_text("# Page\n\nThe run took 2996 s.\n")
    nb = {"cells": [{"cell_type": "code", "source": "x = 0.5", "metadata": {}, "outputs": []},
                    {"cell_type": "markdown", "source": ["Intro\n", "BP reaches 0.9958.\n"], "metadata": {}}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (nbs / "ch.ipynb").write_text(json.dumps(nb))
    report = scan_prose_numbers(book, nbs)
    assert report[0].startswith("page.md:3: 2996 in ")
    assert report[1].startswith("ch.ipynb: cell 1, line 2: 0.9958 in ")
    assert len(report) == 2


def test_no_page_states_a_hand_typed_result_number():
    report = scan_prose_numbers(BOOK_DIR, NOTEBOOK_DIR)
    assert not report, f"{len(report)} hand-typed numbers (glue them, see frogcore.narrative):\n" + \
        "\n".join(report[:80])
