"""A papermill parameter the notebook does not declare fails loudly (papermill itself only warns)."""
import pytest

from frogcore.experiments.runner import check_injected_parameters

PARAMS = 'device = "auto"\nprofile = "default"\nseed = 0\nnum_samples = None  # the profile\'s\n'


def test_a_misspelled_parameter_is_named_with_the_closest_declared_one():
    history = ["", PARAMS, '# Parameters\nprofile = "smoke"\nnum_sample = 5\n', "import x"]
    with pytest.raises(ValueError, match=r"unknown notebook parameter 'num_sample' \(did you mean 'num_samples'\?\);"
                                         r" this notebook's parameters: device, num_samples, profile, seed"):
        check_injected_parameters(history)


@pytest.mark.parametrize("history", [
    ["", PARAMS, '# Parameters\nprofile = "smoke"\nnum_samples = 5\nPAPERMILL_INPUT_PATH = "a"\n'],  # declared ones
    ["", PARAMS, "x = 1"],                                   # run by hand: nothing injected
    ['# Parameters\nfoo = 1\n'],                             # no parameters cell before the injected one
    [],
])
def test_declared_parameters_and_interactive_runs_pass(history):
    check_injected_parameters(history)


def test_outside_ipython_there_is_nothing_to_check():
    check_injected_parameters()


@pytest.mark.slow
def test_papermill_cli_with_a_misspelled_parameter_fails(tmp_path):
    import subprocess
    import sys

    from frogcore.pipeline import NOTEBOOK_DIR

    env = {**__import__("os").environ, "FROG_RESULTS_DIR": str(tmp_path / "results")}
    proc = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOK_DIR / "frog_geometry.ipynb"),
                           str(tmp_path / "out.ipynb"), "-k", "python3", "-p", "profile", "smoke", "-p", "device",
                           "cpu", "-p", "num_sample", "5"], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode != 0
    assert "unknown notebook parameter 'num_sample' (did you mean 'num_samples'?)" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.csv"))
