"""Copies a built model.tar.gz into the artifact bucket under a content-addressed key."""
from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from model_artifacts.manifest import ARTIFACT_FILE, MANIFEST_FILE, BuiltArtifact
from stacks.artifact_store_stack import ImportedArtifactStore


class ModelArtifactUpload(Construct):
    """The artifact's sha256 is both the CDK asset hash and part of the S3 key, so a new build
    gives a new ModelDataUrl (and a new Model) while an unchanged one leaves `cdk diff` empty."""

    def __init__(
        self, scope: Construct, construct_id: str, *, store: ImportedArtifactStore, model_name: str, artifact: BuiltArtifact
    ) -> None:
        super().__init__(scope, construct_id)
        self.prefix = f"models/{model_name}/"
        self.key = f"{self.prefix}{artifact.sha256}/{ARTIFACT_FILE}"
        self.deployment = s3deploy.BucketDeployment(
            self,
            "Deployment",
            sources=[s3deploy.Source.asset(str(artifact.directory), exclude=[MANIFEST_FILE], asset_hash=artifact.sha256)],
            destination_bucket=store.bucket,
            destination_key_prefix=f"{self.prefix}{artifact.sha256}/",
            prune=False,  # earlier artifacts stay, so a rollback can point back at them
            retain_on_delete=True,
            memory_limit=1024,
        )
        self.model_data_url = f"s3://{store.bucket.bucket_name}/{self.key}"
        _acknowledge_copy_function_findings(Stack.of(self), store.bucket_arn_export)


def _acknowledge_copy_function_findings(stack: Stack, bucket_arn_export: str) -> None:
    """The copy runs in a Lambda function that CDK creates once per stack; its findings are CDK's grants."""
    asset_bucket = f"arn:{stack.partition}:s3:::cdk-hnb659fds-assets-{stack.account}-{stack.region}"
    findings = {
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": "Logging only.",
        "AwsSolutions-L1": "The runtime is chosen and kept current by aws-cdk-lib's BucketDeployment.",
        f"AwsSolutions-IAM5[Resource::{asset_bucket}/*]": "Reads the staged asset from the CDK bootstrap bucket.",
        f"AwsSolutions-IAM5[Resource::{bucket_arn_export}/*]": "Writes the artifact into the artifact bucket.",
    }
    for action in ("s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:DeleteObject*", "s3:Abort*", "kms:ReEncrypt*", "kms:GenerateDataKey*"):
        findings[f"AwsSolutions-IAM5[Action::{action}]"] = "CDK's grant_read/grant_read_write on the two buckets above."
    for child in stack.node.children:
        if child.node.id.startswith("Custom::CDKBucketDeployment"):
            for rule_id, reason in findings.items():
                Validations.of(child).acknowledge(Acknowledgment(id=f"AwsSolutions::{rule_id}", reason=reason))
