"""serving.profile: async: where answers and failures go (under the artifact bucket, with its key), the SNS topics
that announce them, and what the execution role needs to read requests, write answers and publish.

The S3 layout is config/async_inference.py's (the smoke test and `make serve` use the same one).
"""
from typing import List, Sequence

from aws_cdk import Acknowledgment, CfnOutput, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from constructs import Construct

from config import ModelDeployment
from config.async_inference import ASYNC_PREFIX, async_prefixes, max_concurrent_invocations
from stacks.artifact_store_stack import ImportedArtifactStore
from stacks.constructs.artifact_bucket import prefix_expiry_rule


def expiration_rules(models: Sequence[ModelDeployment]) -> List[s3.LifecycleRule]:
    """The artifact bucket's rules deleting each async model's requests, answers and failures after
    serving.async_inference.expire_after_days (and their noncurrent versions, the bucket being versioned, a day later)."""
    return [
        prefix_expiry_rule(f"ExpireAsyncInference-{model.name}", f"{ASYNC_PREFIX}/{model.name}/",
                           model.spec.serving.async_inference.expire_after_days)
        for model in models
        if model.target.is_async
    ]


class AsyncInference(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, deployment: ModelDeployment, store: ImportedArtifactStore) -> None:
        super().__init__(scope, construct_id)
        self._store = store
        self._prefixes = async_prefixes(deployment.name)
        # The artifact store's customer-managed key: its key policy delegates to IAM, so the execution role's own
        # policy lets SageMaker publish (SNS needs kms:GenerateDataKey + kms:Decrypt from the publisher), and a
        # subscriber in the account is granted the same way. The AWS managed alias/aws/sns key's policy cannot be
        # changed. enforce_ssl: a topic policy denying publish/subscribe without TLS (cdk-nag AwsSolutions-SNS3).
        self.success_topic = sns.Topic(self, "SuccessTopic", master_key=store.key, enforce_ssl=True)
        self.error_topic = sns.Topic(self, "ErrorTopic", master_key=store.key, enforce_ssl=True)

        bucket = store.bucket.bucket_name
        self.input_path = f"s3://{bucket}/{self._prefixes.input}"
        self.output_path = f"s3://{bucket}/{self._prefixes.output}"
        self.failure_path = f"s3://{bucket}/{self._prefixes.failures}"
        self.config = sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty(
            output_config=sagemaker.CfnEndpointConfig.AsyncInferenceOutputConfigProperty(
                s3_output_path=self.output_path,
                s3_failure_path=self.failure_path,
                kms_key_id=store.key.key_arn,  # SageMaker encrypts answers and failures with the artifact key
                notification_config=sagemaker.CfnEndpointConfig.AsyncInferenceNotificationConfigProperty(
                    success_topic=self.success_topic.topic_arn,
                    error_topic=self.error_topic.topic_arn,
                ),
            ),
            client_config=sagemaker.CfnEndpointConfig.AsyncInferenceClientConfigProperty(
                max_concurrent_invocations_per_instance=max_concurrent_invocations(deployment),
            ),
        )
        # The S3 paths are not outputs: they hold the imported bucket ARN, and an output re-exporting an import is
        # what cfn-lint W6001 warns about. DescribeEndpointConfig's AsyncInferenceConfig.OutputConfig gives them.
        for name, value, what in (
            ("AsyncSuccessTopicArn", self.success_topic.topic_arn, "announces each answer"),
            ("AsyncErrorTopicArn", self.error_topic.topic_arn, "announces each failure"),
        ):
            CfnOutput(scope, name, value=value, description=f"{deployment.name} (async): {what}")

    def grant_to(self, role: iam.IRole) -> iam.Policy:
        """Read requests, write answers and failures, publish on the topics: a policy of its own, so that its
        acknowledgements cover these statements only."""
        bucket_arn, key_arn = self._store.bucket.bucket_arn, self._store.key.key_arn
        prefixes = self._prefixes
        policy = iam.Policy(
            self,
            "ExecutionRoleAccess",
            roles=[role],
            statements=[
                iam.PolicyStatement(actions=["s3:GetObject"], resources=[f"{bucket_arn}/{prefixes.input}*"]),
                iam.PolicyStatement(
                    actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[f"{bucket_arn}/{prefixes.output}*", f"{bucket_arn}/{prefixes.failures}*"],
                ),
                # SSE-KMS reads and writes of those objects, and publishing to the encrypted topics.
                iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[key_arn]),
                iam.PolicyStatement(actions=["sns:Publish"], resources=[self.success_topic.topic_arn, self.error_topic.topic_arn]),
            ],
        )
        export = self._store.bucket_arn_export
        for prefix, reason in (
            (prefixes.input, "Requests are objects the clients name under this model's async input prefix."),
            (prefixes.output, "SageMaker names each answer after its inference id, under this model's output prefix."),
            (prefixes.failures, "SageMaker names each failure after its inference id, under this model's failure prefix."),
        ):
            Validations.of(policy).acknowledge(
                Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{export}/{prefix}*]", reason=reason)
            )
        return policy
