"""The model artifact store: a KMS-encrypted, versioned, access-logged S3 bucket."""
from typing import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

# Pinned so that a refactor of construct paths can never replace the stateful resources.
BUCKET_LOGICAL_ID = "ModelArtifactBucket"
KEY_LOGICAL_ID = "ModelArtifactKey"
ACCESS_LOG_BUCKET_LOGICAL_ID = "ModelArtifactAccessLogs"
NONCURRENT_VERSION_DAYS = 90
ACCESS_LOG_DAYS = 365


# What the serving features write under the bucket (data capture, async requests and answers) expires; the bucket is
# versioned, so an expired object becomes a noncurrent version, deleted this long after.
NONCURRENT_EXPIRED_DAYS = 1


def prefix_expiry_rule(rule_id: str, prefix: str, days: int) -> s3.LifecycleRule:
    """A rule deleting the objects under `prefix` `days` after they are written, and their old versions a day later."""
    return s3.LifecycleRule(id=rule_id, prefix=prefix, expiration=Duration.days(days),
                            noncurrent_version_expiration=Duration.days(NONCURRENT_EXPIRED_DAYS))


class ArtifactBucket(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, retain: bool,
                 extra_lifecycle_rules: Sequence[s3.LifecycleRule] = ()) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY
        # Disposable environments empty their buckets on delete so `cdk destroy` succeeds.
        auto_delete = not retain

        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts model artifacts and endpoint storage volumes",
            enable_key_rotation=True,
            removal_policy=removal,
        )
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            # S3 server access logging can only deliver to SSE-S3 buckets.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            # ACLs off: log delivery is granted by the bucket policy (@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy).
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(ACCESS_LOG_DAYS), noncurrent_version_expiration=Duration.days(30))],
            removal_policy=removal,
            auto_delete_objects=auto_delete,
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="model-artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_DAYS)),
                # data capture's and async inference's expiry, when the environment has them
                *extra_lifecycle_rules,
            ],
            removal_policy=removal,
            auto_delete_objects=auto_delete,
        )
        self.key.node.default_child.override_logical_id(KEY_LOGICAL_ID)
        self.bucket.node.default_child.override_logical_id(BUCKET_LOGICAL_ID)
        self.access_logs.node.default_child.override_logical_id(ACCESS_LOG_BUCKET_LOGICAL_ID)
