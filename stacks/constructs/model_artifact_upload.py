"""Puts a built model.tar.gz into the artifact bucket under a content-addressed key, for artifacts of any size
up to S3's single-request copy limit (5 GiB), without a Lambda function ever holding the file.

The path of the bytes:

1. synth: the tarball is staged once into cdk.out and declared as an `aws_s3_assets.Asset` of that single file
   (packaging FILE: uploaded as it is, never zipped). Its asset hash is derived from the build manifest's sha256
   alone (CDK's custom hash, sha256 of that string), so the same build always gives the same asset and key.
2. publish: the CDK CLI (`cdk deploy`), or the Assets stage of CDK Pipelines (`cdk-assets publish`), streams it into
   the bootstrap bucket of the target environment with a multipart upload (no size limit that matters here).
3. deploy: one S3 CopyObject request, issued by an AwsCustomResource, copies it server-side into
   s3://<artifact bucket>/models/<name>/<sha256>/model.tar.gz. The Lambda function only sends the request: the bytes
   never pass through it (no /tmp, no download, no unzip). A new build is a new key; nothing is ever deleted
   (earlier artifacts stay for rollbacks, as `prune=False` did).

Why a copy at all: the execution role's grants, the bucket's KMS key, versioning, access logs and the prod
retention all apply to the artifact bucket, which CloudFormation names, so the CLI cannot upload into it directly.
CopyObject copies at most 5 GiB; a larger artifact is refused at synthesis (`check_copy_size`).

Through CDK Pipelines the Assets stage publishes the file the same way, from the synth output (cdk.out). The
CloudFormation deploy actions, whose input artifacts CodePipeline caps at 256 MB (aws-cdk issues #9917, #21325), get
a copy of the assembly without the staged assets instead (stacks/pipeline_deploy_input.py), so the pipeline deploys
artifacts up to the same 5 GiB copy limit as `npx cdk deploy`.
"""
import hashlib
import os
import shutil
from pathlib import Path

from aws_cdk import Acknowledgment, Duration, Stack, Stage, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import custom_resources as cr
from constructs import Construct

from config import ConfigError
from model_artifacts.manifest import ARTIFACT_FILE, BuiltArtifact
from stacks.artifact_store_stack import ImportedArtifactStore

# S3 CopyObject: "You create a copy of your object up to 5 GB in size in a single atomic action using this API.
# However, to copy an object greater than 5 GB, you must use the multipart upload Upload Part - Copy (UploadPartCopy)
# API." S3 reports the limit as 5368709120 bytes (5 GiB).
COPY_OBJECT_MAX_BYTES = 5 * 1024 ** 3
# Lambda's maximum: CopyObject answers when the copy is done, and a few GiB take a while (not measured here).
COPY_TIMEOUT = Duration.minutes(15)
COPY_RESOURCE_TYPE = "Custom::ModelArtifactCopy"
# The Lambda function AwsCustomResource creates once per stack (a SingletonFunction named after this uuid).
_PROVIDER_ID = "AWS" + cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace("-", "")


class ModelArtifactUpload(Construct):
    """The artifact's sha256 gives the CDK asset hash and is part of the S3 key, so a new build gives a new
    ModelDataUrl (and a new Model) while an unchanged one leaves `cdk diff` empty."""

    def __init__(
        self, scope: Construct, construct_id: str, *, store: ImportedArtifactStore, model_name: str, artifact: BuiltArtifact
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        source = artifact.directory / ARTIFACT_FILE
        self.size_bytes = check_copy_size(model_name, source)
        self.prefix = f"models/{model_name}/"
        self.key = f"{self.prefix}{artifact.sha256}/{ARTIFACT_FILE}"

        # Staged here, where CDK's own staging would put this asset, so CDK finds it and does not copy it again.
        outdir = Path(Stage.of(stack).asset_outdir)
        self.staged_path = stage_artifact(source, artifact.sha256, outdir)
        self.asset = s3_assets.Asset(
            self, "Asset", path=str(self.staged_path), asset_hash=artifact.sha256, display_name=f"{model_name} {ARTIFACT_FILE}"
        )
        if self.asset.asset_hash != cdk_asset_hash(artifact.sha256):
            # A CDK that hashes custom hashes otherwise staged its own copy: drop ours rather than keep two.
            self.staged_path.unlink(missing_ok=True)
        # Where the stack's synthesizer publishes it (its bootstrap qualifier, bucket name and prefix).
        source_bucket, source_key = self.asset.s3_bucket_name, self.asset.s3_object_key

        copy = cr.AwsSdkCall(
            service="S3",
            action="copyObject",
            parameters={
                "CopySource": f"{source_bucket}/{source_key}",
                # The bootstrap bucket's name is predictable: copy only from this account's.
                "ExpectedSourceBucketOwner": stack.account,
                "Bucket": store.bucket.bucket_name,
                "ExpectedBucketOwner": stack.account,
                "Key": self.key,
                # Tags are neither read nor written (no s3:*ObjectTagging); metadata (Content-Type) is copied.
                "TaggingDirective": "REPLACE",
            },
            physical_resource_id=cr.PhysicalResourceId.of(self.key),
            output_paths=["CopyObjectResult.ETag"],
        )
        self.deployment = cr.AwsCustomResource(
            self,
            "Copy",
            resource_type=COPY_RESOURCE_TYPE,
            on_create=copy,
            on_update=copy,  # a new sha256 is a new key: copied, and the old object stays
            # no on_delete: the object outlives the stack (rollbacks, and the retained prod bucket)
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [
                    iam.PolicyStatement(
                        actions=["s3:GetObject"],
                        resources=[f"arn:{stack.partition}:s3:::{source_bucket}/{source_key}"],
                    ),
                    iam.PolicyStatement(actions=["s3:PutObject"], resources=[store.bucket.arn_for_objects(self.key)]),
                    # The artifact bucket encrypts with its own key (the bootstrap bucket's key policy already
                    # lets this account's principals use it through S3).
                    iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[store.key.key_arn]),
                ]
            ),
            install_latest_aws_sdk=False,  # no npm install from the Lambda at deploy time
            timeout=COPY_TIMEOUT,
        )
        self.model_data_url = f"s3://{store.bucket.bucket_name}/{self.key}"
        _acknowledge_copy_function_findings(stack)


def check_copy_size(model_name: str, source: Path) -> int:
    """The artifact's size, or a ConfigError if one CopyObject request cannot copy it."""
    size = source.stat().st_size
    if size > COPY_OBJECT_MAX_BYTES:
        raise ConfigError(
            f"model {model_name!r}: {source} is {size:,} bytes ({size / 1024 ** 3:.2f} GiB); the deployment copies it "
            f"into the artifact bucket with one S3 CopyObject request, which copies at most 5 GiB "
            f"({COPY_OBJECT_MAX_BYTES:,} bytes). Make the artifact smaller (e.g. half-precision or quantized weights), "
            f"or give stacks/constructs/model_artifact_upload.py a multipart copy (S3 UploadPartCopy, up to 5 TB)."
        )
    return size


def cdk_asset_hash(sha256: str) -> str:
    """The asset hash CDK gives an asset whose custom hash is `sha256` (AssetStaging: sha256 of that string)."""
    return hashlib.sha256(sha256.encode()).hexdigest()


def staged_path_for(sha256: str, asset_outdir: Path) -> Path:
    """Where CDK stages that asset: asset.<asset hash>.tar.gz in the app's cdk.out."""
    return Path(asset_outdir) / f"asset.{cdk_asset_hash(sha256)}.tar.gz"


def stage_artifact(source: Path, sha256: str, asset_outdir: Path) -> Path:
    """Copy the artifact into cdk.out once per sha256 (every stage shares it), as CDK stages assets.

    Unlike CDK's own staging (which keeps any file already at the target), an existing copy counts only if its size
    is right, and a copy is written under a temporary name and renamed: an interrupted synth never leaves a truncated
    file that the next one would publish under the full artifact's hash. A copy, not a hard link: the build rewrites
    model.tar.gz in place, which would change an already staged (and perhaps not yet published) asset.
    """
    target = staged_path_for(sha256, asset_outdir)
    size = source.stat().st_size
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _acknowledge_copy_function_findings(stack: Stack) -> None:
    """The copy runs in the Lambda function AwsCustomResource creates once per stack; its policy names exact
    objects and actions (no cdk-nag finding), so what is left is the function's own setup."""
    provider = stack.node.try_find_child(_PROVIDER_ID)
    if provider is None:
        return
    findings = {
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]":
            "Logging only: the function that issues the CopyObject request writes its log.",
    }
    done = {rule for entry in provider.node.metadata if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY
            for rule in entry.data}  # once per stack, however many models share the function
    for rule_id, reason in findings.items():
        if f"AwsSolutions::{rule_id}" not in done:
            Validations.of(provider).acknowledge(Acknowledgment(id=f"AwsSolutions::{rule_id}", reason=reason))
