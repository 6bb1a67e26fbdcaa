import json

import pandas as pd
import pytest

from frogcore import results
from frogcore.experiments import approx_quality
from frogcore.results import code_hash, load, module_closure, run_cached


def table(x=1.0):
    return pd.DataFrame({"n": [1, 2, 3], "value": [x, x / 3, x * 1e-9]})


class Counter:
    def __init__(self, out):
        self.calls, self.out = 0, out

    def __call__(self):
        self.calls += 1
        return self.out() if callable(self.out) else self.out


def test_round_trip_and_metadata(tmp_path):
    compute = Counter({"a": table(), "b": table(2.0)})
    res = run_cached("sec", "run", compute, params={"grid": (1, 2)}, profile="smoke", device="cpu", seed=3,
                     code=["frogcore.estimators"], root=tmp_path)
    assert compute.calls == 1 and not res.cached
    folder = tmp_path / "sec" / "smoke"
    assert sorted(p.name for p in folder.iterdir()) == ["run.meta.json", "run__a.csv", "run__b.csv"]
    meta = json.loads((folder / "run.meta.json").read_text())
    for key in ("params", "seed", "profile", "device", "frogcore_version", "code_hash", "torch_version",
                "git_commit", "started_utc", "finished_utc", "compute_seconds"):
        assert key in meta
    assert meta["params"] == {"grid": [1, 2]} and meta["seed"] == 3 and meta["device"] == "cpu"
    loaded = load("sec", "run", "smoke", root=tmp_path)
    pd.testing.assert_frame_equal(loaded["a"], res["a"])
    pd.testing.assert_frame_equal(loaded["b"], table(2.0))


def test_cache_hit_and_misses(tmp_path, monkeypatch):
    compute = Counter(table)
    kw = dict(profile="smoke", device="cpu", seed=0, code=["frogcore.estimators"], root=tmp_path)
    run_cached("sec", "run", compute, params={"k": 1}, **kw)
    hit = run_cached("sec", "run", compute, params={"k": 1}, **kw)
    assert compute.calls == 1 and hit.cached
    run_cached("sec", "run", compute, params={"k": 2}, **kw)          # parameter changed
    assert compute.calls == 2
    run_cached("sec", "run", compute, params={"k": 2}, **{**kw, "seed": 1})  # seed changed
    assert compute.calls == 3
    monkeypatch.setattr(results, "code_hash", lambda code: "changed-code")  # frogcore code changed
    run_cached("sec", "run", compute, params={"k": 2}, **{**kw, "seed": 1})
    assert compute.calls == 4
    monkeypatch.undo()
    run_cached("sec", "run", compute, params={"k": 2}, force=True, **{**kw, "seed": 1})
    assert compute.calls == 5


def test_tampered_table_is_recomputed(tmp_path):
    compute = Counter(table)
    kw = dict(params={}, profile="smoke", device="cpu", root=tmp_path)
    run_cached("sec", "run", compute, **kw)
    (tmp_path / "sec" / "smoke" / "run.csv").write_text("n,value\n1,2\n")
    assert load("sec", "run", "smoke", root=tmp_path) is None
    run_cached("sec", "run", compute, **kw)
    assert compute.calls == 2


def test_no_partial_files_after_an_exception(tmp_path, monkeypatch):
    def boom():
        raise RuntimeError("computation failed")

    with pytest.raises(RuntimeError):
        run_cached("sec", "run", boom, params={}, profile="smoke", root=tmp_path)
    assert not (tmp_path / "sec" / "smoke").exists() or not any((tmp_path / "sec" / "smoke").iterdir())

    # a failure while writing the second table leaves neither a temp file nor new metadata
    calls = {"n": 0}
    real = results.atomic_write_bytes

    def flaky(path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(results, "atomic_write_bytes", flaky)
    with pytest.raises(OSError):
        run_cached("sec", "run", lambda: {"a": table(), "b": table()}, params={}, profile="smoke", root=tmp_path)
    names = [p.name for p in (tmp_path / "sec" / "smoke").iterdir()]
    assert "run.meta.json" not in names and not any(n.endswith(".tmp") for n in names)
    assert load("sec", "run", "smoke", root=tmp_path) is None


def test_atomic_path_removes_the_temp_file_on_error(tmp_path):
    with pytest.raises(ValueError):
        with results.atomic_path(tmp_path / "x.csv") as tmp:
            tmp.write_text("half")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_same_seed_and_parameters_give_identical_csvs(tmp_path):
    kw = dict(n_grid=[1, 8, 32], k_grid=[1, 4, 64], num_samples=30, force=True)
    approx_quality.run("smoke", "cpu", 5, **kw)
    first = (results.results_root() / "frog_4_1" / "smoke" / "quality__summary.csv").read_bytes()
    approx_quality.run("smoke", "cpu", 5, **kw)
    second = (results.results_root() / "frog_4_1" / "smoke" / "quality__summary.csv").read_bytes()
    approx_quality.run("smoke", "cpu", 6, **kw)
    other_seed = (results.results_root() / "frog_4_1" / "smoke" / "quality__summary.csv").read_bytes()
    assert first == second
    assert first != other_seed


def test_code_hash_follows_frogcore_imports():
    closure = module_closure(["frogcore.experiments.approx_quality"])
    assert {"frogcore.approx", "frogcore.estimators", "frogcore.linalg", "frogcore.tangents",
            "frogcore.results", "frogcore.config"} <= set(closure)
    assert "frogcore.pipeline" not in closure
    assert code_hash(["frogcore.estimators"]) != code_hash(["frogcore.tangents"])


def test_bad_profile_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"profile='huge'.*allowed values: 'smoke', 'default', 'paper'"):
        run_cached("sec", "run", table, params={}, profile="huge", root=tmp_path)
