"""Autoscaling of an endpoint variant: target tracking on invocations per instance for real-time endpoints, and the
pieces the scale-to-zero features share (stacks/constructs/async_autoscaling.py, inference_component.py)."""
from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from config.schema import ScalingSpec


def variant_scalable_target(scope: Construct, endpoint: sagemaker.CfnEndpoint, variant_name: str, scaling: ScalingSpec) -> appscaling.ScalableTarget:
    """The variant's instance count, between min_instances (0 only where config/ allows it: async) and max_instances."""
    return appscaling.ScalableTarget(
        scope,
        "Target",
        service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
        resource_id=f"endpoint/{endpoint.attr_endpoint_name}/variant/{variant_name}",
        scalable_dimension="sagemaker:variant:DesiredInstanceCount",
        min_capacity=scaling.min_instances,
        max_capacity=scaling.max_instances,
    )


def scale_out_from_zero(scope: Construct, target: appscaling.ScalableTarget, alarm_metric: cloudwatch.Metric, *,
                        evaluation_periods: int, aggregation: appscaling.MetricAggregationType, cooldown: Duration,
                        treat_missing_data: cloudwatch.TreatMissingData, description: str) -> cloudwatch.Alarm:
    """A step policy adding one unit (instance or copy) when `alarm_metric` reaches 1, and its alarm: target tracking
    cannot leave zero, as it divides by the current capacity."""
    action = appscaling.StepScalingAction(
        scope, "ScaleOutFromZero", scaling_target=target, adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
        metric_aggregation_type=aggregation, cooldown=cooldown,
    )
    action.add_adjustment(adjustment=1, lower_bound=0)
    alarm = alarm_metric.create_alarm(
        scope,
        "ScaleOutFromZeroAlarm",
        threshold=1,
        evaluation_periods=evaluation_periods,
        datapoints_to_alarm=evaluation_periods,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=treat_missing_data,
        alarm_description=description,
    )
    alarm.add_alarm_action(cloudwatch_actions.ApplicationScalingAction(action))
    return alarm


class EndpointAutoscaling(Construct):
    """Target-tracking autoscaling of a real-time endpoint variant on invocations per instance."""

    def __init__(self, scope: Construct, construct_id: str, *, endpoint: sagemaker.CfnEndpoint, variant_name: str, scaling: ScalingSpec) -> None:
        super().__init__(scope, construct_id)
        self.target = variant_scalable_target(self, endpoint, variant_name, scaling)
        self.target.scale_to_track_metric(
            "InvocationsPerInstance",
            target_value=scaling.target_invocations_per_instance,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
        )
