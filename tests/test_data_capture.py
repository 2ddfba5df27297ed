"""Data capture: the environment switch, its refusals, the EndpointConfig, the bucket's lifecycle rule and the grants."""
import json

import pytest
from aws_cdk.assertions import Match

from config import ConfigError, load_config
from config.data_capture import capture_modes
from config.schema import DataCaptureSpec
from stacks.constructs.data_capture import EXPIRATION_RULE_ID
from tests.conftest import SynthesizedApp, build_for, make_config
from tests.test_stacks import _cfn_lint, _only, stale_acknowledgements

ENVIRONMENTS = ("dev", "staging", "prod")


def _capture(**settings):
    def change(env):
        env["data_capture"] = {"enabled": True, **settings}
    return change


def _no_capture(env):
    env.pop("data_capture", None)


# ------------------------------------------------------------ config: what SageMaker refuses, refused at load time


def test_serverless_in_a_capturing_environment_is_left_out_with_a_warning_naming_the_fix(tmp_path):
    """Serverless stays a one-line switch: prod's capture skips it, and synthesis says so."""
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam
    from aws_cdk.assertions import Annotations
    from stacks.constructs.data_capture import data_capture_of

    serverless = lambda m: m["serving"].update(profile="serverless")  # noqa: E731
    config = load_config(make_config(tmp_path / "c", serverless))  # the shipped prod captures
    deployment = config.environment("prod").models[0]
    assert deployment.data_capture is not None and deployment.target.is_serverless
    stack = cdk.Stack()
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    assert data_capture_of(stack, deployment, store=None, role=role, config_file="config/models/image-classifier.yaml") is None
    (warning,) = Annotations.from_stack(stack).find_warning("*", Match.string_like_regexp("cannot capture"))
    text = warning.entry.data
    assert "'image-classifier' serves on serverless" in text and "serving.profile: cpu, gpu or async" in text
    assert "config/models/image-classifier.yaml" in text
    # The same environment captures an instance model: the warning is about serverless, not about capture.
    cpu = load_config(make_config(tmp_path / "cpu", lambda m: m["serving"].update(profile="cpu"))).environment("prod").models[0]
    assert cpu.data_capture is not None and not cpu.target.is_serverless


@pytest.mark.parametrize("key, value", [
    ("json_content_types", "application/json; charset=utf-8"),  # parameters are not part of the pattern
    ("csv_content_types", "csv"),  # no subtype
    ("json_content_types", "application/" + "x" * 260),  # over 256 characters
])
def test_a_content_type_sagemaker_refuses_is_refused(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"environments/dev.yaml: data_capture.{key} has .*type/subtype"):
        load_config(make_config(tmp_path / "c", env_changes={"dev": _capture(**{key: [value]})}))


def test_schema_limits_follow_botocore(tmp_path):
    # SamplingPercentage 0-100 (1 here: 0 would capture nothing), 1-10 content types per list.
    for case, (settings, match) in enumerate((({"sampling_percent": 101}, "sampling_percent"), ({"sampling_percent": 0}, "sampling_percent"),
                            ({"csv_content_types": [f"text/c{i}" for i in range(11)]}, "csv_content_types"),
                            ({"capture": []}, "capture"))):
        with pytest.raises(ConfigError, match=match):
            load_config(make_config(tmp_path / str(case), env_changes={"dev": _capture(**settings)}))


def test_capture_modes_are_sagemakers_in_a_stable_order():
    assert capture_modes(DataCaptureSpec(capture=("output", "input"))) == ["Input", "Output"]
    assert capture_modes(DataCaptureSpec(capture=("output",))) == ["Output"]


def test_only_prod_captures_in_the_shipped_config():
    config = load_config("config")
    assert {env.name: env.data_capture is not None for env in config.environments} == {"dev": False, "staging": False, "prod": True}
    prod = config.environment("prod").data_capture
    assert prod.sampling_percent == 10 and prod.expire_after_days == 30


# ------------------------------------------------------------ the shipped config (EIA): dev none, prod captures


def test_dev_has_no_capture_rule_or_grant(eia_app):
    serving = eia_app.template("dev", "Serving")
    assert "DataCaptureConfig" not in _only(serving, "AWS::SageMaker::EndpointConfig")["Properties"]
    assert not [p for p in serving.find_resources("AWS::IAM::Policy") if "DataCapture" in p]
    bucket = eia_app.template("dev", "ArtifactStore").to_json()["Resources"]["ModelArtifactBucket"]
    assert [r.get("Id") for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]] == [None]


def test_prod_endpoint_config_captures_into_the_artifact_bucket_with_its_key(eia_app):
    config = _only(eia_app.template("prod", "Serving"), "AWS::SageMaker::EndpointConfig")["Properties"]
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 10
    assert capture["CaptureOptions"] == [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]
    assert capture["CaptureContentTypeHeader"] == {"JsonContentTypes": ["application/json"], "CsvContentTypes": ["text/csv"]}
    assert capture["KmsKeyId"] == {"Fn::ImportValue": "Prod-ArtifactStore-ModelArtifactKeyArn"}
    uri = json.dumps(capture["DestinationS3Uri"])
    assert "s3://" in uri and "Prod-ArtifactStore-ModelArtifactBucketArn" in uri and "/data-capture/image-classifier/" in uri


def test_prod_bucket_expires_captures_and_keeps_its_pinned_ids(eia_app):
    template = eia_app.template("prod", "ArtifactStore")
    resources = template.to_json()["Resources"]
    assert {"ModelArtifactBucket", "ModelArtifactKey", "ModelArtifactAccessLogs"} <= set(resources)
    rules = resources["ModelArtifactBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (rule,) = [r for r in rules if r.get("Id") == EXPIRATION_RULE_ID]
    assert rule == {"Id": EXPIRATION_RULE_ID, "Prefix": "data-capture/", "Status": "Enabled", "ExpirationInDays": 30,
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}
    assert {"NoncurrentVersionExpiration": {"NoncurrentDays": 90}, "Status": "Enabled"} in rules  # the artifacts' rule stays


def test_prod_role_may_write_captures_under_its_prefix_only(eia_app):
    template = eia_app.template("prod", "Serving")
    policies = {k: v for k, v in template.find_resources("AWS::IAM::Policy").items() if "DataCapture" in k}
    (policy,) = policies.values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Action"] for s in statements] == ["s3:PutObject", ["kms:Encrypt", "kms:GenerateDataKey"]]
    assert "/data-capture/image-classifier/*" in json.dumps(statements[0]["Resource"])
    assert statements[1]["Resource"] == {"Fn::ImportValue": "Prod-ArtifactStore-ModelArtifactKeyArn"}
    (role_id,) = [k for k in template.find_resources("AWS::IAM::Role") if k.startswith("ImageClassifierExecutionRole")]
    assert policy["Properties"]["Roles"] == [{"Ref": role_id}]
    # The endpoint waits for the grant: SageMaker writes captures from its first request.
    endpoint = _only(template, "AWS::SageMaker::Endpoint")
    assert next(iter(policies)) in endpoint["DependsOn"]
    template.has_resource_properties("AWS::IAM::Policy", Match.object_like({"PolicyDocument": Match.object_like({
        "Statement": Match.array_with([Match.object_like({"Action": "s3:PutObject", "Effect": "Allow"})])})}))


# ------------------------------------------------------------ capture in every environment: nag and cfn-lint clean


@pytest.fixture(scope="module")
def capturing_cpu_app(tmp_path_factory):
    """cpu profile, capture on in dev, staging and prod (output only and JSON only in dev)."""
    root = tmp_path_factory.mktemp("capture")
    config = make_config(root / "config", lambda m: m["serving"].update(profile="cpu"), env_changes={
        "dev": _capture(capture=["output"], csv_content_types=[], expire_after_days=7), "staging": _capture()})
    build_for(config, root / "artifacts")
    return SynthesizedApp(config, root / "artifacts", root / "out")


def _assert_clean(app) -> None:
    """cdk-nag found nothing unacknowledged, no acknowledgement is stale, cfn-lint finds nothing."""
    report = json.loads((app.outdir / "validation-report.json").read_text())
    assert all(p["violations"] == [] for p in report["pluginReports"])
    assert stale_acknowledgements(app) == []
    for path in app.template_files():
        assert _cfn_lint(path) == [], path.name


def test_every_environment_captures_clean_under_cdk_nag_and_cfn_lint(capturing_cpu_app):
    _assert_clean(capturing_cpu_app)
    for env in ENVIRONMENTS:
        config = _only(capturing_cpu_app.template(env, "Serving"), "AWS::SageMaker::EndpointConfig")["Properties"]
        assert config["DataCaptureConfig"]["EnableCapture"] is True and "KmsKeyId" in config  # volume key kept too


def test_settings_follow_the_environment_file(capturing_cpu_app):
    capture = _only(capturing_cpu_app.template("dev", "Serving"), "AWS::SageMaker::EndpointConfig")["Properties"]["DataCaptureConfig"]
    assert capture["CaptureOptions"] == [{"CaptureMode": "Output"}] and capture["InitialSamplingPercentage"] == 20
    assert capture["CaptureContentTypeHeader"] == {"JsonContentTypes": ["application/json"]}  # an empty list is left out
    rules = capturing_cpu_app.template("dev", "ArtifactStore").to_json()["Resources"]["ModelArtifactBucket"]["Properties"]
    assert {"Id": EXPIRATION_RULE_ID, "ExpirationInDays": 7}.items() <= next(
        r for r in rules["LifecycleConfiguration"]["Rules"] if r.get("Id") == EXPIRATION_RULE_ID).items()


# ------------------------------------------------------------ the other endpoint features: allowed, and built together


def test_scale_to_zero_and_async_models_may_capture(tmp_path):
    """No documented exclusion (config/data_capture.py): both load with the environment's capture."""
    to_zero = lambda m: (m["serving"].update(profile="cpu"), m["scaling"].update(min_instances=0))  # noqa: E731
    dev = load_config(make_config(tmp_path / "ic", to_zero, env_changes={"dev": _capture()})).environment("dev").models[0]
    assert dev.uses_inference_component and dev.data_capture is not None
    queued = load_config(make_config(tmp_path / "async", lambda m: m["serving"].update(profile="async"))).environment("prod")
    assert queued.models[0].target.is_async and queued.data_capture is not None


def test_async_endpoint_captures_beside_its_queue_clean_under_cdk_nag_and_cfn_lint(async_app):
    _assert_clean(async_app)
    for env in ENVIRONMENTS:
        config = _only(async_app.template(env, "Serving"), "AWS::SageMaker::EndpointConfig")["Properties"]
        assert {"AsyncInferenceConfig", "DataCaptureConfig"} <= set(config)
        assert "/data-capture/image-classifier/" in json.dumps(config["DataCaptureConfig"]["DestinationS3Uri"])
