"""Stateful: the model artifact bucket and its key. Retained and termination-protected in prod."""
from typing import Sequence

from aws_cdk import Fn, Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.constructs.artifact_bucket import ArtifactBucket


class ArtifactStoreStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, retain_data: bool,
                 expiry_rules: Sequence[s3.LifecycleRule] = (), **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # expiry_rules: what the serving features write under the bucket (data capture, async answers) expires.
        self.store = ArtifactBucket(self, "Artifacts", retain=retain_data, extra_lifecycle_rules=expiry_rules)
        # Named exports: readable in `cdk diff`, and stable strings for the cdk-nag acknowledgements.
        self.bucket_arn_export = f"{self.stack_name}-ModelArtifactBucketArn"
        self.key_arn_export = f"{self.stack_name}-ModelArtifactKeyArn"
        self.export_value(self.store.bucket.bucket_arn, name=self.bucket_arn_export)
        self.export_value(self.store.key.key_arn, name=self.key_arn_export)

    def import_into(self, scope: Construct) -> "ImportedArtifactStore":
        """The bucket and key as seen from another stack of the same environment."""
        scope.node.add_dependency(self)
        return ImportedArtifactStore(scope, self.bucket_arn_export, self.key_arn_export)


class ImportedArtifactStore:
    def __init__(self, scope: Construct, bucket_arn_export: str, key_arn_export: str) -> None:
        self.bucket_arn_export = bucket_arn_export
        self.key = kms.Key.from_key_arn(scope, "ImportedArtifactKey", Fn.import_value(key_arn_export))
        self.bucket = s3.Bucket.from_bucket_attributes(
            scope, "ImportedArtifactBucket", bucket_arn=Fn.import_value(bucket_arn_export), encryption_key=self.key
        )
