"""CloudWatch alarms for one endpoint: server errors and model latency.

They page nobody by themselves; SageMaker watches them to roll back a blue/green update.
"""
from typing import Dict, List, Optional

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from config.schema import AlarmSpec

NAMESPACE = "AWS/SageMaker"


def sagemaker_metric(metric_name: str, dimensions: Dict[str, str], statistic: str) -> cloudwatch.Metric:
    """A per-minute AWS/SageMaker metric."""
    return cloudwatch.Metric(namespace=NAMESPACE, metric_name=metric_name, dimensions_map=dimensions, statistic=statistic,
                             period=Duration.minutes(1))


def endpoint_metric(endpoint_name: str, variant_name: str, metric_name: str, statistic: str,
                    inference_component: Optional[str] = None) -> cloudwatch.Metric:
    """inference_component: a model served as an inference component (scale to zero) reports its invocations under
    InferenceComponentName alone (SageMaker Developer Guide, "SageMaker AI metrics in Amazon CloudWatch")."""
    dimensions = {"InferenceComponentName": inference_component} if inference_component else {
        "EndpointName": endpoint_name, "VariantName": variant_name}
    return sagemaker_metric(metric_name, dimensions, statistic)


class EndpointAlarms(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, endpoint_name: str, variant_name: str, spec: AlarmSpec,
                 inference_component: Optional[str] = None) -> None:
        super().__init__(scope, construct_id)
        minutes = spec.evaluation_minutes
        self.server_errors = endpoint_metric(endpoint_name, variant_name, "Invocation5XXErrors", "Sum", inference_component).create_alarm(
            self,
            "ServerErrors",
            threshold=spec.max_5xx_errors_per_minute,
            evaluation_periods=minutes,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"{endpoint_name}: >= {spec.max_5xx_errors_per_minute} 5xx answers a minute for {minutes} min",
        )
        self.latency = endpoint_metric(endpoint_name, variant_name, "ModelLatency", "p90", inference_component).create_alarm(
            self,
            "ModelLatency",
            threshold=spec.max_model_latency_p90_ms * 1000,  # SageMaker reports ModelLatency in microseconds
            evaluation_periods=minutes,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"{endpoint_name}: p90 model latency above {spec.max_model_latency_p90_ms} ms for {minutes} min",
        )

    @property
    def alarms(self) -> List[cloudwatch.Alarm]:
        return [self.server_errors, self.latency]
