"""Endpoint data capture: sampled requests and answers written under the artifact bucket, encrypted with its key.

The environment switches it (`data_capture:` in config/environments/<env>.yaml, checked by config/data_capture.py);
the artifact store's lifecycle rule (`expiration_rules`) deletes what was captured after expire_after_days.
"""
from typing import List, Optional

from aws_cdk import Acknowledgment, Annotations, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from config import ModelDeployment
from config.data_capture import capture_modes
from config.schema import DataCaptureSpec
from stacks.artifact_store_stack import ImportedArtifactStore
from stacks.constructs.artifact_bucket import prefix_expiry_rule

DATA_CAPTURE_PREFIX = "data-capture/"
EXPIRATION_RULE_ID = "ExpireDataCapture"


def capture_prefix(model_name: str) -> str:
    """data-capture/<model>/: SageMaker adds <endpoint>/<variant>/yyyy/mm/dd/hh/ below it."""
    return f"{DATA_CAPTURE_PREFIX}{model_name}/"


def expiration_rules(spec: Optional[DataCaptureSpec]) -> List[s3.LifecycleRule]:
    """The artifact bucket's rule deleting captured data after expire_after_days; none when capture is off."""
    if spec is None:
        return []
    return [prefix_expiry_rule(EXPIRATION_RULE_ID, DATA_CAPTURE_PREFIX, spec.expire_after_days)]


def data_capture_of(scope: Construct, deployment: ModelDeployment, *, store: ImportedArtifactStore, role: iam.IRole,
                    config_file: str) -> Optional["DataCapture"]:
    """The environment's data capture for this model, or None: off, or a serverless endpoint, which SageMaker does
    not capture (Serverless Inference, Feature exclusions): synthesis says so rather than dropping it silently."""
    if deployment.data_capture is None:
        return None
    if deployment.target.is_serverless:
        Annotations.of(scope).add_warning_v2(
            "data-capture-not-on-serverless",
            f"Model {deployment.name!r} serves on serverless, which SageMaker cannot capture (Serverless Inference, "
            "Feature exclusions): this environment's data_capture leaves it out. To capture its traffic, serve it on "
            f"an instance profile (serving.profile: cpu, gpu or async in {config_file}).",
        )
        return None
    return DataCapture(scope, "DataCapture", deployment=deployment, store=store, role=role)


class DataCapture(Construct):
    """The EndpointConfig's DataCaptureConfig and the execution role's right to write it."""

    def __init__(self, scope: Construct, construct_id: str, *, deployment: ModelDeployment, store: ImportedArtifactStore,
                 role: iam.IRole) -> None:
        super().__init__(scope, construct_id)
        spec = deployment.data_capture
        assert spec is not None, "DataCapture is built only for deployments with data capture enabled"
        prefix = capture_prefix(deployment.name)
        self.config = sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
            enable_capture=True,
            initial_sampling_percentage=spec.sampling_percent,
            capture_options=[sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode=m) for m in capture_modes(spec)],
            capture_content_type_header=_content_type_header(spec),
            destination_s3_uri=f"s3://{store.bucket.bucket_name}/{prefix}",
            kms_key_id=store.key.key_arn,
        )
        # SageMaker writes the captured files as the endpoint's execution role (the role of the Model), with
        # SSE-KMS under KmsKeyId: s3:PutObject on the prefix, kms:GenerateDataKey/Encrypt on the key
        # (API reference, DataCaptureConfig.KmsKeyId and ProductionVariantCoreDumpConfig.KmsKeyId).
        self.policy = iam.Policy(
            self,
            "Writes",
            roles=[role],
            statements=[
                iam.PolicyStatement(actions=["s3:PutObject"], resources=[store.bucket.arn_for_objects(f"{prefix}*")]),
                iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Encrypt"], resources=[store.key.key_arn]),
            ],
        )
        Validations.of(self.policy).acknowledge(Acknowledgment(
            id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{store.bucket_arn_export}/{prefix}*]",
            reason="SageMaker names the capture files itself (<endpoint>/<variant>/yyyy/mm/dd/hh/<uuid>.jsonl) under "
            "this model's data-capture prefix; writes only (s3:PutObject), nowhere else in the bucket.",
        ))


def _content_type_header(spec: DataCaptureSpec) -> Optional[sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty]:
    """Bodies of these types are captured as text; without the header SageMaker base64-encodes all of them.
    Each list takes 1-10 items (botocore), so an empty one is left out rather than sent."""
    if not spec.json_content_types and not spec.csv_content_types:
        return None
    return sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
        json_content_types=list(spec.json_content_types) or None,
        csv_content_types=list(spec.csv_content_types) or None,
    )
