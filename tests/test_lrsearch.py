"""Learning-rate search (frogcore.lrsearch): log grid, successive halving, divergence, the LR table in the shipped
format that chapter 4.2 then uses, the figure, resuming; trials run as cells on the local executor."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frogcore import lrsearch, sweep
from frogcore.experiments import frog_4_2
from frogcore.lrs import DATA_DIR, LRTable


@settings(max_examples=50, deadline=None)
@given(lo=st.floats(1e-8, 1e2), ratio=st.floats(1.01, 1e6), num=st.integers(2, 30))
def test_lr_grid_is_log_spaced_between_the_bounds(lo, ratio, num):
    grid = lrsearch.lr_grid(lo, lo * ratio, num)
    assert len(grid) == num and math.isclose(grid[0], lo) and math.isclose(grid[-1], lo * ratio)
    steps = [math.log(b / a) for a, b in zip(grid, grid[1:])]
    assert all(math.isclose(s, steps[0], rel_tol=1e-6) for s in steps)


def test_bad_search_settings_name_the_parameter():
    assert lrsearch.rung_budgets(2, 3, 3) == [2, 6, 18]
    with pytest.raises(ValueError, match="lr_min must be smaller"):
        lrsearch.lr_grid(1.0, 0.1, 5)
    with pytest.raises(ValueError, match="num"):
        lrsearch.lr_grid(0.1, 1.0, 1)
    with pytest.raises(ValueError, match="eta"):
        lrsearch.rung_budgets(1, 2, 1)
    with pytest.raises(ValueError, match="approaches"):
        lrsearch.search("closed_form", approaches=["fg-sum:2"], function="sphere", n=4)
    with pytest.raises(ValueError, match="metric"):
        lrsearch.search("closed_form", approaches=["bp"], metric="val_acc", function="sphere", n=4)
    with pytest.raises(ValueError, match="closed_form settings have no"):
        lrsearch.search("closed_form", approaches=["bp"], function="sphere", n=4, width=3)


def test_tables_are_checked(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"model": ["fc_w=8"], "dataset": ["digits"], "gradient_approach": ["frog"], "k": [0.5],
                  "lr": [0.1]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="integer k"):
        lrsearch.read_table(bad)
    pd.DataFrame({"model": ["fc_w=8"], "dataset": ["digits"], "gradient_approach": ["frog"], "k": [2.0],
                  "lr": [0.1]}).to_csv(bad, index=False)
    assert lrsearch.lr_overrides(bad) == [{"model": "fc_w=8", "dataset": "digits", "approach": "frog", "lr": 0.1,
                                           "k": 2}]


def _search(out, executor=None):
    return lrsearch.search("closed_form", approaches=["bp", "fg-mean:3"], lr_min=1e-2, lr_max=3.0, num=5, budget=20,
                           rungs=2, eta=3, seeds=[0, 1], out=out, executor=executor or sweep.LocalExecutor(workers=1),
                           progress=False, poll=0.2, function="sphere", n=8)


def test_closed_form_search_writes_a_table_that_chapter_4_2_uses(tmp_path):
    res = _search(tmp_path / "lr")
    t = res.trials
    # rung 1: every rate; rung 2: the best ceil(5/3) = 2 rates that did not diverge, for both approaches
    assert len(t[t.rung == 0]) == 5 * 2 * 2
    assert set(t[t.lr == 3.0].diverged) == {True}  # lr·2 > 2 on the sphere: the iterates grow
    for a in ("bp", "fg-mean"):
        r1 = t[(t.rung == 1) & (t.approach == a)]
        assert r1.lr.nunique() == 2 and (r1.budget == 60).all() and not r1.diverged.any()
    # the chosen rate is the best one at the last rung
    for spec, lr in res.chosen.items():
        name = spec.split(":")[0]
        last = t[(t.rung == 1) & (t.approach == name)].groupby("lr").metric.mean()
        assert lr == last.idxmin()
    assert math.isclose(res.chosen["bp"], lrsearch.lr_grid(1e-2, 3.0, 5)[3])  # 0.72: 1 − 2·lr closest to 0
    # the table has the shipped format and loads like the authors' tables
    text = res.paths["lr_table"].read_text()
    assert text.splitlines()[0] == (DATA_DIR / "math.csv").read_text().splitlines()[0]
    table = LRTable.from_csv(res.paths["lr_table"])
    assert table.lookup("sphere", 8, "fg-mean", 3) == res.chosen["fg-mean:3"]
    assert res.paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a new k has no shipped rate; pointed at the search's table, chapter 4.2 runs with the chosen rates
    kw = dict(functions=["sphere"], n_grid=[8], approaches=["bp", "fg-mean:3"], num_seeds=1,
              max_steps={"sphere": 30})
    with pytest.raises(ValueError, match="k=3 has no learning rate"):
        frog_4_2.CHAPTER.run("closed_form", "smoke", "cpu", root=str(tmp_path / "res"), **kw)
    run = frog_4_2.CHAPTER.run("closed_form", "smoke", "cpu", root=str(tmp_path / "res"),
                               lr_overrides=lrsearch.lr_overrides(res.paths["lr_table"]), **kw)["runs"]
    assert dict(zip(run.label, run.lr)) == {"BP": res.chosen["bp"], "FG-mean k=3": res.chosen["fg-mean:3"]}
    assert set(run.lr_source) == {"override"}
    # a second search with the same settings resumes: every trial is a finished cell
    store = sweep.CellStore(tmp_path / "lr" / "cells")
    starts = store.journal_path.read_text().count(" start ")
    again = _search(tmp_path / "lr")
    assert again.chosen == res.chosen and store.journal_path.read_text().count(" start ") == starts


def test_network_search_writes_a_table_in_the_fc_format(tmp_path):
    res = lrsearch.search("network", approaches=["frog:2"], lr_min=1e-3, lr_max=10.0, num=3, budget=1, rungs=2,
                          eta=3, seeds=[0], out=tmp_path / "lr", executor=sweep.LocalExecutor(workers=1),
                          progress=False, poll=0.2, dataset="digits", model="fc", model_kw={"width": 256})
    text = res.paths["lr_table"].read_text().splitlines()
    assert text[0] == (DATA_DIR / "fc_nns.csv").read_text().splitlines()[0]
    assert text[1] == f"fc_w=256,digits,frog,2.0,{res.chosen['frog:2']!r}"
    t = res.trials
    assert len(t) == 3 + 1 and (t[t.rung == 1].budget == 3).all()
    best = t[(t.rung == 1)]
    assert best.lr.tolist() == [res.chosen["frog:2"]] and not best.diverged.any() and 0 < best.metric.iloc[0] < 10
    lrsearch.read_table(res.paths["lr_table"])


def test_network_search_table_is_used_by_chapter_4_4(tmp_path):
    """The LR table of a network search, passed as ``lr_overrides``, sets the rates of a 4.4 run, also for a width
    the authors never tuned; without it that width fails before training, naming the parameter."""
    from frogcore.experiments import frog_4_4

    res = lrsearch.search("network", approaches=["frog:2"], lr_min=1e-3, lr_max=10.0, num=3, budget=1, rungs=2,
                          eta=3, seeds=[0], out=tmp_path / "lr", executor=sweep.LocalExecutor(workers=1),
                          progress=False, poll=0.2, dataset="digits", model="fc", model_kw={"width": 128})
    overrides = lrsearch.lr_overrides(res.paths["lr_table"])
    assert overrides == [{"model": "fc_w=128", "dataset": "digits", "approach": "frog", "k": 2,
                          "lr": res.chosen["frog:2"]}]
    run = frog_4_4.run_training("smoke", device="cpu", widths=[128], approaches=["frog:2"], lr_overrides=overrides)
    assert run["summary"].lr.tolist() == [res.chosen["frog:2"]]
    # the override is used as is (no lr_scale) and only for its own model, dataset and approach
    both = frog_4_4.run_training("smoke", device="cpu", widths=[256], approaches=["bp", "frog:2"],
                                 lr_overrides=[{"model": "fc_w=256", "dataset": "digits", "approach": "frog", "k": 2,
                                                "lr": 0.0123}])
    lrs = dict(zip(both["summary"].label, both["summary"].lr))
    from frogcore.experiments.common.networks import table_lr

    assert lrs["FROG k=2"] == 0.0123 and lrs["BP"] == 4.0 * table_lr("fc_w=256", "mnist", "bp")
    with pytest.raises(ValueError, match=r"widths\[0\]=128 is not valid"):
        frog_4_4.run_training("smoke", device="cpu", widths=[128], approaches=["frog:2"])
    with pytest.raises(ValueError, match=r"lr_overrides\[0\] lr must be a positive finite number"):
        frog_4_4.run_training("smoke", device="cpu", lr_overrides=[{"model": "fc_w=256", "dataset": "digits",
                                                                    "approach": "frog", "k": 2, "lr": -1}])
