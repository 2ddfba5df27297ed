"""Scale to zero on an instance profile (scaling.min_instances: 0): the model as an inference component.

The endpoint's variant has no model, only instances that SageMaker manages (ManagedInstanceScaling, min 0); the
AWS::SageMaker::InferenceComponent places copies of the model on them. Application Auto Scaling tracks invocations
per copy down to 0 copies, and a step policy on the NoCapacityInvocationFailures alarm adds a copy back: target
tracking cannot leave zero. Steps and numbers: SageMaker Developer Guide, "Scale an endpoint to zero instances"
(https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-zero-instances.html). The checks that make
these resources valid are in config/scale_to_zero.py.
"""
import hashlib
from typing import Optional, Sequence

from aws_cdk import Acknowledgment, ArnFormat, CfnOutput, Duration, Stack, Validations
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from config import ModelDeployment
from config.scale_to_zero import copy_resources, inference_component_name
from stacks.constructs.endpoint_alarms import sagemaker_metric
from stacks.constructs.endpoint_autoscaling import scale_out_from_zero

NO_CAPACITY_METRIC = "NoCapacityInvocationFailures"
# Scale-out from zero: one copy, then no second one while it starts. The guide says provisioning "takes several
# minutes" (no figure); its example's 60 s cooldown would add a copy every minute of that wait, up to the maximum.
SCALE_OUT_COOLDOWN = Duration.minutes(5)
ROUTING_STRATEGY = "LEAST_OUTSTANDING_REQUESTS"  # copies answer one model each: send to the least busy


def component_name_of(deployment: ModelDeployment, endpoint_name: str) -> Optional[str]:
    """The model's inference component, or None when it is served by the endpoint's variant itself."""
    return inference_component_name(endpoint_name) if deployment.uses_inference_component else None


def inference_component_logical_id(model_name: str) -> str:
    """Pinned like the endpoint's (model_endpoint.endpoint_logical_id): the component has a fixed name, so under a
    new logical id CloudFormation would create a second component of that name before deleting the first."""
    from stacks.constructs.model_endpoint import model_construct_id

    path = f"{model_construct_id(model_name)}/InferenceComponent/Component"
    return path.replace("/", "") + hashlib.md5(path.encode()).hexdigest()[:8].upper()


def inference_component_variant(deployment: ModelDeployment, variant_name: str) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
    """The endpoint's variant: instances only. The model is the component's (Specification.ModelName); a ModelName
    here would make it a model-based endpoint, which cannot scale to zero."""
    scaling = deployment.scaling
    return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
        variant_name=variant_name,
        instance_type=deployment.target.instance_type,
        initial_instance_count=scaling.initial_instance_count,
        managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
            status="ENABLED", min_instance_count=0, max_instance_count=scaling.max_instances
        ),
        routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(routing_strategy=ROUTING_STRATEGY),
    )


def inference_component_metric(component_name: str, metric_name: str, statistic: str) -> cloudwatch.Metric:
    """Invocation metrics of one component (AWS/SageMaker, dimension InferenceComponentName; SageMaker Developer
    Guide, "SageMaker AI metrics in Amazon CloudWatch"): the endpoint's EndpointName+VariantName series stay empty."""
    return sagemaker_metric(metric_name, {"InferenceComponentName": component_name}, statistic)


def grant_inference_component_logs(role: iam.Role, endpoint_name: str) -> None:
    """A component's containers log to /aws/sagemaker/InferenceComponents/<name>, not the endpoint's log group."""
    stack = Stack.of(role)
    log_group = stack.format_arn(
        service="logs",
        resource="log-group",
        resource_name=f"/aws/sagemaker/InferenceComponents/{inference_component_name(endpoint_name)}",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=[log_group, f"{log_group}:*"],
        )
    )
    Validations.of(role.node.find_child("DefaultPolicy")).acknowledge(Acknowledgment(
        id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{log_group}:*]",
        reason="The log streams of this inference component's own log group; SageMaker names them per copy.",
    ))


class InferenceComponentServing(Construct):
    """The component on the endpoint, its copy-count autoscaling and the alarm that wakes it from zero."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: ModelDeployment,
        endpoint: sagemaker.CfnEndpoint,
        model: sagemaker.CfnModel,
        endpoint_name: str,
        variant_name: str,
        rollback_alarms: Sequence[cloudwatch.IAlarm],
    ) -> None:
        super().__init__(scope, construct_id)
        self.name = inference_component_name(endpoint_name)
        resources = copy_resources(deployment.target.instance_type)
        self.component = sagemaker.CfnInferenceComponent(
            self,
            "Component",
            endpoint_name=endpoint.attr_endpoint_name,
            inference_component_name=self.name,
            variant_name=variant_name,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                model_name=model.attr_model_name,
                compute_resource_requirements=sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
                    number_of_cpu_cores_required=resources.cpu_cores,
                    min_memory_required_in_mb=resources.memory_mb,
                    number_of_accelerator_devices_required=resources.accelerators,
                ),
            ),
            # Created with at least one copy: initial_instance_count is >= 1 (config/schema.py), so the smoke test
            # after a deployment finds the model answering. Autoscaling owns the count from then on.
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(
                copy_count=deployment.scaling.initial_instance_count
            ),
            deployment_config=_rolling_update(deployment, rollback_alarms),
        )
        self.component.override_logical_id(inference_component_logical_id(deployment.name))
        self.scalable_target = self._autoscaling(deployment)
        # InvokeEndpoint on this endpoint needs InferenceComponentName (make invoke, scripts; the smoke test lists it).
        CfnOutput(self, "Name", value=self.name, description=f"Inference component of {deployment.name}: pass it as InferenceComponentName")

    def _autoscaling(self, deployment: ModelDeployment) -> appscaling.ScalableTarget:
        scaling = deployment.scaling
        target = appscaling.ScalableTarget(
            self,
            "CopyCount",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"inference-component/{self.name}",
            scalable_dimension="sagemaker:inference-component:DesiredCopyCount",
            min_capacity=0,
            max_capacity=scaling.max_instances,  # one copy per instance's worth of model servers
        )
        target.node.add_dependency(self.component)  # the resource id names it; registering needs it to exist
        target.scale_to_track_metric(
            "InvocationsPerCopy",
            target_value=scaling.target_invocations_per_instance,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_INFERENCE_COMPONENT_INVOCATIONS_PER_COPY,
        )
        # SageMaker emits NoCapacityInvocationFailures for a request that found no copy; one such request is enough.
        self.no_capacity_alarm = scale_out_from_zero(
            self, target, inference_component_metric(self.name, NO_CAPACITY_METRIC, "Sum"),
            evaluation_periods=1, aggregation=appscaling.MetricAggregationType.MAXIMUM, cooldown=SCALE_OUT_COOLDOWN,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            description=f"{self.name}: a request found no copy of the model (scaled to zero); adds one copy",
        )
        return target


def _rolling_update(deployment: ModelDeployment, alarms: Sequence[cloudwatch.IAlarm]):
    """A new model or image rolls over the copies in batches, watched by the rollback alarms; all_at_once: SageMaker's
    default. MaximumBatchSize must be 5-50 % of the copy count (InferenceComponentRollingUpdatePolicy, botocore's
    SageMaker model): serving.deployment.linear_step_percent has those bounds."""
    if deployment.deployment_strategy == "all_at_once":
        return None
    spec = deployment.spec.serving.deployment
    component = sagemaker.CfnInferenceComponent
    return component.InferenceComponentDeploymentConfigProperty(
        rolling_update_policy=component.InferenceComponentRollingUpdatePolicyProperty(
            maximum_batch_size=component.InferenceComponentCapacitySizeProperty(type="CAPACITY_PERCENT", value=spec.linear_step_percent),
            wait_interval_in_seconds=spec.wait_seconds,
            maximum_execution_timeout_in_seconds=spec.maximum_execution_timeout_seconds,
        ),
        auto_rollback_configuration=component.AutoRollbackConfigurationProperty(
            alarms=[component.AlarmProperty(alarm_name=alarm.alarm_name) for alarm in alarms]
        ) if alarms else None,
    )


def smoke_test_statements(stack: Stack, endpoint_name_prefix: str) -> Sequence[iam.PolicyStatement]:
    """What the smoke test needs for an endpoint with inference components: find the component, read its copy count,
    invoke it (InvokeEndpoint is authorized on the component too when InferenceComponentName is given)."""
    components = stack.format_arn(service="sagemaker", resource="inference-component", resource_name=f"{endpoint_name_prefix.lower()}*")
    return (
        iam.PolicyStatement(actions=["sagemaker:DescribeInferenceComponent", "sagemaker:InvokeEndpoint"], resources=[components]),
        iam.PolicyStatement(actions=["sagemaker:ListInferenceComponents"], resources=["*"]),
    )


def smoke_test_acknowledgements(stack: Stack, endpoint_name_prefix: str) -> Sequence[Acknowledgment]:
    components = stack.format_arn(service="sagemaker", resource="inference-component", resource_name=f"{endpoint_name_prefix.lower()}*")
    return (
        Acknowledgment(
            id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{components}]",
            reason="This stage's inference components only: each is named after its endpoint, which starts with this prefix.",
        ),
        Acknowledgment(
            id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
            reason="sagemaker:ListInferenceComponents takes no resource ARN; the smoke test lists one endpoint's components.",
        ),
    )
