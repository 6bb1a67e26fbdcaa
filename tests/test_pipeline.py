"""Which profile each chapter of the book runs at."""
import pytest

from frogcore.pipeline import NOTEBOOK_DIR, PAPER_SCALE_CHAPTERS, chapter_profile, list_notebooks
from frogcore.results import REPO_ROOT


def test_default_book_shows_the_paper_scale_chapters_at_paper():
    for nb in list_notebooks():
        expected = "paper" if nb.stem in PAPER_SCALE_CHAPTERS else "default"
        assert chapter_profile(nb, "default") == expected
        assert chapter_profile(nb, "smoke") == "smoke"
        assert chapter_profile(nb, "paper") == "paper"
    assert chapter_profile("frog_4_2.ipynb", "default") == "paper"
    assert chapter_profile("frog_4_4.ipynb", "default") == "default"


def test_chapter_profile_rejects_an_unknown_profile():
    with pytest.raises(ValueError, match=r"profile='huge' is not valid; allowed values: 'smoke', 'default', 'paper'"):
        chapter_profile("frog_4_1.ipynb", "huge")


@pytest.mark.parametrize("chapter", PAPER_SCALE_CHAPTERS)
def test_paper_scale_chapters_exist_and_have_committed_paper_results(chapter):
    # otherwise `make book` would silently start the papers' full-scale computation
    assert (NOTEBOOK_DIR / f"{chapter}.ipynb").exists()
    metas = sorted((REPO_ROOT / "results" / chapter / "paper" / "cpu").glob("*.meta.json"))
    assert metas, f"results/{chapter}/paper/cpu/ has no committed results"


def _executed(tmp_path, name, cells):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=cells)
    path = tmp_path / name
    nbformat.write(nb, str(path))
    return path


def test_a_failed_chapter_is_detected(tmp_path):
    import nbformat

    from frogcore.pipeline import notebook_failure

    ok = nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output("stream", text="1")])
    err = nbformat.v4.new_code_cell("boom", outputs=[nbformat.v4.new_output(
        "error", ename="RuntimeError", evalue="the chapter failed", traceback=[])])
    assert notebook_failure(_executed(tmp_path, "ok.ipynb", [ok])) is None
    why = notebook_failure(_executed(tmp_path, "bad.ipynb", [ok, err]))
    assert "RuntimeError: the chapter failed" in why
    marked = nbformat.v4.new_notebook(cells=[ok])
    marked.metadata["papermill"] = {"exception": True}
    nbformat.write(marked, str(tmp_path / "marked.ipynb"))
    assert "exception" in notebook_failure(tmp_path / "marked.ipynb")


def test_book_build_refuses_a_failed_chapter(tmp_path, monkeypatch):
    import shutil

    import nbformat

    from frogcore import pipeline

    book = tmp_path / "book"
    shutil.copytree(pipeline.BOOK_DIR, book, ignore=shutil.ignore_patterns("_build", "executed"))
    ok = nbformat.v4.new_code_cell("1", outputs=[])
    for nb in list_notebooks():
        cells = [ok]
        if nb.stem == "frog_4_3":
            cells.append(nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
                "error", ename="ValueError", evalue="bad", traceback=[])]))
        (book / "executed").mkdir(exist_ok=True)
        nbformat.write(nbformat.v4.new_notebook(cells=cells), str(book / "executed" / nb.name))
    monkeypatch.setattr(pipeline.subprocess, "run", lambda *a, **k: pytest.fail("jupyter-book must not run"))
    with pytest.raises(pipeline.ChapterFailed, match="frog_4_3.ipynb: cell 1 raised ValueError: bad"):
        pipeline.build_book("smoke", "cpu", execute=False, book_dir=book, copy_sources=False)



def test_benchmark_tables_are_copied_into_the_book_with_a_summary(tmp_path):
    from frogcore.pipeline import copy_benchmark_tables

    res = tmp_path / "results" / "benchmarks" / "reference"
    res.mkdir(parents=True)
    (res / "reference.csv").write_text("benchmark,side,implementation,config,median_s,x_forward,speedup_vs_authors,"
                                       "frog_commit\nfomoh,ours,x,K=3,0.0598512,23.71,1.634,abc\n")
    out = copy_benchmark_tables(tmp_path / "book", tmp_path / "results")
    names = sorted(p.name for p in out)
    assert names == ["reference.csv", "reference__summary.csv"]
    summary = (tmp_path / "book" / "_generated" / "benchmarks" / "reference" / "reference__summary.csv").read_text()
    assert summary.splitlines()[1] == "fomoh,ours,x,K=3,0.0599,23.7,1.63" and "frog_commit" not in summary
