"""The shadow of a profile switch (serving.shadow): its own SageMaker Model (its profile's image and artifact)
and the ShadowProductionVariants entry of the live endpoint's EndpointConfig.

SageMaker copies sampling_percent of the live requests to it and drops its answers: clients only ever see the live
variant's. The rollback alarms and autoscaling stay on the live variant (stacks/serving_stack.py): a failing
candidate must not roll back, or scale, the endpoint that serves; comparing it is what the dashboard is for.
"""
from pathlib import Path
from typing import Optional

from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from config import ModelDeployment
from config.shadow import SHADOW_VARIANT_NAME, shadow_deployment
from model_artifacts.manifest import load_built_shadow_artifact
from stacks.artifact_store_stack import ImportedArtifactStore
from stacks.constructs.model_artifact_upload import ModelArtifactUpload
from stacks.constructs.model_endpoint import sagemaker_model
from stacks.constructs.serving_dashboard import VariantLabels
from stacks.runtime_compatibility import warn_if_runtime_older

LIVE_VARIANT_WEIGHT = 1.0  # the live variant's InitialVariantWeight (stacks/constructs/model_endpoint.py)


def shadow_variant_weight(sampling_percent: int) -> float:
    """The shadow's InitialVariantWeight: the share of the live requests SageMaker copies to it, as its weight relative
    to the production variant's (VariantWeight, botocore: traffic follows the ratio of the weights; SageMaker Developer
    Guide, "Testing models with shadow variants", and the shadow test's "traffic sampling percentage", 1 to 100).
    Not verified on a live endpoint here (no AWS account): the README says how to read the copied share on the
    dashboard (the shadow's Invocations over the live one's)."""
    return LIVE_VARIANT_WEIGHT * sampling_percent / 100


class ShadowVariant(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, deployment: ModelDeployment, model_data_url: str,
                 role: iam.IRole) -> None:
        super().__init__(scope, construct_id)
        self.deployment = shadow_deployment(deployment)  # named <name>.shadow, with the shadow's spec and target
        target, spec = self.deployment.target, deployment.spec.serving.shadow
        # Workers and threads for the shadow's own instance type, the live model's request limits.
        self.model = sagemaker_model(self, "Model", deployment=self.deployment, model_data_url=model_data_url, role=role)
        self.variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=SHADOW_VARIANT_NAME,
            model_name=self.model.attr_model_name,
            instance_type=target.instance_type,
            initial_instance_count=spec.instance_count,
            initial_variant_weight=shadow_variant_weight(spec.sampling_percent),
        )


def add_shadow_variant(scope: Construct, deployment: ModelDeployment, *, artifacts_dir: Path, store: ImportedArtifactStore,
                       role: iam.IRole) -> Optional[ShadowVariant]:
    """The shadow's artifact upload and Model, in the model's scope; None without serving.shadow."""
    artifact = load_built_shadow_artifact(artifacts_dir, deployment)
    if artifact is None:
        return None
    # Under the live model's prefix (models/<name>/<sha256>/): content-addressed, so the two never collide, and the
    # execution role's read grant on that prefix covers both.
    upload = ModelArtifactUpload(scope, "ShadowArtifact", store=store, model_name=deployment.name, artifact=artifact)
    shadow = ShadowVariant(scope, "Shadow", deployment=deployment, model_data_url=upload.model_data_url, role=role)
    shadow.model.node.add_dependency(upload.deployment)  # SageMaker reads the artifact while creating the Model
    warn_if_runtime_older(shadow.model, shadow.deployment, artifact)
    return shadow


def dashboard_labels(shadow: Optional[ShadowVariant], deployment: ModelDeployment) -> Optional[VariantLabels]:
    """The dashboard's names for the two variants, by profile (e.g. live eia, shadow gpu)."""
    if shadow is None:
        return None
    return VariantLabels(variant_name=SHADOW_VARIANT_NAME, live_label=deployment.target.profile,
                         shadow_label=shadow.deployment.target.profile)


def shadow_production_variants(shadow: Optional[ShadowVariant]):
    """The EndpointConfig's ShadowProductionVariants: the shadow's variant, or None (the property left out)."""
    return None if shadow is None else [shadow.variant]
