"""benchmarks/gpu_check.py: the CPU-only answer, and its CUDA path as far as a CPU allows (argument parsing,
the plan of commands, running phases with a time limit, the report) with a fake device list."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gc = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gc  # dataclasses look their module up by name
_spec.loader.exec_module(gc)

FAKE = "Fake H200:139.8,Fake H200:139.8"


def test_without_a_gpu_it_says_so_exits_0_and_writes_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gc, "detect_devices", lambda: [])
    out = tmp_path / "report"
    assert gc.main(["--out", str(out)]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out
    assert not out.exists()


def test_the_shell_command_on_a_machine_without_visible_gpus(tmp_path):
    out = tmp_path / "report"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)  # no GPU visible on any machine
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA GPU" in proc.stdout and not out.exists()


def test_arguments():
    a = gc.parse_args([])
    assert Path(a.out) == ROOT / "results" / "gpu_check" and a.budget == gc.DEFAULT_BUDGET_S < gc.LIMIT_S == 480
    assert a.phases == list(gc.PHASES) and not a.dry_run and a.fake_devices is None
    a = gc.parse_args(["--phases", "pytest", "bench_distributed", "--budget", "100", "--engine-ks", "1", "4"])
    assert a.phases == ["pytest", "bench_distributed"] and a.budget == 100 and a.engine_ks == [1, 4]
    for bad in (["--phases", "docs"], ["--budget", "0"], ["--engine-ks", "0"]):
        with pytest.raises(SystemExit):
            gc.parse_args(bad)


def test_fake_devices():
    devs = gc.parse_fake_devices(FAKE)
    assert [d["name"] for d in devs] == ["Fake H200", "Fake H200"] and devs[1]["index"] == 1
    assert devs[0]["memory_gb"] == 139.8 and gc.parse_fake_devices("X")[0]["memory_gb"] == 0.0
    for bad in ("", "A:lots", ":80"):
        with pytest.raises(ValueError, match="fake_devices"):
            gc.parse_fake_devices(bad)


def test_plan_runs_everything_on_cuda_within_the_budget(tmp_path):
    devs = gc.parse_fake_devices(FAKE)
    phases = {p.name: p for p in gc.plan(devs, tmp_path, budget_s=gc.DEFAULT_BUDGET_S)}
    assert list(phases) == list(gc.PHASES)
    assert abs(sum(gc.SHARES.values()) - 1) < 1e-9
    assert sum(p.timeout_s for p in phases.values()) <= gc.DEFAULT_BUDGET_S + 1e-6 < gc.LIMIT_S
    py = phases["pytest"]
    assert py.env == {gc.TEST_DEVICE_ENV: "cuda"} and gc.TEST_DEVICE_ENV == "FROG_TEST_DEVICE"
    assert "--ignore=tests/test_notebooks.py" in py.cmd and py.cmd[1:4] == ["-m", "pytest", "tests"]
    nb = phases["notebooks"]
    assert nb.cmd[1:] == ["-m", "frogcore.pipeline", "execute", "--profile", "smoke", "--device", "cuda"]
    assert Path(nb.env["FROG_RESULTS_DIR"]).parent == tmp_path  # committed results are not touched
    eng = phases["bench_engines"].cmd
    assert eng[eng.index("--device") + 1] == "cuda" and {"fwd-vmap", "fwd-loop", "bp", "sim"} <= set(eng)
    assert eng[eng.index("--ks") + 1: eng.index("--ks") + 4] == ["1", "16", "64"]
    dist = phases["bench_distributed"]
    assert dist.cmd[dist.cmd.index("--device") + 1] == "cuda" and "2 GPUs" in dist.note
    fomoh = phases["bench_fomoh"]
    has_device = '"--device"' in (ROOT / "benchmarks" / "bench_fomoh.py").read_text()
    assert ("--device" in fomoh.cmd) == has_device and bool(fomoh.note) != has_device
    with pytest.raises(ValueError, match="device"):
        gc.plan([], tmp_path)
    with pytest.raises(ValueError, match="phases"):
        gc.plan(devs, tmp_path, phases=("docs",))


def test_dry_run_with_fake_devices_writes_the_report(tmp_path, capsys):
    out = tmp_path / "gpu_check"
    assert gc.main(["--fake-devices", FAKE, "--dry-run", "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert [p["name"] for p in data["phases"]] == list(gc.PHASES)
    assert {p["status"] for p in data["phases"]} == {"dry-run"} and not data["all_ok"]
    assert [g["name"] for g in data["machine"]["gpus"]] == ["Fake H200", "Fake H200"]
    md = (out / "report.md").read_text()
    assert "GPUs (2): Fake H200 (139.8 GB)" in md and "dry run: nothing was run" in md
    assert "frogcore.pipeline execute --profile smoke --device cuda" in md
    assert "report written" in capsys.readouterr().out


def test_phases_run_with_a_time_limit(tmp_path):
    ok = gc.run_phase(gc.Phase("bench_fomoh", [sys.executable, "-c", "print('K=3 step = 28.5 forward passes')"],
                               30), tmp_path)
    assert ok.status == "ok" and ok.returncode == 0 and "28.5 forward passes" in ok.summary
    assert Path(ok.artifacts["log"]).read_text().strip() == "K=3 step = 28.5 forward passes"
    bad = gc.run_phase(gc.Phase("notebooks", [sys.executable, "-c", "import sys; sys.exit(3)"], 30), tmp_path)
    assert bad.status == "failed" and bad.returncode == 3
    t0 = time.monotonic()
    slow = gc.run_phase(gc.Phase("pytest", [sys.executable, "-c", "import time; print('started', flush=True); "
                                                                  "time.sleep(60)"], 1.5), tmp_path)
    assert slow.status == "timeout" and slow.returncode is None and time.monotonic() - t0 < 20
    assert "started" in slow.output_tail
    assert gc.run_phase(gc.Phase("pytest", ["false"], 0), tmp_path).status == "skipped"


def test_report_with_results_and_summaries(tmp_path):
    junit = tmp_path / "pytest.xml"
    junit.write_text('<testsuites><testsuite tests="10" failures="1" errors="0" skipped="2"/></testsuites>')
    assert gc.summarize("pytest", "", {"junit": str(junit)}) == "10 tests: 7 passed, 1 failed, 0 errors, 2 skipped"
    assert gc.summarize("pytest", "=== 5 passed, 1 warning in 3.2s ===", {}) == "5 passed, 1 warning in 3.2s"
    assert gc.summarize("notebooks", "executed a.ipynb [smoke, cuda] in 3 s\nexecuted b.ipynb", {}) \
        == "2 notebooks executed: a.ipynb, b.ipynb"
    table = tmp_path / "bench.md"
    table.write_text("| K | W | s/step |\n|---|---|---|\n| 64 | 2 | 0.0123 |\n")
    results = [
        gc.PhaseResult("pytest", ["pytest"], "ok", 0, 100.0, 120.0, summary="10 tests: 10 passed"),
        gc.PhaseResult("bench_distributed", ["bench"], "ok", 0, 30.0, 50.0, artifacts={"table": str(table)}),
        gc.PhaseResult("notebooks", ["nb"], "timeout", None, 400.0, 400.0, output_tail="Traceback: stuck"),
    ]
    info = {"date": "today", "host": "h", "torch": "2.x", "cuda": "12.4", "python": "3.11", "cpu_cores": 16,
            "gpus": gc.parse_fake_devices("Fake:80")}
    md, js = gc.write_report(tmp_path / "r", info, results, budget_s=460)
    text = md.read_text()
    assert "| 64 | 2 | 0.0123 |" in text and "Traceback: stuck" in text and "OVER the limit" in text
    assert "NOT every phase ok" in text
    data = json.loads(js.read_text())
    assert data["total_s"] == 530.0 and not data["within_limit"] and not data["all_ok"]
    assert [p["status"] for p in data["phases"]] == ["ok", "ok", "timeout"]
