"""Paper vs ours (frogcore.paper): the data files and their sources, the verdict rules on synthetic numbers,
the per-chapter extractors on synthetic tables and on the committed results' layouts."""
import hashlib
import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from frogcore import paper
from frogcore.paper import NotComparable, verdict
from frogcore.results import REPO_ROOT

# ----------------------------------------------------------------------------- data files


def test_claims_file_parses_and_covers_every_chapter():
    c = paper.claims()
    assert list(c.columns[: len(paper.CLAIM_COLUMNS)]) == list(paper.CLAIM_COLUMNS)
    assert set(c.chapter) == set(paper.CHAPTERS)
    assert c.claim_id.is_unique
    assert set(c.comparison) <= set(paper.RULES)
    assert (c.claim.str.len() > 10).all()
    # share rules carry the required share in [0, 1]
    share = c[c.comparison == "runs_agree"]
    assert share.value.between(0, 1).all() and (share.tolerance >= 1).all()
    # scalar rules need the paper's number unless the authors' data supply it (empty value)
    assert c[c.comparison.isin(["less", "greater"])].value.notna().all()


_COMMIT = re.compile(r"[\w.-]+/[\w.-]+ [\w./-]+\.\w+@[0-9a-f]{40}")
_ABSTRACT = re.compile(r"arXiv:\d{4}\.\d{4,5}, (abstract|Section [\d.]+)")
_SECTION = re.compile(r"https?://\S+\), section '")


@pytest.mark.parametrize("row", paper.claims().to_dict("records"), ids=lambda r: r["claim_id"])
def test_every_source_cites_a_file_at_a_commit_or_a_section(row):
    src = row["source"]
    assert _COMMIT.search(src) or _ABSTRACT.search(src) or _SECTION.search(src), src
    # a repository file is cited with the full 40-hex commit
    for short in re.findall(r"@([0-9a-f]+)", src):
        assert len(short) == 40, src


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_authors_files_are_the_upstream_blobs_named_in_source_md():
    source = (REPO_ROOT / "frogcore" / "data" / "SOURCE.md").read_text()
    blobs = re.findall(r"`([0-9a-f]{40})`", source)
    for table in paper.AUTHORS_TABLES:
        data = (paper.DATA_DIR / f"authors_frog_{table}.csv").read_bytes()
        assert _git_blob(data) in blobs, f"authors_frog_{table}.csv differs from the upstream file"


@pytest.mark.parametrize("table, rows", [("math", 264), ("math__custom_tangents", 14), ("fc_nns", 24),
                                         ("sota_nns", 32)])
def test_authors_tables_have_a_loss_and_approach_labels(table, rows):
    t = paper.authors_frog(table)
    assert len(t) == rows
    assert t["loss"].notna().all() and t["lr"].gt(0).all()
    assert set(t.label) <= {"BP", "FG", "FG-mean k=2", "FG-mean k=4", "FG-mean k=16", "FG-mean k=64",
                            "FROG k=2", "FROG k=4", "FROG k=16", "FROG k=64"}
    if table == "math":
        assert (t[t.function == "sphere"].query("label == 'BP'")["loss"] == 0).all()
    if table == "math__custom_tangents":
        assert sorted(t.angle.dropna().unique()) == [15, 30, 45, 60, 75, 90]
        assert t[t.gradient_approach == "frog"].angle.isna().all()


def test_bad_names_raise_value_errors_naming_the_parameter():
    with pytest.raises(ValueError, match="chapter="):
        paper.claims("frog_9_9")
    with pytest.raises(ValueError, match="table="):
        paper.authors_frog("nope")
    with pytest.raises(ValueError, match="rule="):
        verdict("roughly", 1.0, 1.0)
    with pytest.raises(ValueError, match="ours must be"):
        paper.compare("frog_4_1", [1, 2])


# ----------------------------------------------------------------------------- verdict rules


@pytest.mark.parametrize("ours, paper_v, tol, floor, expected", [
    (1.0, 1.9, 2, None, "agrees"),
    (1.0, 2.1, 2, None, "differs"),
    (4.0, 1.0, 2, None, "differs"),
    (1e-9, 1e-12, 10, 1e-6, "agrees"),       # both converged
    (1e-9, 0.5, 10, 1e-6, "differs"),
    (-2.0, -3.0, 2, None, "agrees"),          # same sign
    (-1.0, 1.0, 2, None, "not comparable"),   # a ratio across signs means nothing
    (math.inf, math.inf, 2, None, "agrees"),
    (math.inf, 5.0, 2, None, "differs"),
])
def test_within_factor(ours, paper_v, tol, floor, expected):
    assert verdict("within_factor", ours, paper_v, tolerance=tol, floor=floor)[0] == expected


@given(st.floats(1e-6, 1e6), st.floats(1e-6, 1e6), st.floats(1.0, 100.0))
def test_within_factor_is_symmetric(a, b, tol):
    assert verdict("within_factor", a, b, tolerance=tol) == verdict("within_factor", b, a, tolerance=tol)


def test_scalar_rules():
    assert verdict("within_abs", 100, 100, tolerance=0)[0] == "agrees"
    assert verdict("within_abs", 101, 100, tolerance=0)[0] == "differs"
    assert verdict("within_abs", 0.93, 0.80, tolerance=0.15)[0] == "agrees"
    assert verdict("less", 0.02, 0.05)[0] == "agrees"
    assert verdict("less", 0.06, 0.05)[0] == "differs"
    assert verdict("greater", -0.005, 0, tolerance=0.01)[0] == "agrees"
    assert verdict("greater", -0.02, 0, tolerance=0.01)[0] == "differs"
    assert verdict("less", math.nan, 0.05)[0] == "not comparable"
    assert verdict("less", 0.01, None)[0] == "not comparable"
    assert verdict("less", NotComparable("no n = 1024"), 0.05) == ("not comparable", "no n = 1024")
    assert verdict("less", None, 0.05)[0] == "not comparable"


def test_monotone_rules_with_ties_and_floor():
    s = pd.Series([10.0, 5.0, 5.2, 1.0], index=["FG", "k=2", "k=4", "k=16"])
    assert verdict("decreasing", s, tolerance=0.05)[0] == "agrees"       # 5 → 5.2 is a 4 % tie
    v, detail = verdict("decreasing", s, tolerance=0.01)
    assert v == "differs" and "k=2" in detail and "k=4" in detail
    assert verdict("increasing", s[::-1], tolerance=0.05)[0] == "agrees"
    conv = pd.Series([3.0, 1e-9, 2e-9])                                   # both converged
    assert verdict("decreasing", conv, floor=1e-6)[0] == "agrees"
    assert verdict("decreasing", conv)[0] == "differs"
    assert verdict("decreasing", pd.Series([1.0]))[0] == "not comparable"
    assert verdict("decreasing", pd.Series([math.inf, 3.0, 1.0]))[0] == "agrees"


@given(st.lists(st.floats(0.1, 1e3), min_size=2, max_size=8, unique=True))
def test_sorted_sequences_agree_and_reversed_ones_differ(xs):
    down = pd.Series(sorted(xs, reverse=True))
    assert verdict("decreasing", down)[0] == "agrees"
    assert verdict("increasing", down[::-1].reset_index(drop=True))[0] == "agrees"
    assert verdict("increasing", down)[0] == "differs"


def test_same_order():
    authors = pd.Series({"BP": 0.08, "FG": 0.17, "FG-mean k=4": 0.110, "FROG k=4": 0.108})
    ours = pd.Series({"BP": 0.07, "FG": 1.8, "FG-mean k=4": 1.43, "FROG k=4": 1.30})
    v, detail = verdict("same_order", ours, authors, tolerance=0.05)
    assert v == "agrees" and "5 of 5 pairs" in detail    # FG-mean k=4 vs FROG k=4 is a tie (2 %)
    v, detail = verdict("same_order", ours, authors, tolerance=0.0)
    assert v == "differs" or "6 of 6" in detail
    swapped = ours.copy()
    swapped["FG"], swapped["FG-mean k=4"] = ours["FG-mean k=4"], ours["FG"]
    v, detail = verdict("same_order", swapped, (authors, 1.0), tolerance=0.05)
    assert v == "differs" and "FG vs FG-mean k=4" in detail and "4 of 5 pairs" in detail
    # a share threshold lets a few pairs go
    assert verdict("same_order", swapped, (authors, 0.8), tolerance=0.05)[0] == "agrees"
    assert verdict("same_order", swapped, (authors, 0.81), tolerance=0.05)[0] == "differs"
    assert verdict("same_order", ours, None)[0] == "not comparable"


def test_groups_agree_only_when_every_comparable_group_does():
    good = pd.Series([3.0, 2.0, 1.0])
    bad = pd.Series([1.0, 2.0, 3.0])
    assert verdict("decreasing", {"a": good, "b": good})[0] == "agrees"
    v, detail = verdict("decreasing", {"a": good, "b": bad})
    assert v == "differs" and "1 of 2 groups" in detail and "b:" in detail
    v, detail = verdict("decreasing", {"a": good, "b": NotComparable("no BP run")})
    assert v == "agrees" and "not comparable: b" in detail
    assert verdict("decreasing", {"b": NotComparable("x")})[0] == "not comparable"
    ours = {"m1": pd.Series({"A": 1.0, "B": 2.0}), "m2": pd.Series({"A": 1.0, "B": 2.0})}
    authors = {"m1": pd.Series({"A": 1.0, "B": 2.0}), "m2": pd.Series({"A": 2.0, "B": 1.0})}
    assert verdict("same_order", ours, (authors, 1.0))[0] == "differs"


def test_runs_agree_needs_the_required_share():
    t = pd.DataFrame({"paper_cmp": [1.0, 2.0, 3.0, 4.0], "ours_cmp": [1.1, 2.5, 30.0, np.nan]})
    assert verdict("runs_agree", t, 0.6, tolerance=2) == ("agrees", "2 of 3 runs agree")
    assert verdict("runs_agree", t, 0.75, tolerance=2)[0] == "differs"
    assert verdict("runs_agree", t.iloc[3:], 0.5, tolerance=2)[0] == "not comparable"


def test_rule_text_states_the_tolerance():
    assert "10×" in paper.rule_text("runs_agree", 0.75, 10, 1e-6) and "75 %" in paper.rule_text("runs_agree", 0.75, 10)
    assert "5 %" in paper.rule_text("decreasing", None, 0.05)
    assert paper.rule_text("within_abs", 100, 0) == "ours equals the paper's"
    assert "< 0.05" in paper.rule_text("less", 0.05, 0)
    for rule in paper.RULES:
        assert paper.rule_text(rule, 0.5, 0.1, 1e-6)


# ----------------------------------------------------------------------------- extractors on synthetic tables


def _closed_form_runs_from_authors(scale=1.0):
    """A 4.2 ``runs`` table whose every run ends at the authors' recorded value (gap × ``scale``)."""
    from frogcore.functions import FUNCTIONS

    a = paper.authors_frog("math")
    rows = []
    for _, r in a.iterrows():
        fstar = FUNCTIONS[r.function].minimum(int(r.n))
        last = fstar + (r["loss"] - fstar) * scale
        for seed in (0, 1):
            rows.append({"function": r.function, "n": r.n, "approach": r.gradient_approach, "k": r.k,
                         "label": r.label, "seed": seed, "last": last, "minimum": fstar, "status": "early_stop"})
    return pd.DataFrame(rows)


def test_frog_4_2_agrees_with_the_authors_own_numbers_and_not_with_scaled_ones():
    t = paper.compare("frog_4_2", {"closed_form__runs": _closed_form_runs_from_authors()})
    assert list(t.columns) == list(paper.COMPARE_COLUMNS)
    assert set(t.claim_id) == set(paper.claims("frog_4_2").claim_id)
    by = t.set_index("claim_id")
    for cid in ("F42-1", "F42-2", "F42-3"):
        assert by.loc[cid, "verdict"] == "agrees" and "88 of 88 runs" in by.loc[cid, "detail"]
    assert by.loc["F42-6", "verdict"] == "agrees"            # the same share as the authors'
    assert by.loc["F42-4", "verdict"] == "agrees"            # the authors' numbers fall with k at n = 1024
    far = paper.compare("frog_4_2", {"runs": _closed_form_runs_from_authors(scale=1000.0)}).set_index("claim_id")
    assert far.loc["F42-2", "verdict"] == "differs"          # Rosenbrock's unconverged gaps are 1000× off
    runs = paper.authors_runs("frog_4_2", {"runs": _closed_form_runs_from_authors(scale=1000.0)})
    assert {"function", "n", "label", "paper", "ours", "verdict"} <= set(runs.columns)
    assert (runs.verdict == "differs").any() and (runs.verdict == "agrees").any()


def test_missing_tables_make_claims_not_comparable():
    t = paper.compare("frog_4_2", {})
    assert (t.verdict == "not comparable").all()
    t = paper.compare("fomoh_networks", {})
    assert (t.verdict == "not comparable").all()


def _quality_summary(proj_minus_mean=0.01):
    rows = []
    for n in (16, 1024):
        for k in (1, 2, 4, 16):
            base = math.sqrt(min(k, n) / n)
            for est, val in (("projection", base + proj_minus_mean), ("mean", base), ("single", base)):
                if est == "single" and k != 1:
                    continue
                rows.append({"n": n, "k": k, "estimator": est, "metric": "cosine", "method": "brute", "mean": val})
    return pd.DataFrame(rows)


def test_frog_4_1_detects_a_projection_worse_than_the_mean():
    ok = paper.compare("frog_4_1", {"quality__summary": _quality_summary(0.01)}).set_index("claim_id")
    assert (ok.verdict == "agrees").all(), ok[["verdict", "detail"]]
    bad = paper.compare("frog_4_1", {"summary": _quality_summary(-0.05)}).set_index("claim_id")
    assert bad.loc["F41-3", "verdict"] == "differs"
    small = _quality_summary(0.01)
    small = small[small.n == 16]
    assert paper.compare("frog_4_1", {"summary": small}).set_index("claim_id").loc["F41-5", "verdict"] == \
        "not comparable"


def _net_summary(dataset, table="fc_nns", transform=lambda label, loss: loss):
    a = paper.authors_frog(table)
    rows = []
    names = {"fc_w=256": "FC-256", "fc_w=1024": "FC-1024", "fc_w=4096": "FC-4096", "resnet18": "ResNet18",
             "vit": "ViT (depth 6)"}
    for _, r in a[a.dataset == "mnist"].iterrows():
        k = r.k if r.k else 1
        label = r.label if r.label != "FG-mean k=2" else "mean k=2"  # the committed 4.4 spelling
        rows.append({"dataset": dataset, "model": names[r.model], "approach": r.gradient_approach, "k": k,
                     "label": label, "seed": 0, "best_val_loss": transform(r.label, r["loss"]), "status": "completed"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("chapter, table", [("frog_4_4", "fc_nns"), ("frog_4_5", "sota_nns")])
def test_networks_compare_absolute_losses_only_on_the_authors_dataset(chapter, table):
    same = paper.compare(chapter, {"training__summary": _net_summary("mnist", table)}).set_index("claim_id")
    first = same.index[0]
    assert same.loc[first, "verdict"] == "agrees"                       # the runs_agree claim
    digits = paper.compare(chapter, {"training__summary": _net_summary("digits", table)}).set_index("claim_id")
    assert digits.loc[first, "verdict"] == "not comparable" and "digits" in digits.loc[first, "detail"]
    order = [c for c in same.index if "2" in c.split("-")[1]][0]
    assert digits.loc[order, "verdict"] == "agrees"                     # the ranking is compared anyway
    flipped = _net_summary("digits", table, lambda label, loss: -loss)  # every order reversed
    flip = paper.compare(chapter, {"training__summary": flipped}).set_index("claim_id")
    assert flip.loc[order, "verdict"] == "differs"


def test_fomoh_rosenbrock_reads_both_table_layouts():
    # committed layout: a 'method' column ("FoMoH-2D"); new layout: 'approach' + 'k'
    old = pd.DataFrame({"method": ["FGD", "FoMoH", "FoMoH-2D"] * 2, "seed": [0] * 6,
                        "iteration": [0, 0, 0, 1000, 1000, 1000], "loss": [5, 5, 5, 0.7, 1e-20, 0.0]})
    new = old.rename(columns={"method": "approach"}).assign(
        approach=["fgd", "fomoh", "fomoh-kd"] * 2, k=[0, 0, 2] * 2)
    for tab in (old, new):
        t = paper.compare("fomoh_rosenbrock", {"rosenbrock_2d__trajectory": tab}).set_index("claim_id")
        assert t.loc["R-1", "verdict"] == "agrees", t.loc["R-1"].to_dict()
    bad = old.assign(loss=[5, 5, 5, 1e-3, 0.5, 0.0])
    t = paper.compare("fomoh_rosenbrock", {"rosenbrock_2d__trajectory": bad}).set_index("claim_id")
    assert t.loc["R-1", "verdict"] == "differs"


# ----------------------------------------------------------------------------- the committed results


@pytest.mark.parametrize("chapter, profile", [
    ("frog_4_1", "paper"), ("frog_4_2", "paper"), ("frog_4_3", "paper"), ("frog_4_4", "default"),
    ("frog_4_5", "default"), ("fomoh_rosenbrock", "default"), ("fomoh_subspace", "default"),
    ("fomoh_networks", "default")])
def test_every_claim_finds_its_metric_in_the_committed_results(chapter, profile):
    ours = paper.load_ours(chapter, profile, root=REPO_ROOT / "results")
    if not ours:
        pytest.fail(f"no committed results for {chapter}/{profile}")
    t = paper.compare(chapter, ours)
    assert set(t.verdict) <= set(paper.VERDICTS)
    missing = t[t.detail.str.contains("no result for this metric")]
    assert missing.empty, f"extractors found nothing for {list(missing.claim_id)}"
    assert not t.ours.str.contains("/work/|/tmp/", regex=True).any()


def test_summary_counts_the_verdicts():
    s = paper.summary({"frog_4_2": {"runs": _closed_form_runs_from_authors()}, "fomoh_networks": {}})
    assert list(s.columns) == ["chapter", "claims", *paper.VERDICTS]
    row = s.set_index("chapter").loc["fomoh_networks"]
    assert row["not comparable"] == row["claims"] == len(paper.claims("fomoh_networks"))
    assert (s[list(paper.VERDICTS)].sum(axis=1) == s.claims).all()


def test_load_ours_of_an_empty_folder(tmp_path):
    assert paper.load_ours("frog_4_2", "smoke", root=tmp_path) == {}


def test_markdown_table():
    df = pd.DataFrame({"claim": ["a | b", "c"], "ours": [0.123456, 1e-7], "n": [3, 1024]})
    md = paper.markdown_table(df, headers={"ours": "Ours"})
    lines = md.strip().split("\n")
    assert lines[0] == "| claim | Ours | n |" and lines[1] == "|---|---|---|"
    assert "a \\| b" in lines[2] and "0.123" in lines[2] and "10⁻⁷" in lines[3] and "1024" in lines[3]
    with pytest.raises(ValueError, match="columns"):
        paper.markdown_table(df, ["nope"])


class _Run:
    """A stand-in for a StoredResult: tables plus the metadata compare() reads."""

    def __init__(self, profile, batch):
        self.tables = {"params": pd.DataFrame({"model": ["logreg"], "parameters": [7850]})}
        self.meta = {"name": "networks", "profile": profile,
                     "params": {"lrs": {"logreg": {"fomoh": 0.1362}}, "batch": {"logreg": batch}}}


def test_a_setting_differs_only_at_the_paper_profile():
    at = lambda profile, batch: paper.compare("fomoh_networks", {"networks": _Run(profile, batch)}).set_index(
        "claim_id")
    assert at("paper", 1024).loc["N-4", "verdict"] == "agrees"
    assert at("paper", 256).loc["N-4", "verdict"] == "differs"
    t = at("default", 256)
    assert t.loc["N-4", "verdict"] == "not comparable" and "default profile" in t.loc["N-4", "detail"]
    assert t.loc["N-3", "verdict"] == "agrees" and t.loc["N-3", "kind"] == "setting"
    assert t.loc["N-5", "verdict"] == "not comparable"          # no CNN in this run


def test_sources_become_links():
    src = ("Helmholtz-AI-Energy/frog lrs/math.csv@fdd31d24f4b2af630a3f571537f47db7e25e0a16, column loss; "
           "Flügel et al., arXiv:2410.17764, abstract; blog (https://adamcobb.github.io/journal/fomoh.html), section")
    md = paper.source_markdown(src)
    assert ("[Helmholtz-AI-Energy/frog `lrs/math.csv`@`fdd31d2`](https://github.com/Helmholtz-AI-Energy/frog/blob/"
            "fdd31d24f4b2af630a3f571537f47db7e25e0a16/lrs/math.csv)") in md
    assert "[arXiv:2410.17764](https://arxiv.org/abs/2410.17764)" in md
    assert "(<https://adamcobb.github.io/journal/fomoh.html>)" in md


def test_chapter_markdown_and_summary_page(tmp_path):
    md = paper.markdown("frog_4_2", {"runs": _closed_form_runs_from_authors()})
    lines = md.strip().split("\n")
    assert lines[0] == "| Claim | Source | Paper / authors | Ours | Verdict | Rule |"
    assert len(lines) == 2 + len(paper.claims("frog_4_2"))
    assert "✓ agrees (88 of 88 runs agree)" in md
    s = paper.summary_markdown({"frog_4_2": {"runs": _closed_form_runs_from_authors()}})
    assert "{doc}`FROG 4.2: closed-form functions <executed/frog_4_2>`" in s
    page = paper.write_summary_page(tmp_path / "summary.md", root=tmp_path / "empty")
    text = page.read_text()
    assert text.count("\n| {doc}`") == len(paper.CHAPTERS) - 1 + 1
    assert "frog_4_2 paper" in text and "frog_4_4 default" in text   # the book's profile per chapter
