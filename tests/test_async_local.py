"""`python -m local_serving async` / `make invoke-async`: the async profile's contract, simulated on localhost.

The file and folder contract (request from a file, output/<id>.out, failures/<id>-error.out) against a tiny HTTP
stand-in for the model server; then once, marked slow, through the real serving stack `make serve` runs."""
import http.server
import json
import re
import threading
import time
from pathlib import Path

import pytest

from local_serving.__main__ import main
from local_serving.async_simulation import AsyncResult, NoServer, simulate
from local_serving.client import base64_image_request, example_image
from smoke_test.check import check_answer

JPEG = example_image("JPEG")
ANSWER = {"shape": [1, 3], "predictions": [[{"class": 2, "score": 0.7}, {"class": 0, "score": 0.2}]]}
INFERENCE_ID = "req-0001"


class StandIn(http.server.ThreadingHTTPServer):
    """A model server's /invocations: records each request, answers what `answers` holds next."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests, self.answers = [], []

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, self.headers["Content-Type"], self.headers.get("Accept"), body))
        status, content_type, answer, delay = self.server.answers.pop(0)
        time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped waiting (the timeout test)
            pass

    def log_message(self, *_):
        pass


@pytest.fixture(scope="module")
def stand_in():
    server = StandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def model(stand_in):
    stand_in.requests.clear()
    stand_in.answers.clear()
    yield stand_in
    assert stand_in.answers == []  # every answer queued was asked for


def answers(server, document, status=200, content_type="application/json", delay=0.0):
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    server.answers.append((status, content_type, body, delay))


def files_under(folder: Path):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def run(*args) -> int:
    return main(["async", *args])


def test_a_success_is_written_to_output_named_after_the_inference_id(model, tmp_path, capsys):
    request = tmp_path / "cat.jpg"
    request.write_bytes(JPEG)
    answers(model, ANSWER)

    code = run("--port", str(model.port), "--input", str(request), "--output", str(tmp_path / "async"),
               "--inference-id", INFERENCE_ID)

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert model.requests == [("/invocations", "image/jpeg", "application/json", JPEG)]  # as SageMaker posts it
    assert files_under(tmp_path / "async") == [f"output/{INFERENCE_ID}.out"]
    assert check_answer((tmp_path / "async" / "output" / f"{INFERENCE_ID}.out").read_bytes()).top_class == 2
    assert f"OutputLocation: {tmp_path / 'async' / 'output' / f'{INFERENCE_ID}.out'}" in out
    assert "HTTP 200 application/json" in out


def test_a_model_error_is_written_to_failures_with_the_containers_answer(model, tmp_path, capsys):
    request = tmp_path / "broken.jpg"
    request.write_bytes(b"not an image")
    error = b'{"status": 400, "error": "not a JPEG or PNG image"}'
    answers(model, error, status=400)

    code = run("--port", str(model.port), "--input", str(request), "--output", str(tmp_path), "--inference-id", "bad-1")

    out = capsys.readouterr().out
    assert code == 1
    assert files_under(tmp_path) == ["broken.jpg", "failures/bad-1-error.out"]  # no output/ file
    assert (tmp_path / "failures" / "bad-1-error.out").read_bytes() == error
    assert f"FailureLocation: {tmp_path / 'failures' / 'bad-1-error.out'}" in out and "HTTP 400" in out
    assert out.splitlines()[-1] == error.decode()


def test_no_answer_within_the_timeout_is_a_failure_file(model, tmp_path):
    request = tmp_path / "slow.jpg"
    request.write_bytes(JPEG)
    answers(model, ANSWER, delay=1.0)

    result = simulate(f"http://127.0.0.1:{model.port}/invocations", request, tmp_path / "out", "image/jpeg",
                      inference_id="slow-1", timeout=0.2)

    assert result == AsyncResult("slow-1", False, tmp_path / "out" / "failures" / "slow-1-error.out", None, "text/plain",
                                 b"the model did not answer within 0.2s (InvocationTimeoutSeconds)")
    assert result.location.read_bytes() == result.body
    time.sleep(1.0)  # let the stand-in finish its late answer before the next test


def test_without_a_server_nothing_is_written_and_the_fix_is_named(tmp_path, capsys):
    request = tmp_path / "cat.jpg"
    request.write_bytes(JPEG)
    closed = StandIn()
    port = closed.port
    closed.server_close()  # bound, then closed: nothing listens there

    code = run("--port", str(port), "--input", str(request), "--output", str(tmp_path / "async"))

    assert code == 1
    assert "start one with `make serve`" in capsys.readouterr().err
    assert not (tmp_path / "async").exists()
    with pytest.raises(NoServer):
        simulate(f"http://127.0.0.1:{port}/invocations", request, tmp_path / "async", "image/jpeg")


def test_without_input_the_example_image_is_the_request_file(model, tmp_path, capsys):
    answers(model, ANSWER)

    assert run("--port", str(model.port), "--output", str(tmp_path)) == 0

    [(_, content_type, _, body)] = model.requests
    assert (content_type, body) == ("image/jpeg", JPEG)
    assert (tmp_path / "input" / "example.jpg").read_bytes() == JPEG  # as a client uploads it to input/
    [answer] = (tmp_path / "output").iterdir()
    assert re.fullmatch(r"[0-9a-f-]{36}\.out", answer.name)  # a new uuid, as SageMaker generates one
    assert f"InferenceId: {answer.stem}  (request {tmp_path / 'input' / 'example.jpg'}, image/jpeg)" in capsys.readouterr().out


def test_the_detectors_json_contract_from_its_extension_or_generated(model, tmp_path):
    contract = base64_image_request([JPEG])
    request = tmp_path / "detect.json"
    request.write_bytes(contract)
    answers(model, {"shape": [1, 3, 64, 64]})
    answers(model, {"shape": [1, 3, 64, 64]})

    assert run("--port", str(model.port), "--input", str(request), "--output", str(tmp_path / "a")) == 0
    assert run("--port", str(model.port), "--content-type", "application/json", "--output", str(tmp_path / "b")) == 0

    assert [(r[1], r[3]) for r in model.requests] == [("application/json", contract)] * 2


@pytest.mark.parametrize("args, message", [
    (["--input", "request.bin"], "cannot tell the content type of request.bin from its extension: pass --content-type"),
    (["--input", "missing.jpg"], "No such file or directory"),
    (["--inference-id", "../escape"], "--inference-id '../escape': 1 to 64 letters"),
    (["--content-type", "application/x-npy"], "no example request for application/x-npy: pass --input FILE"),
])
def test_usage_errors_name_the_fix_and_call_nothing(model, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "request.bin").write_bytes(b"x")

    code = run("--port", str(model.port), "--output", str(tmp_path / "async"), *args)

    assert code == 2 and message in capsys.readouterr().err
    assert model.requests == [] and not (tmp_path / "async" / "output").exists()


def test_make_invoke_async_passes_its_variables():
    import subprocess

    from tests.conftest import REPO

    def dry_run(*variables):
        return subprocess.run(["make", "-n", "--no-print-directory", "invoke-async", *variables], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.splitlines()[-2:]

    command = " ".join(dry_run("INPUT=req.json", "OUTPUT_DIR=build/x", "PORT=9000"))
    assert "-m local_serving async --port 9000 --output 'build/x' --input 'req.json'" in command
    assert "--content-type" not in command  # the Makefile's default image/jpeg would be wrong for a .json request
    assert "--content-type 'application/json'" in " ".join(dry_run("CONTENT_TYPE=application/json"))


def test_serve_selects_the_async_profiles_runtime():
    from config import load_config
    from local_serving.__main__ import select
    from tests.conftest import REPO

    selection = select(load_config(REPO / "config"), "image-classifier", "async")
    assert (selection.label, selection.runtime.name, selection.deployment.target.is_async) == (
        "async-2.6.0", "pytorch-2.6.0", True)


# Once through the real stack: the async profile's image is the cpu profile's (pytorch-inference 2.6.0, TorchServe);
# async changes only how requests reach /invocations.

@pytest.mark.slow
def test_the_real_serving_stack_answers_the_simulated_async_contract(serving_case, tmp_path):
    from local_serving.server import LocalEndpoint
    from tests.serving_processes import assert_gone

    case = serving_case("cpu")
    request, broken = tmp_path / "cat.jpg", tmp_path / "broken.jpg"
    request.write_bytes(JPEG)
    broken.write_bytes(b"not an image")
    with LocalEndpoint(case.artifact_dir / "model.tar.gz", case.manifest["input_shape"], tmp_path / "opt-ml",
                       case.container_environment(), case.runtime) as endpoint:
        pids = endpoint.pids()
        good = simulate(endpoint.url, request, tmp_path / "async", "image/jpeg", inference_id="good")
        bad = simulate(endpoint.url, broken, tmp_path / "async", "image/jpeg", inference_id="bad")
    assert_gone(pids)

    assert good.succeeded and good.location == tmp_path / "async" / "output" / "good.out"
    assert check_answer(good.location.read_bytes()).classes == 10  # the tiny classifier, as the smoke test checks it
    assert not bad.succeeded and 400 <= bad.status < 500  # the handler refuses it: the client's error
    assert bad.location == tmp_path / "async" / "failures" / "bad-error.out" and b"image" in bad.location.read_bytes()
