"""Sweeps and notebook batches on a REAL single-node SLURM cluster (tests/slurm_cluster.py starts slurmctld,
slurmd and munged from Debian's packages; nothing is mocked): a smoke sweep of the 4.4 network chapter as an
array job merges into the serial run's tables byte for byte; a cancelled job (scancel) and a SIGKILLed worker
leave no partial cell, the re-run submits only the missing cells, and the result equals the uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import nbformat
import pytest

from frogcore import pipeline, sweep
from frogcore.experiments import frog_4_4

pytest_plugins = ["slurm_cluster"]

DETERMINISTIC = ("summary", "history")  # 4.4's `times` table holds wall-clock times


@pytest.fixture(scope="module")
def serial_44(tmp_path_factory):
    """The uninterrupted serial 4.4 smoke training run (3 runs: BP, FG-mean k=2, FROG k=2 on FC-256)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FROG_CHECKPOINT_DIR", str(tmp_path_factory.mktemp("ckpt-serial")))
    try:
        return frog_4_4.CHAPTER.run("training", "smoke", "cpu", root=str(tmp_path_factory.mktemp("serial")))
    finally:
        mp.undo()


def _executor(cluster, **kw):
    return sweep.SlurmExecutor(partition=cluster.partition, time=10, cpus=1, **kw)


def _assert_equal_to_serial(res, serial):
    for t in DETERMINISTIC:
        assert res.paths[t].read_bytes() == serial.paths[t].read_bytes(), t
    a = json.loads((res.paths["summary"].parent / "training.meta.json").read_text())
    b = json.loads((serial.paths["summary"].parent / "training.meta.json").read_text())
    assert (a["key"], a["code_hash"]) == (b["key"], b["code_hash"])


def _starts(store):
    return [ln.split()[2] for ln in store.journal_path.read_text().splitlines() if ln.split()[1] == "start"]


def test_array_sweep_of_the_network_chapter_equals_the_serial_run(slurm_cluster, serial_44, tmp_path, monkeypatch):
    monkeypatch.setenv("FROG_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    sw = sweep.chapter_sweep("frog_4_4", "training", "smoke", "cpu", root=str(tmp_path / "res"))
    assert len(sw.tasks) == 3
    res = sw.run(_executor(slurm_cluster, parallelism=2), progress=False, poll=0.3)
    _assert_equal_to_serial(res, serial_44)
    assert frog_4_4.CHAPTER.run("training", "smoke", "cpu", root=str(tmp_path / "res")).cached
    # ONE array job of three tasks, at most two at once, its logs under the results folder
    scripts = list((sw.store.log_dir / "slurm").glob("*/*_submission.sh"))
    assert len(scripts) == 1
    script = scripts[0].read_text()
    assert "#SBATCH --array=0-2%2" in script and f"#SBATCH --partition={slurm_cluster.partition}" in script
    logs = sorted((sw.store.log_dir / "slurm").glob("*_*/*_log.out"))
    assert len(logs) == 3
    owners = [json.loads((sw.store.result_dir(t.tag) / "cell.meta.json").read_text())["owner"] for t in sw.tasks]
    assert all(o["job"] and "_" in o["job"] for o in owners)  # computed inside SLURM array tasks


def _catch_running(store, avoid=(), timeout=240):
    """Freeze (SIGSTOP) a worker caught holding a claim while its cell is unfinished; return (tag, owner)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for claim in list(store.folder.glob("*.claim")) if store.folder.exists() else []:
            tag = claim.name[: -len(".claim")]
            if tag in avoid:
                continue
            try:
                owner = json.loads(claim.read_text())
                os.kill(owner["pid"], signal.SIGSTOP)
            except (OSError, ValueError, KeyError):
                continue
            try:
                still = json.loads(claim.read_text()).get("token") == owner["token"]
            except (OSError, ValueError):
                still = False
            writing = store.result_dir(tag).exists() or any(store.folder.glob(f".tmp-{tag}-*"))
            if still and not writing:  # frozen before its result is written
                return tag, owner
            os.kill(owner["pid"], signal.SIGCONT)
        time.sleep(0.01)
    raise TimeoutError("no SLURM task was caught in the middle of a cell")


def test_scancel_and_sigkill_leave_no_partial_cell_and_the_rerun_submits_only_them(slurm_cluster, tmp_path,
                                                                                     monkeypatch):
    # 4 epochs instead of the smoke profile's 1: a cell must outlast the second or so SLURM takes from scancel's
    # SIGCONT (which resumes the frozen worker) to the SIGTERM that cancels it
    kw = dict(epochs=4)
    monkeypatch.setenv("FROG_CHECKPOINT_DIR", str(tmp_path / "ckpt-serial"))
    serial = frog_4_4.CHAPTER.run("training", "smoke", "cpu", root=str(tmp_path / "serial"), **kw)
    monkeypatch.setenv("FROG_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    sw = sweep.chapter_sweep("frog_4_4", "training", "smoke", "cpu", root=str(tmp_path / "res"), **kw)
    states = sw.run(_executor(slurm_cluster, parallelism=2), wait=False, progress=False)
    assert {s.state for s in states} <= {"queued", "running"}
    # a job cancelled in the middle of its cell (frozen first, so that it cannot finish before scancel)
    cancelled, owner = _catch_running(sw.store)
    slurm_cluster.cmd("scancel", owner["job"])
    # a worker killed with SIGKILL in the middle of its cell
    killed, victim = _catch_running(sw.store, avoid={cancelled})
    os.kill(victim["pid"], signal.SIGKILL)
    slurm_cluster.wait_idle(timeout=240)
    status = {s.tag: s for s in sw.status()}
    log = Path(sw.store.log_dir / "slurm" / owner["job"] / f"{owner['job']}_0_log.out")
    why = f"{status[cancelled]}\n{sw.store.journal_path.read_text()}\n{log.read_text()[-3000:] if log.exists() else ''}"
    assert status[cancelled].state == "failed" and "Cancelled" in status[cancelled].detail, why
    assert status[killed].state == "failed" and "worker died" in status[killed].detail, status[killed]
    for tag in (cancelled, killed):
        assert not sw.store.result_dir(tag).exists()  # no partial cell
        assert Path(status[tag].log).exists()  # the failure names its job's log
    others = [t for t in status if t not in (cancelled, killed)]
    assert [status[t].state for t in others] == ["done"]
    text = sweep.format_status(list(status.values()))
    assert "3 cells: 1 done, 2 failed" in text and status[cancelled].log in text
    # the re-run submits exactly the two missing cells, as one array job
    before_scripts = set((sw.store.log_dir / "slurm").glob("*/*_submission.sh"))
    before = len(_starts(sw.store))
    res = sw.run(_executor(slurm_cluster, parallelism=2), progress=False, poll=0.3)
    new_scripts = set((sw.store.log_dir / "slurm").glob("*/*_submission.sh")) - before_scripts
    assert len(new_scripts) == 1 and "#SBATCH --array=0-1%2" in next(iter(new_scripts)).read_text()
    assert sorted(_starts(sw.store)[before:]) == sorted([cancelled, killed])
    assert not list(sw.store.folder.glob(".tmp-*")) and not list(sw.store.folder.glob("*.claim"))
    _assert_equal_to_serial(res, serial)


def _notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "default"\ndevice = "auto"\nscale = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_notebook_batch_runs_papermill_inside_slurm_jobs(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("FROG_RESULTS_DIR", str(tmp_path / "res"))
    good = _notebook(tmp_path / "good.ipynb", 'import os\nprint("ran", profile, scale * 21, "job", '
                                              'os.environ["SLURM_JOB_ID"])')
    bad = _notebook(tmp_path / "bad.ipynb", 'raise RuntimeError("chapter broke")')
    with pytest.raises(pipeline.ChapterFailed, match=r"1 of 2 notebooks failed: bad: .*chapter broke.*log: "):
        pipeline.execute_all("smoke", "cpu", out_dir=tmp_path / "out", notebooks=[good, bad], book_profiles=False,
                             parameters={"scale": 2}, executor=_executor(slurm_cluster), progress=False)
    out = nbformat.read(str(tmp_path / "out" / "good.ipynb"), as_version=4)
    text = "".join(o.get("text", "") for o in out.cells[-1].outputs)
    assert text.startswith("ran smoke 42 job ")
    assert pipeline.notebook_failure(tmp_path / "out" / "good.ipynb") is None
    assert (tmp_path / "out" / "bad.failed.ipynb").exists()
    assert list((tmp_path / "res" / "_jobs" / "notebooks").glob("*/*_log.out"))
