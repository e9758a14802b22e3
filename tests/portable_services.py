"""Beam's portable job service and an external SDK worker pool on local ports, as a cluster runs a job.

Dataflow (runner v2), Flink and Spark run a Python pipeline through Beam's portable job API, with SDK
workers in other processes and other working directories: what does not pickle, is not importable on
the workers, or depends on the launcher's current directory fails there. These services reproduce that
on one machine (BUILD.md, "Checking a Beam job the way a cluster runs it").
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60


class ServicesError(RuntimeError):
    """The job service or the worker pool did not start; carries the tail of its log."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def worker_env() -> dict:
    """This checkout first on the path (the venv's editable install may point at another tree), and the
    interpreter's directory first on PATH: the worker pool starts each SDK worker as plain `python`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


class PortableServices:
    """`local_job_service_main` and `worker_pool_main`, each in its own process group under `work_dir`;
    `stop()` ends both groups (the SDK workers are in the pool's group)."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.procs: list[subprocess.Popen] = []
        self.job_port = self.worker_port = None

    def _spawn(self, name: str, args: list[str], cwd: Path) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        log = open(self.work_dir / f"{name}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m"] + args, cwd=cwd, env=worker_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def log_tail(self, name: str, lines: int = 5) -> str:
        path = self.work_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def start(self) -> "PortableServices":
        port_file = self.work_dir / "job_service.port"
        self._spawn("job_service", ["apache_beam.runners.portability.local_job_service_main", "--port", "0",
                                    "--port_file", str(port_file)], self.work_dir / "job_service")
        self.worker_port = _free_port()
        self._spawn("worker_pool", ["apache_beam.runners.worker.worker_pool_main",
                                    "--service_port", str(self.worker_port)], self.work_dir / "workers")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for proc, name in zip(self.procs, ("job_service", "worker_pool")):
                if proc.poll() is not None:
                    raise ServicesError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            if self.job_port is None and port_file.exists() and port_file.read_text().strip():
                self.job_port = int(port_file.read_text())
            if self.job_port and _accepts(self.job_port) and _accepts(self.worker_port):
                return self
            time.sleep(0.2)
        raise ServicesError(f"not listening after {START_TIMEOUT_S} s: {self.log_tail('job_service')} "
                            f"{self.log_tail('worker_pool')}")

    def pipeline_args(self) -> list[str]:
        return ["--runner=PortableRunner", f"--job_endpoint=localhost:{self.job_port}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{self.worker_port}"]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            try:  # SDK workers left in the group after its leader ended
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def run_job(module: str, args: list[str], cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` from cwd, as a user launches it; a hung job fails after timeout_s."""
    return subprocess.run([sys.executable, "-m", module] + args, cwd=cwd, env=worker_env(), capture_output=True,
                          text=True, timeout=timeout_s)
