"""benchmarks/bench_reference.py: behaviour without the authors' repositories, arguments, the CSV writer and
the run-time import patches. No benchmark is run here (that needs the authors' work trees and minutes)."""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_reference.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_reference_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env_without_refs() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FROG_REF_")}


def test_without_repositories_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "reference.csv"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          env=_env_without_refs(), cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "not available" in proc.stdout
    assert "FROG_REF_FROG" in proc.stdout and "FROG_REF_FOMOH" in proc.stdout
    assert not out.exists()  # nothing measured, nothing written


def test_reference_paths(bench, tmp_path):
    paths, notes = bench.reference_paths({})
    assert paths == {"frog": None, "fomoh": None} and len(notes) == 2
    # a directory that is not a work tree of the repository is reported and ignored
    paths, notes = bench.reference_paths({"FROG_REF_FROG": str(tmp_path)})
    assert paths["frog"] is None
    assert any("is not a work tree of Helmholtz-AI-Energy/frog" in n for n in notes)
    # a directory with the repository's marker file is accepted
    marker = tmp_path / "frog" / "function_optimization" / "gradient_descent.py"
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    paths, notes = bench.reference_paths({"FROG_REF_FROG": str(tmp_path / "frog")})
    assert paths["frog"] == (tmp_path / "frog").resolve() and paths["fomoh"] is None
    assert len(notes) == 1 and "FROG_REF_FOMOH" in notes[0]


def test_parse_args_defaults_and_overrides(bench):
    a = bench.parse_args([])
    assert a.out == "results/benchmarks/reference/reference.csv"
    assert a.threads == 1 and a.repeats == 3 and a.only == list(bench.BENCHMARKS)
    assert (a.approx_max_log_n, a.approx_max_log_k, a.approx_samples) == (10, 10, 100)
    a = bench.parse_args(["--threads", "2", "--only", "fomoh", "engine", "--cf-n", "8", "--out", "/tmp/x.csv"])
    assert a.threads == 2 and a.only == ["fomoh", "engine"] and a.cf_n == [8] and a.out == "/tmp/x.csv"


@pytest.mark.parametrize("argv, word", [
    (["--threads", "0"], "threads"),
    (["--repeats", "-1"], "repeats"),
    (["--only", "approx", "nonsense"], "only"),
    (["--approx-max-log-n", "15"], "approx-max-log-n"),
    (["--cf-n", "0"], "cf-n"),
    (["--warmup", "-1"], "warmup"),
])
def test_parse_args_rejects_bad_values(bench, argv, word):
    with pytest.raises(ValueError, match=word):
        bench.parse_args(argv)


def test_main_reports_bad_arguments(bench, capsys):
    assert bench.main(["--only", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "only" in err and "closed-form" in err  # names the parameter and the allowed values


def _records():
    return [
        {"benchmark": "fomoh", "group": "fomoh", "side": "authors", "implementation": "theirs", "config": "c",
         "reference": True, "median_s": 0.40, "min_s": 0.38, "forward_s": 0.010, "x_forward": 40.0,
         "repeats": 30, "work": "w"},
        # x_forward ratio (40/20 = 2) differs from the seconds ratio (0.40/0.30): the former must be used
        {"benchmark": "fomoh", "group": "fomoh", "side": "ours", "implementation": "ours", "config": "c",
         "reference": False, "median_s": 0.30, "min_s": 0.29, "forward_s": 0.015, "x_forward": 20.0,
         "repeats": 30, "work": "w"},
        {"benchmark": "approx", "group": "approx", "side": "authors", "implementation": "theirs", "config": "g",
         "reference": True, "median_s": 10.0, "min_s": 9.0, "repeats": 3, "work": "cells"},
        {"benchmark": "approx", "group": "approx", "side": "ours", "implementation": "ours", "config": "g",
         "reference": False, "median_s": 2.5, "min_s": 2.0, "repeats": 3, "work": "cells"},
        {"benchmark": "approx", "group": "approx", "side": "ours", "implementation": "broken", "config": "g",
         "reference": False, "error": "timeout after 10 s"},
    ]


def test_speedups(bench):
    recs = bench.add_speedups(_records())
    assert recs[0]["speedup_vs_authors"] == pytest.approx(1.0)
    assert recs[1]["speedup_vs_authors"] == pytest.approx(2.0)  # from x_forward, not 0.40/0.30
    assert recs[3]["speedup_vs_authors"] == pytest.approx(4.0)  # from median_s (no forward pass)
    assert math.isnan(recs[4]["speedup_vs_authors"])  # a failed row gets none


def test_write_csv(bench, tmp_path):
    meta = {"frog_commit": "7beb8cbd" * 5, "fomoh_commit": "f0da7ae9" * 5, "our_commit": "abc123",
            "our_tree_dirty": False, "threads": 1, "torch_version": "9.9", "python_version": "3.11.7",
            "machine": "x86_64, 2 CPUs", "timestamp": "2026-01-01T00:00:00"}
    path = bench.write_csv(bench.add_speedups(_records()), tmp_path / "sub" / "reference.csv", meta)
    assert path == tmp_path / "sub" / "reference.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == list(bench.COLUMNS)
    assert len(rows) == 5
    for r in rows:
        assert r["frog_commit"] == meta["frog_commit"] and r["fomoh_commit"] == meta["fomoh_commit"]
        assert r["our_commit"] == "abc123" and r["threads"] == "1" and r["torch_version"] == "9.9"
    assert float(rows[1]["speedup_vs_authors"]) == pytest.approx(2.0)
    assert float(rows[1]["x_forward"]) == pytest.approx(20.0)
    assert rows[2]["forward_s"] == "" and rows[2]["x_forward"] == ""  # not measured: empty, not "nan"
    assert rows[4]["error"] == "timeout after 10 s"
    assert rows[4]["median_s"] == "" and rows[4]["speedup_vs_authors"] == ""
    assert "reference" not in rows[0]  # internal flag, not a column


def test_plan_follows_the_available_repositories(bench):
    args = bench.parse_args([])
    configs = bench.plan(args, {"frog": Path("/nonexistent/frog"), "fomoh": None})
    assert {c["benchmark"] for c in configs} == {"approx", "closed-form", "engine"}
    configs = bench.plan(args, {"frog": Path("/a"), "fomoh": Path("/b")})
    assert {c["benchmark"] for c in configs} == set(bench.BENCHMARKS)
    # every group with a speedup has exactly one authors' reference row, and every row has the same threads
    groups = {c["group"] for c in configs}
    for g in groups - {"fomoh-own-forward"}:
        refs = [c for c in configs if c["group"] == g and c["reference"]]
        assert len(refs) == 1 and refs[0]["side"] == "authors"
        assert any(c["side"] == "ours" for c in configs if c["group"] == g)
    assert {c["threads"] for c in configs} == {1}


def test_ndarray_dataclass_defaults_patch(bench, tmp_path):
    """The patch turns np.ndarray defaults (rejected by Python >= 3.11) into per-instance copies."""
    import numpy as np

    src = tmp_path / "ndarray_defaults_mod.py"
    src.write_text(
        "import dataclasses\nimport numpy as np\n\n"
        "@dataclasses.dataclass\nclass Base:\n"
        "    limits: np.ndarray = np.array([[0, 1], [2, 3]])\n    name: str = 'b'\n\n"
        "@dataclasses.dataclass\nclass Child(Base):\n    limits: np.ndarray = np.array([[5, 6]])\n")

    def load():
        spec = importlib.util.spec_from_file_location("ndarray_defaults_mod", src)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    original = dataclasses.dataclass
    if sys.version_info >= (3, 11):
        with pytest.raises(ValueError, match="mutable default"):
            load()
    with bench.ndarray_dataclass_defaults():
        mod = load()
    assert dataclasses.dataclass is original  # restored
    a, b = mod.Base(), mod.Base()
    np.testing.assert_array_equal(a.limits, [[0, 1], [2, 3]])
    assert a.limits is not b.limits  # a copy per instance
    np.testing.assert_array_equal(mod.Child().limits, [[5, 6]])
    assert mod.Child().name == "b"


def test_install_stubs(bench, monkeypatch):
    fake = "frog_bench_missing_pkg_xyz"
    monkeypatch.setattr(bench, "STUB_MODULES", {fake: (fake, f"{fake}.sub"), "json": ("json",)})
    for name in (fake, f"{fake}.sub"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import json as real_json

    installed = bench.install_stubs((fake, "json"))
    try:
        assert installed == [fake]  # json is installed: never replaced
        assert sys.modules["json"] is real_json
        from frog_bench_missing_pkg_xyz.sub import Thing  # the stub answers any name

        with pytest.raises(RuntimeError, match="stub"):
            Thing()
    finally:
        for name in (fake, f"{fake}.sub"):
            sys.modules.pop(name, None)
