"""The delivery pipeline: source, runtime export, synth, stage order, approval, smoke tests, checks."""
import json
import subprocess
from pathlib import Path

import pytest
from aws_cdk.assertions import Template

from config import ConfigError, load_config
from stacks.pipeline_deploy_input import templates_only_overrides
from stacks.pipeline_steps import ASSEMBLY_DIR, CLOUDFORMATION_INPUT_MAX_BYTES, TEMPLATES_ONLY_COMMAND, TEMPLATES_ONLY_DIR
from tests.conftest import make_config

EIA_IMAGE_PATH = "/pytorch-inference-eia:1.5.1-cpu-py3"


@pytest.fixture(scope="module")
def pipeline(eia_app):
    return Template.from_stack(eia_app.app.node.find_child("Pipeline"))


def _stages(template):
    pipeline = next(iter(template.find_resources("AWS::CodePipeline::Pipeline").values()))["Properties"]
    return {stage["Name"]: stage["Actions"] for stage in pipeline["Stages"]}


def _project(template, logical_id_part):
    projects = {k: v["Properties"] for k, v in template.find_resources("AWS::CodeBuild::Project").items() if logical_id_part in k}
    assert len(projects) == 1, sorted(projects)
    return next(iter(projects.values()))


def _commands(project):
    return json.loads(project["Source"]["BuildSpec"])["phases"]["build"]["commands"]


def test_stages_run_in_promotion_order_with_self_mutation(pipeline):
    assert list(_stages(pipeline)) == ["Source", "Build", "UpdatePipeline", "Assets", "Dev", "Staging", "Prod"]


def test_source_is_a_codeconnections_connection_from_config(pipeline):
    (source,) = _stages(pipeline)["Source"]
    assert source["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    assert source["Configuration"] == {
        "ConnectionArn": "arn:aws:codeconnections:us-east-1:444444444444:connection/00000000-0000-0000-0000-000000000000",
        "FullRepositoryId": "example-org/sagemaker-eia-serving",
        "BranchName": "main",
    }


def test_the_model_is_converted_in_the_runtime_image_before_synth(pipeline):
    build = {action["Name"]: action for action in _stages(pipeline)["Build"]}
    # One export per serving runtime (each a Synth input; CodePipeline allows a CodeBuild action 5), not per model.
    assert build["RuntimeExport-eia-pytorch-1.5.1"]["RunOrder"] < build["Synth"]["RunOrder"]
    assert len(build["Synth"]["InputArtifacts"]) == 2  # the source and the one runtime's exports
    export = _project(pipeline, "RuntimeExport")
    image = export["Environment"]["Image"]["Fn::Join"][1]
    assert image[0] == "763104351884.dkr.ecr.us-east-1." and image[2] == EIA_IMAGE_PATH  # the endpoint's own image
    assert _commands(export) == [
        "PYTHONHASHSEED=0 python -m model_artifacts.runtime_export --model example-resnet-tiny --recipe eia-1.5 "
        "--input-shape 1 3 64 64 --dtype float32 --out build/runtime-export/image-classifier"
    ]
    synth = _project(pipeline, "Synth")
    assert _commands(synth)[:3] == [
        "make test", "mkdir -p build/runtime-export && cp -R build/runtime-export-parts/*/. build/runtime-export/",
        "make synth RUNTIME_EXPORT=build/runtime-export"]
    # The serving runtimes' Pythons (make test builds their venvs), prebuilt from conda-forge, where setup looks first.
    install = json.loads(synth["Source"]["BuildSpec"])["phases"]["install"]["commands"]
    assert [c for c in install if "python=" in c] == [
        f"micromamba create --yes --quiet --root-prefix /opt/runtime-pythons/.mamba --prefix /opt/runtime-pythons/{v} "
        f"--channel conda-forge python={v}" for v in ("3.6", "3.8", "3.12")]
    assert synth["Environment"]["Image"] == "aws/codebuild/amazonlinux2-x86_64-standard:5.0"
    variables = {v["Name"]: v["Value"] for v in synth["Environment"]["EnvironmentVariables"]}
    assert variables["PROD_ACCOUNT_ID"] == "333333333333" and variables["PIPELINE_ACCOUNT_ID"] == "444444444444"
    assert variables["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert variables["PYTHON36"] == "/opt/runtime-pythons/3.6/bin/python3.6" and variables["PYTHON312"].endswith("/3.12/bin/python3.12")


# ------------------------------------------------------------ big models: the deploy actions read templates only
# CodePipeline caps a CloudFormation action's input artifact at 256 MB (aws-cdk #9917, #21325); the synth output
# carries the staged model.tar.gz files (up to 5 GiB).


def _actions(template):
    return [action for actions in _stages(template).values() for action in actions]


def _artifact_paths(action):
    """(artifact, path) of every `<artifact>::<path>` the action's configuration reads."""
    return sorted(tuple(v.split("::", 1)) for v in action.get("Configuration", {}).values() if isinstance(v, str) and "::" in v)


def test_the_synth_step_outputs_the_assembly_and_a_templates_only_copy(pipeline):
    synth = _project(pipeline, "Synth")
    spec = json.loads(synth["Source"]["BuildSpec"])
    assert _commands(synth)[-1] == TEMPLATES_ONLY_COMMAND  # after make synth
    assert "asset.*" in TEMPLATES_ONLY_COMMAND
    assert spec["artifacts"] == {"secondary-artifacts": {
        "Synth_Output": {"base-directory": ASSEMBLY_DIR, "files": ["**/*"]},
        "Synth_cdk_templates": {"base-directory": TEMPLATES_ONLY_DIR, "files": ["**/*"]},
    }}
    (action,) = [a for a in _stages(pipeline)["Build"] if a["Name"] == "Synth"]
    assert action["OutputArtifacts"] == [{"Name": "Synth_Output"}, {"Name": "Synth_cdk_templates"}]


def test_every_cloudformation_deploy_action_reads_the_templates_only_artifact(pipeline):
    deploys = [a for a in _actions(pipeline) if a["ActionTypeId"]["Provider"] == "CloudFormation"]
    prepares = [a for a in deploys if a["Configuration"]["ActionMode"] == "CHANGE_SET_REPLACE"]
    assert len(prepares) == 6 and len(deploys) == 12  # 3 stages x 2 stacks, each a change set created then executed
    for action in prepares:
        assert action["InputArtifacts"] == [{"Name": "Synth_cdk_templates"}], action["Name"]
        paths = _artifact_paths(action)
        assert [p[0] for p in paths] == ["Synth_cdk_templates"] * 2, paths  # TemplatePath and TemplateConfiguration
    for action in deploys:
        if action not in prepares:  # the change set's execution reads no artifact
            assert action["Configuration"]["ActionMode"] == "CHANGE_SET_EXECUTE" and "InputArtifacts" not in action
    # Nothing else reads it.
    readers = [a["Name"] for a in _actions(pipeline) if {"Name": "Synth_cdk_templates"} in a.get("InputArtifacts", [])]
    assert len(readers) == len(prepares)


def test_asset_publishing_and_self_mutation_still_read_the_whole_synth_output(pipeline):
    stages = _stages(pipeline)
    for action in stages["Assets"] + stages["UpdatePipeline"]:
        assert action["ActionTypeId"]["Provider"] == "CodeBuild"
        assert action["InputArtifacts"] == [{"Name": "Synth_Output"}], action["Name"]
    assert any(a["Name"] == "image-classifier_model.tar.gz" for a in stages["Assets"])


def test_the_templates_only_copy_of_a_real_assembly_has_what_the_deploy_actions_read_and_no_asset(eia_app, pipeline, tmp_path):
    """The synth step's command, run on the assembly this synthesis wrote (staged model.tar.gz included)."""
    assembly = Path(eia_app.outdir)
    staged = sorted(p.name for p in assembly.glob("asset.*"))
    assert any(name.endswith(".tar.gz") for name in staged) and any((assembly / n).is_dir() for n in staged)
    (tmp_path / ASSEMBLY_DIR).symlink_to(assembly, target_is_directory=True)
    subprocess.run(["bash", "-c", TEMPLATES_ONLY_COMMAND.replace("python ", f"{__import__('sys').executable} ", 1)],
                   cwd=tmp_path, check=True)
    copy = tmp_path / TEMPLATES_ONLY_DIR
    kept = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
    everything = sorted(str(p.relative_to(assembly)) for p in assembly.rglob("*") if p.is_file())
    assert not [p for p in kept if "asset." in p.replace(".assets.json", "")]
    assert kept == [p for p in everything if not p.startswith("asset.")]  # templates, configs, manifests, asset manifests
    read = [path for a in _actions(pipeline) for artifact, path in _artifact_paths(a) if artifact == "Synth_cdk_templates"]
    assert len(read) == 12 and all((copy / path).is_file() for path in read), read
    assert sum(p.stat().st_size for p in copy.rglob("*") if p.is_file()) < CLOUDFORMATION_INPUT_MAX_BYTES


def test_a_pipeline_without_a_templates_only_output_stops_synthesis():
    stages = [
        {"name": "Build", "actions": [{"name": "Synth", "actionTypeId": {"provider": "CodeBuild"}, "outputArtifacts": [{"name": "Synth_Output"}]}]},
        {"name": "Dev", "actions": [{"name": "S.Prepare", "actionTypeId": {"provider": "CloudFormation"},
                                     "inputArtifacts": [{"name": "Synth_Output"}], "configuration": {"TemplatePath": "Synth_Output::a/b.json"}}]},
    ]
    with pytest.raises(ValueError, match="no single templates-only output"):
        templates_only_overrides(stages)
    stages[0]["actions"][0]["outputArtifacts"].append({"name": "Synth_cdk_templates"})
    assert templates_only_overrides(stages) == {
        "Stages.1.Actions.0.InputArtifacts": [{"Name": "Synth_cdk_templates"}],
        "Stages.1.Actions.0.Configuration.TemplatePath": "Synth_cdk_templates::a/b.json",
    }
    with pytest.raises(ValueError, match="no CloudFormation action"):
        templates_only_overrides(stages[:1])


def test_prod_waits_for_a_manual_approval_and_dev_staging_do_not(pipeline):
    stages = _stages(pipeline)
    approvals = {name: [a for a in actions if a["ActionTypeId"]["Category"] == "Approval"] for name, actions in stages.items()}
    assert [name for name, found in approvals.items() if found] == ["Prod"]
    first_deploy = min(a["RunOrder"] for a in stages["Prod"] if a["ActionTypeId"]["Provider"] == "CloudFormation")
    assert approvals["Prod"][0]["RunOrder"] < first_deploy


@pytest.mark.parametrize("stage, account", [("Staging", "222222222222"), ("Prod", "333333333333")])
def test_staging_and_prod_end_with_one_smoke_test_of_all_their_endpoints(pipeline, stage, account):
    actions = _stages(pipeline)[stage]
    smoke = [a for a in actions if a["Name"].startswith("SmokeTest")]
    # One action for every endpoint of the stage: CodePipeline allows 50 actions per stage, and 100 models would need 100.
    assert [a["Name"] for a in smoke] == ["SmokeTest"] and smoke[0]["RunOrder"] == max(a["RunOrder"] for a in actions)
    variables = {v["name"]: v["value"] for v in json.loads(smoke[0]["Configuration"]["EnvironmentVariables"])}
    assert "SmokeTestRoleArn" in variables["SMOKE_TEST_ROLE_ARN"]
    project = _project(pipeline, f"{stage}SmokeTest")
    assert _commands(project) == [
        'python -m smoke_test --region "$ENDPOINT_REGION" --assume-role-arn "$SMOKE_TEST_ROLE_ARN" '
        f"--endpoint-name {stage}-Serving-image-classifier"
    ]
    statements = [s for p in pipeline.find_resources("AWS::IAM::Policy").values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert any(s["Action"] == "sts:AssumeRole" and s["Resource"] == f"arn:aws:iam::{account}:role/{stage}-Serving-SmokeTest" for s in statements)


def test_dev_has_no_smoke_test(pipeline):
    assert not [a for a in _stages(pipeline)["Dev"] if a["Name"].startswith("SmokeTest")]


def test_each_stage_trusts_only_the_pipelines_smoke_test_role_to_smoke_test_only_its_endpoints(eia_app, pipeline):
    template = eia_app.template("staging", "Serving")
    roles = {k: v["Properties"] for k, v in template.find_resources("AWS::IAM::Role").items() if "SmokeTest" in k}
    (role,) = roles.values()
    assert role["RoleName"] == "Staging-Serving-SmokeTest"
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert ":iam::444444444444:root" in json.dumps(trust["Principal"]["AWS"])
    # Not the whole tools account: the caller must be the pipeline's smoke-test role of this stage.
    assert trust["Condition"] == {"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::444444444444:role/Pipeline-SmokeTest-Staging"}}
    # That role is what the stage's smoke-test projects run as, and nothing else does.
    runners = {k: v["Properties"] for k, v in pipeline.find_resources("AWS::IAM::Role").items()
               if v["Properties"].get("RoleName") == "Pipeline-SmokeTest-Staging"}
    (runner_id,) = runners
    users = sorted(k for k, v in pipeline.find_resources("AWS::CodeBuild::Project").items()
                   if v["Properties"]["ServiceRole"] == {"Fn::GetAtt": [runner_id, "Arn"]})
    assert users == [k for k in sorted(pipeline.find_resources("AWS::CodeBuild::Project")) if "StagingSmokeTest" in k] and users
    statements = [s for p in template.find_resources("AWS::IAM::Policy").values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    invoke = [s for s in statements if s["Action"] == ["sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint"]]
    # Every endpoint of the stage, in whichever serving stack, by the prefix of their names (a list of 100 ARNs
    # would pass IAM's 10 KB inline-policy limit); SageMaker's ARNs hold the names lowercased.
    assert len(invoke) == 1 and invoke[0]["Resource"] == "arn:aws:sagemaker:us-east-1:222222222222:endpoint/staging-serving-*"


def test_cross_account_keys_and_a_pinned_cli(pipeline):
    pipeline_props = next(iter(pipeline.find_resources("AWS::CodePipeline::Pipeline").values()))["Properties"]
    assert pipeline_props["ArtifactStore"]["EncryptionKey"]["Type"] == "KMS"
    assert pipeline_props["PipelineType"] == "V2"
    keys = pipeline.find_resources("AWS::KMS::Key")
    assert keys and all(k["Properties"]["EnableKeyRotation"] for k in keys.values())
    self_mutation = _project(pipeline, "SelfMutation")
    cli = json.loads((__import__("pathlib").Path(__file__).parent.parent / "package.json").read_text())["devDependencies"]["aws-cdk"]
    assert f"aws-cdk@{cli}" in json.dumps(json.loads(self_mutation["Source"]["BuildSpec"]))


def test_the_pipeline_template_is_cfn_lint_clean(eia_app):
    from cfnlint.api import ManualArgs, lint_file

    template = eia_app.outdir / "Pipeline.template.json"
    assert lint_file(template, config=ManualArgs(ignore_checks=["W3005"])) == []


def test_no_pipeline_file_means_no_pipeline_stack(tmp_path):
    directory = make_config(tmp_path / "c")
    (directory / "pipeline.yaml").unlink()
    assert load_config(directory).pipeline is None


@pytest.mark.parametrize("change, message", [
    ({"connection_arn": "arn:aws:codecommit:us-east-1:444444444444:repo"}, "connection_arn"),
    ({"smoke_test_after": ["qa"]}, "smoke_test_after names 'qa', which is not an environment; environments: dev, staging, prod"),
    ({"repository": "no-owner"}, "repository"),
])
def test_pipeline_config_errors_name_the_key(tmp_path, change, message):
    import yaml

    directory = make_config(tmp_path / "c")
    path = directory / "pipeline.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **change}))
    with pytest.raises(ConfigError, match="pipeline.yaml") as raised:
        load_config(directory)
    assert message in str(raised.value)


def test_pipeline_resources_carry_the_cost_allocation_tags(eia_app):
    stack = eia_app.app.node.find_child("Pipeline")
    assert stack.tags.tag_values() == {"project": "sagemaker-eia-serving", "environment": "pipeline"}
    template = Template.from_stack(stack).to_json()["Resources"]
    tagged = [r for r in template.values() if r["Type"] in ("AWS::CodeBuild::Project", "AWS::KMS::Key", "AWS::S3::Bucket", "AWS::IAM::Role")]
    assert tagged and all({"Key": "project", "Value": "sagemaker-eia-serving"} in r["Properties"]["Tags"] for r in tagged)
