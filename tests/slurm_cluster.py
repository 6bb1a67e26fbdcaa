"""A real single-node SLURM cluster for the tests (a pytest plugin: ``pytest_plugins = ["slurm_cluster"]``).

The session fixture :func:`slurm_cluster` installs Debian's ``slurmctld``, ``slurmd``, ``slurm-client`` and
``munge`` when they are missing (``apt-get install``, after ``apt-get update`` if the first attempt fails;
needs root), writes a munge key and a minimal ``slurm.conf`` into a temporary folder
(``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``, ``SelectType=select/cons_tres``, one node
with 2 CPUs named after this host, partition ``debug``), starts ``munged``, ``slurmctld`` and ``slurmd`` in
the foreground on free ports, points ``SLURM_CONF`` at the file for the session (``sbatch``, ``squeue``,
submitit and the jobs all use it), and at the end cancels the cluster's jobs and stops the three daemons by
the PIDs it started. Nothing touches a system-wide SLURM or munge installation.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
_SBIN = "/usr/sbin:/sbin:/usr/bin:/bin"
CPUS = 2
PARTITION = "debug"


def _which(exe: str) -> str | None:
    return shutil.which(exe) or shutil.which(exe, path=_SBIN)


def ensure_packages() -> None:
    """Install the SLURM and munge packages when one of their programs is missing."""
    missing = [exe for exe in ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "munged") if not _which(exe)]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(f"SLURM programs missing ({', '.join(missing)}) and not root: run "
                    f"`sudo apt-get install -y {' '.join(PACKAGES)}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", *PACKAGES]
    out = subprocess.run(install, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
        out = subprocess.run(install, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"could not install {' '.join(PACKAGES)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    """A running cluster: its folder, ``slurm.conf``, node name, partition and the daemons' processes."""

    root: Path
    conf: Path
    node: str
    partition: str = PARTITION
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    sock_dir: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def cmd(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``squeue``, ``scancel``, ``sinfo``) against this cluster."""
        exe = _which(args[0]) or args[0]
        out = subprocess.run([exe, *args[1:]], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
        return out

    def jobs(self) -> dict[str, str]:
        """``{job id: state}`` of every queued or running job (array tasks expanded)."""
        out = self.cmd("squeue", "-h", "-r", "-o", "%i|%T").stdout
        return dict(line.split("|", 1) for line in out.split() if "|" in line)

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until no job is queued or running."""
        end = time.monotonic() + timeout
        while self.jobs():
            if time.monotonic() > end:
                raise TimeoutError(f"jobs still queued after {timeout} s: {self.jobs()}")
            time.sleep(0.3)

    def log(self, name: str) -> str:
        path = self.root / "log" / name
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for d in ("munge", "state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        # munged wants every folder above its socket searchable by all (pytest's temp folders are private), and
        # UNIX socket paths are short: the socket lives in its own folder under the system's temp folder
        sock_dir = self.sock_dir = Path(tempfile.mkdtemp(prefix="frog-munge-"))
        sock_dir.chmod(0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = sock_dir / "munge.socket"
        self._spawn("munged", ["--foreground", f"--key-file={key}", f"--socket={sock}",
                               f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}",
                               f"--seed-file={self.root / 'munge' / 'munged.seed'}"])
        self._wait(lambda: sock.exists(), 15, "munged did not create its socket", "munged.out")
        ctld_port, d_port = _free_port(), _free_port()
        self.conf.write_text(f"""\
ClusterName=frogtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=2
MinJobAge=300
InactiveLimit=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={CPUS} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        self._spawn("slurmctld", ["-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["-D", "-f", str(self.conf), "-N", self.node])

        def idle():
            out = self.cmd("sinfo", "-h", "-N", "-o", "%T", check=False)
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated")

        self._wait(idle, 60, "the SLURM node did not come up", "slurmctld.log")

    def _spawn(self, name: str, args: list[str]) -> None:
        exe = _which(name)
        out = open(self.root / "log" / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen([exe, *args], stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        out.close()

    def _wait(self, ok, timeout: float, what: str, log: str) -> None:
        end = time.monotonic() + timeout
        while not ok():
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if dead or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"{what} (exited: {dead}); {log}:\n{self.log(log)[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Cancel the cluster's jobs, then stop slurmd, slurmctld and munged (the processes this object started)."""
        if self.procs.get("slurmctld") is not None and self.procs["slurmctld"].poll() is None:
            self.cmd("scancel", "--full", "-u", _user(), check=False)
            end = time.monotonic() + 15
            while time.monotonic() < end:
                try:
                    if not self.jobs():
                        break
                except (RuntimeError, subprocess.SubprocessError):
                    break
                time.sleep(0.3)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if self.sock_dir is not None:
            shutil.rmtree(self.sock_dir, ignore_errors=True)


def _user() -> str:
    import getpass

    return getpass.getuser()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node SLURM cluster; ``SLURM_CONF`` points at it for the whole session."""
    ensure_packages()
    for exe in ("sbatch", "squeue", "scancel", "sinfo", "srun"):  # /usr/sbin may be missing from a user's PATH
        if shutil.which(exe) is None and _which(exe):
            os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + str(Path(_which(exe)).parent)
    root = tmp_path_factory.mktemp("slurm")
    cluster = SlurmCluster(root, root / "slurm.conf", socket.gethostname().split(".")[0])
    old = os.environ.get("SLURM_CONF")
    cluster.start()
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old

