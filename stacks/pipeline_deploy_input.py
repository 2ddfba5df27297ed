"""The CloudFormation deploy actions of the pipeline read a templates-only copy of the synth output.

CDK Pipelines gives them the whole cdk.out, staged model.tar.gz files (up to 5 GiB) included, and CodePipeline caps
a CloudFormation action's input artifact at 256 MB (aws-cdk issues #9917, #21325; CDK Pipelines has no setting for
it). The synth step writes the copy (pipeline_steps.TEMPLATES_ONLY_COMMAND); this moves the deploy actions to it.
"""
from typing import Dict, List

from aws_cdk import Stack, pipelines

from stacks.pipeline_steps import TEMPLATES_ONLY_DIR


def templates_only_artifact_name(full_artifact: str, outputs: List[str]) -> str:
    """The templates-only output of the step that produced `full_artifact` (CDK Pipelines names a step's output
    artifacts `<step id>_<directory>`, sanitized, and the primary one `<step id>_Output`)."""
    suffix = "_" + "".join(c if c.isalnum() else "_" for c in TEMPLATES_ONLY_DIR)
    found = [name for name in outputs if name != full_artifact and name.endswith(suffix)]
    if len(found) != 1:
        raise ValueError(f"the step producing {full_artifact} has no single templates-only output ({suffix}): {outputs}")
    return found[0]


def templates_only_overrides(stages: list) -> Dict[str, object]:
    """CfnPipeline property overrides (`Stages.<i>.Actions.<j>...`) for `stages`, the pipeline's stages as CDK
    Pipelines rendered them: every CloudFormation action that reads the synth output reads the templates-only output
    of the same step instead. Its InputArtifacts, and the artifact part of each `<artifact>::<path>` in its
    configuration (TemplatePath, TemplateConfiguration), change; the paths do not (the copy keeps the assembly's
    layout). Other actions (the Assets stage's cdk-assets, self-mutation, smoke tests) are left alone."""
    produced_by = {}
    for stage in stages:
        for action in stage["actions"]:
            outputs = [artifact["name"] for artifact in action.get("outputArtifacts") or []]
            for name in outputs:
                produced_by[name] = outputs
    overrides = {}
    for i, stage in enumerate(stages):
        for j, action in enumerate(stage["actions"]):
            if action["actionTypeId"]["provider"] != "CloudFormation" or not action.get("inputArtifacts"):
                continue  # ExecuteChangeSet has no input
            (full,) = [artifact["name"] for artifact in action["inputArtifacts"]]
            templates = templates_only_artifact_name(full, produced_by[full])
            path = f"Stages.{i}.Actions.{j}"
            overrides[f"{path}.InputArtifacts"] = [{"Name": templates}]
            for key, value in sorted((action.get("configuration") or {}).items()):
                if isinstance(value, str) and value.startswith(f"{full}::"):
                    overrides[f"{path}.Configuration.{key}"] = f"{templates}::{value[len(full) + 2:]}"
    if not overrides:
        raise ValueError("no CloudFormation action reads the synth output: CDK Pipelines changed, check the pipeline")
    return overrides


def deploy_from_templates_only(pipeline: pipelines.CodePipeline) -> None:
    """Escape hatch on the built pipeline's CfnPipeline: property overrides, computed from the stages CDK Pipelines
    rendered (read once the pipeline is built; nothing adds actions after that), that move the CloudFormation deploy
    actions' input to the templates-only artifact. Only artifact names change: every template path, action, role
    and order stays as rendered, and the artifact is an output of the synth action, so it exists before any deploy."""
    cfn = pipeline.pipeline.node.default_child
    rendered = Stack.of(cfn).resolve(cfn.stages)
    for path, value in templates_only_overrides(rendered).items():
        cfn.add_property_override(path, value)
