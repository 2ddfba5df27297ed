"""The smoke test's steps: the endpoint is InService, answers the example image, and the answer is well formed.

Every failure becomes a SmokeTestFailure whose text is one line: what went wrong (where to look).
check_endpoints runs these steps for many endpoints at once, on one pair of clients shared by a bounded thread pool
(boto3 documents clients, unlike sessions and resources, as thread-safe once created; these register no event hooks
and nothing mutates their meta, the documented exceptions).
"""
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import boto3
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError,
                                 NoCredentialsError, NoRegionError, ReadTimeoutError)

from local_serving.client import base64_image_request, example_image

CONTENT_TYPES = ("image/jpeg", "application/json")
TOP_K = 5  # the handler answers at most the 5 best classes per image (inference_src/inference.py, _top_k)
ROLE_SESSION_NAME = "smoke-test"  # shows in the endpoint account's CloudTrail as who called
# Endpoints checked at once. At most botocore's connection pool per client (its default, 10, set explicitly below),
# or threads would wait for a connection and urllib3 would warn that the pool is full.
MAX_PARALLEL = 10
DEFAULT_PARALLEL = 8
BUG_HINT = "a bug in smoke_test/: run it locally with the same arguments"
# An endpoint whose model scaled to zero (an inference component with no copy) answers again once the
# NoCapacityInvocationFailures alarm has added a copy: "several minutes" (SageMaker Developer Guide, "Scale an
# endpoint to zero instances"). The smoke test sends one request to start that, then waits this long for a copy:
# 10 minutes, within the pipeline's 15-minute smoke-test step (stacks/pipeline_steps.py).
WAKE_TIMEOUT_SECONDS = 600
WAKE_POLL_SECONDS = 30
_sleep, _clock = time.sleep, time.monotonic  # replaced in tests


class SmokeTestFailure(Exception):
    def __init__(self, what: str, investigate: str):
        super().__init__(f"{what} ({investigate})")
        self.what, self.investigate = what, investigate


class BadAnswer(ValueError):
    """The endpoint answered 200, but not with the documented response format."""


@dataclass(frozen=True)
class Answer:
    classes: int
    top_class: int
    top_score: float


@dataclass(frozen=True)
class Outcome:
    """One endpoint's result. detail: the answer's summary, or the whole failure line; reason: what failed, short."""
    endpoint: str
    passed: bool
    detail: str
    reason: str = ""


def client_session(region: Optional[str], role_arn: Optional[str] = None, timeout: float = 60,
                   sts_client=None) -> Tuple[boto3.session.Session, Config]:
    """A session (with role_arn, as that role: the endpoint is in the stage's account) and the clients' settings."""
    # Few retries and a bounded wait: a smoke test should fail fast and clearly, not hang the pipeline.
    config = Config(connect_timeout=10, read_timeout=timeout, retries={"mode": "standard", "total_max_attempts": 2},
                    max_pool_connections=MAX_PARALLEL)
    session = boto3.session.Session(region_name=region)
    if role_arn:
        session = _assumed_role_session(sts_client or session.client("sts", config=config), role_arn, region)
    return session, config


def make_clients(region: Optional[str], role_arn: Optional[str] = None, timeout: float = 60, sts_client=None):
    """sagemaker and sagemaker-runtime clients, as client_session makes them."""
    session, config = client_session(region, role_arn, timeout, sts_client)
    with aws_call("create AWS clients", "pass --region or set AWS_REGION"):
        return session.client("sagemaker", config=config), session.client("sagemaker-runtime", config=config)


def _assumed_role_session(sts, role_arn: str, region: Optional[str]) -> boto3.session.Session:
    hint = "the build's role needs sts:AssumeRole on it, and the role's trust policy must allow the pipeline account"
    with aws_call(f"assume role {role_arn}", hint):
        credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName=ROLE_SESSION_NAME)["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=region,
    )


def check_endpoints(sagemaker, runtime, endpoints: Sequence[Tuple[str, bool]], expected_classes: Optional[int] = None,
                    content_type: str = "image/jpeg", log: Callable[[str], None] = print,
                    parallel: int = DEFAULT_PARALLEL, wake_timeout: float = WAKE_TIMEOUT_SECONDS) -> List[Outcome]:
    """Check every (name, detector) endpoint with run_smoke_test, as check_all runs them."""
    return check_all(endpoints, lambda name, detector, step_log: run_smoke_test(
        sagemaker, runtime, name, expected_classes, content_type, step_log, detector, wake_timeout=wake_timeout),
        log, parallel)


def check_all(endpoints: Sequence[Tuple[str, bool]], run: Callable[[str, bool, Callable[[str], None]], Answer],
              log: Callable[[str], None], parallel: int) -> List[Outcome]:
    """run(name, detector, log) every endpoint, `parallel` at a time; one failing does not stop the others.

    log must be thread-safe: it gets each endpoint's step lines prefixed "[name] ", then "PASS name: ..." or
    "FAIL name: ..." as each endpoint finishes. The outcomes come back in the order of `endpoints`."""
    def check(endpoint: Tuple[str, bool]) -> Outcome:
        name, detector = endpoint
        outcome = outcome_of(name, detector, lambda: run(name, detector, lambda line: log(f"[{name}] {line}")))
        log(f"{'PASS' if outcome.passed else 'FAIL'} {name}: {outcome.detail}")
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(endpoints))), thread_name_prefix="smoke-test") as pool:
        return list(pool.map(check, endpoints))


def outcome_of(endpoint_name: str, detector: bool, run: Callable[[], Answer]) -> Outcome:
    """run()'s checked answer, with every failure, expected or not, as a failed Outcome: never raises."""
    try:
        answer = run()
    except SmokeTestFailure as failure:
        return Outcome(endpoint_name, False, str(failure), failure.what)
    except Exception as error:  # a bug here must still fail the pipeline with one readable line, not a traceback
        what = f"unexpected {type(error).__name__}: {one_line(str(error))}"
        return Outcome(endpoint_name, False, f"{what} ({BUG_HINT})", what)
    return Outcome(endpoint_name, True, answer_summary(answer, detector))


def check_endpoint(sagemaker, runtime, endpoint_name: str, detector: bool = False,
                   expected_classes: Optional[int] = None, content_type: str = "image/jpeg", log=print,
                   wake_timeout: float = WAKE_TIMEOUT_SECONDS) -> Outcome:
    """run_smoke_test as an Outcome."""
    return outcome_of(endpoint_name, detector, lambda: run_smoke_test(
        sagemaker, runtime, endpoint_name, expected_classes, content_type, log, detector, wake_timeout=wake_timeout))


def summary(outcomes: Sequence[Outcome]) -> str:
    """The last line: 'smoke test: 98 of 100 endpoints passed; failed: a (reason), b (reason)'."""
    failed = [outcome for outcome in outcomes if not outcome.passed]
    endpoints = "endpoint" if len(outcomes) == 1 else "endpoints"
    line = f"smoke test: {len(outcomes) - len(failed)} of {len(outcomes)} {endpoints} passed"
    if failed:
        line += "; failed: " + ", ".join(f"{outcome.endpoint} ({one_line(outcome.reason, 200)})" for outcome in failed)
    return line


def run_smoke_test(sagemaker, runtime, endpoint_name: str, expected_classes: Optional[int] = None,
                   content_type: str = "image/jpeg", log=print, detector: bool = False,
                   wake_timeout: float = WAKE_TIMEOUT_SECONDS) -> Answer:
    """detector: the MXNet SSD endpoint, which takes only the base64 JSON contract and answers detections.
    log gets one line per step (the caller adds which endpoint); every failure raises SmokeTestFailure.
    An endpoint that serves its model as an inference component (scale to zero) is invoked through it, woken first
    if it has no copy (at most wake_timeout seconds)."""
    endpoint = describe_in_service(sagemaker, endpoint_name)
    log(f"describe: {endpoint['EndpointStatus']}")
    component = find_inference_component(sagemaker, endpoint, endpoint_name)
    content_type = "application/json" if detector else content_type
    body = example_payload(content_type)
    if component:
        wake_if_scaled_to_zero(sagemaker, runtime, endpoint_name, component, body, content_type, log, wake_timeout)
    status, answer_body, elapsed_ms = invoke(runtime, endpoint_name, body, content_type, inference_component=component)
    log(f"invoke ({content_type}, {len(body)} bytes): {status} in {elapsed_ms} ms")
    try:
        answer = check_detection_answer(answer_body) if detector else check_answer(answer_body, expected_classes)
    except BadAnswer as problem:
        raise SmokeTestFailure(f"unexpected answer from {endpoint_name}: {problem}", "the format is in README.md "
                               f"'Request and response formats'; see {log_group(endpoint_name)}")
    return answer


def answer_summary(answer: Answer, detector: bool = False) -> str:
    what = f"{answer.classes} detections" if detector else f"shape [1, {answer.classes}]"
    return f"{what}, top class {answer.top_class} ({answer.top_score:.4f})"


def describe_in_service(sagemaker, endpoint_name: str) -> dict:
    """DescribeEndpoint's answer, or SmokeTestFailure unless the endpoint is InService."""
    with aws_call(f"describe endpoint {endpoint_name} in {sagemaker.meta.region_name}",
                  "the caller needs sagemaker:DescribeEndpoint in the endpoint's account"):
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    status = endpoint["EndpointStatus"]
    if status != "InService":
        reason = f": {one_line(endpoint['FailureReason'])}" if endpoint.get("FailureReason") else ""
        raise SmokeTestFailure(f"endpoint {endpoint_name} is {status}, not InService{reason}",
                               f"aws sagemaker describe-endpoint --endpoint-name {endpoint_name}; "
                               f"see {log_group(endpoint_name)}")
    return endpoint


def example_payload(content_type: str) -> bytes:
    image = example_image("JPEG")
    return base64_image_request([image]) if content_type == "application/json" else image


def invoke(runtime, endpoint_name: str, body: bytes, content_type: str,
           inference_component: Optional[str] = None) -> Tuple[int, bytes, int]:
    """(HTTP status, answer body, milliseconds); SageMaker raises for anything but 2xx.
    inference_component: required by an endpoint that hosts inference components (InvokeEndpoint's
    InferenceComponentName)."""
    started = time.monotonic()
    target = {"InferenceComponentName": inference_component} if inference_component else {}
    where = f"inference component {inference_component} of " if inference_component else ""
    with aws_call(f"invoke {where}endpoint {endpoint_name} in {runtime.meta.region_name}",
                  f"the caller needs sagemaker:InvokeEndpoint; see {log_group(endpoint_name, inference_component)}"):
        response = runtime.invoke_endpoint(EndpointName=endpoint_name, ContentType=content_type,
                                           Accept="application/json", Body=body, **target)
        answer_body = response["Body"].read()  # inside: reading the stream can time out too
    elapsed_ms = round((time.monotonic() - started) * 1000)
    return response["ResponseMetadata"]["HTTPStatusCode"], answer_body, elapsed_ms


def check_answer(body: bytes, expected_classes: Optional[int] = None) -> Answer:
    """{"shape": [1, C], "predictions": [[{"class", "score"}, ...]]}, as inference_src/inference.py writes it."""
    try:
        answer = json.loads(body)
    except ValueError:  # also covers bytes that are not UTF-8
        raise BadAnswer(f"not JSON: {preview(body)}") from None
    if not isinstance(answer, dict):
        raise BadAnswer(f"not a JSON object: {preview(answer)}")
    classes = _checked_classes(answer.get("shape"), expected_classes)
    rows = answer.get("predictions")
    if not isinstance(rows, list) or len(rows) != 1:
        raise BadAnswer(f"'predictions' should be a list of 1 row (1 image sent), got {preview(rows)}")
    best = _checked_row(rows[0], classes)
    return Answer(classes, best["class"], best["score"])


def check_detection_answer(body: bytes) -> Answer:
    """{"shape": [1, 3, H, W], "cid": [[c]] x N, "score": [[s]] x N, "bbox": [[x1, y1, x2, y2]] x N}, as
    inference_src/mxnet_ssd/inference.py writes it (the MXNet SSD source document's contract). Answer.classes = N."""
    try:
        answer = json.loads(body)
    except ValueError:
        raise BadAnswer(f"not JSON: {preview(body)}") from None
    if not isinstance(answer, dict):
        raise BadAnswer(f"not a JSON object: {preview(answer)}")
    shape = answer.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(map(_is_int, shape)) and shape[:2] == [1, 3]):
        raise BadAnswer(f"'shape' should be [1, 3, H, W], got {preview(shape)}")
    cid, score, bbox = (answer.get(key) for key in ("cid", "score", "bbox"))
    if not all(isinstance(rows, list) for rows in (cid, score, bbox)) or not len(cid) == len(score) == len(bbox) > 0:
        raise BadAnswer(f"'cid', 'score' and 'bbox' should be lists of the same non-zero length, got {preview(answer)}")
    if not all(isinstance(row, list) and len(row) == 1 and _is_number(row[0]) for row in cid + score):
        raise BadAnswer(f"'cid' and 'score' rows should be [number], got {preview(cid[:2] + score[:2])}")
    if not all(isinstance(box, list) and len(box) == 4 and all(map(_is_number, box)) for box in bbox):
        raise BadAnswer(f"'bbox' rows should be [x1, y1, x2, y2], got {preview(bbox[:2])}")
    return Answer(len(cid), int(cid[0][0]), float(score[0][0]))


def _checked_classes(shape, expected_classes: Optional[int]) -> int:
    is_pair_of_ints = isinstance(shape, list) and len(shape) == 2 and all(map(_is_int, shape))
    if not (is_pair_of_ints and shape[0] == 1 and shape[1] >= 1):
        raise BadAnswer(f"'shape' should be [1, classes], got {preview(shape)}")
    if expected_classes is not None and shape[1] != expected_classes:
        raise BadAnswer(f"shape {shape} has {shape[1]} classes, expected {expected_classes} (--expected-classes)")
    return shape[1]


def _checked_row(row, classes: int) -> dict:
    most = min(TOP_K, classes)
    if not isinstance(row, list) or not 1 <= len(row) <= most:
        raise BadAnswer(f"a prediction row should list 1 to {most} classes, got {preview(row)}")
    for entry in row:
        if not (isinstance(entry, dict) and _is_int(entry.get("class")) and 0 <= entry["class"] < classes
                and _is_number(entry.get("score")) and 0 <= entry["score"] <= 1):
            raise BadAnswer(f"each prediction should be {{\"class\": int in [0, {classes}), \"score\": 0..1}}, "
                            f"got {preview(entry)}")
    scores = [entry["score"] for entry in row]
    if scores != sorted(scores, reverse=True):
        raise BadAnswer(f"predictions are not sorted by descending score: {scores}")
    if len({entry["class"] for entry in row}) != len(row):
        raise BadAnswer(f"a class appears twice: {preview(row)}")
    return row[0]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a class


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@contextmanager
def aws_call(step: str, investigate: str) -> Iterator[None]:
    """botocore's exceptions as SmokeTestFailure; `investigate` is the hint when nothing more specific fits."""
    try:
        yield
    except ClientError as error:
        raise _client_failure(step, error, investigate) from error
    except NoCredentialsError as error:
        raise SmokeTestFailure(f"{step}: no AWS credentials",
                               "in CodeBuild check the project's service role; locally set AWS_PROFILE") from error
    except NoRegionError as error:
        raise SmokeTestFailure(f"{step}: no AWS region", "pass --region or set AWS_REGION") from error
    except (ReadTimeoutError, ConnectTimeoutError) as error:
        raise SmokeTestFailure(f"{step}: timed out: {error}",
                               f"raise --timeout if the model is slow; {investigate}") from error
    except EndpointConnectionError as error:
        raise SmokeTestFailure(f"{step}: {error}", "check the region and that the build can reach AWS APIs") from error
    except BotoCoreError as error:
        raise SmokeTestFailure(f"{step}: {one_line(str(error))}", investigate) from error


def _client_failure(step: str, error: ClientError, investigate: str) -> SmokeTestFailure:
    code = error.response.get("Error", {}).get("Code", "")
    message = one_line(error.response.get("Error", {}).get("Message", ""))
    if code == "ModelError":  # the container answered 4xx/5xx: its own status and body are what matter
        original = one_line(error.response.get("OriginalMessage") or message)
        log_stream = error.response.get("LogStreamArn")
        status = error.response.get("OriginalStatusCode", "?")
        return SmokeTestFailure(f"{step}: the model answered {status}: {original}",
                                f"see log stream {log_stream}" if log_stream else investigate)
    if code == "ValidationException" and "Could not find endpoint" in message:
        return SmokeTestFailure(f"{step}: {message}", "check --endpoint-name, --region "
                                                      "and that --assume-role-arn is the stage account's role")
    return SmokeTestFailure(f"{step}: {code}: {message}", investigate)


def log_group(endpoint_name: str, inference_component: Optional[str] = None) -> str:
    if inference_component:  # a component's containers log under its own name
        return f"CloudWatch log group /aws/sagemaker/InferenceComponents/{inference_component}"
    return f"CloudWatch log group /aws/sagemaker/Endpoints/{endpoint_name}"


# ---------------------------------------------------------------- endpoints that scale to zero (inference components)


def find_inference_component(sagemaker, endpoint: dict, endpoint_name: str) -> Optional[str]:
    """The one inference component of an endpoint with managed instance scaling (this app's scale-to-zero endpoints);
    None for an endpoint that serves its model from the variant, without asking anything more."""
    variants = endpoint.get("ProductionVariants") or []
    if not any((v.get("ManagedInstanceScaling") or {}).get("Status") == "ENABLED" for v in variants):
        return None
    with aws_call(f"list the inference components of endpoint {endpoint_name}",
                  "the caller needs sagemaker:ListInferenceComponents"):
        listed = sagemaker.list_inference_components(EndpointNameEquals=endpoint_name)["InferenceComponents"]
    names = sorted(component["InferenceComponentName"] for component in listed)
    if len(names) != 1:
        found = ", ".join(names) if names else "none"
        raise SmokeTestFailure(f"endpoint {endpoint_name} has managed instance scaling, so its model should be one "
                               f"inference component; found {found}",
                               f"aws sagemaker list-inference-components --endpoint-name-equals {endpoint_name}")
    return names[0]


def inference_component_copies(sagemaker, component: str) -> int:
    """Its current copies; SmokeTestFailure if it failed."""
    with aws_call(f"describe inference component {component}",
                  "the caller needs sagemaker:DescribeInferenceComponent"):
        described = sagemaker.describe_inference_component(InferenceComponentName=component)
    if described.get("InferenceComponentStatus") == "Failed":
        reason = f": {one_line(described['FailureReason'])}" if described.get("FailureReason") else ""
        raise SmokeTestFailure(f"inference component {component} is Failed{reason}",
                               f"aws sagemaker describe-inference-component --inference-component-name {component}; "
                               f"see {log_group('', component)}")
    return (described.get("RuntimeConfig") or {}).get("CurrentCopyCount", 0)


def wake_if_scaled_to_zero(sagemaker, runtime, endpoint_name: str, component: str, body: bytes, content_type: str,
                           log, wake_timeout: float) -> None:
    """A component with no copy answers nothing until its NoCapacityInvocationFailures alarm adds one: send one
    request to raise that alarm (it fails, as every client's does meanwhile), then wait for a copy."""
    copies = inference_component_copies(sagemaker, component)
    if copies:
        log(f"inference component {component}: {copies} cop{'y' if copies == 1 else 'ies'}")
        return
    log(f"inference component {component}: scaled to zero; one request starts a copy (several minutes)")
    try:
        invoke(runtime, endpoint_name, body, content_type, inference_component=component)
    except SmokeTestFailure as expected:  # no copy to answer: SageMaker counts a NoCapacityInvocationFailure
        log(f"wake-up request failed as expected: {one_line(expected.what, 200)}")
    started = _clock()
    while not copies:
        waited = _clock() - started
        if waited >= wake_timeout:
            raise SmokeTestFailure(
                f"inference component {component} still has no copy {round(waited)} s after a request",
                f"check its NoCapacityInvocationFailures alarm and scaling activities "
                f"(aws application-autoscaling describe-scaling-activities --service-namespace sagemaker "
                f"--resource-id inference-component/{component}); raise --wake-timeout if it is still starting")
        _sleep(WAKE_POLL_SECONDS)
        copies = inference_component_copies(sagemaker, component)
    log(f"inference component {component}: a copy answers after {round(_clock() - started)} s")


def one_line(text: str, limit: int = 300) -> str:
    """Container errors may carry tracebacks: keep the failure to one readable line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def preview(value, limit: int = 120) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else json.dumps(value)
    return one_line(text, limit)
