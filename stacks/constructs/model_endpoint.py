"""SageMaker Model, EndpointConfig and Endpoint for one model deployment.

No physical names: an EndpointConfig is immutable, so any change must be able to replace it.
"""
from typing import Optional

from aws_cdk import Acknowledgment, Annotations, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from config import ModelDeployment
from config.container import container_environment
from config.serving_targets import EIA_SUCCESSOR_PROFILE, PROFILE_DEFAULTS, has_local_instance_storage

VARIANT_NAME = "AllTraffic"


class ModelEndpoint(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: ModelDeployment,
        model_data_url: str,
        role: iam.IRole,
        volume_key: Optional[kms.IKey],
        config_file: str,
    ) -> None:
        super().__init__(scope, construct_id)
        target = deployment.target
        self.model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=role.role_arn,
            enable_network_isolation=deployment.spec.serving.network_isolation,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=target.image_uri,
                model_data_url=model_data_url,
                environment=container_environment(deployment.spec),
            ),
        )
        # Local NVMe instance storage is hardware-encrypted and SageMaker refuses a KmsKeyId there.
        encrypt_volume = volume_key is not None and not has_local_instance_storage(target.instance_type)
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            kms_key_id=volume_key.key_arn if encrypt_volume else None,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT_NAME,
                    model_name=self.model.attr_model_name,
                    instance_type=target.instance_type,
                    initial_instance_count=deployment.scaling.initial_instance_count,
                    initial_variant_weight=1.0,
                    accelerator_type=target.accelerator_type,
                )
            ],
        )
        self.endpoint = sagemaker.CfnEndpoint(self, "Endpoint", endpoint_config_name=self.endpoint_config.attr_endpoint_config_name)

        if target.profile == "eia":
            self._explain_elastic_inference(deployment, config_file)

    def _explain_elastic_inference(self, deployment: ModelDeployment, config_file: str) -> None:
        successor = PROFILE_DEFAULTS[EIA_SUCCESSOR_PROFILE]
        Validations.of(self.endpoint_config).acknowledge(
            Acknowledgment(
                id="CloudFormation-Validate::F3002",
                reason="ProductionVariants.AcceleratorType is the Elastic Inference setting this profile exists for; "
                "the CloudFormation schema dropped it after EI's end of life.",
            )
        )
        Annotations.of(self.endpoint_config).add_warning_v2(
            "eia-end-of-life",
            f"Model {deployment.name!r} uses Elastic Inference ({deployment.target.accelerator_type} on "
            f"{deployment.target.instance_type}). EI reached end of life in April 2024: accounts that never used it "
            "cannot launch it, and the CloudFormation schema no longer lists AcceleratorType. To switch, set "
            f"`serving.profile: {EIA_SUCCESSOR_PROFILE}` in {config_file} "
            f"({successor.instance_type}, pytorch-inference {successor.framework_version} GPU image). "
            "EIA endpoints update all at once (no blue/green traffic shifting).",
        )
