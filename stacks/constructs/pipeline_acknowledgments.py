"""cdk-nag findings on the roles and bucket CDK Pipelines generates, each acknowledged with its reason.

Acknowledgements sit on the CodePipeline construct and cover the generated constructs below it; the
finding ids name the generated logical ids, so they are computed after `build_pipeline()`.
"""
from typing import List, Tuple

from aws_cdk import Acknowledgment, Stack, Validations, pipelines
from aws_cdk import aws_codebuild as codebuild

from config.partitions import partition_of
from stacks.pipeline_steps import RUNTIME_EXPORT_STEP_PREFIX

ARTIFACT_GRANTS = (
    "s3:GetBucket*", "s3:GetObject*", "s3:List*", "s3:Abort*", "s3:DeleteObject*", "kms:GenerateDataKey*", "kms:ReEncrypt*",
)


def acknowledge_pipeline_findings(pipeline: pipelines.CodePipeline) -> None:
    stack = Stack.of(pipeline)
    for rule_id, reason in _findings(stack, pipeline):
        Validations.of(pipeline).acknowledge(Acknowledgment(id=f"AwsSolutions::{rule_id}", reason=reason))


def _findings(stack: Stack, pipeline: pipelines.CodePipeline) -> List[Tuple[str, str]]:
    arn_prefix = f"arn:{partition_of(stack.region)}"
    where = f"{stack.region}:{stack.account}"
    bucket = stack.get_logical_id(pipeline.pipeline.artifact_bucket.node.default_child)
    findings = [(f"AwsSolutions-IAM5[Action::{action}]", "CDK Pipelines' grant on its own artifact bucket and key only.") for action in ARTIFACT_GRANTS]
    findings += [
        (f"AwsSolutions-IAM5[Resource::<{bucket}.Arn>/*]", "Objects of the pipeline's own artifact bucket: build inputs and outputs."),
        ("AwsSolutions-S1", "The artifact bucket holds transient pipeline artifacts, encrypted with the pipeline key; "
                            "CloudTrail records access to it."),
        ("AwsSolutions-IAM5[Resource::*]", "Asset publishing and self-mutation read CloudFormation stacks and assume the "
                                           "bootstrap roles CDK resolves at run time."),
        (f"AwsSolutions-IAM5[Resource::arn:*:iam::{stack.account}:role/*]", "Self-mutation assumes this account's CDK bootstrap roles."),
        (f"AwsSolutions-IAM5[Resource::{arn_prefix}:codebuild:{where}:report-group/*]", "Asset publishing projects are created per asset."),
        (f"AwsSolutions-IAM5[Resource::{arn_prefix}:logs:{where}:log-group:/aws/codebuild/*]", "Asset publishing projects log per asset."),
    ]
    for project in pipeline.node.find_all():
        if isinstance(project, codebuild.CfnProject) and RUNTIME_EXPORT_STEP_PREFIX in project.node.path:
            Validations.of(project).acknowledge(Acknowledgment(
                id="AwsSolutions::AwsSolutions-CB5",
                reason="The serving runtime's own Deep Learning Container image: the model must be converted by the torch it serves with.",
            ))
        # Asset projects share one role whose grants cover every project (report-group/*, /aws/codebuild/*, above).
        if isinstance(project, codebuild.CfnProject) and "/Assets/" not in project.node.path:
            project_id = stack.get_logical_id(project)
            findings += [
                (f"AwsSolutions-IAM5[Resource::{arn_prefix}:codebuild:{where}:report-group/<{project_id}>-*]",
                 "The report groups of this CodeBuild project only."),
                (f"AwsSolutions-IAM5[Resource::{arn_prefix}:logs:{where}:log-group:/aws/codebuild/<{project_id}>:*]",
                 "The log streams of this CodeBuild project only."),
            ]
    return findings
