"""The smoke test of an async endpoint (serving.profile: async): InService, the example request uploaded to the
endpoint's input prefix, InvokeEndpointAsync, then the answer polled from S3 and checked like a real-time one.

Where things are (config/async_inference.py, async_prefixes): under the stage's artifact bucket,
async-inference/<model>/input/ (requests), output/ (SageMaker writes <InferenceId>.out) and failures/
(<InferenceId>-error.out). The smoke test needs no new input: DescribeEndpoint returns the endpoint config's
AsyncInferenceConfig (botocore's model of DescribeEndpointOutput), whose S3OutputPath names the bucket and the
model's folder; the request goes beside it, under input/.

Polling uses ListObjectsV2 with the exact key as prefix, not HeadObject: without s3:ListBucket, S3 answers a
HeadObject or GetObject of a missing key with 403, not 404 (S3 API reference, HeadObject, "Permissions"), so "not
there yet" and "not allowed" would look the same. The role's s3:ListBucket is limited to the output and failure
prefixes by the s3:prefix condition (stacks/constructs/smoke_test_role.py).
"""
import math
import time
import uuid
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from smoke_test.check import (DEFAULT_PARALLEL, BadAnswer, Outcome, SmokeTestFailure, aws_call, check_all, check_answer,
                              check_detection_answer, client_session, describe_in_service, example_payload, log_group,
                              one_line, outcome_of)

# An async endpoint scaled to zero first starts an instance (the backlog alarm, then the instance and the model:
# minutes), so the default wait is SageMaker's own default InvocationTimeoutSeconds (900 s, botocore's
# InvokeEndpointAsyncInput documentation) plus room for that start.
DEFAULT_WAIT_SECONDS = 1200.0
FIRST_POLL_SECONDS = 2.0
MAX_POLL_SECONDS = 30.0
# InvokeEndpointAsync's RequestTTLSeconds: 60 to 21600 (botocore: RequestTTLSecondsHeader min/max). The smoke test
# asks SageMaker to drop its request once it stops waiting for it, so a failed check leaves nothing queued for long.
REQUEST_TTL_RANGE = (60, 21600)
REQUEST_EXTENSIONS = {"image/jpeg": "jpg", "application/json": "json"}
# The folders of config/async_inference.py (async_prefixes): input/ is the sibling of the configured output/.
OUTPUT_FOLDER, INPUT_FOLDER = "output/", "input/"
SSE_KMS = "aws:kms"  # PutObject's ServerSideEncryption when the bucket's default encryption (its KMS key) applied
_sleep, _clock = time.sleep, time.monotonic  # looked up at each wait, so tests can replace them


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> "S3Location":
        if not uri.startswith("s3://") or "/" not in uri[len("s3://"):]:
            raise ValueError(uri)
        bucket, key = uri[len("s3://"):].split("/", 1)
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class AsyncLayout:
    """Where one async endpoint reads requests from and writes answers to."""
    input: S3Location  # a folder: key ends with /
    output: S3Location


def make_s3_client(region: Optional[str], role_arn: Optional[str] = None, timeout: float = 60, sts_client=None):
    """An S3 client with the same settings and role as check.make_clients' (one more sts:AssumeRole)."""
    session, config = client_session(region, role_arn, timeout, sts_client)
    with aws_call("create the S3 client", "pass --region or set AWS_REGION"):
        return session.client("s3", config=config)


def check_async_endpoints(sagemaker, runtime, s3, endpoints: Sequence[Tuple[str, bool]],
                          expected_classes: Optional[int] = None, content_type: str = "image/jpeg",
                          log: Callable[[str], None] = print, parallel: int = DEFAULT_PARALLEL,
                          wait_seconds: float = DEFAULT_WAIT_SECONDS) -> List[Outcome]:
    """check.check_endpoints for async endpoints: the same lines ("[name] step", PASS/FAIL), `parallel` at a time."""
    return check_all(endpoints, lambda name, detector, step_log: run_async_smoke_test(
        sagemaker, runtime, s3, name, detector, expected_classes, content_type, step_log, wait_seconds), log, parallel)


def check_async_endpoint(sagemaker, runtime, s3, endpoint_name: str, detector: bool = False,
                         expected_classes: Optional[int] = None, content_type: str = "image/jpeg", log=print,
                         wait_seconds: float = DEFAULT_WAIT_SECONDS) -> Outcome:
    """run_async_smoke_test as an Outcome (like check.check_endpoint)."""
    return outcome_of(endpoint_name, detector, lambda: run_async_smoke_test(
        sagemaker, runtime, s3, endpoint_name, detector, expected_classes, content_type, log, wait_seconds))


def run_async_smoke_test(sagemaker, runtime, s3, endpoint_name: str, detector: bool = False,
                         expected_classes: Optional[int] = None, content_type: str = "image/jpeg", log=print,
                         wait_seconds: float = DEFAULT_WAIT_SECONDS):
    """log gets one line per step (the caller adds which endpoint); every failure raises SmokeTestFailure."""
    endpoint = describe_in_service(sagemaker, endpoint_name)  # check.py's InService check and messages
    log(f"describe: {endpoint['EndpointStatus']}")
    layout = async_layout(endpoint, endpoint_name)
    content_type = "application/json" if detector else content_type
    body = example_payload(content_type)
    request = upload_request(s3, layout, body, content_type)
    log(f"upload ({content_type}, {len(body)} bytes): {request}, SSE-KMS")
    output, failure = invoke_async(runtime, endpoint_name, request, content_type, wait_seconds)
    log(f"invoke async: accepted, answer at {output}")
    answer_body = wait_for_answer(s3, endpoint_name, output, failure, wait_seconds, log)
    try:
        return check_detection_answer(answer_body) if detector else check_answer(answer_body, expected_classes)
    except BadAnswer as problem:
        raise SmokeTestFailure(f"unexpected answer from {endpoint_name} in {output}: {problem}",
                               f"the format is in README.md 'Request and response formats'; see {log_group(endpoint_name)}")


def async_layout(endpoint: dict, endpoint_name: str) -> AsyncLayout:
    """The input folder and output folder from DescribeEndpoint's AsyncInferenceConfig.OutputConfig.S3OutputPath."""
    output_path = endpoint.get("AsyncInferenceConfig", {}).get("OutputConfig", {}).get("S3OutputPath")
    if not output_path:
        raise SmokeTestFailure(f"endpoint {endpoint_name} has no AsyncInferenceConfig: it is not an async endpoint",
                               "check it with --endpoint-name instead, or set serving.profile: async in its "
                               "config/models/<model>.yaml and deploy")
    try:
        output = S3Location.parse(output_path if output_path.endswith("/") else output_path + "/")
    except ValueError:
        output = None
    if output is None or not output.key.endswith(OUTPUT_FOLDER):
        raise SmokeTestFailure(f"endpoint {endpoint_name}: S3OutputPath {output_path} is not "
                               f"s3://<bucket>/async-inference/<model>/{OUTPUT_FOLDER}",
                               "the layout of config/async_inference.py (async_prefixes); redeploy the endpoint")
    input_key = output.key[:-len(OUTPUT_FOLDER)] + INPUT_FOLDER
    return AsyncLayout(S3Location(output.bucket, input_key), output)


def upload_request(s3, layout: AsyncLayout, body: bytes, content_type: str) -> S3Location:
    """The request under the input folder, encrypted by the bucket's default (its KMS key): checked, not assumed."""
    request = S3Location(layout.input.bucket,
                         f"{layout.input.key}smoke-test-{uuid.uuid4()}.{REQUEST_EXTENSIONS[content_type]}")
    with aws_call(f"upload the request to {request}",
                  f"the caller needs s3:PutObject on {layout.input}* and kms:GenerateDataKey on the bucket's key "
                  "(stacks/constructs/smoke_test_role.py)"):
        response = s3.put_object(Bucket=request.bucket, Key=request.key, Body=body, ContentType=content_type)
    encryption = response.get("ServerSideEncryption")
    if encryption != SSE_KMS:
        raise SmokeTestFailure(f"the request {request} was stored with {encryption or 'no'} encryption, not SSE-KMS",
                               "the artifact bucket's default encryption should be its KMS key "
                               "(stacks/constructs/artifact_bucket.py); aws s3api get-bucket-encryption "
                               f"--bucket {request.bucket}")
    return request


def invoke_async(runtime, endpoint_name: str, request: S3Location, content_type: str,
                 wait_seconds: float) -> Tuple[S3Location, Optional[S3Location]]:
    """(where the answer will be, where a failure would be); SageMaker names both in its response."""
    low, high = REQUEST_TTL_RANGE
    with aws_call(f"invoke endpoint {endpoint_name} asynchronously in {runtime.meta.region_name}",
                  f"the caller needs sagemaker:InvokeEndpointAsync; see {log_group(endpoint_name)}"):
        response = runtime.invoke_endpoint_async(
            EndpointName=endpoint_name, InputLocation=str(request), ContentType=content_type,
            Accept="application/json", RequestTTLSeconds=min(high, max(low, math.ceil(wait_seconds))))
    failure = response.get("FailureLocation")
    return S3Location.parse(response["OutputLocation"]), (S3Location.parse(failure) if failure else None)


def wait_for_answer(s3, endpoint_name: str, output: S3Location, failure: Optional[S3Location], wait_seconds: float,
                    log, sleep=None, clock=None) -> bytes:
    """Polls until the answer (returned) or the failure (raised, with its content) appears, or wait_seconds pass;
    the wait between looks doubles from FIRST_POLL_SECONDS to MAX_POLL_SECONDS."""
    sleep, clock = sleep or _sleep, clock or _clock
    started, delay = clock(), FIRST_POLL_SECONDS
    while True:
        if exists(s3, output):
            log(f"answer after {clock() - started:.0f}s: {output}")
            return read(s3, output)
        if failure is not None and exists(s3, failure):
            raise SmokeTestFailure(f"async inference on {endpoint_name} failed: {one_line(read(s3, failure).decode('utf-8', 'replace'))}",
                                   f"the failure is {failure}; see {log_group(endpoint_name)}")
        waited = clock() - started
        if waited >= wait_seconds:
            raise SmokeTestFailure(
                f"no answer from {endpoint_name} after {waited:.0f}s: neither {output} nor {failure or 'a failure'} appeared",
                "an endpoint scaled to zero starts an instance first (minutes): raise --async-wait; check its "
                f"ApproximateBacklogSize and HasBacklogWithoutCapacity metrics and {log_group(endpoint_name)}")
        delay = min(delay, wait_seconds - waited)
        log(f"waiting for {output} ({waited:.0f}s of {wait_seconds:.0f}s; next look in {delay:.0f}s)")
        sleep(delay)
        delay = min(delay * 2, MAX_POLL_SECONDS)


def exists(s3, location: S3Location) -> bool:
    with aws_call(f"look for {location}",
                  f"the caller needs s3:ListBucket on {location.bucket} for the prefix {location.key} "
                  "(stacks/constructs/smoke_test_role.py)"):
        listed = s3.list_objects_v2(Bucket=location.bucket, Prefix=location.key, MaxKeys=1)
    return any(entry["Key"] == location.key for entry in listed.get("Contents", []))


def read(s3, location: S3Location) -> bytes:
    with aws_call(f"read {location}", "the caller needs s3:GetObject on it and kms:Decrypt on the bucket's key "
                                      "(stacks/constructs/smoke_test_role.py)"):
        return s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
