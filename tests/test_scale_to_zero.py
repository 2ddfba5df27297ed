"""Scale to zero (scaling.min_instances: 0): refused where it cannot work, an inference component where it can,
and a smoke test that finds, wakes and invokes the component (botocore Stubber, no AWS)."""
import datetime
import io
import json

import pytest
import yaml
from botocore.response import StreamingBody

from config import load_config
from config.errors import ConfigError
from config.scale_to_zero import copy_resources, inference_component_regions
from config.workers import instance_types
from stacks.constructs.inference_component import inference_component_logical_id
from stacks.constructs.model_endpoint import endpoint_logical_id
from tests.test_workers import UNLISTED_TYPE  # the one hosting type instance_types.json leaves out on purpose
from tests.conftest import SynthesizedApp, build_for, make_config
from tests.test_smoke_test import (ENDPOINT, GOOD_ANSWER, JPEG, REGION, Endpoint, failure_line,  # noqa: F401
                                   no_aws)

COMPONENT = ENDPOINT  # the component is named after its endpoint (config/scale_to_zero.py)


def _cpu(model: dict) -> None:
    model["serving"]["profile"] = "cpu"


def _scale_to_zero(env: dict) -> None:
    env.setdefault("scaling", {})["min_instances"] = 0


def _load(tmp_path, model_change=_cpu, env_changes=None):
    return load_config(make_config(tmp_path / "c", model_change, env_changes or {"dev": _scale_to_zero}))


def _error(tmp_path, model_change=_cpu, env_changes=None) -> str:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, model_change, env_changes)
    return str(raised.value)


# ------------------------------------------------------------ what the config accepts and refuses


def test_min_instances_0_makes_a_cpu_model_an_inference_component_in_that_environment_only(tmp_path):
    config = _load(tmp_path)
    by_env = {env.name: env.models[0] for env in config.environments}
    assert by_env["dev"].scales_to_zero and by_env["dev"].uses_inference_component
    assert not by_env["staging"].uses_inference_component and not by_env["prod"].uses_inference_component


def test_the_model_file_can_set_it_too(tmp_path):
    config = _load(tmp_path, lambda m: (_cpu(m), m["scaling"].update(min_instances=0)), env_changes={})
    assert [env.models[0].uses_inference_component for env in config.environments] == [True, True, False]  # prod: min 1


def test_elastic_inference_is_refused_with_the_profile_switch_as_fix(tmp_path):
    message = _error(tmp_path, model_change=lambda m: None)  # the shipped eia profile
    assert "environments/dev.yaml: scaling.min_instances = 0" in message
    assert "models/image-classifier.yaml uses serving.profile: eia" in message
    assert "serving.profile: cpu or gpu" in message and "set scaling.min_instances to 1 or more" in message


def test_serverless_accepts_it_as_a_no_op(tmp_path):
    no_capture = lambda e: e.setdefault("data_capture", {}).update(enabled=False)  # serverless refuses data capture
    config = _load(tmp_path, lambda m: m["serving"].update(profile="serverless"), {"dev": _scale_to_zero, "prod": no_capture})
    dev = config.environment("dev").models[0]
    assert dev.scales_to_zero and not dev.uses_inference_component


def test_without_autoscaling_nothing_would_wake_it(tmp_path):
    message = _error(tmp_path, env_changes={"dev": lambda e: e["scaling"].update(min_instances=0, autoscaling=False)})
    assert "scaling.autoscaling is false" in message and "Remove scaling.autoscaling: false" in message


def test_a_region_without_the_cloudformation_resource_is_refused(tmp_path):
    assert "us-west-1" not in inference_component_regions()
    message = _error(tmp_path, env_changes={"dev": lambda e: (_scale_to_zero(e), e.update(region="us-west-1"))})
    assert "region 'us-west-1'" in message and "AWS::SageMaker::InferenceComponent" in message
    assert "config/data/inference_component_regions.json" in message and "us-east-1" in message


def test_an_instance_type_without_sizes_is_refused(tmp_path):
    def change(model):
        _cpu(model)
        model["serving"]["profiles"]["cpu"]["instance_type"] = UNLISTED_TYPE
        model["serving"].update(workers=2, threads_per_worker=1)  # the worker plan needs no sizes then

    assert UNLISTED_TYPE not in instance_types()
    message = _error(tmp_path, change)
    assert f"serving.profiles.cpu.instance_type = '{UNLISTED_TYPE}'" in message and "config/data/instance_types.json" in message


def test_a_canary_is_refused_rolling_batches_are_the_fix(tmp_path):
    message = _error(tmp_path, lambda m: (_cpu(m), m["serving"].update(deployment={"strategy": "canary"})))
    assert "serving.deployment.strategy = 'canary'" in message and "Use strategy: auto or linear" in message


def test_a_shadow_is_refused(tmp_path):
    message = _error(tmp_path, lambda m: (_cpu(m), m["serving"].update(shadow={"profile": "gpu"})))
    assert "serving.shadow" in message and "scaling.min_instances of 1 or more" in message


def test_regions_match_the_cloudformation_schemas_of_the_installed_cfn_lint():
    import glob
    import os

    import cfnlint

    providers = os.path.join(os.path.dirname(cfnlint.__file__), "data", "schemas", "providers")
    offered = set()
    for path in glob.glob(os.path.join(providers, "*.json")):
        schemas = json.loads(open(path).read())
        if "AWS::SageMaker::InferenceComponent" in schemas and "AWS::SageMaker::Endpoint" in schemas:
            offered.add(os.path.basename(path)[: -len(".json")])
    assert set(inference_component_regions()) == offered


@pytest.mark.parametrize("instance_type", ["ml.c5.large", "ml.c5.xlarge", "ml.m5.large", "ml.g4dn.xlarge", "ml.g5.12xlarge"])
def test_one_copy_reserves_at_most_half_an_instance_and_all_its_gpus(instance_type):
    known, resources = instance_types()[instance_type], copy_resources(instance_type)
    assert 0.25 <= resources.cpu_cores <= known["vcpus"] / 2
    assert 128 <= resources.memory_mb <= known["memory_gib"] * 1024 / 2
    assert resources.accelerators == (known["gpus"] or None)


# ------------------------------------------------------------ what gets deployed: a cpu and a gpu model, dev and staging at 0


@pytest.fixture(scope="module")
def scale_to_zero_app(tmp_path_factory) -> SynthesizedApp:
    root = tmp_path_factory.mktemp("scale-to-zero")
    config = make_config(root / "config", _cpu, {"dev": _scale_to_zero, "staging": _scale_to_zero})
    classifier = yaml.safe_load((config / "models" / "image-classifier.yaml").read_text())
    classifier["serving"]["profile"] = "gpu"
    (config / "models" / "gpu-classifier.yaml").write_text(yaml.safe_dump(classifier))
    build_for(config, root / "artifacts")
    return SynthesizedApp(config, root / "artifacts", root / "out")


def _resources(template, resource_type) -> dict:
    return template.find_resources(resource_type)


def _component(template, model: str) -> dict:
    return _resources(template, "AWS::SageMaker::InferenceComponent")[inference_component_logical_id(model)]["Properties"]


def _endpoint_config_of(template, model_construct: str) -> dict:
    (config,) = [r["Properties"] for logical_id, r in _resources(template, "AWS::SageMaker::EndpointConfig").items()
                 if logical_id.startswith(f"{model_construct}Serving")]
    return config


def test_the_endpoint_config_has_the_role_and_managed_instance_scaling_but_no_model(scale_to_zero_app):
    template = scale_to_zero_app.template("dev", "Serving")
    config = _endpoint_config_of(template, "ImageClassifier")
    assert "Fn::GetAtt" in config["ExecutionRoleArn"]
    (variant,) = config["ProductionVariants"]
    assert "ModelName" not in variant
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 1}
    assert variant["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.xlarge", 1)


def test_the_inference_component_holds_the_model_sized_for_its_instance(scale_to_zero_app):
    template = scale_to_zero_app.template("dev", "Serving")
    cpu, gpu = _component(template, "image-classifier"), _component(template, "gpu-classifier")
    assert cpu["InferenceComponentName"] == "Dev-Serving-image-classifier"
    assert cpu["EndpointName"] == {"Fn::GetAtt": [endpoint_logical_id("image-classifier"), "EndpointName"]}
    assert cpu["VariantName"] == "AllTraffic"
    assert cpu["Specification"]["ModelName"]["Fn::GetAtt"][1] == "ModelName"
    assert cpu["Specification"]["ComputeResourceRequirements"] == {"NumberOfCpuCoresRequired": 2, "MinMemoryRequiredInMb": 4096}
    assert gpu["Specification"]["ComputeResourceRequirements"] == {
        "NumberOfCpuCoresRequired": 2, "MinMemoryRequiredInMb": 8192, "NumberOfAcceleratorDevicesRequired": 1}
    assert cpu["RuntimeConfig"] == {"CopyCount": 1}  # SageMaker creates it with at least one copy


def test_model_updates_roll_over_the_copies_watched_by_the_rollback_alarms(scale_to_zero_app):
    template = scale_to_zero_app.template("dev", "Serving")
    deployment = _component(template, "image-classifier")["DeploymentConfig"]
    policy = deployment["RollingUpdatePolicy"]
    assert policy["MaximumBatchSize"] == {"Type": "CAPACITY_PERCENT", "Value": 25}
    assert (policy["WaitIntervalInSeconds"], policy["MaximumExecutionTimeoutInSeconds"]) == (300, 3600)
    assert len(deployment["AutoRollbackConfiguration"]["Alarms"]) == 2
    endpoint = _resources(template, "AWS::SageMaker::Endpoint")[endpoint_logical_id("image-classifier")]["Properties"]
    assert "DeploymentConfig" not in endpoint  # the endpoint's traffic shifting does not move the model


def test_copy_count_autoscales_to_zero_and_an_alarm_brings_it_back(scale_to_zero_app):
    template = scale_to_zero_app.template("staging", "Serving")
    (target_id, target), = [(i, r) for i, r in _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").items()
                            if r["Properties"]["ResourceId"] == "inference-component/Staging-Serving-image-classifier"]
    assert target["Properties"]["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
    assert (target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]) == (0, 2)
    assert inference_component_logical_id("image-classifier") in target["DependsOn"]
    policies = {r["Properties"]["PolicyType"]: r["Properties"] for r in _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
                if r["Properties"]["ScalingTargetId"] == {"Ref": target_id}}
    tracking = policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerInferenceComponentInvocationsPerCopy"
    step = policies["StepScaling"]["StepScalingPolicyConfiguration"]
    assert step["AdjustmentType"] == "ChangeInCapacity" and step["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]
    (alarm,) = [r["Properties"] for r in _resources(template, "AWS::CloudWatch::Alarm").values()
                if r["Properties"].get("MetricName") == "NoCapacityInvocationFailures"
                and r["Properties"]["Dimensions"] == [{"Name": "InferenceComponentName", "Value": "Staging-Serving-image-classifier"}]]
    assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["EvaluationPeriods"]) == (1, "GreaterThanOrEqualToThreshold", 1)
    assert len(alarm["AlarmActions"]) == 1 and "Ref" in alarm["AlarmActions"][0]
    # No variant scaling beside it: the variant's instances are SageMaker's to manage.
    assert not [r for r in _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
                if r["Properties"]["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"]


def test_rollback_alarms_and_dashboard_watch_the_component_metrics(scale_to_zero_app):
    template = scale_to_zero_app.template("dev", "Serving")
    dimensions = [r["Properties"]["Dimensions"] for r in _resources(template, "AWS::CloudWatch::Alarm").values()
                  if r["Properties"].get("MetricName") in ("Invocation5XXErrors", "ModelLatency")]
    assert len(dimensions) == 4 and all(d[0]["Name"] == "InferenceComponentName" for d in dimensions)
    (dashboard,) = _resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    assert "InferenceComponentName" in body and "Dev-Serving-gpu-classifier" in body
    prod = scale_to_zero_app.template("prod", "Serving")  # min_instances 1: the variant as before
    assert not _resources(prod, "AWS::SageMaker::InferenceComponent")
    assert all("ModelName" in v for c in _resources(prod, "AWS::SageMaker::EndpointConfig").values() for v in c["Properties"]["ProductionVariants"])


def test_the_roles_can_log_and_the_smoke_test_can_find_the_component(scale_to_zero_app):
    template = json.dumps(scale_to_zero_app.template("staging", "Serving").to_json())
    assert "log-group:/aws/sagemaker/InferenceComponents/Staging-Serving-image-classifier" in template
    assert "sagemaker:ListInferenceComponents" in template and "inference-component/staging-serving-*" in template


def test_synthesizes_clean_under_cdk_nag_and_cfn_lint(scale_to_zero_app):
    from tests.test_stacks import _cfn_lint, stale_acknowledgements

    report = json.loads((scale_to_zero_app.outdir / "validation-report.json").read_text())
    assert all(p["violations"] == [] for p in report["pluginReports"]), report
    assert stale_acknowledgements(scale_to_zero_app) == []  # each acknowledgement added here answers a finding
    for path in scale_to_zero_app.template_files():
        assert list(_cfn_lint(path)) == [], path.name


# ------------------------------------------------------------ the smoke test on an endpoint that scales to zero


class ComponentEndpoint(Endpoint):
    """An endpoint with managed instance scaling and one inference component."""

    def describes_managed(self):
        self.describes(ProductionVariants=[{"VariantName": "AllTraffic", "ManagedInstanceScaling": {
            "Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 1}}])

    def lists(self, *names):
        now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        components = [{"InferenceComponentName": name, "InferenceComponentArn": f"arn:aws:sagemaker:{REGION}:222222222222:inference-component/{name}",
                       "EndpointName": ENDPOINT, "EndpointArn": f"arn:aws:sagemaker:{REGION}:222222222222:endpoint/{ENDPOINT}",
                       "VariantName": "AllTraffic", "CreationTime": now, "LastModifiedTime": now} for name in names]
        self.sagemaker_stub.add_response("list_inference_components", {"InferenceComponents": components},
                                         {"EndpointNameEquals": ENDPOINT})

    def has_copies(self, copies: int, status="InService"):
        now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        self.sagemaker_stub.add_response("describe_inference_component", {
            "InferenceComponentName": COMPONENT, "InferenceComponentArn": f"arn:aws:sagemaker:{REGION}:222222222222:inference-component/{COMPONENT}",
            "EndpointName": ENDPOINT, "EndpointArn": f"arn:aws:sagemaker:{REGION}:222222222222:endpoint/{ENDPOINT}",
            "CreationTime": now, "LastModifiedTime": now, "InferenceComponentStatus": status,
            "RuntimeConfig": {"DesiredCopyCount": max(copies, 1), "CurrentCopyCount": copies}},
            {"InferenceComponentName": COMPONENT})

    def component_answers(self, answer=GOOD_ANSWER):
        data = json.dumps(answer).encode()
        self.runtime_stub.add_response("invoke_endpoint", {
            "Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json",
            "ResponseMetadata": {"HTTPStatusCode": 200}},
            {"EndpointName": ENDPOINT, "ContentType": "image/jpeg", "Accept": "application/json", "Body": JPEG,
             "InferenceComponentName": COMPONENT})

    def component_has_no_capacity(self):
        self.runtime_stub.add_client_error(
            "invoke_endpoint", service_error_code="ValidationError", http_status_code=400,
            service_message="Inference Component has no capacity to process this request.",
            expected_params={"EndpointName": ENDPOINT, "ContentType": "image/jpeg", "Accept": "application/json",
                             "Body": JPEG, "InferenceComponentName": COMPONENT})


@pytest.fixture
def component_endpoint():
    stubbed = ComponentEndpoint()
    with stubbed.sagemaker_stub, stubbed.runtime_stub:
        yield stubbed
        stubbed.sagemaker_stub.assert_no_pending_responses()
        stubbed.runtime_stub.assert_no_pending_responses()


@pytest.fixture
def no_waiting(monkeypatch):
    """The wake-up loop's sleep advances a fake clock instead of waiting."""
    from smoke_test import check

    clock = {"now": 0.0}
    monkeypatch.setattr(check, "_clock", lambda: clock["now"])
    monkeypatch.setattr(check, "_sleep", lambda seconds: clock.__setitem__("now", clock["now"] + seconds))
    return clock


def test_smoke_test_invokes_the_endpoint_through_its_component(component_endpoint, capsys):
    component_endpoint.describes_managed()
    component_endpoint.lists(COMPONENT)
    component_endpoint.has_copies(1)
    component_endpoint.component_answers()
    assert component_endpoint.run() == 0
    out = capsys.readouterr().out
    assert f"inference component {COMPONENT}: 1 copy" in out and f"PASS {ENDPOINT}" in out


def test_smoke_test_wakes_a_component_scaled_to_zero_then_invokes_it(component_endpoint, no_waiting, capsys):
    component_endpoint.describes_managed()
    component_endpoint.lists(COMPONENT)
    component_endpoint.has_copies(0)
    component_endpoint.component_has_no_capacity()  # the wake-up request: it raises the alarm
    component_endpoint.has_copies(0)
    component_endpoint.has_copies(1)
    component_endpoint.component_answers()
    assert component_endpoint.run() == 0
    out = capsys.readouterr().out
    assert "scaled to zero; one request starts a copy" in out and "failed as expected" in out
    assert "a copy answers after 60 s" in out and f"PASS {ENDPOINT}" in out


def test_smoke_test_gives_up_after_the_wake_timeout_with_where_to_look(component_endpoint, no_waiting, capsys):
    component_endpoint.describes_managed()
    component_endpoint.lists(COMPONENT)
    component_endpoint.has_copies(0)
    component_endpoint.component_has_no_capacity()
    for _ in range(3):  # at 30, 60, 90 s; the timeout is 90 s
        component_endpoint.has_copies(0)
    reason = failure_line(capsys, component_endpoint.run("--wake-timeout", "90"))
    assert f"inference component {COMPONENT} still has no copy 90 s after a request" in reason
    assert "NoCapacityInvocationFailures alarm" in reason and "raise --wake-timeout" in reason


def test_smoke_test_names_an_endpoint_with_managed_scaling_but_no_component(component_endpoint, capsys):
    component_endpoint.describes_managed()
    component_endpoint.lists()
    reason = failure_line(capsys, component_endpoint.run())
    assert "should be one inference component; found none" in reason and "list-inference-components" in reason


def test_smoke_test_reports_a_failed_component(component_endpoint, capsys):
    component_endpoint.describes_managed()
    component_endpoint.lists(COMPONENT)
    component_endpoint.has_copies(0, status="Failed")
    reason = failure_line(capsys, component_endpoint.run())
    assert f"inference component {COMPONENT} is Failed" in reason and "/aws/sagemaker/InferenceComponents/" in reason
