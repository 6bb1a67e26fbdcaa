import json

import pandas as pd
import pytest

from frogcore import results
from frogcore.experiments import frog_4_1
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
    folder = tmp_path / "sec" / "smoke" / "cpu"
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
    (tmp_path / "sec" / "smoke" / "cpu" / "run.csv").write_text("n,value\n1,2\n")
    assert load("sec", "run", "smoke", root=tmp_path) is None
    run_cached("sec", "run", compute, **kw)
    assert compute.calls == 2


def test_no_partial_files_after_an_exception(tmp_path, monkeypatch):
    def boom():
        raise RuntimeError("computation failed")

    with pytest.raises(RuntimeError):
        run_cached("sec", "run", boom, params={}, profile="smoke", root=tmp_path)
    folder = tmp_path / "sec" / "smoke" / "cpu"
    assert not folder.exists() or not any(folder.iterdir())

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
    names = [p.name for p in (tmp_path / "sec" / "smoke" / "cpu").iterdir()]
    assert "run.meta.json" not in names and not any(n.endswith(".tmp") for n in names)
    assert load("sec", "run", "smoke", root=tmp_path) is None


def test_atomic_path_removes_the_temp_file_on_error(tmp_path):
    with pytest.raises(ValueError):
        with results.atomic_path(tmp_path / "x.csv") as tmp:
            tmp.write_text("half")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_same_seed_and_parameters_give_identical_csvs(tmp_path):
    kw = dict(n_grid=[1, 8, 32], k_grid=[1, 4, 64], num_samples=30, force=True, root=tmp_path)
    first = frog_4_1.run("smoke", "cpu", 5, **kw).paths["summary"].read_bytes()
    second = frog_4_1.run("smoke", "cpu", 5, **kw).paths["summary"].read_bytes()
    other_seed = frog_4_1.run("smoke", "cpu", 6, **kw).paths["summary"].read_bytes()
    assert first == second
    assert first != other_seed


def test_code_hash_follows_frogcore_imports():
    closure = module_closure(["frogcore.experiments.frog_4_1"])
    assert {"frogcore.approx", "frogcore.estimators", "frogcore.linalg", "frogcore.tangents",
            "frogcore.config", "frogcore.reduced", "frogcore.theory", "frogcore.seeds"} <= set(closure)
    # neither the package face nor unrelated chapters or the pipeline are part of it
    assert not {"frogcore", "frogcore.pipeline", "frogcore.experiments.frog_4_2", "frogcore.engines"} & set(closure)
    assert code_hash(["frogcore.estimators"]) != code_hash(["frogcore.tangents"])


def _fake_package(root):
    pkg = root / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Package."""\n')
    (pkg / "chapter.py").write_text('"""A chapter."""\nfrom .lib import f\n\n\ndef compute():\n    return f()\n')
    (pkg / "lib.py").write_text('"""Library."""\n\n\ndef f():\n    """Docstring."""\n    return 1  # one\n')
    (pkg / "other.py").write_text('def g():\n    return 2\n')
    return pkg


def test_code_hash_ignores_docstrings_and_comments_but_not_code(tmp_path):
    pkg = _fake_package(tmp_path)
    h0 = code_hash(["fakepkg.chapter"], pkg_dir=pkg)
    assert module_closure(["fakepkg.chapter"], pkg_dir=pkg) == ["fakepkg.chapter", "fakepkg.lib"]
    lib = pkg / "lib.py"
    lib.write_text('"""Library, with a typo fixed."""\n\n\ndef f():\n    """Another docstring."""\n'
                   '    # a new comment\n    return 1  # uno\n')
    assert code_hash(["fakepkg.chapter"], pkg_dir=pkg) == h0  # docstrings and comments do not count
    (pkg / "other.py").write_text("def g():\n    return 3\n")
    assert code_hash(["fakepkg.chapter"], pkg_dir=pkg) == h0  # a module the chapter does not import
    lib.write_text('def f():\n    return 2\n')
    assert code_hash(["fakepkg.chapter"], pkg_dir=pkg) != h0  # a real change in an imported module


def test_code_hash_covers_declared_package_data(tmp_path):
    pkg = _fake_package(tmp_path)
    (pkg / "data").mkdir()
    (pkg / "data" / "t.csv").write_text("a\n1\n")
    (pkg / "lib.py").write_text('__hash_data__ = ("data/t.csv",)\n\n\ndef f():\n    return 1\n')
    h0 = code_hash(["fakepkg.chapter"], pkg_dir=pkg)
    (pkg / "data" / "t.csv").write_text("a\n2\n")
    assert code_hash(["fakepkg.chapter"], pkg_dir=pkg) != h0


def test_a_gpu_run_never_touches_the_cpu_results(tmp_path, monkeypatch):
    import torch

    from frogcore.experiments import runner

    kw = dict(root=tmp_path)  # the smoke profile's own parameters
    cpu = frog_4_1.run("smoke", "cpu", **kw)
    before = {p: p.read_bytes() for p in (tmp_path / "frog_4_1" / "smoke" / "cpu").rglob("*") if p.is_file()}
    assert cpu.paths["summary"].parent == tmp_path / "frog_4_1" / "smoke" / "cpu"
    # a machine with CUDA: "auto" resolves to cuda; the computation itself runs on the CPU tensors here
    monkeypatch.setattr(runner, "resolve_device", lambda device: torch.device("cuda"))
    real = frog_4_1.CHAPTER.experiments["quality"].compute
    monkeypatch.setitem(frog_4_1.CHAPTER.experiments, "quality",
                        runner.Experiment(frog_4_1.PROFILES, lambda p, d, s: real(p, torch.device("cpu"), s),
                                          frog_4_1.check))
    gpu = frog_4_1.run("smoke", "auto", **kw)
    assert not gpu.cached and gpu.meta["device"] == "cuda"
    assert gpu.paths["summary"].parent == tmp_path / "frog_4_1" / "smoke" / "cuda"
    after = {p: p.read_bytes() for p in (tmp_path / "frog_4_1" / "smoke" / "cpu").rglob("*") if p.is_file()}
    assert after == before


def test_runs_with_other_parameters_or_seed_land_in_their_own_folder(tmp_path):
    base = tmp_path / "frog_4_1" / "smoke" / "cpu"
    kw = dict(n_grid=[1, 4, 16, 64], k_grid=[1, 4, 16], num_samples=20, root=tmp_path)  # = the smoke profile
    default = frog_4_1.run("smoke", "cpu", **kw)
    assert default.paths["summary"].parent == base and default.meta["variant"] is None
    snapshot = {p: p.read_bytes() for p in base.glob("*.*")}
    other = frog_4_1.run("smoke", "cpu", **{**kw, "num_samples": 7})
    seeded = frog_4_1.run("smoke", "cpu", seed=1, **kw)
    for res in (other, seeded):
        assert res.paths["summary"].parent.parent == base / "variants"
    assert other.paths["summary"].parent != seeded.paths["summary"].parent
    assert {p: p.read_bytes() for p in base.glob("*.*")} == snapshot
    assert frog_4_1.run("smoke", "cpu", **kw).cached  # the profile's results are still there


def test_runner_rejects_unknown_parameters_and_bad_seeds(tmp_path):
    with pytest.raises(ValueError, match=r"unknown parameter 'num_sample'; allowed parameters: .*num_samples"):
        frog_4_1.run("smoke", "cpu", num_sample=5, root=tmp_path)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        frog_4_1.run("smoke", "cpu", seed=-1, root=tmp_path)
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        frog_4_1.run("smoke", "cpu", threads=0, root=tmp_path)


def test_forced_rerun_wipes_the_runs_checkpoints(tmp_path, monkeypatch):
    from frogcore.experiments import runner

    monkeypatch.setenv("FROG_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    seen = []

    def compute(p, device, seed):
        folder = runner.context().checkpoint_dir
        seen.append(sorted(x.name for x in folder.glob("*")) if folder.exists() else [])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.pt").write_text("finished")
        return table()

    chapter = runner.Chapter("sec", {"x": runner.Experiment({"smoke": {"a": 1}, "default": {"a": 1},
                                                              "paper": {"a": 1}}, compute)},
                             module="frogcore.experiments.runner")
    chapter.run("x", "smoke", "cpu", root=tmp_path)
    chapter.run("x", "smoke", "cpu", root=tmp_path, force=True)
    monkeypatch.setenv("FROG_RECOMPUTE", "1")
    chapter.run("x", "smoke", "cpu", root=tmp_path)
    assert seen == [[], [], []]  # every forced run started without the earlier checkpoint


def test_unwritable_results_folder_fails_before_computing(tmp_path):
    import os

    if os.geteuid() == 0:  # root ignores permissions: use a file where a folder is needed
        (tmp_path / "ro").write_text("not a folder")
        root = tmp_path / "ro"
    else:
        root = tmp_path / "ro"
        root.mkdir(mode=0o500)
    compute = Counter(table)
    with pytest.raises(PermissionError, match="cannot write results into"):
        run_cached("sec", "run", compute, params={}, profile="smoke", root=root)
    assert compute.calls == 0


def test_bad_profile_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"profile='huge'.*allowed values: 'smoke', 'default', 'paper'"):
        run_cached("sec", "run", table, params={}, profile="huge", root=tmp_path)


def test_running_inside_another_checkout_is_refused(tmp_path, monkeypatch):
    other = tmp_path / "other-checkout"
    for d in ("frogcore", "notebooks"):
        (other / d).mkdir(parents=True)
    (other / "pyproject.toml").write_text("[project]\nname='frogcore'\n")
    monkeypatch.chdir(other / "notebooks")
    with pytest.raises(RuntimeError, match="this session runs in the checkout .*other-checkout but imports frogcore"):
        frog_4_1.run("smoke", "cpu", root=tmp_path)
    monkeypatch.chdir(results.REPO_ROOT / "notebooks")  # the checkout frogcore comes from: fine
    assert frog_4_1.run("smoke", "cpu", root=tmp_path).tables


def test_infrastructure_modules_are_not_part_of_the_hash(tmp_path):
    pkg = _fake_package(tmp_path)
    (pkg / "store.py").write_text('__hash_role__ = "infrastructure"\n\n\ndef save():\n    return 1\n')
    (pkg / "chapter.py").write_text("from .lib import f\nfrom .store import save\n\n\ndef compute():\n    return save(f())\n")
    h0 = code_hash(["fakepkg.chapter"], pkg_dir=pkg)
    assert module_closure(["fakepkg.chapter"], pkg_dir=pkg) == ["fakepkg.chapter", "fakepkg.lib"]
    (pkg / "store.py").write_text('__hash_role__ = "infrastructure"\n\n\ndef save():\n    return 2\n')
    assert code_hash(["fakepkg.chapter"], pkg_dir=pkg) == h0
    # the real store, runner and worker pools are infrastructure; the numerics are not
    closure = module_closure(["frogcore.experiments.frog_4_2"])
    assert not {"frogcore.results", "frogcore.experiments.runner", "frogcore.parallel"} & set(closure)
    assert {"frogcore.optimize", "frogcore.linalg", "frogcore.experiments.common.closed_form"} <= set(closure)


# ----------------------------------------------------------------------------- figures and their tables

def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1, 2], [1, 0, 2])
    return fig


def test_a_figure_records_the_run_and_an_unchanged_figure_is_an_unchanged_file(tmp_path):
    from frogcore import style

    res = run_cached("sec", "exp", lambda: table(1.0), params={"a": 1}, profile="smoke", root=tmp_path)
    fig = _figure()
    first = style.save(fig, res, "curve").read_bytes()
    path = style.save(fig, res, "curve")
    assert path == res.figures_dir / "curve.png" and path.read_bytes() == first  # no timestamp in the file
    assert results.figure_record(path) == ("exp", res.result_id)
    loaded = load("sec", "exp", "smoke", root=tmp_path)
    assert loaded.result_id == res.result_id  # the id depends on the stored content only


def test_new_tables_replace_that_runs_figures_and_keep_the_others(tmp_path):
    from frogcore import style

    res = run_cached("sec", "exp", lambda: table(1.0), params={"a": 1}, profile="smoke", root=tmp_path)
    other = run_cached("sec", "other", lambda: table(5.0), params={"a": 1}, profile="smoke", root=tmp_path)
    fig = _figure()
    mine, theirs = style.save(fig, res, "mine"), style.save(fig, other, "theirs")
    unrecorded = style.save(fig, res.figures_dir, "by_hand")
    # the same tables again (a forced rerun with the same numbers) keep the figures: they still match
    run_cached("sec", "exp", lambda: table(1.0), params={"a": 1}, profile="smoke", root=tmp_path, force=True)
    assert mine.exists()
    new = run_cached("sec", "exp", lambda: table(2.0), params={"a": 1}, profile="smoke", root=tmp_path, force=True)
    assert not mine.exists(), "a figure of the old tables was left beside the new ones"
    assert theirs.exists() and unrecorded.exists()
    assert results.stale_figures(new.figures_dir.parent, "exp", new.result_id) == []


def test_a_figure_of_replaced_tables_is_refused(tmp_path):
    from frogcore import style

    old = run_cached("sec", "exp", lambda: table(1.0), params={"a": 1}, profile="smoke", root=tmp_path)
    # another process stores new tables in the same folder before this one saves its figure
    run_cached("sec", "exp", lambda: table(3.0), params={"a": 1}, profile="smoke", root=tmp_path, force=True)
    with pytest.raises(style.StaleFigure, match="replaced by another run"):
        style.save(_figure(), old, "late")
    assert not (old.figures_dir / "late.png").exists()
    assert not list(old.figures_dir.glob("*.tmp*")) and not list(old.figures_dir.glob(".*"))


def test_concurrent_runs_never_leave_figures_beside_other_tables(tmp_path):
    """Two processes store different tables in one folder and each draws a figure from what it stored:
    whatever the interleaving, every figure left in the folder records the tables that are there."""
    import subprocess
    import sys

    script = (
        "import sys, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt, pandas as pd\n"
        "from frogcore import style; from frogcore.results import run_cached\n"
        "x = float(sys.argv[1])\n"
        "for i in range(15):\n"
        "    r = run_cached('sec', 'exp', lambda: pd.DataFrame({'v': [x, i]}), params={'a': 1},"
        " profile='smoke', root=sys.argv[2], force=True)\n"
        "    fig, ax = plt.subplots(figsize=(1, 1)); ax.plot([0, x])\n"
        "    try:\n"
        "        style.save(fig, r, f'f{int(x)}')\n"
        "    except style.StaleFigure:\n"
        "        pass\n"
        "    plt.close(fig)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(x), str(tmp_path)]) for x in (1.0, 2.0)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    folder = results.run_dir("sec", "smoke", root=tmp_path)
    current = results.current_result_id(folder, "exp")
    figures = list((folder / "figures").glob("*.png"))
    assert figures, "the process that stored last drew no figure"
    for fig in figures:
        assert results.figure_record(fig)[1] == current, f"{fig.name} was drawn from other tables"
