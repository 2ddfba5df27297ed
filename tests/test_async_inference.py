"""serving.profile: async: the endpoint config, topics, grants, queue autoscaling, request size, and every refusal.

One synthesized app (tests/conftest.py's async_app): the classifier on async in every environment, scaled to zero
in dev and staging (scaling.min_instances: 0), kept at one instance in prod.
"""
import json

import pytest

from config import load_config
from config.errors import ConfigError
from tests.conftest import make_config

MODEL = "image-classifier"
MiB = 1024 * 1024
KEY_IMPORT = {"Fn::ImportValue": "{env}-ArtifactStore-ModelArtifactKeyArn"}
BUCKET_IMPORT = {"Fn::ImportValue": "{env}-ArtifactStore-ModelArtifactBucketArn"}


def _async(**profile):
    def change(model: dict) -> None:
        model["serving"]["profile"] = "async"
        if profile:
            model["serving"]["profiles"]["async"] = {"framework_version": "2.6.0", **profile}

    return change


def _min_instances(value: int):
    return lambda env: env.setdefault("scaling", {}).update(min_instances=value)



def _import(template: dict, env: str) -> dict:
    return {"Fn::ImportValue": template["Fn::ImportValue"].format(env=env.capitalize())}


def _only(template, resource_type: str) -> dict:
    (resource,) = template.find_resources(resource_type).values()
    return resource


def _joined(value) -> str:
    """The literal parts of an Fn::Join, the tokens as <token>: enough to assert a path's shape."""
    parts = value["Fn::Join"][1]
    return "".join(part if isinstance(part, str) else "<token>" for part in parts)


# ------------------------------------------------------------------ what is deployed


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_endpoint_config_writes_answers_and_failures_under_the_artifact_bucket(async_app, env):
    template = async_app.template(env, "Serving")
    config = _only(template, "AWS::SageMaker::EndpointConfig")["Properties"]
    output = config["AsyncInferenceConfig"]["OutputConfig"]
    assert _joined(output["S3OutputPath"]) == f"s3://<token>/async-inference/{MODEL}/output/"
    assert _joined(output["S3FailurePath"]) == f"s3://<token>/async-inference/{MODEL}/failures/"
    # The bucket is the environment's artifact bucket (its name taken from the imported ARN).
    assert json.dumps(_import(BUCKET_IMPORT, env)) in json.dumps(output["S3OutputPath"])
    assert output["KmsKeyId"] == _import(KEY_IMPORT, env)
    topics = {logical_id for logical_id in template.find_resources("AWS::SNS::Topic")}
    notification = output["NotificationConfig"]
    assert {notification["SuccessTopic"]["Ref"], notification["ErrorTopic"]["Ref"]} == topics
    # None configured: one request per model-server worker (ml.c5.xlarge: 4 workers, config/workers.py).
    assert config["AsyncInferenceConfig"]["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 4}
    (variant,) = config["ProductionVariants"]
    assert variant["InstanceType"] == "ml.c5.xlarge" and "AcceleratorType" not in variant and variant["InitialInstanceCount"] == 1


def _artifact_bucket_rules(app, env: str) -> list:
    from stacks.constructs.artifact_bucket import BUCKET_LOGICAL_ID

    bucket = app.template(env, "ArtifactStore").to_json()["Resources"][BUCKET_LOGICAL_ID]
    return bucket["Properties"]["LifecycleConfiguration"]["Rules"]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_artifact_bucket_expires_the_models_requests_answers_and_failures(async_app, env):
    rules = _artifact_bucket_rules(async_app, env)
    (rule,) = [r for r in rules if r.get("Prefix", "").startswith("async-inference/")]
    assert rule["Prefix"] == f"async-inference/{MODEL}/" and rule["ExpirationInDays"] == 7  # the default
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1} and rule["Status"] == "Enabled"


def test_without_async_models_the_bucket_has_no_async_rule(eia_app):
    rules = _artifact_bucket_rules(eia_app, "prod")
    assert rules and not [r for r in rules if r.get("Prefix", "").startswith("async-inference/")]


def test_the_topics_are_encrypted_and_refuse_requests_without_tls(async_app):
    template = async_app.template("dev", "Serving")
    topics = template.find_resources("AWS::SNS::Topic")
    assert len(topics) == 2
    assert all(topic["Properties"]["KmsMasterKeyId"] == _import(KEY_IMPORT, "dev") for topic in topics.values())
    policies = template.find_resources("AWS::SNS::TopicPolicy")
    assert {policy["Properties"]["Topics"][0]["Ref"] for policy in policies.values()} == set(topics)
    for policy in policies.values():
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_outputs_name_both_topics(async_app):
    outputs = async_app.template("dev", "Serving").to_json()["Outputs"]
    by_description = {value["Description"]: value["Value"] for value in outputs.values()}
    assert any("announces each answer" in d for d in by_description)
    assert any("announces each failure" in d for d in by_description)


def test_the_execution_role_reads_requests_writes_answers_and_publishes(async_app):
    template = async_app.template("dev", "Serving")
    policies = template.find_resources("AWS::IAM::Policy")
    (access,) = [p for logical_id, p in policies.items() if "AsyncInferenceExecutionRoleAccess" in logical_id]
    statements = access["Properties"]["PolicyDocument"]["Statement"]
    by_action = {tuple(sorted([s["Action"]] if isinstance(s["Action"], str) else s["Action"])): s["Resource"] for s in statements}
    assert _joined(by_action[("s3:GetObject",)]) == f"<token>/async-inference/{MODEL}/input/*"
    assert sorted(_joined(r) for r in by_action[("s3:AbortMultipartUpload", "s3:PutObject")]) == [
        f"<token>/async-inference/{MODEL}/failures/*", f"<token>/async-inference/{MODEL}/output/*"]
    assert by_action[("kms:Decrypt", "kms:GenerateDataKey")] == _import(KEY_IMPORT, "dev")
    assert {r["Ref"] for r in by_action[("sns:Publish",)]} == set(template.find_resources("AWS::SNS::Topic"))
    role = [r for r in template.find_resources("AWS::IAM::Role") if "ExecutionRole" in r]
    assert access["Properties"]["Roles"] == [{"Ref": role[0]}]
    # The endpoint waits for the grants: SageMaker reads the first queued request as soon as it is in service.
    endpoint = _only(template, "AWS::SageMaker::Endpoint")
    assert any("AsyncInferenceExecutionRoleAccess" in d for d in endpoint["DependsOn"])


@pytest.mark.parametrize("env", ["dev", "staging"])
def test_scaled_to_zero_the_queue_backlog_drives_capacity_from_zero(async_app, env):
    template = async_app.template(env, "Serving")
    endpoint_name = f"{env.capitalize()}-Serving-{MODEL}"
    target = _only(template, "AWS::ApplicationAutoScaling::ScalableTarget")["Properties"]
    assert target["MinCapacity"] == 0 and target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    policies = {p["Properties"]["PolicyType"]: p["Properties"] for p in template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()}
    tracking = policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking == {
        "CustomizedMetricSpecification": {
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
            "MetricName": "ApproximateBacklogSizePerInstance", "Namespace": "AWS/SageMaker", "Statistic": "Average"},
        "TargetValue": 5,
    }
    # SageMaker developer guide, "Autoscale an asynchronous endpoint": HasBacklogWithoutCapacity-ScalingPolicy.
    assert policies["StepScaling"]["StepScalingPolicyConfiguration"] == {
        "AdjustmentType": "ChangeInCapacity", "Cooldown": 300, "MetricAggregationType": "Average",
        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]}
    alarms = [a["Properties"] for a in template.find_resources("AWS::CloudWatch::Alarm").values()
              if a["Properties"]["MetricName"] == "HasBacklogWithoutCapacity"]
    (alarm,) = alarms
    assert {k: alarm[k] for k in ("Statistic", "EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator",
                                   "TreatMissingData", "Period", "Dimensions")} == {
        "Statistic": "Average", "EvaluationPeriods": 2, "DatapointsToAlarm": 2, "Threshold": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "missing", "Period": 60,
        "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}]}
    step_policy = [k for k, p in template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").items()
                   if p["Properties"]["PolicyType"] == "StepScaling"]
    assert alarm["AlarmActions"] == [{"Ref": step_policy[0]}]


def test_in_prod_one_instance_stays_and_there_is_no_scale_from_zero(async_app):
    template = async_app.template("prod", "Serving")
    assert _only(template, "AWS::ApplicationAutoScaling::ScalableTarget")["Properties"]["MinCapacity"] == 1
    (policy,) = template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    assert policy["Properties"]["PolicyType"] == "TargetTrackingScaling"
    metrics = {a["Properties"].get("MetricName") for a in template.find_resources("AWS::CloudWatch::Alarm").values()}
    assert "HasBacklogWithoutCapacity" not in metrics


def test_rollback_alarms_still_watch_errors_and_latency_and_zero_takes_all_at_once(async_app):
    """Async endpoints publish Invocation5XXErrors and ModelLatency (developer guide, "Monitor asynchronous endpoint")."""
    for env, routing in (("dev", "ALL_AT_ONCE"), ("staging", "ALL_AT_ONCE"), ("prod", "CANARY")):
        template = async_app.template(env, "Serving")
        deployment = _only(template, "AWS::SageMaker::Endpoint")["Properties"]["DeploymentConfig"]
        assert deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == routing, env
        rollback = {a["AlarmName"]["Ref"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]}
        alarms = template.find_resources("AWS::CloudWatch::Alarm")
        assert {alarms[r]["Properties"]["MetricName"] for r in rollback} == {"Invocation5XXErrors", "ModelLatency"}


def test_the_dashboard_graphs_the_queue(async_app):
    body = json.dumps(_only(async_app.template("dev", "Serving"), "AWS::CloudWatch::Dashboard")["Properties"]["DashboardBody"])
    assert "ApproximateBacklogSize" in body and "ApproximateAgeOfOldestRequest" in body


def test_the_container_takes_async_sized_bodies(async_app):
    model = _only(async_app.template("dev", "Serving"), "AWS::SageMaker::Model")["Properties"]
    environment = model["PrimaryContainer"]["Environment"]
    assert environment["INFERENCE_MAX_REQUEST_BYTES"] == str(16 * MiB)
    assert environment["TS_MAX_REQUEST_SIZE"] == environment["MMS_MAX_REQUEST_SIZE"] == str(32 * MiB)
    assert model["PrimaryContainer"]["Image"].endswith("pytorch-inference:2.6.0-cpu-py312")


def test_cdk_nag_is_clean_with_reasons_for_each_wildcard(async_app):
    report = json.loads((async_app.outdir / "validation-report.json").read_text())
    (nag,) = [p for p in report["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "success" and nag["violations"] == []
    acknowledged = {(s["ruleName"], v["constructPath"]) for s in nag["suppressedViolations"] for v in s["violatingConstructs"]}
    for env in ("Dev", "Staging", "Prod"):
        ours = {rule for rule, path in acknowledged if path == f"{env}/Serving/ImageClassifier/AsyncInference/ExecutionRoleAccess/Resource"}
        assert ours == {f"AwsSolutions-IAM5[Resource::{env}-ArtifactStore-ModelArtifactBucketArn/async-inference/{MODEL}/{p}/*]"
                        for p in ("input", "output", "failures")}


def test_every_acknowledgement_matches_a_finding_that_fired(async_app):
    from tests.test_stacks import stale_acknowledgements

    assert stale_acknowledgements(async_app) == []


def test_cfn_lint_is_clean_in_every_environment(async_app):
    from tests.test_stacks import _cfn_lint

    files = async_app.template_files()
    assert len(files) == 6
    for path in files:
        assert [str(m) for m in _cfn_lint(path)] == [], path.name


# ------------------------------------------------------------------ configuration: defaults and refusals


def _deployment(tmp_path, model_change, env_changes=None, env="dev"):
    config = load_config(make_config(tmp_path / "c", model_change, env_changes))
    return next(m for m in config.environment(env).models if m.name == MODEL)


def _error(tmp_path, model_change, env_changes=None) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(make_config(tmp_path / "c", model_change, env_changes))
    return str(raised.value)


def _with(*changes):
    def change(model):
        for c in changes:
            c(model)

    return change


def _limits(**limits):
    return lambda m: m["serving"].setdefault("limits", {}).update(limits)


def _strategy(strategy):
    return lambda m: m["serving"].setdefault("deployment", {}).update(strategy=strategy)


def test_async_bodies_default_to_16_mib_and_a_set_limit_is_kept(tmp_path):
    assert _deployment(tmp_path / "a", _async()).spec.serving.limits.max_request_bytes == 16 * MiB
    assert _deployment(tmp_path / "b", _with(_async(), _limits(max_request_bytes=100 * MiB))).spec.serving.limits.max_request_bytes == 100 * MiB
    assert _deployment(tmp_path / "c", lambda m: m["serving"].update(profile="cpu")).spec.serving.limits.max_request_bytes == 6 * MiB


@pytest.mark.parametrize("profile", ["cpu", "gpu", "eia", "serverless"])
def test_a_real_time_profile_refuses_bodies_above_6_mib_and_points_to_async(tmp_path, profile):
    message = _error(tmp_path, _with(lambda m: m["serving"].update(profile=profile), _limits(max_request_bytes=7 * MiB)))
    assert "serving.limits.max_request_bytes = 7340032" in message and "6291456" in message
    assert "serving.profile: async" in message and "models/image-classifier.yaml" in message


def test_a_real_time_profile_takes_exactly_6_mib(tmp_path):
    at_limit = _with(lambda m: m["serving"].update(profile="cpu"), _limits(max_request_bytes=6 * MiB))
    assert _deployment(tmp_path, at_limit).spec.serving.limits.max_request_bytes == 6 * MiB


def test_async_refuses_bodies_above_1_gb(tmp_path):
    message = _error(tmp_path, _with(_async(), _limits(max_request_bytes=1_000_000_001)))
    assert "max_request_bytes" in message and "1000000000" in message


def test_a_body_the_instance_cannot_hold_is_refused_with_the_largest_that_fits(tmp_path):
    # ml.c5.xlarge: 8 GiB, 4 workers: 2048 MiB each, of which the worst request takes 1000 MiB; 3 copies of the body.
    message = _error(tmp_path, _with(_async(), _limits(max_request_bytes=1_000_000_000)))
    assert "serving.limits.max_request_bytes = 1000000000 is more than ml.c5.xlarge can hold" in message
    assert f"at most {int((2048 - 1000) / 3 * MiB)}" in message and "models/image-classifier.yaml" in message
    # The same limit fits a GPU host: 16 GiB, one worker.
    big = _deployment(tmp_path / "gpu", _with(_async(instance_type="ml.g4dn.xlarge"), _limits(max_request_bytes=1_000_000_000)))
    assert big.spec.serving.limits.max_request_bytes == 1_000_000_000


def test_the_model_servers_limit_stays_a_java_int(tmp_path):
    from config.container import JAVA_INT_MAX, container_environment

    big = _deployment(tmp_path, _with(_async(instance_type="ml.g4dn.xlarge"), _limits(max_request_bytes=1_000_000_000)))
    environment = container_environment(big)
    assert environment["TS_MAX_REQUEST_SIZE"] == str(2_000_000_000) and 2_000_000_000 <= JAVA_INT_MAX
    assert environment["INFERENCE_MAX_REQUEST_BYTES"] == "1000000000"


def test_scale_to_zero_without_autoscaling_is_refused(tmp_path):
    message = _error(tmp_path, _with(_async(), lambda m: m["scaling"].update(autoscaling=False)), {"dev": _min_instances(0)})
    assert "scaling.min_instances = 0" in message and "needs autoscaling" in message
    assert "environments/dev.yaml" in message and "remove scaling.autoscaling: false" in message


@pytest.mark.parametrize("strategy", ["canary", "linear"])
def test_stepped_traffic_shifting_is_refused_when_async_scales_to_zero(tmp_path, strategy):
    message = _error(tmp_path, _with(_async(), _strategy(strategy)), {"dev": _min_instances(0)})
    assert f"serving.deployment.strategy = {strategy!r}" in message and "scales to 0 instances" in message
    assert "all_at_once" in message and "models/image-classifier.yaml" in message


def test_auto_resolves_to_all_at_once_at_zero_and_canary_with_an_instance(tmp_path):
    assert _deployment(tmp_path / "a", _async(), {"dev": _min_instances(0)}).deployment_strategy == "all_at_once"
    assert _deployment(tmp_path / "b", _async()).deployment_strategy == "canary"
    assert _deployment(tmp_path / "c", _with(_async(), _strategy("linear"))).deployment_strategy == "linear"


def test_an_accelerator_on_async_is_refused(tmp_path):
    message = _error(tmp_path, _async(instance_type="ml.m5.large", accelerator_type="ml.eia2.medium"))
    assert "accelerator_type" in message and "eia" in message


def test_an_inferentia_instance_on_async_is_refused(tmp_path):
    message = _error(tmp_path, _async(instance_type="ml.inf2.xlarge"))
    assert "serving.profiles.async.instance_type" in message and "ml.c5.xlarge" in message


def test_the_concurrency_cap_defaults_to_the_workers_and_a_set_one_is_kept(tmp_path):
    from config.async_inference import max_concurrent_invocations

    assert max_concurrent_invocations(_deployment(tmp_path / "a", _async())) == 4
    assert max_concurrent_invocations(_deployment(tmp_path / "b", _async(instance_type="ml.g4dn.xlarge"))) == 1
    capped = _with(_async(), lambda m: m["serving"].update(async_inference={"max_concurrent_invocations_per_instance": 2}))
    assert max_concurrent_invocations(_deployment(tmp_path / "c", capped)) == 2


def test_the_s3_layout_is_one_folder_per_model():
    from config.async_inference import async_prefixes

    assert async_prefixes("detector") == ("async-inference/detector/input/", "async-inference/detector/output/",
                                          "async-inference/detector/failures/")
