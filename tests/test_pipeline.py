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
    assert chapter_profile("frog_4_2_closed_form.ipynb", "default") == "paper"
    assert chapter_profile("frog_4_4_fc_networks.ipynb", "default") == "default"


def test_chapter_profile_rejects_an_unknown_profile():
    with pytest.raises(ValueError, match=r"profile='huge' is not valid; allowed values: 'smoke', 'default', 'paper'"):
        chapter_profile("frog_4_1_approximation_quality.ipynb", "huge")


@pytest.mark.parametrize("stem, section", sorted(PAPER_SCALE_CHAPTERS.items()))
def test_paper_scale_chapters_exist_and_have_committed_paper_results(stem, section):
    # otherwise `make book` would silently start the papers' full-scale computation
    assert (NOTEBOOK_DIR / f"{stem}.ipynb").exists()
    metas = sorted((REPO_ROOT / "results" / section / "paper").glob("*.meta.json"))
    assert metas, f"results/{section}/paper/ has no committed results"
