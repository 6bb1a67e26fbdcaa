"""Faults: killed parents leave no workers behind, misspelled notebook parameters fail before running."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from frogcore.pipeline import NOTEBOOK_DIR, execute_notebook


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in state  # a zombie has exited


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_parent_leaves_no_pool_workers(tmp_path, sig):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import time
        from frogcore.parallel import process_pool

        if __name__ == "__main__":
            with process_pool(2) as ex:
                futures = [ex.submit(time.sleep, 120) for _ in range(2)]
                time.sleep(1.0)
                while len(ex._processes) < 2:
                    time.sleep(0.1)
                print(" ".join(map(str, ex._processes)), flush=True)
                futures[0].result()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        proc.send_signal(sig)
        proc.wait(timeout=20)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if _alive(p)], "pool workers outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in pids if "pids" in locals() else []:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_misspelled_notebook_parameter_fails_before_running(tmp_path):
    with pytest.raises(ValueError, match=r"frog_4_1.ipynb has no parameter 'num_sample'; its parameters: .*num_samples"):
        execute_notebook(NOTEBOOK_DIR / "frog_4_1.ipynb", tmp_path / "out.ipynb", profile="smoke", device="cpu",
                         parameters={"num_sample": 5})
    assert not (tmp_path / "out.ipynb").exists()
