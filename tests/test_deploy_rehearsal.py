"""Deploy rehearsal (issue 13): every synthesized stack deployed into moto in dependency order with its assets
staged, then the documented two-step profile switch deployed as updates; stubs only for types moto lacks."""
import json
import re
import shutil

import pytest

from deploy_rehearsal import BOOTSTRAP_VERSION, Rehearsal, StubGuardError, check_stand_ins, moto_implemented_types
from deploy_rehearsal.resource_types import BRIDGES, StandIns, template_types
from tests.conftest import REPO, SynthesizedApp, make_config

ENDPOINT = "Prod-Serving-image-classifier"
VARIANT_ID = f"endpoint/{ENDPOINT}/variant/AllTraffic"
ACCOUNTS = {"dev": "111111111111", "staging": "222222222222", "prod": "333333333333", "pipeline": "444444444444"}


# ------------------------------------------------------------ the type classification and its guard (no synth)


def test_implemented_types_come_from_motos_own_registry():
    implemented = moto_implemented_types()
    assert {"AWS::S3::Bucket", "AWS::IAM::Role", "AWS::KMS::Key", "AWS::SageMaker::Model", "AWS::SageMaker::EndpointConfig",
            "AWS::SageMaker::Endpoint", "AWS::Lambda::Function", "AWS::CloudWatch::Dashboard"} <= implemented
    assert "?" not in implemented and "AWS::SERVICE::RESOURCE" not in implemented  # moto's internal entries
    assert not any(t.startswith("Custom::") for t in implemented)


def test_a_bridge_is_only_for_a_type_moto_lacks():
    assert not set(BRIDGES) & moto_implemented_types()  # once moto implements one, drop its bridge


def test_the_stub_guard_refuses_to_stub_or_bridge_a_type_moto_implements():
    implemented = moto_implemented_types()
    check_stand_ins(["Custom::CDKBucketDeployment", "AWS::CDK::Metadata"], ["AWS::CloudWatch::Alarm"], implemented)
    with pytest.raises(StubGuardError, match="AWS::SageMaker::Endpoint"):
        check_stand_ins(["Custom::CDKBucketDeployment", "AWS::SageMaker::Endpoint"], [], implemented)
    with pytest.raises(StubGuardError, match="AWS::S3::Bucket"):
        check_stand_ins([], ["AWS::S3::Bucket"], implemented)
    # The classification stubs exactly what moto lacks: an implemented type present in the templates is emulated.
    stand_ins = StandIns(["AWS::SageMaker::Endpoint", "AWS::CloudWatch::Alarm", "Custom::CDKBucketDeployment"])
    assert (stand_ins.emulated, stand_ins.bridged, stand_ins.stubbed) == (
        ["AWS::SageMaker::Endpoint"], ["AWS::CloudWatch::Alarm"], ["Custom::CDKBucketDeployment"])


def test_a_type_nobody_classified_fails_instead_of_being_skipped():
    from moto.cloudformation import parsing

    lookup = StandIns(["AWS::S3::Bucket"]).lookup(parsing.resource_class_from_type)
    assert lookup("AWS::S3::Bucket") is parsing.get_model_map()["AWS::S3::Bucket"]
    with pytest.raises(StubGuardError, match="AWS::CodeBuild::Project"):
        lookup("AWS::CodeBuild::Project")


def test_moto_alone_skips_a_type_it_lacks_and_reports_success():
    """Why the stub list is computed from moto's registry: without the rehearsal, moto's CloudFormation skips an
    unknown type silently and the stack is CREATE_COMPLETE with the alarm missing."""
    import boto3
    from moto import mock_aws

    from deploy_rehearsal.emulation import fake_aws_environment, network_guard

    template = {"Resources": {"Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmName": "a", "ComparisonOperator": "GreaterThanThreshold", "EvaluationPeriods": 1, "MetricName": "m",
        "Namespace": "n", "Period": 60, "Statistic": "Sum", "Threshold": 1}}}}
    assert "AWS::CloudWatch::Alarm" not in moto_implemented_types()
    with fake_aws_environment(), network_guard() as refused, mock_aws():
        cfn = boto3.client("cloudformation", region_name="us-east-1")
        with pytest.warns(UserWarning, match="not supported by moto"):
            cfn.create_stack(StackName="s", TemplateBody=json.dumps(template))
        assert cfn.describe_stacks(StackName="s")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
        assert boto3.client("cloudwatch", region_name="us-east-1").describe_alarms()["MetricAlarms"] == []
    assert refused == []


def test_the_network_guard_refuses_anything_but_loopback():
    import socket

    from deploy_rehearsal.emulation import NetworkRefused, network_guard

    original = socket.socket.connect, socket.getaddrinfo
    with network_guard() as refused:
        with pytest.raises(NetworkRefused):
            socket.getaddrinfo("sts.amazonaws.com", 443)
        with socket.socket() as sock, pytest.raises(NetworkRefused):
            sock.connect(("203.0.113.1", 443))  # refused before any packet: TEST-NET-3, never reached
        assert socket.getaddrinfo("127.0.0.1", 80)
        with socket.socket() as server:  # loopback stays usable (moto's server mode, local model servers)
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=5):
                pass
    assert refused == ["resolve sts.amazonaws.com", "connect ('203.0.113.1', 443)"]
    assert (socket.socket.connect, socket.getaddrinfo) == original


def test_the_bootstrap_version_is_the_one_the_pinned_cli_writes():
    template = REPO / "node_modules" / "aws-cdk" / "lib" / "api" / "bootstrap" / "bootstrap-template.yaml"
    if not template.exists():
        pytest.fail("the local CDK CLI is missing: run `make setup` (npm ci)")
    match = re.search(r"CdkBootstrapVersion:\n(?:.*\n)*?\s+Value: '(\d+)'", template.read_text())
    assert match and int(match.group(1)) == BOOTSTRAP_VERSION


# ------------------------------------------------------------ the rehearsal of the synthesized app


@pytest.fixture(scope="module")
def step1_app(eia_artifacts, tmp_path_factory) -> SynthesizedApp:
    """Profile switch, step 1 (README): prod's autoscaling off, everything else as deployed (same artifacts)."""
    root = tmp_path_factory.mktemp("rehearsal-step1")
    config = make_config(root / "config", env_changes={"prod": lambda e: e.setdefault("scaling", {}).update(autoscaling=False)})
    return SynthesizedApp(config, eia_artifacts, root / "out")


def _templates(*apps):
    return [json.loads(p.read_text()) for app in apps for p in app.outdir.glob("**/*.template.json")]


def _variant(rehearsal, account=ACCOUNTS["prod"], endpoint=ENDPOINT):
    sagemaker = rehearsal.client("sagemaker", account)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"])
    (variant,) = config["ProductionVariants"]
    return variant, sagemaker.describe_model(ModelName=variant["ModelName"])


def _scalable_targets(rehearsal, account=ACCOUNTS["prod"], resource_id=VARIANT_ID):
    return rehearsal.client("application-autoscaling", account).describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource_id])["ScalableTargets"]


def test_every_stack_deploys_then_the_two_step_profile_switch_updates(eia_app, step1_app, gpu_app, capsys):
    deployed, step1, step2 = eia_app.outdir, step1_app.outdir, gpu_app.outdir
    with Rehearsal([deployed, step1, step2]) as rehearsal:
        first = rehearsal.deploy(deployed, "deploy")
        # Every stack, artifact store before serving in each account, the pipeline in the tools account.
        assert {(r.stack, r.account, r.status) for r in first} == {
            (f"{env.capitalize()}-{kind}", ACCOUNTS[env], "CREATE_COMPLETE")
            for env in ("dev", "staging", "prod") for kind in ("ArtifactStore", "Serving")} | {("Pipeline", ACCOUNTS["pipeline"], "CREATE_COMPLETE")}
        names = [r.stack for r in first]
        for env in ("Dev", "Staging", "Prod"):
            assert names.index(f"{env}-ArtifactStore") < names.index(f"{env}-Serving")
        variant, model = _variant(rehearsal)
        assert (variant["InstanceType"], variant["AcceleratorType"]) == ("ml.m5.large", "ml.eia2.medium")
        assert "pytorch-inference-eia:1.5.1-cpu-py3" in model["PrimaryContainer"]["Image"]
        assert [(t["MinCapacity"], t["MaxCapacity"]) for t in _scalable_targets(rehearsal)] == [(1, 4)]
        # The model data the endpoint loads: in the artifact store's bucket, which exists in prod's account.
        bucket = model["PrimaryContainer"]["ModelDataUrl"][len("s3://"):].split("/")[0]
        rehearsal.client("s3", ACCOUNTS["prod"]).head_bucket(Bucket=bucket)
        artifact_bucket = rehearsal.client("cloudformation", ACCOUNTS["prod"]).describe_stacks(StackName="Prod-ArtifactStore")["Stacks"][0]["Outputs"]
        assert any(o["OutputValue"].endswith(f":::{bucket}") for o in artifact_bucket)

        # Step 1: only Prod-Serving changes, and only by deregistering autoscaling; the endpoint keeps its config.
        config_before = rehearsal.client("sagemaker", ACCOUNTS["prod"]).describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
        updates = {r.stack: r for r in rehearsal.deploy(step1, "step 1")}
        assert {s for s, r in updates.items() if r.action != "unchanged"} == {"Prod-Serving"}
        assert updates["Prod-Serving"].status == "UPDATE_COMPLETE"
        assert _scalable_targets(rehearsal) == []
        assert rehearsal.client("sagemaker", ACCOUNTS["prod"]).describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == config_before
        assert len(_scalable_targets(rehearsal, ACCOUNTS["dev"], "endpoint/Dev-Serving-image-classifier/variant/AllTraffic")) == 1

        # Step 2: the gpu profile with autoscaling back: a new config (g4dn, no accelerator), a new model on the
        # 2.6.0 image with its newly staged artifact, the scalable target registered again.
        updates = {r.stack: r for r in rehearsal.deploy(step2, "step 2")}
        for env in ("Dev", "Staging", "Prod"):
            assert updates[f"{env}-Serving"].status == "UPDATE_COMPLETE"
        variant, model = _variant(rehearsal)
        assert variant["InstanceType"] == "ml.g4dn.xlarge" and "AcceleratorType" not in variant
        assert "pytorch-inference:2.6.0-gpu-py312" in model["PrimaryContainer"]["Image"]
        assert rehearsal.client("sagemaker", ACCOUNTS["prod"]).describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] != config_before
        assert [(t["MinCapacity"], t["MaxCapacity"]) for t in _scalable_targets(rehearsal)] == [(1, 4)]

        report = rehearsal.report
    assert report.network_refused == []
    implemented = moto_implemented_types()
    assert report.stubbed and not set(report.stubbed) & implemented  # stubs only for types moto lacks
    assert not set(report.bridged) & implemented
    assert set(report.emulated) <= implemented
    assert {"AWS::SageMaker::Endpoint", "AWS::S3::Bucket", "AWS::KMS::Key", "AWS::IAM::Role"} <= set(report.emulated)
    custom = {t for t in template_types(_templates(eia_app, step1_app, gpu_app)) if t.startswith("Custom::")}
    assert custom and custom <= set(report.stubbed)  # custom resources: moto would run their Lambda in Docker
    assert "AWS::SageMaker::Endpoint" not in report.stubbed
    with capsys.disabled():
        print("\n" + report.text())


def _broken_copy(app, tmp_path, edit):
    out = tmp_path / "cdk.out"
    shutil.copytree(app.outdir, out)
    edit(out)
    return out


def test_a_lambda_whose_code_asset_was_not_staged_fails_the_deploy(eia_app, tmp_path):
    def drop_lambda_code(out):
        manifest_path = next(out.glob("assembly-Dev/*ArtifactStore*.assets.json"))
        manifest = json.loads(manifest_path.read_text())
        template = json.loads(next(out.glob("assembly-Dev/*ArtifactStore*.template.json")).read_text())
        code_keys = {r["Properties"]["Code"]["S3Key"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"}
        manifest["files"] = {h: f for h, f in manifest["files"].items()
                             if not any(d["objectKey"] in code_keys for d in f["destinations"].values())}
        manifest_path.write_text(json.dumps(manifest))

    out = _broken_copy(eia_app, tmp_path, drop_lambda_code)
    with Rehearsal([out]) as rehearsal:
        # moto 5.2.5 creates the function anyway; the rehearsal's check of the code location catches it.
        with pytest.raises(AssertionError, match=r"Dev-ArtifactStore/.*\.zip was not staged"):
            rehearsal.deploy(out, "deploy")


def test_a_serving_stack_without_its_artifact_store_fails_on_the_import(eia_app, tmp_path):
    def drop_the_artifact_store(out):
        manifest_path = out / "assembly-Dev" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        store = next(k for k, a in manifest["artifacts"].items()
                     if a.get("properties", {}).get("stackName") == "Dev-ArtifactStore")
        del manifest["artifacts"][store]
        for artifact in manifest["artifacts"].values():
            artifact["dependencies"] = [d for d in artifact.get("dependencies", []) if d != store]
        manifest_path.write_text(json.dumps(manifest))

    out = _broken_copy(eia_app, tmp_path, drop_the_artifact_store)
    with Rehearsal([out]) as rehearsal:
        with pytest.raises(AssertionError, match=r"create Dev-Serving .*Dev-ArtifactStore-ModelArtifact\w+"):
            rehearsal.deploy(out, "deploy")


def test_the_command_line_prints_the_classification_and_fails_with_one_line(eia_app, tmp_path, capsys):
    from deploy_rehearsal.__main__ import main

    assert main([str(eia_app.outdir)]) == 0
    output = capsys.readouterr().out
    stubbed = output.split("stubbed (not implemented by moto")[1].split("moto adjustments")[0]
    assert "    Custom::" in stubbed and "AWS::SageMaker" not in stubbed
    assert "AWS::SageMaker::Endpoint x3" in output

    def unstage_the_template(out):  # the serving template's own asset: the deploy reads it from the bucket
        manifest_path = next(out.glob("assembly-Prod/*Serving*.assets.json"))
        manifest = json.loads(manifest_path.read_text())
        manifest["files"] = {h: f for h, f in manifest["files"].items() if not f["source"]["path"].endswith(".template.json")}
        manifest_path.write_text(json.dumps(manifest))

    assert main([str(_broken_copy(eia_app, tmp_path, unstage_the_template))]) == 1
    error = capsys.readouterr().err
    assert error.startswith("deploy rehearsal failed: [deploy] create Prod-Serving") and "Traceback" not in error
