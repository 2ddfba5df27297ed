"""Template assertions per construct and per environment, cdk-nag and cfn-lint."""
import json
import re

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match
from cdk_nag import AwsSolutionsChecks

from stacks.constructs.artifact_bucket import ACCESS_LOG_BUCKET_LOGICAL_ID, BUCKET_LOGICAL_ID, KEY_LOGICAL_ID
from stacks.constructs.model_endpoint import endpoint_logical_id
from stacks.constructs.smoke_test_role import ROLE_LOGICAL_ID as SMOKE_TEST_ROLE_LOGICAL_ID
from tests.conftest import REPO

ENVIRONMENTS = ["dev", "staging", "prod"]
EIA_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference-eia:1.5.1-cpu-py3"


def _only(template, resource_type) -> dict:
    resources = template.find_resources(resource_type)
    assert len(resources) == 1, resources
    return next(iter(resources.values()))


# ------------------------------------------------------------ serving: the EIA example


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_eia_endpoint_config_variant(eia_app, env):
    template = eia_app.template(env, "Serving")
    variant = _only(template, "AWS::SageMaker::EndpointConfig")["Properties"]["ProductionVariants"]
    assert len(variant) == 1
    assert variant[0]["AcceleratorType"] == "ml.eia2.medium"
    assert variant[0]["InstanceType"] == "ml.m5.large"
    assert variant[0]["InitialInstanceCount"] == 1
    assert variant[0]["VariantName"] == "AllTraffic"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_model_uses_the_sdk_eia_image_and_the_packaged_handler(eia_app, env):
    model = _only(eia_app.template(env, "Serving"), "AWS::SageMaker::Model")["Properties"]
    container = model["PrimaryContainer"]
    assert container["Image"] == EIA_IMAGE
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert container["Environment"]["INFERENCE_MAX_REQUEST_BYTES"] == str(6 * 1024 * 1024)
    assert model["EnableNetworkIsolation"] is True
    sha = _manifest_sha(eia_app)
    assert f"models/image-classifier/{sha}/model.tar.gz" in str(container["ModelDataUrl"])


def _manifest_sha(app):
    from model_artifacts.manifest import load_built_artifact

    return load_built_artifact(app.artifacts_dir, app.config.environment("dev").models[0]).sha256


def test_only_the_endpoint_has_a_physical_name_and_it_is_stable(eia_app):
    template = eia_app.template("prod", "Serving")
    assert "ModelName" not in _only(template, "AWS::SageMaker::Model")["Properties"]
    assert "EndpointConfigName" not in _only(template, "AWS::SageMaker::EndpointConfig")["Properties"]
    # Clients and alarms use it; a config change updates the endpoint in place, never replaces it. The logical id is
    # the one the deployed endpoints have had since they got this name: another one would replace them (and collide).
    (logical_id,) = template.find_resources("AWS::SageMaker::Endpoint")
    assert logical_id == "ImageClassifierServingEndpointE7182304" == endpoint_logical_id("image-classifier")
    assert template.to_json()["Resources"][logical_id]["Properties"]["EndpointName"] == "Prod-Serving-image-classifier"
    assert endpoint_logical_id("object-detector") == "ObjectDetectorServingEndpointFEBB68B4"  # as deployed, too


def test_the_endpoint_keeps_its_logical_id_when_its_construct_is_renamed_or_moved(eia_app):
    """Built somewhere else in the tree under another id: the same logical id, so a refactor cannot replace it."""
    from aws_cdk import aws_iam as iam
    from constructs import Construct

    from stacks.constructs.model_endpoint import ModelEndpoint

    deployment = eia_app.config.environment("dev").models[0]
    stack = cdk.Stack(cdk.App(), "Elsewhere")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    moved = ModelEndpoint(Construct(stack, "Models"), "Hosting", deployment=deployment, endpoint_name="Dev-Serving-image-classifier",
                          rollback_alarms=[], model_data_url="s3://bucket/key", role=role, volume_key=None, config_file="x.yaml")
    assert stack.resolve(moved.endpoint.logical_id) == "ImageClassifierServingEndpointE7182304"
    # The check can fail: the unpinned resources next to it follow the construct path.
    assert stack.resolve(moved.endpoint_config.logical_id) == "ModelsHostingEndpointConfigA02EA84F"


# The logical ids this code pins, per named resource (a physical name set in the template); a new named resource
# must be pinned and listed here.
PINNED_NAMED_RESOURCES = {
    "AWS::SageMaker::Endpoint": {"ImageClassifierServingEndpointE7182304"},
    "AWS::IAM::Role": {SMOKE_TEST_ROLE_LOGICAL_ID, "SmokeTestRunnerStaging", "SmokeTestRunnerProd"},
    "AWS::KMS::Alias": {"PipelineArtifactsBucketEncryptionKeyAlias94A07392"},
}


def test_every_named_resource_has_a_pinned_logical_id(eia_app):
    from infra_diff.hazards import name_property

    named = {}
    for path in [eia_app.outdir / "Pipeline.template.json", *eia_app.template_files()]:
        for logical_id, resource in json.loads(path.read_text())["Resources"].items():
            if name_property(resource):
                named.setdefault(resource["Type"], set()).add(logical_id)
    assert named == PINNED_NAMED_RESOURCES


@pytest.fixture(scope="module")
def sandbox_app(tmp_path_factory):
    """A second copy of the app for the same accounts, qualified by config/app.yaml's name_prefix."""
    from tests.conftest import SynthesizedApp, build_for, make_config

    root = tmp_path_factory.mktemp("sandbox")
    config = make_config(root / "config")
    (config / "app.yaml").write_text("name_prefix: sbx\n")
    build_for(config, root / "artifacts")
    return SynthesizedApp(config, root / "artifacts", root / "out")


def _physical_names(app) -> set:
    """Stack names, and every name a template fixes: resource names (EndpointName, RoleName, AliasName, ...) and exports."""
    from infra_diff.hazards import name_property

    names = {app.app.node.find_child("Pipeline").stack_name}
    names |= {stack.stack_name for stage in app.stages.values() for stack in (stage.artifact_store, stage.serving)}
    for path in [app.outdir / "Pipeline.template.json", *app.template_files()]:
        template = json.loads(path.read_text())
        names |= {r["Properties"][name_property(r)] for r in template["Resources"].values() if name_property(r)}
        names |= {o["Export"]["Name"] for o in template.get("Outputs", {}).values() if "Export" in o}
    return names


def test_a_name_prefix_names_nothing_the_first_copy_owns(eia_app, sandbox_app):
    first, second = _physical_names(eia_app), _physical_names(sandbox_app)
    assert all(isinstance(name, str) for name in first | second)
    assert len(first) == len(second) > 20 and not first & second
    assert "Prod-Serving-image-classifier" in first and "sbx-Prod-Serving-image-classifier" in second
    assert {"sbx-Prod-Serving-SmokeTest", "sbx-Pipeline-SmokeTest-Prod", "sbx-Prod-ArtifactStore-ModelArtifactKeyArn"} <= second
    # The copy's serving stack reads its own copy's artifact store.
    imports = {v for v in json.dumps(sandbox_app.template("dev", "Serving").to_json()).split('"') if "ArtifactStore-" in v}
    assert imports and all(v.startswith("sbx-Dev-ArtifactStore-") for v in imports)


def test_no_name_prefix_keeps_the_deployed_names(eia_app):
    assert eia_app.stages["prod"].serving.stack_name == "Prod-Serving"
    assert eia_app.stages["prod"].artifact_store.stack_name == "Prod-ArtifactStore"
    assert eia_app.app.node.find_child("Pipeline").stack_name == "Pipeline"


@pytest.mark.parametrize("app, env", [("eia_app", "prod"), ("gpu_app", "prod"), ("eia_app", "dev")])
def test_a_config_update_keeps_the_scaled_instance_count_and_weight(request, app, env):
    """Without RetainAllVariantProperties each new EndpointConfig resets the variant to InitialInstanceCount."""
    endpoint = _only(request.getfixturevalue(app).template(env, "Serving"), "AWS::SageMaker::Endpoint")["Properties"]
    assert endpoint["RetainAllVariantProperties"] is True
    # Nothing excluded: instance type, image and model come from the new EndpointConfig anyway (they are not
    # variant properties); only the desired count and weight are kept.
    assert "ExcludeRetainedVariantProperties" not in endpoint


def test_endpoint_storage_is_encrypted_with_the_artifact_key_on_ebs_instances(eia_app):
    config = _only(eia_app.template("dev", "Serving"), "AWS::SageMaker::EndpointConfig")["Properties"]
    assert config["KmsKeyId"] == {"Fn::ImportValue": "Dev-ArtifactStore-ModelArtifactKeyArn"}


@pytest.mark.parametrize("env, maximum", [("dev", 1), ("staging", 2), ("prod", 4)])
def test_autoscaling_per_environment(eia_app, env, maximum):
    template = eia_app.template(env, "Serving")
    target = _only(template, "AWS::ApplicationAutoScaling::ScalableTarget")["Properties"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, maximum)
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    policy = _only(template, "AWS::ApplicationAutoScaling::ScalingPolicy")["Properties"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == 200


def test_endpoint_name_is_an_output(eia_app):
    outputs = eia_app.template("dev", "Serving").find_outputs("*")
    values = [o["Value"] for o in outputs.values()]
    assert any(v.get("Fn::GetAtt", [None, None])[1] == "EndpointName" for v in values if isinstance(v, dict)), values


def _role_id(template, service) -> str:
    roles = template.find_resources("AWS::IAM::Role", {"Properties": {"AssumeRolePolicyDocument": {
        "Statement": [Match.object_like({"Principal": {"Service": service}})]}}})
    assert len(roles) == 1, sorted(roles)
    return next(iter(roles))


def _statements_of(template, role_id, policy_id_part=""):
    """The statements of the policies attached to one role (not of every policy in the stack)."""
    return [s for logical_id, p in template.find_resources("AWS::IAM::Policy").items()
            if {"Ref": role_id} in p["Properties"]["Roles"] and policy_id_part in logical_id
            for s in p["Properties"]["PolicyDocument"]["Statement"]]


def _actions(statements):
    return {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def test_execution_role_has_full_access_plus_scoped_grants(eia_app):
    template = eia_app.template("dev", "Serving")
    role_id = _role_id(template, "sagemaker.amazonaws.com")
    assert "AmazonSageMakerFullAccess" in str(template.to_json()["Resources"][role_id]["Properties"]["ManagedPolicyArns"])
    scoped = _statements_of(template, role_id, "DefaultPolicy")
    (decrypt,) = [s for s in scoped if "kms:Decrypt" in _actions([s])]
    assert decrypt["Resource"] == {"Fn::ImportValue": "Dev-ArtifactStore-ModelArtifactKeyArn"}  # the artifact key only
    assert _actions([decrypt]) == {"kms:Decrypt", "kms:DescribeKey"}  # grant_read adds no GenerateDataKey*/ReEncrypt*
    (read,) = [s for s in scoped if "s3:GetObject*" in _actions([s])]
    assert "/models/image-classifier/*" in json.dumps(read["Resource"])  # artifact read is scoped to this model's prefix
    (pull,) = [s for s in scoped if "ecr:BatchGetImage" in _actions([s])]
    assert "repository/pytorch-inference-eia" in json.dumps(pull["Resource"]) and ":763104351884:" in json.dumps(pull["Resource"])
    assert "/aws/sagemaker/Endpoints/Dev-Serving-image-classifier" in json.dumps(scoped)
    assert all(s["Resource"] != "*" for s in scoped)
    # Only the two actions that take no resource ARN are on "*", in their own policy (their own acknowledgement).
    account_wide = _statements_of(template, role_id, "AccountWideActions")
    assert {s["Resource"] for s in account_wide} == {"*"}
    assert _actions(account_wide) == {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}


def test_the_per_role_lookup_sees_only_that_role(eia_app):
    """The check above can fail: the smoke-test role of the same stack has no kms:Decrypt, though the stack does."""
    template = eia_app.template("dev", "Serving")
    assert "kms:Decrypt" in json.dumps(template.find_resources("AWS::IAM::Policy"))
    smoke_test = _statements_of(template, SMOKE_TEST_ROLE_LOGICAL_ID)
    assert smoke_test and "kms:Decrypt" not in _actions(smoke_test)


def test_full_access_is_a_synth_warning_that_says_what_it_adds_and_how_to_remove_it(eia_app, eia_config):
    from stacks.constructs.execution_role import full_access_warning

    expected = full_access_warning("image-classifier", f"{eia_config}/models/image-classifier.yaml")
    assert _warnings(eia_app).count(expected) == 3  # one per stage
    for grant in ("sagemaker:* on every SageMaker resource", "iam:PassRole", "'sagemaker'",
                  "set serving.attach_sagemaker_full_access: false in"):
        assert grant in expected
    readme = (REPO / "README.md").read_text()
    assert "serving.attach_sagemaker_full_access: false" in readme and "### What AmazonSageMakerFullAccess adds" in readme


def test_full_access_switch_leaves_only_scoped_grants(tmp_path):
    from tests.conftest import SynthesizedApp, build_for, make_config

    config = make_config(tmp_path / "config", lambda m: m["serving"].update(attach_sagemaker_full_access=False))
    build_for(config, tmp_path / "artifacts")
    app = SynthesizedApp(config, tmp_path / "artifacts", tmp_path / "out")
    roles = app.template("dev", "Serving").find_resources("AWS::IAM::Role")
    assert not [r for r in roles.values() if "AmazonSageMakerFullAccess" in str(r)]
    assert not [w for w in _warnings(app) if "AmazonSageMakerFullAccess" in w]
    assert stale_acknowledgements(app) == []  # its IAM4 acknowledgement went with it


# ------------------------------------------------------------ artifact store (stateful)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_artifact_bucket_settings(eia_app, env):
    template = eia_app.template(env, "ArtifactStore")
    bucket = template.to_json()["Resources"][BUCKET_LOGICAL_ID]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": ACCESS_LOG_BUCKET_LOGICAL_ID}
    assert bucket["LifecycleConfiguration"]["Rules"][0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 90}
    template.has_resource_properties("AWS::S3::BucketPolicy", {"Bucket": {"Ref": BUCKET_LOGICAL_ID}, "PolicyDocument": {
        "Statement": Match.array_with([Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}})
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    # ACLs off on the access-log bucket: log delivery is granted by its bucket policy.
    access_logs = template.to_json()["Resources"][ACCESS_LOG_BUCKET_LOGICAL_ID]["Properties"]
    assert access_logs["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    template.has_resource_properties("AWS::S3::BucketPolicy", {"Bucket": {"Ref": ACCESS_LOG_BUCKET_LOGICAL_ID}, "PolicyDocument": {
        "Statement": Match.array_with([Match.object_like({"Principal": {"Service": "logging.s3.amazonaws.com"}})])}})


def test_stateful_logical_ids_are_pinned(eia_app):
    resources = eia_app.template("prod", "ArtifactStore").to_json()["Resources"]
    assert resources[BUCKET_LOGICAL_ID]["Type"] == "AWS::S3::Bucket"
    assert resources[KEY_LOGICAL_ID]["Type"] == "AWS::KMS::Key"
    assert resources[ACCESS_LOG_BUCKET_LOGICAL_ID]["Type"] == "AWS::S3::Bucket"


def test_prod_data_is_retained_and_protected_dev_is_disposable(eia_app):
    prod = eia_app.template("prod", "ArtifactStore").to_json()["Resources"]
    dev = eia_app.template("dev", "ArtifactStore").to_json()["Resources"]
    assert prod[BUCKET_LOGICAL_ID]["DeletionPolicy"] == "Retain"
    assert prod[KEY_LOGICAL_ID]["DeletionPolicy"] == "Retain"
    assert dev[BUCKET_LOGICAL_ID]["DeletionPolicy"] == "Delete"
    assert eia_app.stages["prod"].artifact_store.termination_protection is True
    assert eia_app.stages["dev"].artifact_store.termination_protection is False


def test_serving_stack_holds_no_stateful_resources(eia_app):
    resources = eia_app.template("prod", "Serving").to_json()["Resources"]
    assert not [r for r in resources.values() if r["Type"] in ("AWS::S3::Bucket", "AWS::KMS::Key")]


# ------------------------------------------------------------ safe updates: alarms, dashboard, blue/green, tags


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_endpoint_has_error_and_latency_alarms_on_its_name(eia_app, env):
    template = eia_app.template(env, "Serving")
    alarms = {a["Properties"]["MetricName"]: a["Properties"] for a in template.find_resources("AWS::CloudWatch::Alarm").values()}
    assert set(alarms) == {"Invocation5XXErrors", "ModelLatency"}
    endpoint = f"{env.capitalize()}-Serving-image-classifier"
    for alarm in alarms.values():
        assert alarm["Namespace"] == "AWS/SageMaker"
        assert {"Name": "EndpointName", "Value": endpoint} in alarm["Dimensions"]
        assert "AlarmName" not in alarm
    assert alarms["ModelLatency"]["Threshold"] == 1000 * 1000  # 1000 ms in SageMaker's microseconds
    assert alarms["ModelLatency"]["ExtendedStatistic"] == "p90"
    dashboard = _only(template, "AWS::CloudWatch::Dashboard")["Properties"]
    assert "DashboardName" not in dashboard
    assert endpoint in json.dumps(dashboard["DashboardBody"])


def test_eia_endpoints_update_all_at_once_without_a_deployment_config(eia_app):
    endpoint = _only(eia_app.template("prod", "Serving"), "AWS::SageMaker::Endpoint")["Properties"]
    assert "DeploymentConfig" not in endpoint


def test_gpu_endpoints_shift_traffic_by_canary_and_roll_back_on_the_alarms(gpu_app):
    template = gpu_app.template("prod", "Serving")
    config = _only(template, "AWS::SageMaker::Endpoint")["Properties"]["DeploymentConfig"]
    policy = config["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "CANARY", "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}, "WaitIntervalInSeconds": 300,
    }
    assert (policy["TerminationWaitInSeconds"], policy["MaximumExecutionTimeoutInSeconds"]) == (120, 3600)
    rollback = config["AutoRollbackConfiguration"]["Alarms"]
    assert sorted(a["AlarmName"]["Ref"] for a in rollback) == sorted(template.find_resources("AWS::CloudWatch::Alarm"))
    # SageMaker reads those alarms during the update with the endpoint's execution role.
    statements = [s for p in template.find_resources("AWS::IAM::Policy").values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    describe = [s for s in statements if s["Action"] == "cloudwatch:DescribeAlarms"]
    assert len(describe) == 1 and len(describe[0]["Resource"]) == 2
    assert all("Fn::GetAtt" in r and r["Fn::GetAtt"][1] == "Arn" for r in describe[0]["Resource"])


def test_linear_shifting_is_one_line_of_config(tmp_path):
    from tests.conftest import SynthesizedApp, build_for, make_config

    config = make_config(
        tmp_path / "config",
        lambda m: m["serving"].update(profile="cpu", deployment={"strategy": "linear", "linear_step_percent": 20, "wait_seconds": 120}),
    )
    build_for(config, tmp_path / "artifacts")
    app = SynthesizedApp(config, tmp_path / "artifacts", tmp_path / "out")
    routing = _only(app.template("dev", "Serving"), "AWS::SageMaker::Endpoint")["Properties"]["DeploymentConfig"][
        "BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {"Type": "LINEAR", "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 20}, "WaitIntervalInSeconds": 120}


# Resource types CloudFormation cannot tag (or CDK's Tags aspect does not reach).
UNTAGGABLE = {
    "AWS::IAM::Policy", "AWS::S3::BucketPolicy", "AWS::KMS::Alias", "AWS::Lambda::LayerVersion", "Custom::CDKBucketDeployment",
    "AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy", "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::Dashboard", "Custom::S3AutoDeleteObjects", "Custom::ModelArtifactCopy",
}


# CDK writes its custom-resource providers as raw CfnResources that Tags.of cannot reach; the stack
# tags cover them (CloudFormation propagates stack tags to every resource it can tag).
PROVIDER_PREFIX = "CustomS3AutoDeleteObjectsCustomResourceProvider"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_cost_allocation_tags_on_every_taggable_resource(eia_app, env):
    stage = eia_app.stages[env]
    for stack in ("ArtifactStore", "Serving"):
        stack_tags = getattr(stage, "artifact_store" if stack == "ArtifactStore" else "serving").tags.tag_values()
        assert stack_tags == {"project": "sagemaker-eia-serving", "environment": env}
        for logical_id, resource in eia_app.template(env, stack).to_json()["Resources"].items():
            if resource["Type"] in UNTAGGABLE or logical_id.startswith(PROVIDER_PREFIX):
                continue
            tags = resource["Properties"].get("Tags")
            tags = {t["Key"]: t["Value"] for t in tags} if isinstance(tags, list) else tags or {}
            assert tags.get("project") == "sagemaker-eia-serving", (stack, logical_id, resource["Type"])
            assert tags.get("environment") == env, (stack, logical_id)
            if stack == "Serving" and "ImageClassifier" in logical_id:
                assert tags.get("model") == "image-classifier", (logical_id, resource["Type"])


# ------------------------------------------------------------ the GPU successor profile


def test_gpu_profile_synthesizes_a_clean_gpu_endpoint(gpu_app):
    template = gpu_app.template("prod", "Serving")
    config = _only(template, "AWS::SageMaker::EndpointConfig")["Properties"]
    variant = config["ProductionVariants"][0]
    assert "AcceleratorType" not in variant
    assert variant["InstanceType"] == "ml.g4dn.xlarge"
    assert "KmsKeyId" not in config  # g4dn has NVMe instance storage: SageMaker refuses a KMS key there
    image = _only(template, "AWS::SageMaker::Model")["Properties"]["PrimaryContainer"]["Image"]
    assert image == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-gpu-py312"


def _eia_sentence(model, host, accelerator, config_file, successor_image, eia_month, gpu_month) -> str:
    from cost.prices import default_table

    return (
        f"Model {model!r} uses Elastic Inference ({accelerator} on {host}). EI reached end of life in April 2024: accounts "
        "that never used it cannot launch it, and the CloudFormation schema no longer lists AcceleratorType. To switch, set "
        f"`serving.profile: gpu` in {config_file} (ml.g4dn.xlarge, {successor_image} image). Estimated on-demand cost in "
        f"us-east-1 for 1 instance(s): ${gpu_month:,.0f}/month on ml.g4dn.xlarge against ${eia_month:,.0f}/month for this "
        f"EIA pair (prices as of {default_table().as_of}; `make cost` compares every profile, serverless included). "
        "EIA endpoints update all at once (no blue/green traffic shifting)."
    )


@pytest.mark.parametrize("model, host, accelerator, successor_image", [
    ("image-classifier", "ml.m5.large", "ml.eia2.medium", "pytorch-inference:2.6.0-gpu-py312"),
    ("object-detector", "ml.c5.xlarge", "ml.eia2.large", "mxnet-inference:1.9.0-gpu-py38"),
])
def test_the_eia_warning_quotes_the_successor_of_the_models_own_framework(tmp_path, model, host, accelerator, successor_image):
    from config import load_config
    from cost.estimate import monthly_cost
    from stacks.constructs.model_endpoint import eia_end_of_life_warning
    from tests.conftest import make_config

    config = load_config(make_config(tmp_path / "config", models=("image-classifier", "object-detector")))
    deployment = next(d for d in config.environment("dev").models if d.name == model)
    expected = _eia_sentence(model, host, accelerator, f"config/models/{model}.yaml", successor_image,
                             monthly_cost("us-east-1", host, accelerator, 1), monthly_cost("us-east-1", "ml.g4dn.xlarge", None, 1))
    assert eia_end_of_life_warning(deployment, f"config/models/{model}.yaml") == expected


def test_eia_warning_names_the_switch_and_its_cost_and_gpu_has_none(eia_app, eia_config, gpu_app):
    from cost.estimate import monthly_cost

    config_file = f"{eia_config}/models/image-classifier.yaml"
    expected = _eia_sentence("image-classifier", "ml.m5.large", "ml.eia2.medium", config_file, "pytorch-inference:2.6.0-gpu-py312",
                             monthly_cost("us-east-1", "ml.m5.large", "ml.eia2.medium", 1),
                             monthly_cost("us-east-1", "ml.g4dn.xlarge", None, 1))
    assert _warnings(eia_app).count(expected) == 3  # the synthesized warning, whole, once per stage
    assert not any("Elastic Inference" in w for w in _warnings(gpu_app))


def _warnings(app):
    found = []
    for stage in app.stages.values():
        for stack in (stage.artifact_store, stage.serving):
            for construct in stack.node.find_all():
                # Without the " [ack: <id>]" CDK appends (the id that would acknowledge the warning).
                found += [re.sub(r" \[ack: [\w-]+\]$", "", str(e.data)) for e in construct.node.metadata if e.type == "aws:cdk:warning"]
    return found


def test_f3002_is_acknowledged_only_on_the_eia_endpoint_config(eia_app, gpu_app):
    def acknowledged_paths(app):
        return sorted(
            c.node.path for stage in app.stages.values() for c in stage.node.find_all()
            for e in c.node.metadata if e.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
            and any("F3002" in key for key in e.data)
        )

    assert acknowledged_paths(eia_app) == [f"{s}/Serving/ImageClassifier/Serving/EndpointConfig" for s in ("Dev", "Prod", "Staging")]
    assert acknowledged_paths(gpu_app) == []


# ------------------------------------------------------------ checks: cdk-nag and cfn-lint


def test_every_acknowledgement_carries_a_reason(eia_app):
    count = 0
    for construct in eia_app.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule, reason in entry.data.items():
                    count += 1
                    assert len(str(reason).strip()) > 10, rule
    assert count > 10


def stale_acknowledgements(app):
    """(construct path, rule) of every acknowledgement no finding used. The validation report lists each suppressed
    finding with the construct its acknowledgement sits on; an acknowledgement missing there suppresses nothing."""
    report = json.loads((app.outdir / "validation-report.json").read_text())
    used = {(v["acknowledgedAt"], v["acknowledgedId"]) for plugin in report["pluginReports"] for v in plugin.get("suppressedViolations", [])}
    declared = {(c.node.path, rule) for c in app.app.node.find_all() for entry in c.node.metadata
                if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY for rule in entry.data}
    return sorted(declared - used)


def test_the_stale_acknowledgement_check_finds_one(tmp_path):
    """A bucket without access logs, acknowledged for S1 (which fires) and for IAM4 (which cannot)."""
    from types import SimpleNamespace

    app = cdk.App(outdir=str(tmp_path))
    bucket = s3.Bucket(cdk.Stack(app, "Unlogged"), "Bucket", enforce_ssl=True)
    for rule in ("AwsSolutions::AwsSolutions-S1", "AwsSolutions::AwsSolutions-IAM4"):
        cdk.Validations.of(bucket).acknowledge(cdk.Acknowledgment(id=rule, reason="for the test of the check"))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    assert stale_acknowledgements(SimpleNamespace(app=app, outdir=tmp_path)) == [("Unlogged/Bucket", "AwsSolutions::AwsSolutions-IAM4")]


@pytest.mark.parametrize("app", ["eia_app", "gpu_app", "serverless_app"])
def test_every_acknowledgement_matches_a_finding_that_fired(request, app):
    """All stacks: the stages' and the pipeline's, the artifact copy's function included."""
    assert stale_acknowledgements(request.getfixturevalue(app)) == []


def test_cdk_nag_is_live_and_fails_an_unacknowledged_finding(tmp_path):
    """The session apps synthesized with zero unacknowledged findings; this proves the plugin bites."""
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Unlogged")
    s3.Bucket(stack, "Bucket", enforce_ssl=True)
    report = AwsSolutionsChecks().validate_scope(app)
    assert not report.success
    assert "AwsSolutions-S1" in [v.rule_name for v in report.violations]


def test_cdk_nag_runs_in_synthesis_and_finds_nothing_unacknowledged(eia_app, gpu_app):
    # The fixtures call app.synth(), which raises on any unacknowledged finding; the report says what ran.
    for app in (eia_app, gpu_app):
        report = json.loads((app.outdir / "validation-report.json").read_text())
        plugins = {p["pluginName"]: p for p in report["pluginReports"]}
        assert "AwsSolutions" in plugins
        for plugin in plugins.values():
            assert plugin["conclusion"] == "success" and plugin["violations"] == [], plugin["pluginName"]
        suppressed = {v["ruleName"] for v in plugins["AwsSolutions"]["suppressedViolations"]}
        assert "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSageMakerFullAccess]" in suppressed


def _cfn_lint(path):
    from cfnlint.api import ManualArgs, lint_file

    return lint_file(path, config=ManualArgs(ignore_checks=["W3005"]))


def test_cfn_lint_is_clean_but_for_the_eia_accelerator(eia_app):
    files = eia_app.template_files()
    assert len(files) == 6
    for path in files:
        for match in _cfn_lint(path):
            assert match.rule.id == "E3002" and "AcceleratorType" in match.message, (path.name, str(match))
    serving = [p for p in files if "Serving" in p.name]
    assert all(any(m.rule.id == "E3002" for m in _cfn_lint(p)) for p in serving)


def test_cfn_lint_is_clean_for_the_gpu_profile(gpu_app):
    for path in gpu_app.template_files():
        assert list(_cfn_lint(path)) == [], path.name


# ------------------------------------------------------------ the successor profiles, one config line each


@pytest.fixture(scope="module")
def serverless_app(tmp_path_factory):
    from tests.conftest import SynthesizedApp, build_for, make_config

    root = tmp_path_factory.mktemp("serverless")
    config = make_config(root / "config", lambda m: m["serving"].update(profile="serverless"))
    build_for(config, root / "artifacts")
    return SynthesizedApp(config, root / "artifacts", root / "out")


def test_serverless_endpoint_has_no_instances_kms_key_autoscaling_or_isolation(serverless_app):
    template = serverless_app.template("prod", "Serving")
    config = _only(template, "AWS::SageMaker::EndpointConfig")["Properties"]
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 10}
    assert not {"InstanceType", "InitialInstanceCount", "AcceleratorType"} & set(variant)
    assert "KmsKeyId" not in config
    assert not template.find_resources("AWS::ApplicationAutoScaling::ScalableTarget")
    model = _only(template, "AWS::SageMaker::Model")["Properties"]
    assert model["EnableNetworkIsolation"] is False
    assert model["PrimaryContainer"]["Image"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
    assert len(template.find_resources("AWS::CloudWatch::Alarm")) == 2  # alarms and rollback still apply
    # No instance count to keep, one variant with nothing to weigh: no retention asked for.
    assert "RetainAllVariantProperties" not in _only(template, "AWS::SageMaker::Endpoint")["Properties"]


def test_serverless_synthesizes_clean_under_cdk_nag_and_cfn_lint(serverless_app):
    report = json.loads((serverless_app.outdir / "validation-report.json").read_text())
    assert all(p["violations"] == [] for p in report["pluginReports"])
    for path in serverless_app.template_files():
        assert _cfn_lint(path) == [], path  # no E3002: nothing EIA left


def test_cpu_profile_keeps_the_kms_key_on_its_ebs_volume(tmp_path):
    from tests.conftest import SynthesizedApp, build_for, make_config

    config = make_config(tmp_path / "config", lambda m: m["serving"].update(profile="cpu"))
    build_for(config, tmp_path / "artifacts")
    app = SynthesizedApp(config, tmp_path / "artifacts", tmp_path / "out")
    template = app.template("dev", "Serving")
    endpoint_config = _only(template, "AWS::SageMaker::EndpointConfig")["Properties"]
    assert endpoint_config["ProductionVariants"][0]["InstanceType"] == "ml.c5.xlarge"
    assert endpoint_config["KmsKeyId"] == {"Fn::ImportValue": "Dev-ArtifactStore-ModelArtifactKeyArn"}
    assert _only(template, "AWS::SageMaker::Model")["Properties"]["PrimaryContainer"]["Image"].endswith("pytorch-inference:2.6.0-cpu-py312")
    assert all(_cfn_lint(path) == [] for path in app.template_files())


def test_dropping_the_kms_key_on_nvme_storage_is_a_warning_not_a_surprise(gpu_app, eia_app):
    assert any("ml.g4dn.xlarge has local NVMe instance storage" in w and "kms_on_local_storage: refuse" in w for w in _warnings(gpu_app))
    assert not any("NVMe" in w for w in _warnings(eia_app))


# ------------------------------------------------------------ switching the profile of a deployed endpoint


@pytest.fixture(scope="module")
def profile_switch(tmp_path_factory):
    """The documented procedure for prod: 0 deployed eia, 1 autoscaling off, 2 gpu with autoscaling."""
    from tests.conftest import SynthesizedApp, build_for, make_config

    steps = {
        "deployed": (lambda m: None, {}),
        "step 1": (lambda m: None, {"prod": lambda e: e["scaling"].update(autoscaling=False)}),
        "step 2": (lambda m: m["serving"].update(profile="gpu"), {}),
    }
    apps = {}
    for name, (model_change, env_changes) in steps.items():
        root = tmp_path_factory.mktemp(name.replace(" ", ""))
        config = make_config(root / "config", model_change, env_changes)
        build_for(config, root / "artifacts")
        apps[name] = SynthesizedApp(config, root / "artifacts", root / "out")
    return apps


def _serving(app, env="prod"):
    return app.template(env, "Serving").to_json()


def _comparison(base, head):
    from infra_diff.assembly import compare
    from infra_diff.assembly import Stack as AssemblyStack

    def stack(template):
        return {"Prod/Serving": AssemblyStack("Prod/Serving", None, template, {})}

    return compare(stack(base), stack(head))[0]


def test_step_1_only_deregisters_autoscaling_in_that_environment(profile_switch):
    deployed, step1 = _serving(profile_switch["deployed"]), _serving(profile_switch["step 1"])
    removed = {k for k in deployed["Resources"]} - {k for k in step1["Resources"]}
    # The autoscaling construct (scalable target, its policy and role) and nothing else.
    assert all(k.startswith("ImageClassifierAutoscaling") for k in removed)
    assert {"AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy"} <= {
        deployed["Resources"][k]["Type"] for k in removed}
    assert {k: v for k, v in deployed["Resources"].items() if k not in removed} == step1["Resources"]
    assert _serving(profile_switch["step 1"], "dev") == _serving(profile_switch["deployed"], "dev")


def test_step_2_changes_the_instance_type_and_registers_autoscaling_again(profile_switch):
    step2 = profile_switch["step 2"].template("prod", "Serving")
    assert _only(step2, "AWS::SageMaker::EndpointConfig")["Properties"]["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.xlarge"
    assert _only(step2, "AWS::ApplicationAutoScaling::ScalableTarget")["Properties"]["MaxCapacity"] == 4


def test_make_diff_warns_about_the_one_step_switch_and_not_about_the_two_step_one(profile_switch):
    from infra_diff.hazards import endpoint_update_hazards

    deployed, step1, step2 = (_serving(profile_switch[n]) for n in ("deployed", "step 1", "step 2"))
    (warning,) = endpoint_update_hazards(_comparison(deployed, step2))
    assert "ml.m5.large -> ml.g4dn.xlarge while the endpoint's autoscaling is registered" in warning
    assert "scaling.autoscaling: false" in warning
    assert endpoint_update_hazards(_comparison(deployed, step1)) == []
    assert endpoint_update_hazards(_comparison(step1, step2)) == []
