"""A role the pipeline's smoke test assumes from the tools account to call this stage's endpoints."""
from typing import Sequence

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct


def smoke_test_role_name(serving_stack_name: str) -> str:
    # A known name lets the pipeline grant sts:AssumeRole on exactly this role, across accounts.
    return f"{serving_stack_name}-SmokeTest"


class SmokeTestRole(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, pipeline_account: str, endpoints: Sequence[sagemaker.CfnEndpoint]) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            role_name=smoke_test_role_name(Stack.of(self).stack_name),
            assumed_by=iam.AccountPrincipal(pipeline_account),
            description="Assumed by the delivery pipeline's smoke test: describe and invoke this stage's endpoints",
        )
        # Ref of an AWS::SageMaker::Endpoint is its ARN.
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint"], resources=[e.ref for e in endpoints])
        )
        self.output = CfnOutput(self, "RoleArn", value=self.role.role_arn, description="Role the pipeline's smoke test assumes")
