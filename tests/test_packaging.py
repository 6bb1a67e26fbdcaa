"""One source of dependencies (pyproject.toml), licence and citation, and the public face of frogcore."""
import re
import subprocess
import sys

import tomllib
import yaml

from frogcore.results import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_environment_yml_is_derived_from_pyproject():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [d for d in env["dependencies"] if isinstance(d, dict)]
    # conda brings only the interpreter and PyTorch; everything else comes from pyproject through pip
    assert {re.split(r"[=<>]", d)[0] for d in conda} <= {"python", "pytorch", "cpuonly", "pip"}
    assert pip == [{"pip": ["-e .[dev]"]}]
    torch_req = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    assert [d for d in conda if d.startswith("pytorch")] == ["py" + torch_req[0]]


def test_env_script_installs_pyproject_and_a_torch_that_satisfies_it():
    script = (REPO_ROOT / "scripts" / "env.sh").read_text()
    assert 'pip install -q -e "$root[$extras]"' in script
    default_torch = re.search(r'torch_req=\$\{FROG_TORCH:-"torch==([0-9.]+)"\}', script).group(1)
    minimum = re.search(r'"torch>=([0-9.]+)"', (REPO_ROOT / "pyproject.toml").read_text()).group(1)
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))
    assert as_tuple(default_torch) >= as_tuple(minimum)


def test_licence_and_citation():
    assert "MIT License" in (REPO_ROOT / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"] == "MIT"
    cff = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    dois = {i["value"] for r in cff["references"] for i in r["identifiers"]}
    assert dois == {"10.48550/arXiv.2410.17764", "10.48550/arXiv.2408.10419"}
    assert cff["license"] == "MIT"


def test_the_public_face_exports_the_verbs():
    out = subprocess.run([sys.executable, "-c", "from frogcore import make_engine, forward_step, optimize, "
                          "directional_derivatives, Approach, sample_tangents, aggregate, project; print('ok')"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_ruff_is_configured_and_part_of_the_test_command():
    assert PYPROJECT["tool"]["ruff"]["line-length"] == 120
    make = (REPO_ROOT / "Makefile").read_text()
    test_rule = make.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check ." in test_rule and "pytest" in test_rule
    assert (REPO_ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_env_script_repoints_a_reused_environment_at_this_checkout(tmp_path):
    """A cached environment made for another clone (CI reuses one per dependency spec) must be pointed at this
    checkout; the check must not be fooled by ./frogcore in the working directory."""
    import hashlib
    import os

    other = tmp_path / "other-clone"
    (other / "frogcore").mkdir(parents=True)
    (other / "frogcore" / "__init__.py").write_text("")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "target").write_text(str(other))
    log = venv / "pip.log"
    # a stand-in interpreter: imports frogcore from the folder named in `target`; its "pip install -e X" logs and
    # retargets, as a real editable install would
    (venv / "bin" / "python").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -m ] && [ "$2" = pip ]; then echo "$@" >> {log}; '
        f'for a; do last=$a; done; printf %s "$last" > {venv}/target; exit 0; fi\n'
        f'PYTHONPATH=$(cat {venv}/target) exec {sys.executable} "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    spec = hashlib.sha256((REPO_ROOT / "pyproject.toml").read_bytes()
                          + (REPO_ROOT / "scripts" / "env.sh").read_bytes()).hexdigest()[:16]
    (venv / f".frog-env-dev-{spec}").touch()
    env_sh = lambda: subprocess.run(["bash", "scripts/env.sh", "dev"], cwd=REPO_ROOT, capture_output=True, text=True,
                                    env={**os.environ, "FROG_VENV": str(venv)}, timeout=60)
    out = env_sh()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(venv)
    assert log.read_text().split() == ["-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO_ROOT)]
    # already pointing here: nothing is reinstalled
    log.unlink()
    out = env_sh()
    assert out.returncode == 0 and not log.exists(), out.stderr
