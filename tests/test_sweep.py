"""Chapter grids as cells on the local executor (frogcore.sweep, the cells of frogcore.experiments.runner):
merged cells equal the serial run byte for byte, re-runs compute only missing cells, a SIGKILLed worker
leaves no partial cell, two sweeps at once compute every cell once, claims are exclusive. The same
protocol on a real SLURM cluster: tests/test_sweep_slurm.py."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frogcore import sweep
from frogcore.experiments import frog_4_2, frog_4_4, runner
from frogcore.results import REPO_ROOT, csv_bytes

TIMING_KEYS = {"started_utc", "finished_utc", "compute_seconds"}


@pytest.fixture(scope="module")
def serial_42(tmp_path_factory):
    """The serial 4.2 smoke run (6 (function, n) batches), the reference of every merged result here."""
    return frog_4_2.CHAPTER.run("closed_form", "smoke", "cpu", root=str(tmp_path_factory.mktemp("serial")))


def _meta(res) -> dict:
    return json.loads((next(iter(res.paths.values())).parent / "closed_form.meta.json").read_text())


def _assert_equal_to_serial(res, serial):
    assert set(res.paths) == set(serial.paths) == {"runs", "curves"}
    for t in serial.paths:
        assert res.paths[t].read_bytes() == serial.paths[t].read_bytes(), t
    a, b = _meta(res), _meta(serial)
    assert {k for k in a if a[k] != b[k]} <= TIMING_KEYS  # same key, code hash, tables' hashes, versions


def _starts(store: sweep.CellStore) -> list[str]:
    if not store.journal_path.exists():
        return []
    return [line.split()[2] for line in store.journal_path.read_text().splitlines() if line.split()[1] == "start"]


def _cli(root, *extra, workers=1) -> list[str]:
    return [sys.executable, "-m", "frogcore.sweep", "run", "frog_4_2", "closed_form", "--profile", "smoke",
            "--device", "cpu", "--root", str(root), "--workers", str(workers), "--no-progress", "--poll", "0.3",
            *extra]


# ----------------------------------------------------------------------------- cells of the runner

def test_cells_partition_the_chapters_grids_in_table_order():
    p = runner.plan(frog_4_2.CHAPTER, "closed_form", "smoke", "cpu")
    cells = runner.cells(p)
    assert cells == [{"functions": [f], "n_grid": [n]} for f in ("sphere", "rosenbrock", "styblinski-tang")
                     for n in (2, 16)]
    sub = runner.cell_params(p, cells[3])
    assert sub["functions"] == ["rosenbrock"] and sub["n_grid"] == [16] and sub["max_steps"] == {"rosenbrock": 200}
    # 4.4 paper: one cell per training run (dataset, width, approach, seed)
    p44 = runner.plan(frog_4_4.CHAPTER, "training", "paper", "cpu")
    cells44 = runner.cells(p44)
    assert len(cells44) == 1 * 3 * 8 * 3
    assert cells44[:2] == [{"approaches": ["bp"], "datasets": ["mnist"], "seed_offsets": [0], "widths": [256]},
                           {"approaches": ["bp"], "datasets": ["mnist"], "seed_offsets": [1], "widths": [256]}]


def _toy(cells_fn):
    exp = runner.Experiment({"smoke": {"a": [1, 2]}, "default": {"a": [1, 2]}, "paper": {"a": [1, 2]}},
                            lambda p, d, s: pd.DataFrame({"a": p["a"]}), runtime={"workers": 0}, cells=cells_fn)
    return runner.Chapter("toy", {"x": exp}, module="frogcore.experiments.runner")


def test_bad_cells_are_refused_with_the_reason():
    plan = lambda ch: runner.plan(ch, "x", "smoke", "cpu")  # noqa: E731
    with pytest.raises(ValueError, match="repeats the cell"):
        runner.cells(plan(_toy(lambda p: [{"a": [1]}, {"a": [1]}])))
    with pytest.raises(ValueError, match="runtime options"):
        runner.cells(plan(_toy(lambda p: [{"a": [1], "workers": 2}])))
    with pytest.raises(ValueError, match="non-empty dict"):
        runner.cells(plan(_toy(lambda p: [{}])))
    with pytest.raises(ValueError, match="declares no cells"):
        runner.cells(runner.plan(frog_4_2.CHAPTER, "trajectories_2d", "smoke", "cpu"))
    with pytest.raises(ValueError, match="cell 1 has the tables"):
        runner.concat_cells([{"a": pd.DataFrame()}, {"b": pd.DataFrame()}])


def test_a_toy_chapter_merges_its_cells_into_the_serial_table(tmp_path):
    chapter = _toy(lambda p: [{"a": [x]} for x in p["a"]])
    serial = runner.run(chapter, "x", "smoke", "cpu", root=str(tmp_path / "s"))
    p = runner.plan(chapter, "x", "smoke", "cpu", root=str(tmp_path / "m"))
    merged = runner.store_merged(p, [runner.compute_cell(p, c) for c in runner.cells(p)])
    assert merged.paths[""].read_bytes() == serial.paths[""].read_bytes()
    assert runner.run(chapter, "x", "smoke", "cpu", root=str(tmp_path / "m")).cached


_COLUMN = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=6, max_size=6),
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=6, max_size=6),
    st.lists(st.integers(-10**12, 10**12), min_size=6, max_size=6),
    st.lists(st.one_of(st.none(), st.integers(0, 50)), min_size=6, max_size=6),
    st.lists(st.sampled_from(["bp", "frog", "FG-mean k=4", "max_steps"]), min_size=6, max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cols=st.lists(_COLUMN, min_size=1, max_size=4), cuts=st.lists(st.integers(1, 5), max_size=3, unique=True))
def test_cells_stored_and_merged_give_the_serial_csv(cols, cuts):
    """Property: a table split into row blocks, each stored as a cell (CSV) and read back, concatenates to the
    same CSV bytes as the whole table (floats read back exactly, dtypes re-inferred as for the whole)."""
    whole = pd.DataFrame({f"c{i}": c for i, c in enumerate(cols)})
    bounds = [0, *sorted(cuts), len(whole)]
    parts = [whole.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds, bounds[1:]) if b > a]
    with tempfile.TemporaryDirectory() as d:
        store = sweep.CellStore(d)
        loaded = []
        for i, part in enumerate(parts):
            task = sweep.Task(d, f"c{i}", f"c{i}", {"i": i}, ("frogcore.results",), "h", "x:y", {})
            store.write(task, {"t": part}, {"key": {"i": i}, "code_hash": "h"}, token=f"tok{i}")
            loaded.append(store.load(task))
    assert csv_bytes(runner.concat_cells(loaded)["t"]) == csv_bytes(whole)


# ----------------------------------------------------------------------------- claims

def _claim_once(folder, barrier, results, i):
    task = sweep.Task(folder, "cell", "cell", {"k": 1}, (), "h", "x:y", {})
    barrier.wait()
    results[i] = sweep.CellStore(folder).claim(task, sweep.owner_info())
    time.sleep(1.0)  # stay alive so that the winner's claim is not stale while the others look


def test_a_claim_is_exclusive_across_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Array("b", n)
    procs = [ctx.Process(target=_claim_once, args=(str(tmp_path), barrier, results, i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sum(results[:]) == 1


def test_stale_claims_are_taken_over_and_live_ones_respected(tmp_path):
    store = sweep.CellStore(tmp_path)
    task = sweep.Task(str(tmp_path), "cell", "cell", {"k": 1}, (), "h", "x:y", {})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ghost = {**sweep.owner_info(), "pid": dead.pid, "pid_start": "0"}
    store.claim_path("cell").write_text(json.dumps(ghost))
    assert store.status(task).state == "failed" and "worker died" in store.status(task).detail
    me = sweep.owner_info()
    assert store.claim(task, me)  # the dead owner's claim is taken over
    assert "stale-claim-removed cell" in store.journal_path.read_text()
    assert store.status(task).state == "running"
    assert not store.claim(task, sweep.owner_info())  # a live owner keeps it
    store.release("cell", "not-my-token")
    assert store.claim_path("cell").exists()
    store.release("cell", me["token"])
    assert not store.claim_path("cell").exists() and store.status(task).state == "missing"
    # a claim from another host without heartbeat for longer than STALE_AFTER_S is stale
    remote = {**sweep.owner_info(), "host": "elsewhere", "job": None}
    store.claim_path("cell").write_text(json.dumps(remote))
    assert store.status(task).state == "running"
    old = time.time() - sweep.STALE_AFTER_S - 5
    os.utime(store.claim_path("cell"), (old, old))
    assert store.status(task).state == "failed"


def test_executor_options_are_checked():
    with pytest.raises(ValueError, match="executor='slurm' has no option 'workers'"):
        sweep.make_executor("slurm", workers=2)
    with pytest.raises(ValueError, match="executor"):
        sweep.make_executor("kubernetes")
    with pytest.raises(ValueError, match="workers"):
        sweep.LocalExecutor(workers=0)
    with pytest.raises(ValueError, match="wait=False"):
        sweep.run_tasks(sweep.CellStore("/nonexistent"), [], sweep.LocalExecutor(1), wait=False)
    with pytest.raises(SystemExit, match="--partition applies to --executor slurm"):
        sweep.main(["run", "frog_4_2", "closed_form", "--profile", "smoke", "--device", "cpu", "--partition", "x"])


# ----------------------------------------------------------------------------- sweeps on the local pool

def test_sweep_merges_byte_for_byte_and_reruns_only_missing_cells(serial_42, tmp_path, capsys):
    sw = sweep.chapter_sweep("frog_4_2", "closed_form", "smoke", "cpu", root=str(tmp_path))
    assert [s.state for s in sw.status()] == ["missing"] * 6
    res = sw.run(sweep.LocalExecutor(workers=2), progress=False, poll=0.2)
    _assert_equal_to_serial(res, serial_42)
    assert frog_4_2.CHAPTER.run("closed_form", "smoke", "cpu", root=str(tmp_path)).cached  # a plain cache hit
    assert sorted(_starts(sw.store)) == sorted(t.tag for t in sw.tasks)
    assert (sw.store.log_dir / "local" / f"{sw.tasks[0].tag}.log").exists()
    # lose one cell, corrupt another: both count as missing, and only they are computed again
    import shutil

    shutil.rmtree(sw.store.result_dir(sw.tasks[1].tag))
    table = sw.store.result_dir(sw.tasks[4].tag) / "runs.csv"
    table.write_bytes(table.read_bytes().replace(b"sphere", b"sphera").replace(b"styblinski", b"styblinsky"))
    assert [s.state for s in sw.status()] == ["done", "missing", "done", "done", "missing", "done"]
    assert sweep.main(["status", "frog_4_2", "closed_form", "--profile", "smoke", "--device", "cpu",
                       "--root", str(tmp_path)]) == 0
    assert "6 cells: 4 done, 2 missing" in capsys.readouterr().out
    before = len(_starts(sw.store))
    res2 = sweep.chapter_sweep("frog_4_2", "closed_form", "smoke", "cpu", root=str(tmp_path)).run(
        sweep.LocalExecutor(workers=2), progress=False, poll=0.2)
    assert sorted(_starts(sw.store)[before:]) == sorted([sw.tasks[1].tag, sw.tasks[4].tag])
    _assert_equal_to_serial(res2, serial_42)


def _wait_for_running_claim(store: sweep.CellStore, proc: subprocess.Popen, timeout: float = 240) -> tuple[str, int]:
    """Freeze the first worker caught holding a claim (SIGSTOP) while its cell is unfinished; (tag, pid)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc is None or proc.poll() is None, "the sweep ended before a worker could be caught"
        for claim in store.folder.glob("*.claim") if store.folder.exists() else []:
            try:
                owner = json.loads(claim.read_text())
            except (OSError, ValueError):
                continue
            tag = claim.name[: -len(".claim")]
            try:
                os.kill(owner["pid"], signal.SIGSTOP)
            except ProcessLookupError:
                continue
            still = claim.exists() and json.loads(claim.read_text()).get("token") == owner["token"]
            writing = store.result_dir(tag).exists() or any(store.folder.glob(f".tmp-{tag}-*"))
            if still and not writing:  # frozen before its result is written
                return tag, owner["pid"]
            os.kill(owner["pid"], signal.SIGCONT)
        time.sleep(0.01)
    raise TimeoutError("no worker was caught in the middle of a cell")


def test_a_sigkilled_worker_leaves_no_partial_cell_and_the_rerun_computes_only_the_rest(serial_42, tmp_path):
    proc = subprocess.Popen(_cli(tmp_path), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sw = sweep.chapter_sweep("frog_4_2", "closed_form", "smoke", "cpu", root=str(tmp_path))
    try:
        tag, pid = _wait_for_running_claim(sw.store, proc)
        os.kill(pid, signal.SIGKILL)
        out = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    states = {s.tag: s for s in sw.status()}
    killed = states[tag]
    assert killed.state == "failed" and "worker died" in killed.detail and Path(killed.log).exists()
    assert not sw.store.result_dir(tag).exists()  # no partial cell
    assert f"failed   {tag}" in sweep.format_status(list(states.values()))
    done_before = {t for t, s in states.items() if s.state == "done"}
    assert len(done_before) < 6
    before = len(_starts(sw.store))
    res = sw.run(sweep.LocalExecutor(workers=2), progress=False, poll=0.2)
    assert sorted(_starts(sw.store)[before:]) == sorted(set(states) - done_before)
    assert not list(sw.store.folder.glob(".tmp-*")) and not list(sw.store.folder.glob("*.claim"))
    _assert_equal_to_serial(res, serial_42)


def test_two_sweeps_started_at_once_compute_every_cell_once(serial_42, tmp_path):
    procs = [subprocess.Popen(_cli(tmp_path), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    sw = sweep.chapter_sweep("frog_4_2", "closed_form", "smoke", "cpu", root=str(tmp_path))
    starts = _starts(sw.store)
    assert sorted(starts) == sorted(t.tag for t in sw.tasks)  # every cell computed exactly once
    assert not list(sw.store.folder.glob(".tmp-*")) and not list(sw.store.folder.glob("*.claim"))
    res = frog_4_2.CHAPTER.run("closed_form", "smoke", "cpu", root=str(tmp_path))
    assert res.cached
    _assert_equal_to_serial(res, serial_42)


def test_pipeline_executor_options_need_an_executor():
    from frogcore import pipeline

    with pytest.raises(SystemExit, match="--workers needs --executor"):
        pipeline.main(["execute", "notebooks/frog_4_1.ipynb", "--workers", "2"])
    with pytest.raises(SystemExit, match="--workers applies to --executor local only"):
        pipeline.main(["execute", "notebooks/frog_4_1.ipynb", "--executor", "slurm", "--workers", "2"])
