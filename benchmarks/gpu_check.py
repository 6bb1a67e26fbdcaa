"""The GPU check in one command: tests, notebooks and benchmarks on CUDA, one report, under 8 minutes.

    benchmarks/gpu_check.sh                       # = python benchmarks/gpu_check.py --out results/gpu_check
    benchmarks/gpu_check.sh --phases pytest bench_distributed --budget 300

On a machine without a CUDA GPU it prints that there is none and exits 0 without running or writing
anything. On a CUDA machine it runs these phases, one subprocess each, under a time budget (``--budget``
seconds in all, default 460, split by :data:`SHARES`; a phase that overruns its share is killed and
reported as ``timeout``, later phases keep their shares):

``pytest``            the test suite with ``FROG_TEST_DEVICE=cuda`` (:data:`TEST_DEVICE_ENV`): tests that take
                      a device read it and put their tensors on CUDA. ``tests/test_notebooks.py`` and
                      ``tests/test_book.py`` are left out (the notebooks run in the next phase, on CUDA; the
                      book build has nothing to do with the GPU).
``notebooks``         every notebook at the smoke profile on CUDA:
                      ``python -m frogcore.pipeline execute --profile smoke --device cuda``, with
                      ``FROG_RESULTS_DIR`` pointing into the report folder so that committed results stay as
                      they are.
``bench_engines``     ``benchmarks/bench_engines.py --device cuda``: bp / sim / fwd-vmap / fwd-loop at K = 1, 16,
                      64 on FC-1024, ResNet18 and the ViT (``--engine-ks`` changes the K grid).
``bench_fomoh``       ``benchmarks/bench_fomoh.py`` (the FoMoH-KD step cost in forward passes); passed
                      ``--device cuda`` only if the script has that option, otherwise its numbers are CPU
                      numbers of the GPU machine and the report says so.
``bench_distributed`` ``benchmarks/bench_distributed.py --device cuda``: tangent-parallel step times with 1 and
                      all visible GPUs (NCCL).

The report is written to ``--out`` (default ``results/gpu_check/``): ``report.md`` (machine, phases with
status and time, the benchmark tables) and ``report.json`` (the same data), plus each phase's full log and
the benchmarks' own tables. ``--dry-run`` writes the report with the planned commands without running
them; ``--fake-devices "NAME:GB,..."`` pretends those GPUs exist (for testing the report on a CPU).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "gpu_check"
TEST_DEVICE_ENV = "FROG_TEST_DEVICE"
PHASES = ("pytest", "notebooks", "bench_engines", "bench_fomoh", "bench_distributed")
#: share of the budget each phase may use (the budget is the 8-minute limit minus a margin)
SHARES = {"pytest": 0.26, "notebooks": 0.26, "bench_engines": 0.30, "bench_fomoh": 0.07, "bench_distributed": 0.11}
DEFAULT_BUDGET_S = 460.0
LIMIT_S = 480.0
TAIL_CHARS = 4000


@dataclass
class Phase:
    name: str
    cmd: list[str]
    timeout_s: float
    env: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # label -> path written by the command
    note: str = ""


@dataclass
class PhaseResult:
    name: str
    cmd: list[str]
    status: str  # ok | failed | timeout | skipped | dry-run
    returncode: int | None
    seconds: float
    timeout_s: float
    note: str = ""
    summary: str = ""
    output_tail: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- devices

def detect_devices() -> list[dict]:
    """The visible CUDA devices as ``{"index", "name", "memory_gb", "capability"}`` (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}"})
    return out


def parse_fake_devices(spec: str) -> list[dict]:
    """``"NAME:GB,NAME:GB"`` (``:GB`` optional) as a device list like :func:`detect_devices`'s."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"fake_devices must be 'NAME[:GB],...'; got {spec!r}")
    out = []
    for i, item in enumerate(s.strip() for s in spec.split(",")):
        name, _, mem = item.partition(":")
        if not name:
            raise ValueError(f"fake_devices entry {i} has no name: {spec!r}")
        try:
            memory = float(mem) if mem else 0.0
        except ValueError:
            raise ValueError(f"fake_devices entry {item!r}: memory must be a number of GB") from None
        out.append({"index": i, "name": name, "memory_gb": memory, "capability": "fake"})
    return out


# ----------------------------------------------------------------------------- plan and run

def _script_has_option(script: Path, option: str) -> bool:
    try:
        return f'"{option}"' in script.read_text()
    except OSError:
        return False


def plan(devices: list[dict], out: Path, *, python: str = sys.executable, budget_s: float = DEFAULT_BUDGET_S,
         phases: tuple[str, ...] = PHASES, engine_ks: tuple[int, ...] = (1, 16, 64)) -> list[Phase]:
    """The commands of the check, in order, each with its share of ``budget_s``."""
    if not devices:
        raise ValueError("plan needs at least one CUDA device")
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise ValueError(f"phases contains {unknown}, which are not valid; allowed values: {', '.join(PHASES)}")
    if not budget_s > 0:
        raise ValueError(f"budget_s must be positive; got {budget_s!r}")
    out = Path(out)
    bench = ROOT / "benchmarks"
    result = []
    for name in phases:
        t = SHARES[name] * budget_s
        if name == "pytest":
            result.append(Phase(name, [python, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider",
                                       "--ignore=tests/test_notebooks.py", "--ignore=tests/test_book.py",
                                       f"--junitxml={out / 'pytest.xml'}"], t, env={TEST_DEVICE_ENV: "cuda"},
                                artifacts={"junit": str(out / "pytest.xml")}))
        elif name == "notebooks":
            result.append(Phase(name, [python, "-m", "frogcore.pipeline", "execute", "--profile", "smoke",
                                       "--device", "cuda"], t,
                                env={"FROG_RESULTS_DIR": str(out / "smoke-results")},
                                note="executed notebooks go to book/executed/; their results to the report folder"))
        elif name == "bench_engines":
            result.append(Phase(name, [python, str(bench / "bench_engines.py"), "--device", "cuda",
                                       "--methods", "bp", "sim", "fwd-vmap", "fwd-loop",
                                       "--ks", *map(str, engine_ks), "--reps", "3", "--timeout", "60",
                                       "--markdown", str(out / "bench_engines.md"),
                                       "--json", str(out / "bench_engines.json")], t,
                                artifacts={"table": str(out / "bench_engines.md")}))
        elif name == "bench_fomoh":
            script = bench / "bench_fomoh.py"
            cuda = _script_has_option(script, "--device")
            cmd = [python, str(script), "--repeats", "5"] + (["--device", "cuda"] if cuda else [])
            result.append(Phase(name, cmd, t, note="" if cuda else
                                "bench_fomoh.py has no --device option: these are CPU numbers of the GPU machine"))
        else:
            result.append(Phase(name, [python, str(bench / "bench_distributed.py"), "--device", "cuda",
                                       "--reps", "5", "--out", str(out / "bench_distributed.csv"),
                                       "--markdown", str(out / "bench_distributed.md")], t,
                                note=f"W = 1 .. {len(devices)} GPUs (NCCL)",
                                artifacts={"table": str(out / "bench_distributed.md"),
                                           "csv": str(out / "bench_distributed.csv")}))
    return result


def run_phase(phase: Phase, log_dir: Path, *, dry_run: bool = False) -> PhaseResult:
    """Run one phase in its own process group; kill the group when it overruns ``phase.timeout_s``."""
    base = dict(name=phase.name, cmd=phase.cmd, timeout_s=phase.timeout_s, note=phase.note,
                artifacts=dict(phase.artifacts))
    if dry_run:
        return PhaseResult(status="dry-run", returncode=None, seconds=0.0, **base)
    if phase.timeout_s <= 0:
        return PhaseResult(status="skipped", returncode=None, seconds=0.0, summary="no time left in the budget",
                           **base)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{phase.name}.log"
    env = dict(os.environ, **phase.env)
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(phase.cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=phase.timeout_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the phase's own process group only
            proc.wait()
            rc, status = None, "timeout"
    seconds = time.monotonic() - t0
    text = log.read_text(errors="replace")
    base["artifacts"]["log"] = str(log)
    return PhaseResult(status=status, returncode=rc, seconds=seconds, output_tail=text[-TAIL_CHARS:],
                       summary=summarize(phase.name, text, phase.artifacts), **base)


def summarize(name: str, output: str, artifacts: dict[str, str]) -> str:
    """A one-line summary of a phase's outcome from its output and artifacts."""
    if name == "pytest":
        junit = Path(artifacts.get("junit", ""))
        if junit.is_file():
            try:
                root = ET.parse(junit).getroot()
                suites = [root] if root.tag == "testsuite" else list(root)
                c = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
                return (f"{c['tests']} tests: {c['tests'] - c['failures'] - c['errors'] - c['skipped']} passed, "
                        f"{c['failures']} failed, {c['errors']} errors, {c['skipped']} skipped")
            except ET.ParseError:
                pass
        m = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?)\s*=*$", output, flags=re.M)
        return m[-1] if m else ""
    if name == "notebooks":
        done = re.findall(r"^executed (\S+)", output, flags=re.M)
        return f"{len(done)} notebooks executed" + (f": {', '.join(done)}" if done else "")
    lines = [ln for ln in output.splitlines() if re.search(r"PASS|FAIL|forward passes|speed-up", ln)]
    return " / ".join(ln.strip() for ln in lines[-3:])


# ----------------------------------------------------------------------------- report

def machine_info(devices: list[dict]) -> dict:
    import torch

    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cpu_cores": os.cpu_count(), "gpus": devices}


def write_report(out: Path, info: dict, results: list[PhaseResult], *, budget_s: float) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.json`` into ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    total = sum(r.seconds for r in results)
    ran = [r for r in results if r.status != "dry-run"]
    ok = bool(ran) and all(r.status == "ok" for r in ran)
    data = {"machine": info, "budget_s": budget_s, "limit_s": LIMIT_S, "total_s": total,
            "within_limit": total <= LIMIT_S, "all_ok": ok, "phases": [asdict(r) for r in results]}
    gpus = info.get("gpus", [])
    gpu_text = ", ".join(f"{g['name']} ({g['memory_gb']} GB)" for g in gpus) or "none"
    lines = [
        "# GPU check", "",
        f"- date: {info.get('date')}; host: {info.get('host')}",
        f"- GPUs ({len(gpus)}): {gpu_text}",
        f"- torch {info.get('torch')}, CUDA {info.get('cuda')}, Python {info.get('python')}, "
        f"{info.get('cpu_cores')} CPU cores",
        f"- total {total:.0f} s of the {LIMIT_S:.0f} s limit (budget {budget_s:.0f} s): "
        + ("within the limit" if total <= LIMIT_S else "OVER the limit"),
        "- outcome: " + ("dry run: nothing was run" if not ran else "every phase ok" if ok else
                         "NOT every phase ok: see the phases below"), "",
        "| phase | status | seconds | limit s | summary |", "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.timeout_s:.0f} | "
                     f"{r.summary.replace('|', '/')} |")
    for r in results:
        lines += ["", f"## {r.name}", "", "```", " ".join(r.cmd), "```"]
        if r.note:
            lines += ["", f"Note: {r.note}"]
        table = r.artifacts.get("table")
        if table and Path(table).is_file():
            lines += ["", Path(table).read_text().rstrip()]
        elif r.output_tail and r.status != "ok":
            lines += ["", "Last output:", "", "```", r.output_tail[-2000:].rstrip(), "```"]
        elif r.name == "bench_fomoh" and r.output_tail:
            lines += ["", "```", r.output_tail.rstrip(), "```"]
    md, js = out / "report.md", out / "report.json"
    md.write_text("\n".join(lines) + "\n")
    js.write_text(json.dumps(data, indent=1))
    return md, js


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="report folder (default results/gpu_check/)")
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all phases together")
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    ap.add_argument("--engine-ks", type=int, nargs="+", default=[1, 16, 64], help="K grid of bench_engines")
    ap.add_argument("--dry-run", action="store_true", help="write the report with the planned commands only")
    ap.add_argument("--fake-devices", default=None, help="pretend these GPUs exist: 'NAME:GB,...' (testing)")
    args = ap.parse_args(argv)
    if not args.budget > 0:
        ap.error(f"--budget must be positive; got {args.budget}")
    if any(k < 1 for k in args.engine_ks):
        ap.error("--engine-ks must be positive integers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    devices = parse_fake_devices(args.fake_devices) if args.fake_devices else detect_devices()
    if not devices:
        print("gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to check, "
              "no report written.")
        return 0
    out = Path(args.out)
    phases = plan(devices, out, budget_s=args.budget, phases=tuple(args.phases), engine_ks=tuple(args.engine_ks))
    print(f"gpu_check: {len(devices)} GPU(s): {', '.join(d['name'] for d in devices)}; "
          f"{len(phases)} phases, budget {args.budget:.0f} s; report in {out}", flush=True)
    results: list[PhaseResult] = []
    start = time.monotonic()
    spare = 0.0
    for phase in phases:
        left = args.budget - (time.monotonic() - start)
        phase.timeout_s = min(phase.timeout_s + spare, left)  # unused time of earlier phases carries over
        r = run_phase(phase, out / "logs", dry_run=args.dry_run)
        spare = max(0.0, phase.timeout_s - r.seconds) if not args.dry_run else 0.0
        results.append(r)
        print(f"  {r.name:18s} {r.status:8s} {r.seconds:7.1f} s  {r.summary}", flush=True)
    md, js = write_report(out, machine_info(devices), results, budget_s=args.budget)
    print(f"gpu_check: report written to {md} and {js}")
    return 0 if all(r.status in ("ok", "dry-run") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
