"""Process checks shared by the end-to-end serving tests: `make serve` as a subprocess, and nothing left behind."""
import contextlib
import signal
import subprocess
import sys
import time

import psutil

from local_serving.server import alive_pids, running_model_server_pids
from tests.conftest import REPO

READY_TIMEOUT_S = 240


def assert_gone(pids, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive_pids(pids):
        time.sleep(0.2)
    assert not alive_pids(pids), [(pid, command_of(pid)) for pid in alive_pids(pids)]


def command_of(pid):
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return "?"


def assert_stops_leaving_nothing(endpoint):
    """stop() ends the launcher, the model server's Java frontend (re-parented by `--start`) and its workers."""
    pids = endpoint.pids()
    frontend = endpoint.frontends()[0].pid
    assert frontend in pids and psutil.Process(frontend).ppid() != endpoint.process.pid
    endpoint.stop()
    assert_gone(pids)
    assert endpoint.pids() == [] and not endpoint.frontends()


@contextlib.contextmanager
def serve_cli(arguments, log, work):
    """`python -m local_serving serve ARGUMENTS` until it prints "ready in"; yields the log. On the way out: SIGTERM,
    exit 0 with "stopping ...", and none of its processes (those naming `work`) nor any model server left."""
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "local_serving", "serve", *arguments], cwd=REPO, stdout=out,
                                  stderr=subprocess.STDOUT)
    pids = []
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "ready in" not in log.read_text() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "ready in" in log.read_text(), log.read_text()
        pids = [p.pid for p in psutil.process_iter() if str(work) in command_of(p.pid)]
        assert running_model_server_pids("mms") and pids
        yield log
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    assert code == 0, log.read_text()
    assert "stopping ..." in log.read_text()
    assert_gone(pids)
    assert not running_model_server_pids("mms")
