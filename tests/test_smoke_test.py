"""smoke_test against botocore Stubbers on real boto3 clients: no network, no AWS account."""
import base64
import datetime
import functools
import io
import json
import os
import re
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from PIL import Image

from local_serving.client import example_image
from smoke_test.__main__ import main
from smoke_test.check import MAX_PARALLEL, TOP_K, Answer, BadAnswer, SmokeTestFailure, check_answer, make_clients

REPO = Path(__file__).resolve().parent.parent
ENDPOINT = "image-classifier-dev"
REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::222222222222:role/image-classifier-smoke-test"
JPEG = example_image("JPEG")
LOG_GROUP = f"/aws/sagemaker/Endpoints/{ENDPOINT}"
TOP_5 = [{"class": 904, "score": 0.0013}, {"class": 1, "score": 0.0012}, {"class": 7, "score": 0.0011},
         {"class": 42, "score": 0.00105}, {"class": 3, "score": 0.001}]
GOOD_ANSWER = {"shape": [1, 1000], "predictions": [TOP_5]}


@pytest.fixture(autouse=True)
def no_aws(monkeypatch, tmp_path):
    """No credentials, profiles, region or instance metadata from the machine: nothing here can reach AWS."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name in ("ENDPOINT_NAME", "SMOKE_TEST_ROLE_ARN"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@functools.lru_cache(maxsize=None)
def dummy_session() -> boto3.session.Session:
    """Shared, so service models load once (called only inside tests, after no_aws cleaned the environment)."""
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


def stubbable_client(service: str):
    return dummy_session().client(service, config=Config(retries={"total_max_attempts": 1}))


class Endpoint:
    """Stubbed sagemaker and sagemaker-runtime clients for one endpoint."""

    def __init__(self):
        self.sagemaker, self.runtime = stubbable_client("sagemaker"), stubbable_client("sagemaker-runtime")
        self.sagemaker_stub, self.runtime_stub = Stubber(self.sagemaker), Stubber(self.runtime)

    def describes(self, status="InService", name=ENDPOINT, **extra):
        now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        response = {"EndpointName": name, "EndpointArn": f"arn:aws:sagemaker:{REGION}:222222222222:endpoint/{name}",
                    "EndpointStatus": status, "CreationTime": now, "LastModifiedTime": now, **extra}
        self.sagemaker_stub.add_response("describe_endpoint", response, {"EndpointName": name})

    def answers(self, answer, content_type="image/jpeg", body=JPEG, name=ENDPOINT):
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        response = {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json",
                    "InvokedProductionVariant": "AllTraffic", "ResponseMetadata": {"HTTPStatusCode": 200}}
        expected = {"EndpointName": name, "ContentType": content_type, "Accept": "application/json", "Body": body}
        self.runtime_stub.add_response("invoke_endpoint", response, expected)

    def run(self, *args) -> int:
        """The CLI's exit code, with these clients in place of real ones."""
        return main(["--endpoint-name", ENDPOINT, *args], clients=lambda *settings: (self.sagemaker, self.runtime))


@pytest.fixture
def endpoint(capsys):
    stubbed = Endpoint()
    with stubbed.sagemaker_stub, stubbed.runtime_stub:
        yield stubbed
        stubbed.sagemaker_stub.assert_no_pending_responses()
        stubbed.runtime_stub.assert_no_pending_responses()


def failure_line(capsys, code: int) -> str:
    """The one endpoint's FAIL line without "FAIL name: ", after checking the whole output: only the endpoint's step
    lines, that FAIL line and the summary naming it (so no traceback), nothing on stderr."""
    out, err = capsys.readouterr()
    assert (code, err) == (1, ""), (out, err)
    *steps, fail, last = out.splitlines()
    assert all(line.startswith(f"[{ENDPOINT}] ") for line in steps), out
    assert fail.startswith(f"FAIL {ENDPOINT}: "), out
    reason = fail[len(f"FAIL {ENDPOINT}: "):]
    what = re.fullmatch(rf"smoke test: 0 of 1 endpoint passed; failed: {ENDPOINT} \((.+)\)", last).group(1)
    assert reason.startswith(what) or what.endswith("..."), (reason, what)  # the summary's reason is the short part
    return reason


def stderr_line(capsys, code: int) -> str:
    """The failure that stops every check (no clients): one line on stderr, nothing else."""
    out, err = capsys.readouterr()
    assert (code, out) == (1, ""), (out, err)
    assert err.count("\n") == 1 and err.startswith("smoke test failed: "), err  # one line, so no traceback
    return err.strip()


def test_success_sends_the_example_jpeg_and_reports_the_top_class(endpoint, capsys):
    assert JPEG[:2] == b"\xff\xd8" and Image.open(io.BytesIO(JPEG)).format == "JPEG"
    endpoint.describes()
    endpoint.answers(GOOD_ANSWER, content_type="image/jpeg", body=JPEG)

    code = endpoint.run("--expected-classes", "1000")

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    describe, invoke, passed, last = out.splitlines()
    assert describe == f"[{ENDPOINT}] describe: InService"
    assert re.fullmatch(rf"\[{ENDPOINT}\] invoke \(image/jpeg, {len(JPEG)} bytes\): 200 in \d+ ms", invoke)
    assert passed == f"PASS {ENDPOINT}: shape [1, 1000], top class 904 (0.0013)"
    assert last == "smoke test: 1 of 1 endpoint passed"


def test_json_content_type_sends_the_base64_image_contract(endpoint, capsys):
    contract = json.dumps({"image": base64.b64encode(JPEG).decode("ascii")}).encode()
    endpoint.describes()
    endpoint.answers(GOOD_ANSWER, content_type="application/json", body=contract)

    assert endpoint.run("--content-type", "application/json") == 0
    assert capsys.readouterr().out.splitlines()[-2] == f"PASS {ENDPOINT}: shape [1, 1000], top class 904 (0.0013)"


@pytest.mark.parametrize("status, extra, expected", [
    ("Updating", {}, f"endpoint {ENDPOINT} is Updating, not InService ("),
    ("Failed", {"FailureReason": "The primary container for production variant AllTraffic did not pass the ping\n"
                                 "health check."},
     f"endpoint {ENDPOINT} is Failed, not InService: The primary container for production variant AllTraffic did "
     f"not pass the ping health check. ("),
])
def test_an_endpoint_not_in_service_fails_before_invoking_it(endpoint, capsys, status, extra, expected):
    endpoint.describes(status, **extra)  # no invoke_endpoint stubbed: calling it would fail the test

    line = failure_line(capsys, endpoint.run())

    assert line.startswith(expected)
    assert LOG_GROUP in line


def test_an_unknown_endpoint_names_the_settings_to_check(endpoint, capsys):
    endpoint.sagemaker_stub.add_client_error(
        "describe_endpoint", "ValidationException", f'Could not find endpoint "{ENDPOINT}".',
        expected_params={"EndpointName": ENDPOINT})

    line = failure_line(capsys, endpoint.run())

    assert line.startswith(f'describe endpoint {ENDPOINT} in {REGION}: Could not find endpoint')
    assert "--endpoint-name" in line and "--region" in line and "--assume-role-arn" in line


@pytest.mark.parametrize("original_status, original_message, expected", [
    (400, '{"status": 400, "error": "not a JPEG or PNG image"}',
     'the model answered 400: {"status": 400, "error": "not a JPEG or PNG image"}'),
    (500, 'Prediction failed\nTraceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: boom',
     'the model answered 500: Prediction failed Traceback (most recent call last): File "x.py", line 1 '
     'RuntimeError: boom'),
])
def test_a_model_error_reports_the_containers_status_and_message(endpoint, capsys, original_status,
                                                                 original_message, expected):
    log_stream = f"arn:aws:logs:{REGION}:222222222222:log-group:{LOG_GROUP}:log-stream:AllTraffic/i-0abc"
    endpoint.describes()
    endpoint.runtime_stub.add_client_error(
        "invoke_endpoint", "ModelError", f"Received client error ({original_status}) from primary with message ...",
        http_status_code=424, modeled_fields={"OriginalStatusCode": original_status,
                                              "OriginalMessage": original_message, "LogStreamArn": log_stream})

    line = failure_line(capsys, endpoint.run())

    assert line.startswith(f"invoke endpoint {ENDPOINT} in {REGION}: {expected} (")
    assert line.endswith(f"(see log stream {log_stream})")


@pytest.mark.parametrize("answer, expected", [
    (b"<html>Bad Gateway</html>", "not JSON: <html>Bad Gateway</html>"),
    (b"\xff\xfe", "not JSON"),
    ([TOP_5], "not a JSON object"),
    ({"predictions": [TOP_5]}, "'shape' should be [1, classes], got null"),
    ({"shape": [2, 1000], "predictions": [TOP_5, TOP_5]}, "'shape' should be [1, classes], got [2, 1000]"),
    ({"shape": [1, 10], "predictions": [TOP_5]}, "shape [1, 10] has 10 classes, expected 1000 (--expected-classes)"),
    ({"shape": [1, 1000]}, "'predictions' should be a list of 1 row"),
    ({"shape": [1, 1000], "predictions": [TOP_5, TOP_5]}, "'predictions' should be a list of 1 row"),
    ({"shape": [1, 1000], "predictions": [[]]}, "a prediction row should list 1 to 5 classes, got []"),
    ({"shape": [1, 1000], "predictions": [TOP_5 + TOP_5[:1]]}, "a prediction row should list 1 to 5 classes"),
    ({"shape": [1, 1000], "predictions": [[{"class": 1000, "score": 0.5}]]}, 'got {"class": 1000, "score": 0.5}'),
    ({"shape": [1, 1000], "predictions": [[{"class": True, "score": 0.5}]]}, 'got {"class": true'),
    ({"shape": [1, 1000], "predictions": [[{"class": 3, "score": 1.5}]]}, 'got {"class": 3, "score": 1.5}'),
    ({"shape": [1, 1000], "predictions": [[{"class": 3}]]}, 'got {"class": 3}'),
    ({"shape": [1, 1000], "predictions": [TOP_5[::-1]]}, "not sorted by descending score"),
    ({"shape": [1, 1000], "predictions": [[TOP_5[0], TOP_5[0]]]}, "a class appears twice"),
])
def test_an_answer_not_in_the_documented_format_fails(endpoint, capsys, answer, expected):
    endpoint.describes()
    endpoint.answers(answer)

    line = failure_line(capsys, endpoint.run("--expected-classes", "1000"))

    assert line.startswith(f"unexpected answer from {ENDPOINT}: ")
    assert expected in line
    assert line.endswith(f"see CloudWatch log group {LOG_GROUP})")


@pytest.mark.parametrize("answer, expected", [
    (GOOD_ANSWER, Answer(1000, 904, 0.0013)),
    ({"shape": [1, 3], "predictions": [[{"class": 2, "score": 0.7}, {"class": 0, "score": 0.2},
                                         {"class": 1, "score": 0.1}]]}, Answer(3, 2, 0.7)),
    ({"shape": [1, 1], "predictions": [[{"class": 0, "score": 1}]]}, Answer(1, 0, 1)),
])
def test_any_class_count_is_accepted_without_expected_classes(answer, expected):
    assert check_answer(json.dumps(answer).encode()) == expected


def test_the_check_accepts_what_the_real_handler_answers(monkeypatch):
    """The smoke test and inference_src/inference.py must agree on the response format."""
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(REPO / "inference_src"))  # as the toolkit puts code/ on sys.path
    import inference_src.inference as handler

    assert handler.TOP_K == TOP_K
    for classes in (1000, 3):
        body, content_type = handler.encode_prediction(torch.randn(1, classes), "application/json")
        answer = check_answer(body.encode(), expected_classes=classes)
        assert (content_type, answer.classes) == ("application/json", classes)
    with pytest.raises(BadAnswer, match="should be"):  # a batch of 2 is not what one example image gives
        check_answer(handler.encode_prediction(torch.randn(2, 10), "application/json")[0].encode())


@pytest.mark.parametrize("error, expected", [
    (ReadTimeoutError(endpoint_url="https://runtime.sagemaker.us-east-1.amazonaws.com/x"),
     "timed out: Read timeout on endpoint URL"),
    (ConnectTimeoutError(endpoint_url="https://runtime.sagemaker.us-east-1.amazonaws.com/x"),
     "timed out: Connect timeout on endpoint URL"),
    (EndpointConnectionError(endpoint_url="https://runtime.sagemaker.us-east-1.amazonaws.com/x"),
     "Could not connect to the endpoint URL"),
])
def test_network_failures_while_invoking_are_one_line(endpoint, capsys, error, expected):
    endpoint.describes()
    endpoint.runtime_stub.deactivate()  # let the request reach the HTTP layer, where the error is raised instead

    def fail_to_send(**_):
        raise error

    endpoint.runtime.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", fail_to_send)

    line = failure_line(capsys, endpoint.run())

    assert line.startswith(f"invoke endpoint {ENDPOINT} in {REGION}: {expected}")


def no_network(clients):
    for client in clients:  # if a test leaked real credentials, fail instead of calling AWS
        client.meta.events.register("before-send", lambda **_: pytest.fail("a request was about to be sent"))
    return clients


def test_no_credentials_is_one_line(capsys):
    code = main(["--endpoint-name", ENDPOINT, "--region", REGION], clients=lambda *a: no_network(make_clients(*a)))

    line = failure_line(capsys, code)

    assert line.startswith(f"describe endpoint {ENDPOINT} in {REGION}: no AWS credentials (")


def test_no_region_is_one_line(capsys):
    code = main(["--endpoint-name", ENDPOINT], clients=lambda *a: no_network(make_clients(*a)))

    assert stderr_line(capsys, code) == ("smoke test failed: create AWS clients: no AWS region "
                                          "(pass --region or set AWS_REGION)")


def test_an_unexpected_error_is_still_one_line(capsys):
    def broken_clients(*_):
        raise RuntimeError("a bug\nover two lines")

    line = stderr_line(capsys, main(["--endpoint-name", ENDPOINT], clients=broken_clients))

    assert line.startswith("smoke test failed: unexpected RuntimeError: a bug over two lines (")


def assumed_role_response():
    expiration = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    return {"Credentials": {"AccessKeyId": "ASIATEMPORARYKEY", "SecretAccessKey": "temporary-secret",
                            "SessionToken": "temporary-token", "Expiration": expiration},
            "AssumedRoleUser": {"AssumedRoleId": "AROAEXAMPLE:smoke-test", "Arn": f"{ROLE_ARN}/smoke-test"}}


def _s3_client(*args, **kwargs):
    from smoke_test.async_check import make_s3_client

    return [make_s3_client(*args, **kwargs)]


# The endpoint clients, and the S3 client of the async check (smoke_test/async_check.py): one session each.
@pytest.mark.parametrize("make, services", [(make_clients, ["sagemaker", "sagemaker-runtime"]), (_s3_client, ["s3"])])
def test_with_a_role_the_clients_use_its_temporary_credentials(make, services):
    sts = stubbable_client("sts")
    with Stubber(sts) as stub:
        stub.add_response("assume_role", assumed_role_response(),
                          expected_params={"RoleArn": ROLE_ARN, "RoleSessionName": "smoke-test"})

        clients = make(REGION, ROLE_ARN, timeout=7, sts_client=sts)

        stub.assert_no_pending_responses()
    assert [client.meta.service_model.service_name for client in clients] == services
    for client in clients:
        credentials = client._request_signer._credentials.get_frozen_credentials()
        assert credentials[:3] == ("ASIATEMPORARYKEY", "temporary-secret", "temporary-token")
        assert (client.meta.region_name, client.meta.config.read_timeout) == (REGION, 7)
        assert client.meta.config.max_pool_connections >= MAX_PARALLEL  # a connection for each concurrent check


def test_without_a_role_nothing_is_assumed():
    sts = stubbable_client("sts")
    with Stubber(sts) as stub:  # no response queued: an assume_role call would raise
        clients = make_clients(REGION, None, sts_client=sts)
        stub.assert_no_pending_responses()
    assert [client._request_signer._credentials for client in clients] == [None, None]  # the machine's (none here)


def test_a_refused_assume_role_says_what_to_grant():
    sts = stubbable_client("sts")
    with Stubber(sts) as stub:
        stub.add_client_error("assume_role", "AccessDenied", "User: arn:aws:sts::111111111111:assumed-role/build is "
                              "not authorized to perform: sts:AssumeRole", http_status_code=403)
        with pytest.raises(SmokeTestFailure) as failure:
            make_clients(REGION, ROLE_ARN, sts_client=sts)
        stub.assert_no_pending_responses()
    assert str(failure.value).startswith(f"assume role {ROLE_ARN}: AccessDenied: User: arn:aws:sts::111111111111")
    assert "sts:AssumeRole" in str(failure.value) and "trust policy" in str(failure.value)


@pytest.mark.parametrize("args, region_env, expected_region", [
    ([], {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-west-2"}, "eu-west-1"),
    ([], {"AWS_DEFAULT_REGION": "us-west-2"}, "us-west-2"),
    # a build spec's "$VARIABLE" that expands to nothing
    (["--endpoint-name", "", "--region", "", "--assume-role-arn", ""], {"AWS_REGION": "eu-west-1"}, "eu-west-1"),
])
def test_the_cli_reads_its_settings_from_the_environment(monkeypatch, capsys, args, region_env, expected_region):
    monkeypatch.setenv("ENDPOINT_NAME", "image-classifier-prod")
    monkeypatch.setenv("SMOKE_TEST_ROLE_ARN", ROLE_ARN)
    for name, value in region_env.items():
        monkeypatch.setenv(name, value)
    stubbed, asked_for = Endpoint(), []

    def clients(*settings):
        asked_for.append(settings)
        return stubbed.sagemaker, stubbed.runtime

    with stubbed.sagemaker_stub, stubbed.runtime_stub:
        stubbed.describes(name="image-classifier-prod")
        stubbed.answers(GOOD_ANSWER, name="image-classifier-prod")
        assert main([*args, "--timeout", "12"], clients=clients) == 0
        stubbed.sagemaker_stub.assert_no_pending_responses()
        stubbed.runtime_stub.assert_no_pending_responses()
    assert asked_for == [(expected_region, ROLE_ARN, 12.0)]


@pytest.mark.parametrize("args", [[], ["--endpoint-name", ""], ["--detector-endpoint-name", "", "--detector"]])
def test_a_missing_endpoint_name_is_a_usage_error(capsys, args):
    with pytest.raises(SystemExit) as exit_:
        main(args, clients=lambda *_: pytest.fail("no clients without an endpoint name"))

    assert exit_.value.code == 2
    assert ("error: missing endpoint name: pass --endpoint-name or --detector-endpoint-name (each repeatable), "
            "or set ENDPOINT_NAME") in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--endpoint-name", "a", "--endpoint-name", "b", "--detector-endpoint-name", "a"],
     "error: endpoint given more than once: a"),
    (["--endpoint-name", "a", "--parallel", "0"], "argument --parallel: invalid parallel_count value: '0'"),
    (["--endpoint-name", "a", "--parallel", str(MAX_PARALLEL + 1)],
     f"argument --parallel: invalid parallel_count value: '{MAX_PARALLEL + 1}'"),
])
def test_other_usage_errors(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(args, clients=lambda *_: pytest.fail("no clients on a usage error"))

    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_build_step_installs_the_repositorys_pinned_versions():
    def pins(path):
        lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
        return dict(line.lower().split("==") for line in lines if line)

    wanted, pinned = pins(REPO / "smoke_test" / "requirements.txt"), pins(REPO / "constraints.txt")
    assert {"boto3", "botocore", "numpy", "pillow"} <= wanted.keys()
    assert wanted == {name: pinned[name] for name in wanted}


DETECTIONS = {"shape": [1, 3, 512, 682], "cid": [[14.0], [-1.0]], "score": [[0.91], [-1.0]],
              "bbox": [[10.0, 20.0, 200.0, 300.0], [-1.0, -1.0, -1.0, -1.0]]}


def test_the_detector_gets_the_base64_contract_and_detections_are_checked(endpoint, capsys):
    contract = json.dumps({"image": base64.b64encode(JPEG).decode("ascii")}).encode()
    endpoint.describes()
    endpoint.answers(DETECTIONS, content_type="application/json", body=contract)

    assert endpoint.run("--detector") == 0
    assert capsys.readouterr().out.splitlines()[-2] == f"PASS {ENDPOINT}: 2 detections, top class 14 (0.9100)"


@pytest.mark.parametrize("answer, problem", [
    ({**DETECTIONS, "shape": [1, 512, 682]}, "'shape' should be [1, 3, H, W]"),
    ({**DETECTIONS, "bbox": DETECTIONS["bbox"][:1]}, "the same non-zero length"),
    ({**DETECTIONS, "bbox": [[1, 2, 3], [1, 2, 3, 4]]}, "'bbox' rows should be [x1, y1, x2, y2]"),
    (GOOD_ANSWER, "'shape' should be [1, 3, H, W]"),
])
def test_a_malformed_detection_answer_fails_naming_the_problem(endpoint, capsys, answer, problem):
    contract = json.dumps({"image": base64.b64encode(JPEG).decode("ascii")}).encode()
    endpoint.describes()
    endpoint.answers(answer, content_type="application/json", body=contract)
    assert problem in failure_line(capsys, endpoint.run("--detector"))


# A stage's endpoints, checked at once by one invocation.

CONTRACT = json.dumps({"image": base64.b64encode(JPEG).decode("ascii")}).encode()


class Fleet:
    """Real clients shared by every endpoint, as make_clients gives them, answering by endpoint name from any thread.
    A Stubber answers in call order, which concurrent checks do not have; this checks each call's parameters as a
    Stubber would, answers it once, and records anything unexpected (an exception raised here would only be that
    endpoint's FAIL line)."""

    def __init__(self):
        self.sagemaker, self.runtime = stubbable_client("sagemaker"), stubbable_client("sagemaker-runtime")
        self.pending, self.problems, self.lock = {}, [], threading.Lock()
        for client in (self.sagemaker, self.runtime):  # registered before any thread starts
            client.meta.events.register("before-parameter-build", self._expect)
            client.meta.events.register("before-call", self._respond)
            client.meta.events.register("before-send", self._never_send)

    def describes(self, name, status="InService"):
        now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        self._queue("DescribeEndpoint", name, {"EndpointName": name}, 200, {
            "EndpointName": name, "EndpointStatus": status, "CreationTime": now, "LastModifiedTime": now})

    def answers(self, name, answer, content_type="image/jpeg", body=JPEG, then=None):
        data = json.dumps(answer).encode()
        expected = {"EndpointName": name, "ContentType": content_type, "Accept": "application/json", "Body": body}
        self._queue("InvokeEndpoint", name, expected, 200, {
            "Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json"}, then)

    def fails_to_invoke(self, name, code, message, status=400, then=None):
        self._queue("InvokeEndpoint", name, None, status, {"Error": {"Code": code, "Message": message}}, then)

    def _queue(self, operation, name, expected, status, parsed, then=None):
        parsed["ResponseMetadata"] = {"HTTPStatusCode": status}
        self.pending[operation, name] = (expected, AWSResponse(None, status, {}, None), parsed, then)

    def _expect(self, params, model, context, **_):
        with self.lock:
            call = self.pending.pop((model.name, params.get("EndpointName")), None)
        if call is None:
            self.problems.append(f"unexpected {model.name} {params.get('EndpointName')}")
        elif call[0] is not None and params != call[0]:
            self.problems.append(f"{model.name} {params['EndpointName']} called with {params}, expected {call[0]}")
        context["fleet"] = call

    def _respond(self, context, **_):
        _, http, parsed, then = context["fleet"]
        if then:
            then()  # runs in the endpoint's thread, while its call is in flight
        return http, parsed

    def _never_send(self, **_):
        self.problems.append("a request was about to be sent")
        raise RuntimeError("no network in tests")

    def run(self, *args) -> int:
        code = main(list(args), clients=lambda *settings: (self.sagemaker, self.runtime))
        assert (self.problems, list(self.pending)) == ([], [])  # every call expected, every answer used
        return code


def endpoint_args(*names, option="--endpoint-name"):
    return [arg for name in names for arg in (option, name)]


def output(capsys):
    """stdout's lines, after checking stderr is empty and every line is a step, PASS, FAIL or the last, summary."""
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert all(re.match(r"(\[[\w-]+\] |PASS [\w-]+: |FAIL [\w-]+: )", line) for line in lines[:-1]), out
    assert lines[-1].startswith("smoke test: ")
    return lines


def test_every_endpoint_is_checked_and_the_summary_names_the_one_that_failed(capsys):
    fleet, names = Fleet(), ["model-a", "model-b", "model-c", "model-d", "model-e"]
    for name in names:
        fleet.describes(name, status="Updating" if name == "model-c" else "InService")
        if name != "model-c":  # not invoked: it is not InService
            fleet.answers(name, GOOD_ANSWER)

    code = fleet.run(*endpoint_args(*names), "--region", REGION)

    lines = output(capsys)
    assert code == 1
    assert lines[-1] == ("smoke test: 4 of 5 endpoints passed; "
                         "failed: model-c (endpoint model-c is Updating, not InService)")
    assert sorted(line for line in lines if line.startswith(("PASS", "FAIL"))) == sorted([
        *(f"PASS {name}: shape [1, 1000], top class 904 (0.0013)" for name in names if name != "model-c"),
        "FAIL model-c: endpoint model-c is Updating, not InService (aws sagemaker describe-endpoint --endpoint-name "
        "model-c; see CloudWatch log group /aws/sagemaker/Endpoints/model-c)",
    ])
    steps = [re.sub(r"\d+ bytes\): 200 in \d+ ms", "...", line) for line in lines if line.startswith("[")]
    assert sorted(steps) == sorted([  # each endpoint's steps stay attributable however they interleave
        *(f"[{name}] describe: InService" for name in names if name != "model-c"),
        *(f"[{name}] invoke (image/jpeg, ..." for name in names if name != "model-c"),
    ])


def test_failures_of_every_kind_are_reported_and_do_not_stop_the_others(capsys):
    def bug():
        raise RuntimeError("a bug\nover two lines")

    fleet = Fleet()
    for name in ("model-a", "model-b", "model-c", "model-d"):
        fleet.describes(name)
    fleet.answers("model-a", {"shape": [1, 10], "predictions": [TOP_5]})
    fleet.fails_to_invoke("model-b", "ThrottlingException", "Rate exceeded")
    fleet.answers("model-c", GOOD_ANSWER, then=bug)  # unexpected: becomes model-c's FAIL line, not a traceback
    fleet.answers("model-d", GOOD_ANSWER)

    code = fleet.run(*endpoint_args("model-a", "model-b", "model-c", "model-d"))

    lines = output(capsys)
    assert code == 1
    assert lines[-1] == (
        "smoke test: 1 of 4 endpoints passed; failed: "
        "model-a (unexpected answer from model-a: each prediction should be {\"class\": int in [0, 10), "
        "\"score\": 0..1}, got {\"class\": 904, \"score\": 0.0013}), "
        f"model-b (invoke endpoint model-b in {REGION}: ThrottlingException: Rate exceeded), "
        "model-c (unexpected RuntimeError: a bug over two lines)")
    assert "FAIL model-c: unexpected RuntimeError: a bug over two lines (a bug in smoke_test/: run it locally with " \
           "the same arguments)" in lines
    assert [line for line in lines if line.startswith("PASS")] == [
        "PASS model-d: shape [1, 1000], top class 904 (0.0013)"]


def test_classifiers_and_detectors_each_get_their_own_contract(monkeypatch, capsys):
    monkeypatch.setenv("ENDPOINT_NAME", "not-this-one")  # only a fallback when no endpoint is given
    fleet = Fleet()
    for name in ("classifier-a", "detector-b", "classifier-c", "detector-d"):
        fleet.describes(name)
    fleet.answers("classifier-a", GOOD_ANSWER, content_type="image/jpeg", body=JPEG)
    fleet.answers("classifier-c", GOOD_ANSWER, content_type="image/jpeg", body=JPEG)
    fleet.answers("detector-b", DETECTIONS, content_type="application/json", body=CONTRACT)
    fleet.answers("detector-d", GOOD_ANSWER, content_type="application/json", body=CONTRACT)  # a classifier's answer

    code = fleet.run("--endpoint-name", "classifier-a", "--detector-endpoint-name", "detector-b",
                     "--endpoint-name", "classifier-c", "--detector-endpoint-name", "detector-d",
                     "--expected-classes", "1000")  # the classifiers' class count: detections are not classes

    lines = output(capsys)
    assert code == 1
    assert lines[-1] == ("smoke test: 3 of 4 endpoints passed; failed: detector-d (unexpected answer from detector-d: "
                         "'shape' should be [1, 3, H, W], got [1, 1000])")
    assert {line for line in lines if line.startswith("PASS")} == {
        "PASS classifier-a: shape [1, 1000], top class 904 (0.0013)",
        "PASS classifier-c: shape [1, 1000], top class 904 (0.0013)",
        "PASS detector-b: 2 detections, top class 14 (0.9100)"}
    assert f"[detector-b] invoke (application/json, {len(CONTRACT)} bytes)" in " ".join(lines)


def test_detector_marks_every_endpoint_name_a_detector(capsys):
    fleet = Fleet()
    for name in ("detector-a", "detector-b"):
        fleet.describes(name)
        fleet.answers(name, DETECTIONS, content_type="application/json", body=CONTRACT)

    assert fleet.run(*endpoint_args("detector-a", "detector-b"), "--detector") == 0
    assert output(capsys)[-1] == "smoke test: 2 of 2 endpoints passed"


@pytest.mark.parametrize("parallel", [None, "3"])
def test_endpoints_are_checked_concurrently_up_to_the_bound(capsys, parallel):
    bound = int(parallel or 8)  # the default
    names = [f"model-{index:02d}" for index in range(2 * bound + 1)]
    # Each invoke waits until `bound` invokes are in flight together (fewer threads would break the barrier), then
    # stays a moment, in which any thread beyond the bound would start its own.
    barrier, in_flight, most, count_lock = threading.Barrier(bound, timeout=5), [0], [0], threading.Lock()

    def in_flight_together(name):
        with count_lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            if name != names[-1]:  # the odd last one goes alone
                barrier.wait()
                time.sleep(0.05)
        finally:
            with count_lock:
                in_flight[0] -= 1

    fleet = Fleet()
    for name in names:
        fleet.describes(name)
        fleet.answers(name, GOOD_ANSWER, then=functools.partial(in_flight_together, name))

    code = fleet.run(*endpoint_args(*names), *(["--parallel", parallel] if parallel else []))

    lines = output(capsys)
    assert (code, lines[-1]) == (0, f"smoke test: {len(names)} of {len(names)} endpoints passed")
    assert most[0] == bound


def test_with_one_at_a_time_the_endpoints_are_checked_in_the_order_given(endpoint, capsys):
    """The house Stubber answers in call order: it passes only if the checks run one by one, in order."""
    for name, detector in (("model-a", False), ("detector-b", True), ("model-c", False)):
        endpoint.describes(name=name)
        endpoint.answers(DETECTIONS if detector else GOOD_ANSWER, name=name,
                         content_type="application/json" if detector else "image/jpeg",
                         body=CONTRACT if detector else JPEG)

    code = main(["--parallel", "1", "--endpoint-name", "model-a", "--detector-endpoint-name", "detector-b",
                 "--endpoint-name", "model-c"], clients=lambda *_: (endpoint.sagemaker, endpoint.runtime))

    lines = output(capsys)
    assert code == 0
    assert [re.sub(r"\d+ bytes\): 200 in \d+ ms", "...", line) for line in lines] == [
        "[model-a] describe: InService", "[model-a] invoke (image/jpeg, ...",
        "PASS model-a: shape [1, 1000], top class 904 (0.0013)",
        "[detector-b] describe: InService", "[detector-b] invoke (application/json, ...",
        "PASS detector-b: 2 detections, top class 14 (0.9100)",
        "[model-c] describe: InService", "[model-c] invoke (image/jpeg, ...",
        "PASS model-c: shape [1, 1000], top class 904 (0.0013)",
        "smoke test: 3 of 3 endpoints passed"]
