"""serving.shadow: a profile switch tried as a shadow variant (config/shadow.py, stacks/constructs/shadow_variant.py).

The headline case: the EIA classifier with a gpu shadow copying half of the live requests, synthesized once
(module fixture) in every environment, with its two artifacts built for their two runtimes."""
import json
from dataclasses import replace
from pathlib import Path

import aws_cdk as cdk
import pytest

from config import ConfigError, load_config
from tests.conftest import SynthesizedApp, build_for, make_config

ENVIRONMENTS = ["dev", "staging", "prod"]
GPU_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-gpu-py312"
EIA_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference-eia:1.5.1-cpu-py3"
SHADOW = {"profile": "gpu", "sampling_percent": 50}


def _shadowed(shadow=SHADOW, profile="eia", **serving):
    def change(model: dict) -> None:
        model["serving"].update(profile=profile, shadow=dict(shadow), **serving)
    return change


def _load(tmp_path: Path, model_change, env_changes=None):
    return load_config(make_config(tmp_path / "config", model_change, env_changes))


# ------------------------------------------------------------ config: what resolves and what SageMaker refuses


def test_the_shadow_resolves_like_a_live_profile_with_its_own_recipe(tmp_path):
    deployment = _load(tmp_path, _shadowed()).environment("dev").models[0]
    assert (deployment.target.profile, deployment.target.recipe) == ("eia", "eia-1.5")
    shadow = deployment.shadow
    assert (shadow.profile, shadow.recipe, shadow.framework_version, shadow.instance_type) == ("gpu", "trace", "2.6.0", "ml.g4dn.xlarge")
    assert shadow.image_uri == GPU_IMAGE and shadow.accelerator_type is None


def test_without_serving_shadow_there_is_no_shadow(tmp_path):
    assert _load(tmp_path, lambda m: None).environment("dev").models[0].shadow is None


def test_a_recipe_pinned_for_the_live_runtime_is_not_forced_on_the_shadow(tmp_path):
    """build.recipe: eia-1.5 is the EIA runtime's; the gpu shadow builds its own (auto: trace)."""
    def change(model):
        _shadowed()(model)
        model["build"]["recipe"] = "eia-1.5"
    assert _load(tmp_path, change).environment("dev").models[0].shadow.recipe == "trace"


def test_the_shadow_takes_its_instance_type_from_its_profile_settings(tmp_path):
    def change(model):
        _shadowed()(model)
        model["serving"]["profiles"]["gpu"]["instance_type"] = "ml.g5.xlarge"
    assert _load(tmp_path, change).environment("prod").models[0].shadow.instance_type == "ml.g5.xlarge"


@pytest.mark.parametrize("live, shadow, message", [
    ("eia", "eia", r"serving\.shadow\.profile = 'eia' is the live serving\.profile.*Set serving\.shadow\.profile to the profile you mean to switch to"),
    ("gpu", "gpu", r"serving\.shadow\.profile = 'gpu' is the live serving\.profile.*\(cpu\)"),
    ("gpu", "eia", r"serving\.shadow\.profile = 'eia': Elastic Inference reached end of life.*set serving\.shadow\.profile to gpu or cpu"),
    ("eia", "serverless", r"serving\.shadow\.profile = 'serverless': SageMaker does not run shadow tests on serverless.*gpu or cpu"),
    ("eia", "async", r"serving\.shadow\.profile = 'async': SageMaker does not run shadow tests on async.*gpu or cpu"),
    ("serverless", "gpu", r"serving\.shadow is set but serving\.profile is 'serverless'.*or remove serving\.shadow"),
    ("async", "cpu", r"serving\.shadow is set but serving\.profile is 'async'.*or remove serving\.shadow"),
])
def test_combinations_sagemaker_refuses_name_the_key_and_the_fix(tmp_path, live, shadow, message):
    with pytest.raises(ConfigError, match=message) as error:
        _load(tmp_path, _shadowed({"profile": shadow}, profile=live))
    assert "image-classifier.yaml" in str(error.value)


def test_a_shadow_on_a_scale_to_zero_endpoint_is_refused_in_the_environment_file(tmp_path):
    """min_instances: 0 on cpu/gpu deploys an inference component: no model variant to copy requests to."""
    def scale_to_zero(env):
        env.setdefault("scaling", {}).update(min_instances=0)
    # config/scale_to_zero.py refuses it.
    with pytest.raises(ConfigError, match=r"dev\.yaml: scaling\.min_instances = 0.*serving\.shadow.*"
                                          r"scaling\.min_instances.* 1.*or remove serving\.shadow"):
        _load(tmp_path, _shadowed({"profile": "cpu"}, profile="gpu"), {"dev": scale_to_zero})


def test_every_profile_check_applies_to_the_shadow_and_says_so(tmp_path):
    def change(model):
        _shadowed()(model)
        model["serving"]["profiles"]["gpu"]["instance_type"] = "ml.m5.large"
    with pytest.raises(ConfigError, match=r"serving\.profiles\.gpu\.instance_type = 'ml\.m5\.large' has no GPU.*"
                                          r"\(checked for the shadow, serving\.shadow\.profile: gpu\)"):
        _load(tmp_path, change)


def test_kms_refusal_on_local_storage_covers_the_shadow_instance(tmp_path):
    """One KmsKeyId covers both variants: refuse mode stops at a shadow on NVMe storage (g4dn) too."""
    with pytest.raises(ConfigError, match=r"ml\.g4dn\.xlarge' has local NVMe.*checked for the shadow"):
        _load(tmp_path, _shadowed(kms_on_local_storage="refuse"))


@pytest.mark.parametrize("bad", [{"sampling_percent": 0}, {"sampling_percent": 101}, {"instance_count": 0}])
def test_sampling_and_count_bounds(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"serving\.shadow\." + next(iter(bad))):
        _load(tmp_path, _shadowed({**SHADOW, **bad}))


def test_blue_green_stays_as_configured_beside_a_shadow(tmp_path):
    """The deployment-guardrail exclusions do not list shadow variants: a gpu endpoint keeps its canary."""
    deployment = _load(tmp_path, _shadowed({"profile": "cpu"}, profile="gpu")).environment("prod").models[0]
    assert deployment.deployment_strategy == "canary"


# ------------------------------------------------------------ the build: a second artifact per shadowed model


def test_build_requests_add_one_per_shadow_for_its_runtime(tmp_path):
    from model_artifacts.requests import build_requests

    config = _load(tmp_path, _shadowed())
    live, shadow = build_requests(config)
    assert (live.name, live.recipe, live.target_framework_version, live.target_profile) == ("image-classifier", "eia-1.5", "1.5.1", "eia")
    assert (shadow.name, shadow.recipe, shadow.target_framework_version, shadow.target_profile) == ("image-classifier.shadow", "trace", "2.6.0", "gpu")
    assert shadow.source == live.source and shadow.input_shape == live.input_shape
    # --model names artifacts: the live one alone (what `make serve` builds), or the shadow's.
    assert [r.name for r in build_requests(config, only=["image-classifier"])] == ["image-classifier"]
    assert [r.name for r in build_requests(config, only=["image-classifier.shadow"])] == ["image-classifier.shadow"]
    with pytest.raises(ConfigError, match="--model nope: no such model"):
        build_requests(config, only=["nope"])
    # The pipeline's runtime exports: one folder per artifact name.
    assert build_requests(config, runtime_export_dir=tmp_path / "x")[1].runtime_export == tmp_path / "x" / "image-classifier.shadow"


# ------------------------------------------------------------ the stacks: eia live, gpu shadow


@pytest.fixture(scope="module")
def shadow_app(tmp_path_factory) -> SynthesizedApp:
    root = tmp_path_factory.mktemp("shadow")
    config = make_config(root / "config", _shadowed())
    build_for(config, root / "artifacts")
    return SynthesizedApp(config, root / "artifacts", root / "out")


def _resources(template, resource_type) -> dict:
    return template.find_resources(resource_type)


def _endpoint_config(template) -> dict:
    (config,) = _resources(template, "AWS::SageMaker::EndpointConfig").values()
    return config["Properties"]


def _model_of(template, variant) -> dict:
    return template.to_json()["Resources"][variant["ModelName"]["Fn::GetAtt"][0]]["Properties"]


def test_the_built_artifacts_are_two_and_the_shadow_is_found(shadow_app):
    from config.shadow import shadow_deployment
    from model_artifacts.manifest import load_built_artifact, load_built_shadow_artifact

    deployment = shadow_app.config.environment("dev").models[0]
    live = load_built_artifact(shadow_app.artifacts_dir, deployment)
    shadow = load_built_shadow_artifact(shadow_app.artifacts_dir, deployment)
    assert shadow.directory == shadow_app.artifacts_dir / "image-classifier.shadow"
    assert (live.manifest["recipe"], shadow.manifest["recipe"]) == ("eia-1.5", "trace")
    assert shadow.manifest["target_runtime"]["framework_version"] == "2.6.0" and live.sha256 != shadow.sha256
    assert load_built_shadow_artifact(shadow_app.artifacts_dir, replace(deployment, shadow=None)) is None
    # A shadow switched to cpu after the build: its artifact is stale, named, with the fix.
    cpu = _load(shadow_app.artifacts_dir.parent / "cpu", _shadowed({"profile": "cpu"})).environment("dev").models[0]
    with pytest.raises(ConfigError, match=r"model 'image-classifier\.shadow': the built artifact is stale \(recipe: built 'trace', "
                                          r"configured 'optimized'.*make artifacts"):
        load_built_artifact(shadow_app.artifacts_dir, shadow_deployment(cpu))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_shadow_variant_beside_the_live_one(shadow_app, env):
    template = shadow_app.template(env, "Serving")
    config = _endpoint_config(template)
    (live,) = config["ProductionVariants"]
    (shadow,) = config["ShadowProductionVariants"]
    assert (live["VariantName"], live["InstanceType"], live["AcceleratorType"], live["InitialVariantWeight"]) == (
        "AllTraffic", "ml.m5.large", "ml.eia2.medium", 1)
    assert shadow == {
        "VariantName": "Shadow", "ModelName": shadow["ModelName"], "InstanceType": "ml.g4dn.xlarge",
        "InitialInstanceCount": 1, "InitialVariantWeight": 0.5,  # 50 % of the live variant's weight
    }
    assert _model_of(template, live)["PrimaryContainer"]["Image"] == EIA_IMAGE
    shadow_model = _model_of(template, shadow)
    assert shadow_model["PrimaryContainer"]["Image"] == GPU_IMAGE
    assert shadow_model["EnableNetworkIsolation"] is True
    # Its own container settings: workers for the g4dn.xlarge's 4 vCPUs, not the m5.large's.
    assert shadow_model["PrimaryContainer"]["Environment"]["OMP_NUM_THREADS"] != _model_of(template, live)["PrimaryContainer"]["Environment"]["OMP_NUM_THREADS"]


def test_each_model_reads_its_own_uploaded_artifact(shadow_app):
    import re

    from model_artifacts.manifest import load_built_artifact, load_built_shadow_artifact

    deployment = shadow_app.config.environment("dev").models[0]
    shas = {"Serving": load_built_artifact(shadow_app.artifacts_dir, deployment).sha256,
            "Shadow": load_built_shadow_artifact(shadow_app.artifacts_dir, deployment).sha256}
    template = shadow_app.template("staging", "Serving")
    copies = {json.dumps(c["Properties"]) for c in _resources(template, "Custom::ModelArtifactCopy").values()}
    for sha in shas.values():
        assert any(f"models/image-classifier/{sha}/model.tar.gz" in copy for copy in copies)
    for logical_id, model in _resources(template, "AWS::SageMaker::Model").items():
        scope = "Shadow" if "Shadow" in logical_id else "Serving"
        url = json.dumps(model["Properties"]["PrimaryContainer"]["ModelDataUrl"])
        assert re.search(f"{shas[scope]}/model.tar.gz", url), (logical_id, url)


def test_the_role_pulls_both_images(shadow_app):
    template = shadow_app.template("dev", "Serving")
    text = json.dumps(template.find_resources("AWS::IAM::Policy"))
    assert "repository/pytorch-inference-eia" in text and "repository/pytorch-inference\"" in text


def test_kms_key_is_dropped_for_the_shadows_local_storage_with_a_warning(shadow_app):
    assert "KmsKeyId" not in _endpoint_config(shadow_app.template("prod", "Serving"))
    warnings = [str(e.data) for stage in shadow_app.stages.values() for c in stage.serving.node.find_all()
                for e in c.node.metadata if e.type == "aws:cdk:warning"]
    assert sum("the shadow's ml.g4dn.xlarge has local NVMe instance storage" in w for w in warnings) == 3


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_dashboard_shows_both_variants_side_by_side_and_alarms_watch_the_live_one(shadow_app, env):
    template = shadow_app.template(env, "Serving")
    (dashboard,) = _resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for label in ("eia ModelLatency p90", "gpu ModelLatency p90", "eia Invocation5XXErrors Sum", "gpu Invocation5XXErrors Sum",
                  "eia Invocations Sum", "gpu Invocations Sum"):
        assert label in body, label
    assert '\\"Shadow\\"' in body and '\\"AllTraffic\\"' in body
    for alarm in _resources(template, "AWS::CloudWatch::Alarm").values():
        assert {"Name": "VariantName", "Value": "AllTraffic"} in alarm["Properties"]["Dimensions"]
    for target in _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").values():
        assert json.dumps(target["Properties"]["ResourceId"]).endswith('/variant/AllTraffic"]]}')


def test_a_dashboard_without_a_shadow_is_unchanged(tmp_path):
    """No labels, the live variant alone: an endpoint without serving.shadow gets no dashboard diff."""
    from stacks.constructs.serving_dashboard import ServingDashboard

    stack = cdk.Stack(cdk.App(outdir=str(tmp_path)), "S")
    ServingDashboard(stack, "D").add_endpoint("m", "Dev-Serving-m", "AllTraffic", [])
    body = json.dumps(cdk.assertions.Template.from_stack(stack).to_json())
    assert "label" not in body and "Shadow" not in body and body.count("ModelLatency") == 2


def test_cdk_nag_clean_and_no_stale_acknowledgement(shadow_app):
    from tests.test_stacks import stale_acknowledgements

    report = json.loads((shadow_app.outdir / "validation-report.json").read_text())
    assert all(p["conclusion"] == "success" and p["violations"] == [] for p in report["pluginReports"])
    assert stale_acknowledgements(shadow_app) == []


def test_cfn_lint_is_clean_but_for_the_live_eia_accelerator(shadow_app):
    from tests.test_stacks import _cfn_lint

    for path in shadow_app.template_files():
        for match in _cfn_lint(path):
            assert match.rule.id == "E3002" and "AcceleratorType" in match.message, (path.name, str(match))


def test_the_pipeline_exports_the_shadow_with_its_own_runtime(tmp_path):
    """What stacks/pipeline_stack.py's runtime-export grouping needs (config.loader.resolve_in_region resolves the
    live profile only): with_shadow(..., region) adds the shadow, exported by the pytorch-2.6.0 runtime."""
    from config.loader import resolve_in_region
    from config.shadow import with_shadow
    from runtimes import runtime_for
    from stacks.pipeline_steps import runtime_export_command

    config = _load(tmp_path, _shadowed())
    live, shadow = with_shadow(resolve_in_region("image-classifier", config.models["image-classifier"], "eu-west-1"), "eu-west-1")
    assert shadow.name == "image-classifier.shadow" and shadow.target.region == "eu-west-1"
    assert [runtime_for(d.target.framework, d.target.framework_version, d.target.profile, where="").name for d in (live, shadow)] == [
        "eia-pytorch-1.5.1", "pytorch-2.6.0"]
    command = runtime_export_command(shadow)
    assert "--recipe trace" in command and command.endswith("/image-classifier.shadow")
    assert with_shadow(resolve_in_region("image-classifier", _load(tmp_path / "plain", lambda m: None).models["image-classifier"],
                                         "eu-west-1"), "eu-west-1")[1:] == []
