"""The IAM role SageMaker assumes to pull the image, read the artifact, write logs and metrics,
and read the alarms that roll back a blue/green update."""
from typing import Sequence

from aws_cdk import Acknowledgment, Annotations, ArnFormat, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from constructs import Construct, IConstruct

from config import ModelDeployment
from config.serving_targets import image_registry_and_repository
from stacks.artifact_store_stack import ImportedArtifactStore
from stacks.constructs.inference_component import grant_inference_component_logs

SAGEMAKER_FULL_ACCESS = "AmazonSageMakerFullAccess"


def full_access_warning(model_name: str, config_file: str) -> str:
    """What the managed policy adds to the scoped one, and the key that removes it."""
    return (
        f"Model {model_name!r}: the execution role has the AWS managed policy {SAGEMAKER_FULL_ACCESS} "
        "(serving.attach_sagemaker_full_access, on by default because the specification asks for it). The scoped policy "
        f"is all the endpoint needs: read models/{model_name}/ in the artifact bucket, pull its image, write its own logs and "
        f"metrics, read its rollback alarms. {SAGEMAKER_FULL_ACCESS} adds, for any code running in the container: "
        "sagemaker:* on every SageMaker resource of the account (create, change or delete any model, endpoint, job or "
        "notebook), iam:PassRole of any role to SageMaker, read, write and delete in every S3 bucket whose name contains "
        "'sagemaker', and CloudWatch, Application Auto Scaling, EC2 network-interface, ECR, SNS and Secrets Manager actions. "
        f"To keep only the scoped policy, set serving.attach_sagemaker_full_access: false in {config_file}."
    )


class ModelExecutionRole(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: ModelDeployment,
        store: ImportedArtifactStore,
        artifact_prefix: str,
        endpoint_name: str,
        rollback_alarms: Sequence[cloudwatch.IAlarm],
        config_file: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="SageMaker execution role for one model endpoint",
        )
        if deployment.spec.serving.attach_sagemaker_full_access:
            # The specification asks for it; serving.attach_sagemaker_full_access: false removes it.
            self.role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name(SAGEMAKER_FULL_ACCESS))
            _acknowledge(self.role.node.default_child, [(
                f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{SAGEMAKER_FULL_ACCESS}]",
                "Required by the product specification; the synth warning says what it grants beyond the scoped policy, "
                "and serving.attach_sagemaker_full_access: false removes it.",
            )])
            Annotations.of(self.role).add_warning_v2("sagemaker-full-access", full_access_warning(deployment.name, config_file))

        # Scoped grants (the role's default policy): enough to serve without the managed policy.
        store.bucket.grant_read(self.role, f"{artifact_prefix}*")  # s3 reads under the prefix + kms:Decrypt on the key
        # The live Model's image, and serving.shadow's, which runs its own profile's image (config/shadow.py).
        for target in (deployment.target, *([deployment.shadow] if deployment.shadow is not None else [])):
            registry, repository = image_registry_and_repository(target.image_uri)
            self.role.add_to_policy(
                iam.PolicyStatement(
                    actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                    resources=[stack.format_arn(service="ecr", account=registry, resource="repository", resource_name=repository)],
                )
            )
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
        if deployment.uses_inference_component:  # scale to zero: the component's containers log under its own name
            grant_inference_component_logs(self.role, endpoint_name)
        if rollback_alarms:  # SageMaker reads them during a blue/green update
            self.role.add_to_policy(
                iam.PolicyStatement(actions=["cloudwatch:DescribeAlarms"], resources=[alarm.alarm_arn for alarm in rollback_alarms])
            )
        _acknowledge(self.role.node.find_child("DefaultPolicy"), [
            ("AwsSolutions-IAM5[Action::s3:GetObject*]", "grant_read on the model artifact prefix only."),
            ("AwsSolutions-IAM5[Action::s3:GetBucket*]", "grant_read on the model artifact bucket only."),
            ("AwsSolutions-IAM5[Action::s3:List*]", "grant_read on the model artifact bucket only."),
            (
                f"AwsSolutions-IAM5[Resource::{store.bucket_arn_export}/{artifact_prefix}*]",
                "Artifacts are content-addressed objects under this model's prefix.",
            ),
            (
                f"AwsSolutions-IAM5[Resource::{log_group}:*]",
                "The log streams of this endpoint's own log group; SageMaker names them per instance.",
            ),
        ])

        # Actions that take no resource ARN, in a policy of their own: the Resource::* acknowledgement covers
        # these two statements only, so a wildcard added to the scoped policy above still fails cdk-nag.
        self.account_wide = iam.Policy(
            self,
            "AccountWideActions",
            roles=[self.role],
            statements=[
                iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
                iam.PolicyStatement(
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "AWS/SageMaker"]}},
                ),
            ],
        )
        _acknowledge(self.account_wide, [(
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken takes no resource; PutMetricData takes none and is limited to SageMaker's namespaces.",
        )])


def _acknowledge(scope: IConstruct, findings) -> None:
    for rule_id, reason in findings:
        Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions::{rule_id}", reason=reason))
