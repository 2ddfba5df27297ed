"""The IAM role SageMaker assumes to pull the image, read the artifact, write logs and metrics,
and read the alarms that roll back a blue/green update."""
from typing import Sequence

from aws_cdk import Acknowledgment, ArnFormat, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from constructs import Construct

from config.serving_targets import image_registry_and_repository
from stacks.artifact_store_stack import ImportedArtifactStore

SAGEMAKER_FULL_ACCESS = "AmazonSageMakerFullAccess"


class ModelExecutionRole(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        store: ImportedArtifactStore,
        artifact_prefix: str,
        image_uri: str,
        endpoint_name: str,
        rollback_alarms: Sequence[cloudwatch.IAlarm],
        attach_sagemaker_full_access: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="SageMaker execution role for one model endpoint",
        )
        acknowledgments = []
        if attach_sagemaker_full_access:
            # The specification asks for it; serving.attach_sagemaker_full_access: false removes it.
            self.role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name(SAGEMAKER_FULL_ACCESS))
            acknowledgments.append(
                (
                    f"AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{SAGEMAKER_FULL_ACCESS}]",
                    "Required by the product specification; set serving.attach_sagemaker_full_access: false "
                    "to keep only the scoped grants below.",
                )
            )

        # Scoped grants: enough to serve without the managed policy.
        store.bucket.grant_read(self.role, f"{artifact_prefix}*")
        registry, repository = image_registry_and_repository(image_uri)
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[stack.format_arn(service="ecr", account=registry, resource="repository", resource_name=repository)],
            )
        )
        self.role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        log_group = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"/aws/sagemaker/Endpoints/{endpoint_name}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[log_group, f"{log_group}:*"],
            )
        )
        if rollback_alarms:  # SageMaker reads them during a blue/green update
            self.role.add_to_policy(
                iam.PolicyStatement(actions=["cloudwatch:DescribeAlarms"], resources=[alarm.alarm_arn for alarm in rollback_alarms])
            )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "AWS/SageMaker"]}},
            )
        )
        acknowledgments += [
            ("AwsSolutions::AwsSolutions-IAM5[Action::s3:GetObject*]", "grant_read on the model artifact prefix only."),
            ("AwsSolutions::AwsSolutions-IAM5[Action::s3:GetBucket*]", "grant_read on the model artifact bucket only."),
            ("AwsSolutions::AwsSolutions-IAM5[Action::s3:List*]", "grant_read on the model artifact bucket only."),
            ("AwsSolutions::AwsSolutions-IAM5[Action::kms:GenerateDataKey*]", "Decrypting the artifact key only (bucket key)."),
            ("AwsSolutions::AwsSolutions-IAM5[Action::kms:ReEncrypt*]", "Granted by S3 grant_read on the artifact key only."),
            (
                f"AwsSolutions::AwsSolutions-IAM5[Resource::{store.bucket_arn_export}/{artifact_prefix}*]",
                "Artifacts are content-addressed objects under this model's prefix.",
            ),
            ("AwsSolutions::AwsSolutions-IAM5[Resource::*]", "ecr:GetAuthorizationToken has no resource; PutMetricData is limited by namespace."),
            (
                f"AwsSolutions::AwsSolutions-IAM5[Resource::{log_group}:*]",
                "The log streams of this endpoint's own log group; SageMaker names them per instance.",
            ),
        ]
        for rule_id, reason in acknowledgments:
            Validations.of(self.role).acknowledge(Acknowledgment(id=rule_id, reason=reason))

