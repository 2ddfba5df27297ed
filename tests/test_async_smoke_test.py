"""The async endpoints' smoke test (smoke_test/async_check.py) against botocore Stubbers: no network, no AWS account.

An async endpoint is called through S3: the example request is uploaded under async-inference/<model>/input/,
InvokeEndpointAsync names where the answer (output/<id>.out) or the failure (failures/<id>-error.out) will appear,
and the smoke test polls for them."""
import datetime
import io
import json
import re

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

import smoke_test.async_check as async_check
from smoke_test.__main__ import main
from smoke_test.async_check import S3Location, async_layout
from tests.test_smoke_test import (CONTRACT, DETECTIONS, ENDPOINT, GOOD_ANSWER, JPEG, LOG_GROUP, REGION, failure_line,
                                   no_aws, stubbable_client)

assert no_aws  # the autouse fixture, imported so it applies here too: nothing can reach AWS

BUCKET = "dev-artifactstore-modelartifactbucket-abc123"
MODEL_FOLDER = "async-inference/image-classifier/"
REQUEST_ID = "11111111-2222-3333-4444-555555555555"
INFERENCE_ID = "6f1c8b2e-0000-4000-8000-000000000001"
OUTPUT_KEY = f"{MODEL_FOLDER}output/{INFERENCE_ID}.out"
FAILURE_KEY = f"{MODEL_FOLDER}failures/{INFERENCE_ID}-error.out"
KEY_ARN = "arn:aws:kms:us-east-1:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ASYNC_CONFIG = {"OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/{MODEL_FOLDER}output/",
                                 "S3FailurePath": f"s3://{BUCKET}/{MODEL_FOLDER}failures/", "KmsKeyId": KEY_ARN},
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2}}


class FakeTime:
    """The poll loop's clock and sleep: no real waiting, and every wait recorded."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self):
        return self.now


class AsyncEndpoint:
    """Stubbed sagemaker, sagemaker-runtime and s3 clients for one async endpoint; every stub must be consumed."""

    def __init__(self):
        self.sagemaker, self.runtime, self.s3 = (stubbable_client(s) for s in ("sagemaker", "sagemaker-runtime", "s3"))
        self.stubs = [Stubber(client) for client in (self.sagemaker, self.runtime, self.s3)]
        self.sagemaker_stub, self.runtime_stub, self.s3_stub = self.stubs

    def describes(self, name=ENDPOINT, async_config=ASYNC_CONFIG, status="InService"):
        now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        response = {"EndpointName": name, "EndpointArn": f"arn:aws:sagemaker:{REGION}:222222222222:endpoint/{name}",
                    "EndpointStatus": status, "CreationTime": now, "LastModifiedTime": now}
        if async_config:
            response["AsyncInferenceConfig"] = async_config
        self.sagemaker_stub.add_response("describe_endpoint", response, {"EndpointName": name})

    def uploads(self, body=JPEG, content_type="image/jpeg", extension="jpg", encryption="aws:kms"):
        key = self.request_key(extension)
        response = {"ETag": '"abc"', "ServerSideEncryption": encryption, **({"SSEKMSKeyId": KEY_ARN} if encryption == "aws:kms" else {})}
        self.s3_stub.add_response("put_object", response,
                                  {"Bucket": BUCKET, "Key": key, "Body": body, "ContentType": content_type})
        return key

    @staticmethod
    def request_key(extension="jpg"):
        return f"{MODEL_FOLDER}input/smoke-test-{REQUEST_ID}.{extension}"

    def accepts(self, request_key, content_type="image/jpeg", name=ENDPOINT, ttl=1200):
        response = {"InferenceId": INFERENCE_ID, "OutputLocation": f"s3://{BUCKET}/{OUTPUT_KEY}",
                    "FailureLocation": f"s3://{BUCKET}/{FAILURE_KEY}"}
        self.runtime_stub.add_response("invoke_endpoint_async", response, {
            "EndpointName": name, "InputLocation": f"s3://{BUCKET}/{request_key}", "ContentType": content_type,
            "Accept": "application/json", "RequestTTLSeconds": ttl})

    def lists(self, key, found=False):
        contents = {"Contents": [{"Key": key, "Size": 10}], "KeyCount": 1} if found else {"KeyCount": 0}
        self.s3_stub.add_response("list_objects_v2", {"Name": BUCKET, "Prefix": key, "MaxKeys": 1, "IsTruncated": False,
                                                      **contents},
                                  {"Bucket": BUCKET, "Prefix": key, "MaxKeys": 1})

    def nothing_yet(self):
        self.lists(OUTPUT_KEY)
        self.lists(FAILURE_KEY)

    def holds(self, key, content):
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        self.s3_stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(data), len(data)),
                                                 "ContentLength": len(data)}, {"Bucket": BUCKET, "Key": key})

    def answers_after_one_poll(self, answer=GOOD_ANSWER):
        self.nothing_yet()
        self.lists(OUTPUT_KEY, found=True)
        self.holds(OUTPUT_KEY, answer)

    def run(self, *args) -> int:
        return main(["--async-endpoint-name", ENDPOINT, *args], clients=lambda *settings: (self.sagemaker, self.runtime),
                    s3_client=lambda *settings: self.s3)


@pytest.fixture
def fake_time(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(async_check, "_sleep", fake.sleep)
    monkeypatch.setattr(async_check, "_clock", fake.clock)
    return fake


@pytest.fixture
def endpoint(monkeypatch, fake_time):
    monkeypatch.setattr(async_check.uuid, "uuid4", lambda: REQUEST_ID)  # the request's key, predictable
    stubbed = AsyncEndpoint()
    for stub in stubbed.stubs:
        stub.activate()
    yield stubbed
    for stub in stubbed.stubs:
        stub.assert_no_pending_responses()
        stub.deactivate()


def test_success_after_one_poll_uploads_invokes_and_checks_the_answer(endpoint, fake_time, capsys):
    endpoint.describes()
    endpoint.accepts(endpoint.uploads())
    endpoint.answers_after_one_poll()

    code = endpoint.run("--expected-classes", "1000")

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"[{ENDPOINT}] describe: InService",
        f"[{ENDPOINT}] upload (image/jpeg, {len(JPEG)} bytes): s3://{BUCKET}/{endpoint.request_key()}, SSE-KMS",
        f"[{ENDPOINT}] invoke async: accepted, answer at s3://{BUCKET}/{OUTPUT_KEY}",
        f"[{ENDPOINT}] waiting for s3://{BUCKET}/{OUTPUT_KEY} (0s of 1200s; next look in 2s)",
        f"[{ENDPOINT}] answer after 2s: s3://{BUCKET}/{OUTPUT_KEY}",
        f"PASS {ENDPOINT}: shape [1, 1000], top class 904 (0.0013)",
        "smoke test: 1 of 1 endpoint passed",
    ]
    assert fake_time.sleeps == [2.0]


def test_a_failure_object_fails_with_its_content(endpoint, capsys):
    endpoint.describes()
    endpoint.accepts(endpoint.uploads())
    endpoint.lists(OUTPUT_KEY)
    endpoint.lists(FAILURE_KEY, found=True)
    endpoint.holds(FAILURE_KEY, b'{"status": 400,\n "error": "not a JPEG or PNG image"}')

    line = failure_line(capsys, endpoint.run())

    assert line == (f'async inference on {ENDPOINT} failed: {{"status": 400, "error": "not a JPEG or PNG image"}} '
                    f"(the failure is s3://{BUCKET}/{FAILURE_KEY}; see CloudWatch log group {LOG_GROUP})")


def test_no_answer_in_time_is_a_timeout_naming_both_locations(endpoint, fake_time, capsys):
    endpoint.describes()
    endpoint.accepts(endpoint.uploads(), ttl=60)  # SageMaker's minimum request TTL
    for _ in range(3):  # at 0 s, 2 s and 5 s: the last wait is cut to what is left
        endpoint.nothing_yet()

    line = failure_line(capsys, endpoint.run("--async-wait", "5"))

    assert fake_time.sleeps == [2.0, 3.0]
    assert line.startswith(f"no answer from {ENDPOINT} after 5s: neither s3://{BUCKET}/{OUTPUT_KEY} "
                           f"nor s3://{BUCKET}/{FAILURE_KEY} appeared (")
    assert "raise --async-wait" in line and "HasBacklogWithoutCapacity" in line and LOG_GROUP in line


def test_the_wait_between_looks_doubles_up_to_30_seconds(endpoint, fake_time, capsys):
    endpoint.describes()
    endpoint.accepts(endpoint.uploads(), ttl=100)
    for _ in range(8):
        endpoint.nothing_yet()

    assert endpoint.run("--async-wait", "100") == 1
    assert fake_time.sleeps == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 10.0]
    assert "no answer from" in capsys.readouterr().out


def test_access_denied_on_the_upload_names_the_grants_and_invokes_nothing(endpoint, capsys):
    endpoint.describes()
    endpoint.s3_stub.add_client_error("put_object", "AccessDenied", "Access Denied", http_status_code=403)

    line = failure_line(capsys, endpoint.run())

    assert line.startswith(f"upload the request to s3://{BUCKET}/{endpoint.request_key()}: AccessDenied: Access Denied (")
    assert f"s3:PutObject on s3://{BUCKET}/{MODEL_FOLDER}input/*" in line and "kms:GenerateDataKey" in line


def test_a_request_not_stored_with_the_buckets_kms_key_fails(endpoint, capsys):
    """The check can fail: a bucket whose default encryption is no longer SSE-KMS."""
    endpoint.describes()
    endpoint.uploads(encryption="AES256")

    line = failure_line(capsys, endpoint.run())

    assert line.startswith(f"the request s3://{BUCKET}/{endpoint.request_key()} was stored with AES256 encryption, "
                           "not SSE-KMS (")
    assert "stacks/constructs/artifact_bucket.py" in line


def test_an_endpoint_without_async_config_is_not_invoked(endpoint, capsys):
    endpoint.describes(async_config=None)

    line = failure_line(capsys, endpoint.run())

    assert line.startswith(f"endpoint {ENDPOINT} has no AsyncInferenceConfig: it is not an async endpoint (")
    assert "--endpoint-name" in line and "serving.profile: async" in line


def test_an_endpoint_not_in_service_fails_with_check_pys_message(endpoint, capsys):
    endpoint.describes(status="Creating")

    line = failure_line(capsys, endpoint.run())

    assert line.startswith(f"endpoint {ENDPOINT} is Creating, not InService (aws sagemaker describe-endpoint")


def test_an_answer_in_the_wrong_format_fails_naming_where_it_is(endpoint, capsys):
    endpoint.describes()
    endpoint.accepts(endpoint.uploads())
    endpoint.answers_after_one_poll({"shape": [1, 10], "predictions": [[{"class": 3, "score": 1.5}]]})

    line = failure_line(capsys, endpoint.run())

    assert line.startswith(f"unexpected answer from {ENDPOINT} in s3://{BUCKET}/{OUTPUT_KEY}: each prediction should be")


def test_an_async_detector_gets_the_base64_contract_and_its_detections_are_checked(endpoint, capsys):
    endpoint.describes()
    key = endpoint.uploads(body=CONTRACT, content_type="application/json", extension="json")
    endpoint.accepts(key, content_type="application/json")
    endpoint.answers_after_one_poll(DETECTIONS)

    code = main(["--async-detector-endpoint-name", ENDPOINT], clients=lambda *_: (endpoint.sagemaker, endpoint.runtime),
                s3_client=lambda *_: endpoint.s3)

    assert code == 0
    assert capsys.readouterr().out.splitlines()[-2] == f"PASS {ENDPOINT}: 2 detections, top class 14 (0.9100)"


def test_real_time_and_async_endpoints_are_checked_in_one_run(endpoint, capsys):
    # Real-time first (check.py, unchanged), then async.
    endpoint.describes(name="realtime", async_config=None)
    body = json.dumps(GOOD_ANSWER).encode()
    endpoint.runtime_stub.add_response(
        "invoke_endpoint", {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json",
                            "ResponseMetadata": {"HTTPStatusCode": 200}},
        {"EndpointName": "realtime", "ContentType": "image/jpeg", "Accept": "application/json", "Body": JPEG})
    endpoint.describes()
    endpoint.accepts(endpoint.uploads())
    endpoint.answers_after_one_poll()

    code = endpoint.run("--endpoint-name", "realtime")

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert [line for line in out.splitlines() if not line.startswith("[")] == [
        "PASS realtime: shape [1, 1000], top class 904 (0.0013)",
        f"PASS {ENDPOINT}: shape [1, 1000], top class 904 (0.0013)",
        "smoke test: 2 of 2 endpoints passed"]


def test_without_async_endpoints_no_s3_client_is_made(endpoint, capsys):
    endpoint.describes(name="realtime", async_config=None)
    body = json.dumps(GOOD_ANSWER).encode()
    endpoint.runtime_stub.add_response(
        "invoke_endpoint", {"Body": StreamingBody(io.BytesIO(body), len(body)), "ResponseMetadata": {"HTTPStatusCode": 200}},
        {"EndpointName": "realtime", "ContentType": "image/jpeg", "Accept": "application/json", "Body": JPEG})

    code = main(["--endpoint-name", "realtime"], clients=lambda *_: (endpoint.sagemaker, endpoint.runtime),
                s3_client=lambda *_: pytest.fail("an S3 client (one more sts:AssumeRole) for real-time endpoints only"))

    assert code == 0 and capsys.readouterr().out.splitlines()[-1] == "smoke test: 1 of 1 endpoint passed"


@pytest.mark.parametrize("args, message", [
    (["--endpoint-name", "a", "--async-endpoint-name", "a"], "error: endpoint given more than once: a"),
    (["--async-endpoint-name", "a", "--async-wait", "0"], "argument --async-wait: invalid positive_float value: '0'"),
])
def test_async_usage_errors(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(args, clients=lambda *_: pytest.fail("no clients on a usage error"))

    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("output_path, expected", [
    (f"s3://{BUCKET}/{MODEL_FOLDER}output/", (f"s3://{BUCKET}/{MODEL_FOLDER}input/", f"s3://{BUCKET}/{MODEL_FOLDER}output/")),
    (f"s3://{BUCKET}/{MODEL_FOLDER}output", (f"s3://{BUCKET}/{MODEL_FOLDER}input/", f"s3://{BUCKET}/{MODEL_FOLDER}output/")),
])
def test_the_input_folder_is_the_output_folders_sibling(output_path, expected):
    layout = async_layout({"AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": output_path}}}, ENDPOINT)
    assert (str(layout.input), str(layout.output)) == expected


def test_the_layout_agrees_with_the_config_s_prefixes():
    from config.async_inference import async_prefixes

    prefixes = async_prefixes("image-classifier")
    layout = async_layout({"AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/{prefixes.output}"}}},
                          ENDPOINT)
    assert layout.input == S3Location(BUCKET, prefixes.input)


@pytest.mark.parametrize("output_path", [f"s3://{BUCKET}/somewhere/else/", f"https://{BUCKET}/x/output/"])
def test_an_output_path_outside_the_layout_is_refused(output_path):
    from smoke_test.check import SmokeTestFailure

    with pytest.raises(SmokeTestFailure, match=r"is not s3://<bucket>/async-inference/<model>/output/ \("):
        async_layout({"AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": output_path}}}, ENDPOINT)


def test_progress_lines_stay_attributable(endpoint, capsys):
    """Every step line carries the endpoint's name, so concurrent checks can be told apart in CodeBuild's log."""
    endpoint.describes()
    endpoint.accepts(endpoint.uploads())
    endpoint.answers_after_one_poll()
    endpoint.run()
    lines = capsys.readouterr().out.splitlines()
    assert all(re.match(rf"(\[{ENDPOINT}\] |PASS {ENDPOINT}: |smoke test: )", line) for line in lines)


# The smoke-test role's grants for async endpoints (stacks/constructs/smoke_test_role.py), checked by cdk-nag.

ACCOUNT, PIPELINE_ACCOUNT = "222222222222", "444444444444"
ASYNC_MODELS = ("image-classifier", "object-detector")


def synthesize_role(async_models):
    """The artifact store and a stack with only the smoke-test role, synthesized with cdk-nag as the app does (an
    unacknowledged finding fails synthesis)."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from stacks.artifact_store_stack import ArtifactStoreStack
    from stacks.constructs.smoke_test_role import SmokeTestRole

    from tests.conftest import REPO

    app = cdk.App(context=json.loads((REPO / "cdk.json").read_text())["context"])  # the app's feature flags
    env = cdk.Environment(account=ACCOUNT, region=REGION)
    store_stack = ArtifactStoreStack(app, "Dev-ArtifactStore", retain_data=False, env=env)
    stack = cdk.Stack(app, "Dev-Serving", env=env)
    SmokeTestRole(stack, "SmokeTest", role_name="Dev-Serving-SmokeTest", pipeline_account=PIPELINE_ACCOUNT,
                  pipeline_role_name="Pipeline-SmokeTest-Dev", endpoint_name_prefix="Dev-Serving-",
                  store=store_stack.import_into(stack), async_models=async_models)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def role_template():
    return synthesize_role(ASYNC_MODELS)


def _async_statements(template):
    (policy,) = [p for key, p in template.find_resources("AWS::IAM::Policy").items() if "AsyncInference" in key]
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _object_keys(resources):
    """The keys after the imported bucket ARN: {"Fn::Join": ["", [{"Fn::ImportValue": ...}, "/key"]]}."""
    return sorted(resource["Fn::Join"][1][1] for resource in resources)


def test_the_role_gets_exactly_what_the_async_smoke_test_calls(role_template):
    by_action = {tuple(sorted(s["Action"])) if isinstance(s["Action"], list) else (s["Action"],): s
                 for s in _async_statements(role_template)}
    assert set(by_action) == {("sagemaker:InvokeEndpointAsync",), ("s3:PutObject",), ("s3:GetObject",),
                              ("s3:ListBucket",), ("kms:Decrypt", "kms:GenerateDataKey")}
    assert by_action["sagemaker:InvokeEndpointAsync",]["Resource"] == \
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/dev-serving-*"
    assert _object_keys(by_action["s3:PutObject",]["Resource"]) == [
        f"/async-inference/{model}/input/*" for model in sorted(ASYNC_MODELS)]
    answers = sorted(f"async-inference/{model}/{folder}/*" for model in ASYNC_MODELS for folder in ("output", "failures"))
    assert _object_keys(by_action["s3:GetObject",]["Resource"]) == ["/" + key for key in answers]
    listing = by_action["s3:ListBucket",]
    assert listing["Resource"] == {"Fn::ImportValue": "Dev-ArtifactStore-ModelArtifactBucketArn"}
    assert sorted(listing["Condition"]["StringLike"]["s3:prefix"]) == answers  # not the input/ or models/ folders
    kms = by_action["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["Resource"] == {"Fn::ImportValue": "Dev-ArtifactStore-ModelArtifactKeyArn"}
    # Only through S3 in the stage's region (URLSuffix: amazonaws.com, or amazonaws.com.cn in China).
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": {
        "Fn::Join": ["", [f"s3.{REGION}.", {"Ref": "AWS::URLSuffix"}]]}}}


def test_the_real_time_grants_are_unchanged_and_only_async_adds_a_policy(role_template):
    """The check can fail: the same role without async models has no such policy."""
    without = synthesize_role(())
    assert not [key for key in without.find_resources("AWS::IAM::Policy") if "AsyncInference" in key]
    default = [p for key, p in role_template.find_resources("AWS::IAM::Policy").items() if "DefaultPolicy" in key]
    assert default == list(without.find_resources("AWS::IAM::Policy").values())


def test_the_pipeline_step_calls_async_endpoints_as_such_and_waits_longer():
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam
    from aws_cdk import pipelines

    from smoke_test.async_check import DEFAULT_WAIT_SECONDS
    from stacks.pipeline_steps import smoke_test_step

    stack = cdk.Stack(cdk.App(), "Pipeline", env=cdk.Environment(account=PIPELINE_ACCOUNT, region=REGION))
    source = pipelines.CodePipelineSource.connection("owner/repo", "main", connection_arn=(
        f"arn:aws:codeconnections:{REGION}:{PIPELINE_ACCOUNT}:connection/abc"))

    def step(async_endpoints=()):
        return smoke_test_step(source, region=REGION, account=ACCOUNT, role_name="Dev-Serving-SmokeTest",
                               runner=iam.Role.from_role_arn(stack, f"Runner{len(async_endpoints)}",
                                                             f"arn:aws:iam::{PIPELINE_ACCOUNT}:role/runner"),
                               role_arn=cdk.CfnOutput(stack, f"RoleArn{len(async_endpoints)}", value="x"),
                               endpoints={"Dev-Serving-a": False, "Dev-Serving-b": True},
                               async_endpoints=async_endpoints)

    plain, mixed = step(), step(("Dev-Serving-b",))
    assert plain.commands[0].endswith("--endpoint-name Dev-Serving-a --detector-endpoint-name Dev-Serving-b")
    assert mixed.commands[0].endswith("--endpoint-name Dev-Serving-a --async-detector-endpoint-name Dev-Serving-b")
    assert mixed.timeout.to_minutes() == plain.timeout.to_minutes() + DEFAULT_WAIT_SECONDS / 60


# The whole app with the classifier on the async profile (tests/conftest.py: one synthesis, cdk-nag included).


def test_the_endpoints_output_path_is_the_layout_the_smoke_test_reads(async_app):
    """What the smoke test parses (async_layout) is what the stack configures; the bucket name is an import."""
    template = async_app.template("staging", "Serving").to_json()
    [config] = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::EndpointConfig"]
    output = config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"]["Fn::Join"][1]
    assert (output[0], output[-1]) == ("s3://", "/async-inference/image-classifier/output/")
    bucket = "staging-bucket"
    layout = async_layout({"AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": f"s3://{bucket}{output[-1]}"}}},
                          "Staging-Serving-image-classifier")
    assert str(layout.input) == f"s3://{bucket}/async-inference/image-classifier/input/"


def test_the_stages_smoke_test_role_may_call_the_async_endpoint(async_app):
    template = async_app.template("staging", "Serving").to_json()
    [statements] = [r["Properties"]["PolicyDocument"]["Statement"] for key, r in template["Resources"].items()
                    if r["Type"] == "AWS::IAM::Policy" and key.startswith("SmokeTestAsyncInference")]
    assert {"sagemaker:InvokeEndpointAsync", "s3:PutObject", "s3:GetObject", "s3:ListBucket"} <= {
        s["Action"] for s in statements if isinstance(s["Action"], str)}
    assert "/async-inference/image-classifier/input/*" in json.dumps(statements)


def test_the_pipeline_checks_async_endpoints_as_async(async_app):
    from aws_cdk.assertions import Template

    pipeline = Template.from_stack(async_app.app.node.find_child("Pipeline")).to_json()
    commands = [json.loads(r["Properties"]["Source"]["BuildSpec"])["phases"]["build"]["commands"]
                for key, r in pipeline["Resources"].items()
                if r["Type"] == "AWS::CodeBuild::Project" and "StagingSmokeTest" in key]
    assert commands == [['python -m smoke_test --region "$ENDPOINT_REGION" --assume-role-arn "$SMOKE_TEST_ROLE_ARN" '
                         "--async-endpoint-name Staging-Serving-image-classifier"]]


def test_each_acknowledgement_of_the_async_grants_matches_a_finding(async_app):
    """cdk-nag passed (the fixture synthesized); and no acknowledgement is left without its finding."""
    from tests.test_stacks import stale_acknowledgements

    assert stale_acknowledgements(async_app) == []
