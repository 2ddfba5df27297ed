"""Autoscaling of an async endpoint on its queue, down to 0 instances when scaling.min_instances is 0.

As SageMaker's developer guide, "Autoscale an asynchronous endpoint", sets it up: target tracking on the endpoint's
ApproximateBacklogSizePerInstance (a customized metric: async endpoints publish no InvocationsPerInstance), and,
for scale to zero, a step policy on a HasBacklogWithoutCapacity alarm that adds an instance when requests wait
with none running (target tracking alone waits until the backlog exceeds its target before leaving 0).
"""
from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from config import ModelDeployment
from stacks.constructs.endpoint_alarms import sagemaker_metric
from stacks.constructs.endpoint_autoscaling import scale_out_from_zero, variant_scalable_target

BACKLOG_PER_INSTANCE = "ApproximateBacklogSizePerInstance"
BACKLOG_WITHOUT_CAPACITY = "HasBacklogWithoutCapacity"


def endpoint_queue_metric(endpoint_name: str, metric_name: str, statistic: str = "Average") -> cloudwatch.Metric:
    """The async queue's metrics carry the EndpointName dimension only (developer guide, "Monitor asynchronous endpoint")."""
    return sagemaker_metric(metric_name, {"EndpointName": endpoint_name}, statistic)


class AsyncAutoscaling(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, endpoint: sagemaker.CfnEndpoint, endpoint_name: str, variant_name: str,
        deployment: ModelDeployment,
    ) -> None:
        super().__init__(scope, construct_id)
        # min_instances 0: async endpoints may scale to zero (the guide's MinCapacity=0)
        self.target = variant_scalable_target(self, endpoint, variant_name, deployment.scaling)
        self.target.scale_to_track_metric(
            "BacklogPerInstance",
            target_value=deployment.spec.serving.async_inference.target_backlog_per_instance,
            custom_metric=endpoint_queue_metric(endpoint_name, BACKLOG_PER_INSTANCE),
        )
        self.scale_from_zero_alarm = self._scale_from_zero(endpoint_name) if deployment.scales_to_zero else None

    def _scale_from_zero(self, endpoint_name: str) -> cloudwatch.Alarm:
        """The guide's HasBacklogWithoutCapacity-ScalingPolicy and its alarm, with the guide's numbers."""
        return scale_out_from_zero(
            self, self.target, endpoint_queue_metric(endpoint_name, BACKLOG_WITHOUT_CAPACITY),
            evaluation_periods=2, aggregation=appscaling.MetricAggregationType.AVERAGE, cooldown=Duration.seconds(300),
            treat_missing_data=cloudwatch.TreatMissingData.MISSING,
            description=f"{endpoint_name}: requests wait with no instance running; starts one",
        )
