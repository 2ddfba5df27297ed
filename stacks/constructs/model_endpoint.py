"""SageMaker Model, EndpointConfig and Endpoint for one model deployment.

The Model and EndpointConfig have no physical names: an EndpointConfig is immutable, so any change
must be able to replace it. The Endpoint has a stable name (<stack>-<model>) that clients call and
alarms watch; changing its config updates it in place, so the name never blocks a replacement.
Its logical id is pinned too: under a new logical id CloudFormation would create a second endpoint
of the same name before deleting the first, and the deploy would fail and roll back.
"""
import hashlib
from typing import Optional, Sequence

from aws_cdk import Acknowledgment, Annotations, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from config import ModelDeployment
from cost.estimate import monthly_cost
from cost.prices import default_table
from config.container import container_environment
from config.serving_targets import EIA_SUCCESSOR_PROFILE, eia_successor, has_local_instance_storage
from stacks.constructs.inference_component import inference_component_variant

VARIANT_NAME = "AllTraffic"


def model_construct_id(model_name: str) -> str:
    """image-classifier -> ImageClassifier: the model's scope in the serving stack."""
    return "".join(part.capitalize() for part in model_name.replace("_", "-").split("-"))


def endpoint_logical_id(model_name: str) -> str:
    """The id CDK derived from the path <Model>/Serving/Endpoint (its readable path plus the md5 of the path)
    when the endpoints got their stable names, frozen so that no refactor of the construct tree changes it."""
    path = f"{model_construct_id(model_name)}/Serving/Endpoint"
    return path.replace("/", "") + hashlib.md5(path.encode()).hexdigest()[:8].upper()


class ModelEndpoint(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: ModelDeployment,
        endpoint_name: str,
        rollback_alarms: Sequence[cloudwatch.IAlarm],
        model_data_url: str,
        role: iam.IRole,
        volume_key: Optional[kms.IKey],
        config_file: str,
        # The environment's data capture (stacks/constructs/data_capture.py); None: no capture.
        data_capture_config: Optional[sagemaker.CfnEndpointConfig.DataCaptureConfigProperty] = None,
        # serving.shadow's variant (stacks/constructs/shadow_variant.py); None: no shadow.
        shadow_production_variants: Optional[Sequence[sagemaker.CfnEndpointConfig.ProductionVariantProperty]] = None,
        # serving.profile: async (stacks/constructs/async_inference.py); None: a real-time endpoint.
        async_inference_config: Optional[sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty] = None,
    ) -> None:
        super().__init__(scope, construct_id)
        target = deployment.target
        self.model = sagemaker_model(self, "Model", deployment=deployment, model_data_url=model_data_url, role=role)
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            kms_key_id=volume_key.key_arn if volume_key is not None and _volume_takes_a_kms_key(self, deployment) else None,
            production_variants=[_variant(deployment, self.model.attr_model_name)],
            # scaling.min_instances: 0 (stacks/constructs/inference_component.py): SageMaker needs the role on the
            # endpoint config of an endpoint that hosts inference components.
            execution_role_arn=role.role_arn if deployment.uses_inference_component else None,
            data_capture_config=data_capture_config,
            shadow_production_variants=shadow_production_variants,
            async_inference_config=async_inference_config,
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
            deployment_config=_blue_green(deployment, rollback_alarms),
            # Without it every new EndpointConfig puts the variant back to InitialInstanceCount: an endpoint that
            # autoscaled to 4 drops to 1, under load. Retained: the desired instance count and weight (what
            # autoscaling sets); applied: everything the new config is about (instance type, image, model, KMS key).
            # Blue/green: the green fleet starts at the retained count, so canary/linear steps are percentages of
            # the capacity actually serving, and the blue fleet keeps it until traffic has moved. Serverless
            # variants have no instance count and one variant has nothing to weigh: nothing to retain there.
            retain_all_variant_properties=None if target.is_serverless else True,
        )
        self.endpoint.override_logical_id(endpoint_logical_id(deployment.name))

        if target.profile == "eia":
            self._explain_elastic_inference(deployment, config_file)

    def _explain_elastic_inference(self, deployment: ModelDeployment, config_file: str) -> None:
        Validations.of(self.endpoint_config).acknowledge(
            Acknowledgment(
                id="CloudFormation-Validate::F3002",
                reason="ProductionVariants.AcceleratorType is the Elastic Inference setting this profile exists for; "
                "the CloudFormation schema dropped it after EI's end of life.",
            )
        )
        Annotations.of(self.endpoint_config).add_warning_v2("eia-end-of-life", eia_end_of_life_warning(deployment, config_file))


def sagemaker_model(scope: Construct, construct_id: str, *, deployment: ModelDeployment, model_data_url: str,
                    role: iam.IRole) -> sagemaker.CfnModel:
    """A deployment's SageMaker Model: its image from the SDK tables, its artifact, its container settings."""
    target = deployment.target
    return sagemaker.CfnModel(
        scope,
        construct_id,
        execution_role_arn=role.role_arn,
        enable_network_isolation=target.network_isolation,
        primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
            image=target.image_uri,
            model_data_url=model_data_url,
            environment=container_environment(deployment),
        ),
    )


def eia_end_of_life_warning(deployment: ModelDeployment, config_file: str) -> str:
    """The synth warning of an EIA model: EI's end of life, and the switch to its own framework's GPU image."""
    target = deployment.target
    successor = eia_successor(deployment.spec, target.region, config_file)
    if successor is None:
        switch = f"(the SageMaker SDK's tables have no {target.framework} GPU image in {target.region}; `make cost` compares what exists)."
    else:
        image = successor.image_uri.rpartition("/")[2]  # e.g. mxnet-inference:1.9.0-gpu-py38
        switch = f"({successor.instance_type}, {image} image). {_cost_comparison(deployment, successor.instance_type)}"
    return (
        f"Model {deployment.name!r} uses Elastic Inference ({target.accelerator_type} on {target.instance_type}). "
        "EI reached end of life in April 2024: accounts that never used it cannot launch it, and the CloudFormation "
        f"schema no longer lists AcceleratorType. To switch, set `serving.profile: {EIA_SUCCESSOR_PROFILE}` in {config_file} "
        f"{switch} EIA endpoints update all at once (no blue/green traffic shifting)."
    )


def _cost_comparison(deployment: ModelDeployment, successor_instance_type: str) -> str:
    """What the switch costs in this environment, from the repository's dated price table."""
    target, count = deployment.target, deployment.scaling.min_instances
    eia = monthly_cost(target.region, target.instance_type, target.accelerator_type, count)
    successor = monthly_cost(target.region, successor_instance_type, None, count)
    if eia is None or successor is None:
        return f"No price for these types in {target.region} in the price table; `make cost` shows what it knows."
    return (
        f"Estimated on-demand cost in {target.region} for {count} instance(s): ${successor:,.0f}/month on "
        f"{successor_instance_type} against ${eia:,.0f}/month for this EIA pair (prices as of {default_table().as_of}; "
        "`make cost` compares every profile, serverless included)."
    )


def _variant(deployment: ModelDeployment, model_name: str) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
    target = deployment.target
    if deployment.uses_inference_component:  # instances only: the model is the inference component's
        return inference_component_variant(deployment, VARIANT_NAME)
    if target.is_serverless:
        return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT_NAME,
            model_name=model_name,
            initial_variant_weight=1.0,
            serverless_config=sagemaker.CfnEndpointConfig.ServerlessConfigProperty(
                memory_size_in_mb=target.memory_size_mb, max_concurrency=target.max_concurrency
            ),
        )
    return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
        variant_name=VARIANT_NAME,
        model_name=model_name,
        instance_type=target.instance_type,
        initial_instance_count=deployment.scaling.initial_instance_count,
        initial_variant_weight=1.0,
        accelerator_type=target.accelerator_type,
    )


def _volume_takes_a_kms_key(scope: Construct, deployment: ModelDeployment) -> bool:
    """Serverless endpoints take no KMS key; NVMe instance storage is hardware-encrypted and SageMaker refuses a key
    there (config `serving.kms_on_local_storage: refuse` stops synthesis instead). One KmsKeyId covers every variant
    of an EndpointConfig, so a shadow (serving.shadow) on such an instance drops it for the live variant too."""
    target, shadow = deployment.target, deployment.shadow
    if target.is_serverless:
        return False
    if has_local_instance_storage(target.instance_type):
        Annotations.of(scope).add_warning_v2(
            "kms-dropped-on-local-storage",
            f"Model {deployment.name!r}: {target.instance_type} has local NVMe instance storage, where SageMaker "
            "rejects a KMS key on the endpoint config; the key is left out (the NVMe volume is hardware-encrypted). "
            "Set serving.kms_on_local_storage: refuse to stop synthesis instead, or choose an EBS-backed instance type.",
        )
        return False
    if shadow is not None and has_local_instance_storage(shadow.instance_type):
        Annotations.of(scope).add_warning_v2(
            "kms-dropped-for-shadow-on-local-storage",
            f"Model {deployment.name!r}: the shadow's {shadow.instance_type} has local NVMe instance storage, where SageMaker "
            "rejects a KMS key on the endpoint config; the key is left out of the whole endpoint config (live variant "
            "included) while serving.shadow is set. Choose an EBS-backed shadow instance type to keep it.",
        )
        return False
    return True


TRAFFIC_ROUTING = {"canary": "CANARY", "linear": "LINEAR", "all_at_once": "ALL_AT_ONCE"}


def _blue_green(deployment: ModelDeployment, alarms: Sequence[cloudwatch.IAlarm]):
    """Blue/green with rollback on the alarms; None for EIA, which only ever updated all at once."""
    if deployment.uses_inference_component:  # the component rolls its copies over itself, with these alarms
        return None
    if deployment.target.profile == "eia":
        return None
    spec = deployment.spec.serving.deployment
    strategy = deployment.deployment_strategy
    percent = sagemaker.CfnEndpoint.CapacitySizeProperty
    return sagemaker.CfnEndpoint.DeploymentConfigProperty(
        blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
            traffic_routing_configuration=sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
                type=TRAFFIC_ROUTING[strategy],
                canary_size=percent(type="CAPACITY_PERCENT", value=spec.canary_percent) if strategy == "canary" else None,
                linear_step_size=percent(type="CAPACITY_PERCENT", value=spec.linear_step_percent) if strategy == "linear" else None,
                wait_interval_in_seconds=spec.wait_seconds,
            ),
            termination_wait_in_seconds=spec.termination_wait_seconds,
            maximum_execution_timeout_in_seconds=spec.maximum_execution_timeout_seconds,
        ),
        auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
            alarms=[sagemaker.CfnEndpoint.AlarmProperty(alarm_name=alarm.alarm_name) for alarm in alarms]
        ),
    )
