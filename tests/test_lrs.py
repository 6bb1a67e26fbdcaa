import pandas as pd
import pytest

from frogcore.approach import Approach
from frogcore.experiments.common.closed_form import PAPER_APPROACHES, PAPER_N
from frogcore.functions import PAPER_FUNCTIONS
from frogcore.lrs import LRTable, load_table, lookup_lr


def test_known_values_from_the_authors_table():
    t = LRTable.shipped()
    assert t.lookup("sphere", 1024, "frog", 16) == 0.4863679205279614
    assert t.lookup("rosenbrock", 1, "bp") == 0.0836372930481806
    assert t.lookup("rosenbrock", 1, "bp", 99) == 0.0836372930481806  # k is ignored for backprop
    lr, src = t.lookup_with_source("styblinski-tang", 64, "fg-mean", 16)
    assert lr == 0.0009586039844668 and src.endswith("math.csv")


def test_every_configuration_of_the_paper_grid_has_a_rate():
    t = LRTable.shipped()
    seen = set()
    for f in PAPER_FUNCTIONS:
        for n in PAPER_N:
            for spec in PAPER_APPROACHES:
                a = Approach.parse(spec)
                name, k = a.name, a.k
                lr = t.lookup(f, n, name, k)
                assert lr > 0
                seen.add((f, n, spec))
    assert len(seen) == len(load_table("math")) == 264


def test_custom_tangent_table_parses_angles():
    t = load_table("math__custom_tangents")
    assert sorted(t.loc[t.sampler == "angle", "angle"].unique()) == [15.0, 30.0, 45.0, 60.0, 75.0, 90.0]
    c = LRTable.shipped(("math__custom_tangents",))
    assert c.lookup("styblinski-tang", 64, "fg-mean", 16, sampler="angle", angle=30) == 0.03636534510523638
    assert c.lookup("styblinski-tang", 64, "frog", 64) == 0.03529607532965169


@pytest.mark.parametrize("query,match", [
    (("foo", 4, "bp"), r"function='foo' has no learning rate; allowed values: 'rosenbrock', 'sphere', 'styblinski-tang'"),
    (("sphere", 3, "bp"), r"n=3 has no learning rate for function='sphere'; allowed values: 1, 2, 4, .*1024"),
    (("sphere", 4, "frog", 8), r"k=8 has no learning rate for function='sphere', n=4, approach='frog'; allowed values: 2, 4, 16"),
    (("sphere", 4, "sgd", 2), r"approach='sgd' is not valid; allowed values: 'bp', 'fg-mean', 'frog'"),
])
def test_lookup_errors_name_the_parameter_and_the_allowed_values(query, match):
    with pytest.raises(ValueError, match=match):
        LRTable.shipped().lookup(*query)


def test_angle_errors_list_the_available_angles():
    c = LRTable.shipped(("math__custom_tangents",))
    with pytest.raises(ValueError, match=r"angle=20 has no learning rate.*allowed values: 15.0, 30.0"):
        c.lookup("styblinski-tang", 64, "fg-mean", 16, sampler="angle", angle=20)
    with pytest.raises(ValueError, match=r"sampler='uniform' is not valid"):
        c.lookup("styblinski-tang", 64, "fg-mean", 16, sampler="uniform")


def test_both_tables_together_are_ambiguous_for_the_shared_entry():
    both = LRTable.shipped(("math", "math__custom_tangents"))
    with pytest.raises(ValueError, match="ambiguous"):
        both.lookup("styblinski-tang", 64, "frog", 16)


def test_overrides_wildcards_specific_and_order():
    t = LRTable.shipped(overrides=[{"approach": "frog", "lr": 0.5},
                                   {"function": "sphere", "n": 4, "approach": "frog", "k": 2, "lr": 0.25}])
    assert t.lookup_with_source("rosenbrock", 8, "frog", 16) == (0.5, "override")
    assert t.lookup("sphere", 4, "frog", 2) == 0.25  # the later, more specific one wins
    assert t.lookup("sphere", 4, "bp") == LRTable.shipped().lookup("sphere", 4, "bp")  # untouched
    assert lookup_lr("sphere", 2, "fg-mean", 1, overrides=[{"lr": 3.0}]) == 3.0


@pytest.mark.parametrize("bad,match", [
    ({"function": "sphere"}, r"needs an 'lr'"),
    ({"lr": 0.0}, r"positive finite"),
    ({"lr": 0.1, "speed": 2}, r"key='speed' is not valid; allowed values: 'function', 'n'"),
    ({"lr": 0.1, "approach": "adam"}, r"approach'\]='adam' is not valid"),
])
def test_bad_overrides_fail_at_once(bad, match):
    with pytest.raises(ValueError, match=match):
        LRTable.shipped(overrides=[bad])


def test_user_csv_in_the_authors_format(tmp_path):
    p = tmp_path / "mine.csv"
    pd.DataFrame({"function": ["sphere", "sphere"], "n": [2, 2], "gradient_approach": ["bp", "frog"],
                  "k": [None, 2.0], "lr": [0.3, 0.2]}).to_csv(p, index=False)
    t = LRTable.from_csv(p)
    assert t.lookup("sphere", 2, "frog", 2) == 0.2
    assert t.lookup_with_source("sphere", 2, "bp")[1] == str(p)
    with pytest.raises(ValueError, match="lacks columns"):
        pd.DataFrame({"x": [1]}).to_csv(tmp_path / "bad.csv", index=False)
        LRTable.from_csv(tmp_path / "bad.csv")
