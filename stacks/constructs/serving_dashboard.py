"""One CloudWatch dashboard per serving stack: traffic, errors, latency and alarm state per endpoint."""
from typing import Sequence

from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from stacks.constructs.endpoint_alarms import endpoint_metric


class ServingDashboard(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        # No dashboard name: CloudFormation generates one, so the stack can be replaced freely.
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard")

    def add_endpoint(self, model_name: str, endpoint_name: str, variant_name: str, alarms: Sequence[cloudwatch.IAlarm]) -> None:
        def metric(name: str, statistic: str) -> cloudwatch.Metric:
            return endpoint_metric(endpoint_name, variant_name, name, statistic)

        self.dashboard.add_widgets(cloudwatch.TextWidget(markdown=f"## {model_name} (`{endpoint_name}`)", width=24, height=1))
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Invocations", left=[metric("Invocations", "Sum")], width=6),
            cloudwatch.GraphWidget(
                title="Errors", left=[metric("Invocation4XXErrors", "Sum"), metric("Invocation5XXErrors", "Sum")], width=6
            ),
            cloudwatch.GraphWidget(
                title="Model latency (microseconds)", left=[metric("ModelLatency", "p50"), metric("ModelLatency", "p90")], width=6
            ),
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=6),
        )
