"""A role the pipeline's smoke test assumes from the tools account to call this stage's endpoints."""
from typing import Sequence

from aws_cdk import Acknowledgment, CfnOutput, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import Construct

from config.async_inference import async_prefixes
from stacks.constructs.inference_component import smoke_test_acknowledgements, smoke_test_statements

# The id CDK gave this named role when it was added; pinned, as a new logical id for the same RoleName
# would make CloudFormation create the role again before deleting it, and the name is taken.
ROLE_LOGICAL_ID = "SmokeTestRole038569BC"


class SmokeTestRole(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, role_name: str, pipeline_account: str, pipeline_role_name: str,
                 endpoint_name_prefix: str, store=None, async_models: Sequence[str] = (), inference_components: bool = False) -> None:
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
        if async_models:  # serving.profile: async (smoke_test/async_check.py): the request and answer go through S3
            self._grant_async(store, endpoints, async_models)
        if inference_components:  # scale to zero: find each endpoint's component, read its copies, invoke it
            # Its own policy, like the async one: the Resource::* acknowledgement covers ListInferenceComponents only.
            self.inference_component_policy = iam.Policy(
                self, "InferenceComponents", roles=[self.role], statements=list(smoke_test_statements(Stack.of(self), endpoint_name_prefix))
            )
            for acknowledgement in smoke_test_acknowledgements(Stack.of(self), endpoint_name_prefix):
                Validations.of(self.inference_component_policy).acknowledge(acknowledgement)
        self.output = CfnOutput(self, "RoleArn", value=self.role.role_arn, description="Role the pipeline's smoke test assumes")

    def _grant_async(self, store, endpoints: str, async_models: Sequence[str]) -> None:
        """Exactly what smoke_test/async_check.py calls: put the request under each async model's input/, invoke,
        list (the exact key, as prefix) and read under its output/ and failures/, with the artifact key through S3."""
        stack = Stack.of(self)
        folders = [async_prefixes(model) for model in async_models]
        inputs = [f"{folder.input}*" for folder in folders]
        answers = [f"{prefix}*" for folder in folders for prefix in (folder.output, folder.failures)]
        statements = [
            iam.PolicyStatement(actions=["sagemaker:InvokeEndpointAsync"], resources=[endpoints]),
            iam.PolicyStatement(actions=["s3:PutObject"], resources=[store.bucket.arn_for_objects(key) for key in inputs]),
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[store.bucket.arn_for_objects(key) for key in answers]),
            # Polling lists the answer's exact key: with s3:ListBucket a missing object is "not there yet", without
            # it S3 answers 403 (S3 API reference, HeadObject, "Permissions"). Only under output/ and failures/.
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[store.bucket.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": answers}}),
            # SSE-KMS by the bucket's default: PutObject needs GenerateDataKey, GetObject Decrypt; only through S3.
            iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[store.key.key_arn],
                                conditions={"StringEquals": {"kms:ViaService": f"s3.{stack.region}.{stack.url_suffix}"}}),
        ]
        # Its own policy: the role's default policy (and its acknowledgements) stay as they are without async models.
        self.async_policy = iam.Policy(self, "AsyncInference", roles=[self.role], statements=statements)
        for key in inputs + answers:  # cdk-nag names the imported bucket ARN by its export
            Validations.of(self.async_policy).acknowledge(Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{store.bucket_arn_export}/{key}]",
                reason="The smoke test's request (a new uuid key) and the answer SageMaker names after the inference "
                       "id: objects under this async model's own folder only.",
            ))
        Validations.of(self.async_policy).acknowledge(Acknowledgment(
            id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{endpoints}]",
            reason="This stage's endpoints only: every endpoint name of the stage starts with this prefix.",
        ))
