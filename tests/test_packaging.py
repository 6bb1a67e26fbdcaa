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
