"""The committed results are what the current code would produce (so the book's figures are current)
and complete (every table listed in a metadata file exists with its recorded hash)."""
import hashlib
import json

import pytest

from frogcore.results import REPO_ROOT, code_hash

METAS = sorted(p for p in (REPO_ROOT / "results").glob("*/*/*/*.meta.json") if p.parent.parent.name != "smoke")


def test_results_folder_layout():
    """results/<chapter>/<profile>/<device>/, one chapter module per folder, nothing left at the old levels."""
    import importlib

    assert METAS
    for meta in METAS:
        chapter, profile, device = meta.relative_to(REPO_ROOT / "results").parts[:3]
        assert profile in ("default", "paper") and device in ("cpu", "cuda"), meta
        assert importlib.import_module(f"frogcore.experiments.{chapter}").CHAPTER.section == chapter
    # benchmark tables (results/benchmarks/<bench>/<bench>.csv + .meta.json) are not chapter results
    stray = [p for p in (REPO_ROOT / "results").glob("*/*/*.meta.json") if p.parts[-3] != "benchmarks"]
    assert not stray, f"results outside the <device> level: {stray}"
    for meta in (REPO_ROOT / "results" / "benchmarks").glob("*/*.meta.json"):
        assert meta.with_name(meta.name.replace(".meta.json", ".csv")).exists(), f"{meta} has no table"


@pytest.mark.parametrize("meta_path", METAS, ids=[str(p.relative_to(REPO_ROOT / "results")) for p in METAS])
def test_committed_result_matches_current_code_and_files(meta_path):
    meta = json.loads(meta_path.read_text())
    assert meta["code_hash"] == code_hash(meta["code"]), (
        "frogcore code changed since these results were computed: re-run the notebook at this profile "
        "(the results store recomputes) and commit the new results")
    for entry in meta["tables"].values():
        data = (meta_path.parent / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]


@pytest.mark.parametrize("profile", ["paper", "default"])
def test_no_closed_form_run_stops_above_its_starting_value(profile):
    """Issue 9: under the authors' early-stopping rule a run is only stopped after 50 consecutive
    non-decreasing steps, so no committed 4.2 run ends early above its own starting value."""
    import pandas as pd

    from frogcore.functions import get_function

    runs = pd.read_csv(REPO_ROOT / "results" / "frog_4_2" / profile / "cpu" / "closed_form__runs.csv")
    start = {(f, n): float(get_function(f).fn(get_function(f).start(n).double()))
             for f, n in runs[["function", "n"]].drop_duplicates().itertuples(index=False)}
    stopped = runs[runs.status == "early_stop"]
    above = stopped[[last > start[(f, n)] for f, n, last in stopped[["function", "n", "last"]].itertuples(index=False)]]
    assert above.empty, above[["function", "n", "label", "seed", "steps", "last"]]


FIGURES = sorted(p for p in (REPO_ROOT / "results").glob("*/*/*/figures/*.png") if p.parts[-4] != "smoke")


def test_every_committed_figure_was_drawn_from_the_tables_beside_it():
    """A committed figure records (PNG metadata) the run and the exact tables it was drawn from: they must be the
    tables stored in its folder now (figures and tables are replaced together, see frogcore.style.save)."""
    from frogcore.results import current_result_id, figure_record

    assert FIGURES
    bad = []
    for fig in FIGURES:
        run, rid = figure_record(fig)
        if run is None or current_result_id(fig.parent.parent, run) != rid:
            bad.append(f"{fig.relative_to(REPO_ROOT)} (records run {run!r})")
    assert not bad, "figures not drawn from the stored tables (re-run their notebooks):\n" + "\n".join(bad)
