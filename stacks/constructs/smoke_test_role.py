"""A role the pipeline's smoke test assumes from the tools account to call this stage's endpoints."""
from aws_cdk import Acknowledgment, CfnOutput, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import Construct

# The id CDK gave this named role when it was added; pinned, as a new logical id for the same RoleName
# would make CloudFormation create the role again before deleting it, and the name is taken.
ROLE_LOGICAL_ID = "SmokeTestRole038569BC"


class SmokeTestRole(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, role_name: str, pipeline_account: str, pipeline_role_name: str,
                 endpoint_name_prefix: str) -> None:
        super().__init__(scope, construct_id)
        partition = Stack.of(self).partition
        self.role = iam.Role(
            self,
            "Role",
            # A known name lets the pipeline grant sts:AssumeRole on exactly this role, across accounts.
            role_name=role_name,
            # Only the pipeline's smoke-test role for this stage, not the whole tools account. A condition on the
            # caller's ARN rather than that role as principal: IAM would refuse a trust policy naming a role that
            # does not exist yet (a hand deployment before the pipeline's), and would stop matching once that
            # role is recreated.
            assumed_by=iam.AccountPrincipal(pipeline_account).with_conditions(
                {"ArnEquals": {"aws:PrincipalArn": f"arn:{partition}:iam::{pipeline_account}:role/{pipeline_role_name}"}}
            ),
            description="Assumed by the delivery pipeline's smoke test: describe and invoke this stage's endpoints",
        )
        self.role.node.default_child.override_logical_id(ROLE_LOGICAL_ID)
        # The stage's endpoints by their names' common prefix: they live in several serving stacks, and a list of
        # 100 ARNs would pass IAM's 10 KB limit on a role's inline policies. SageMaker's ARNs hold names lowercased.
        endpoints = Stack.of(self).format_arn(service="sagemaker", resource="endpoint", resource_name=f"{endpoint_name_prefix.lower()}*")
        self.role.add_to_policy(iam.PolicyStatement(actions=["sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint"], resources=[endpoints]))
        Validations.of(self.role.node.find_child("DefaultPolicy")).acknowledge(Acknowledgment(
            id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{endpoints}]",
            reason="This stage's endpoints only: every endpoint name of the stage starts with this prefix.",
        ))
        self.output = CfnOutput(self, "RoleArn", value=self.role.role_arn, description="Role the pipeline's smoke test assumes")
