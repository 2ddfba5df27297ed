"""One CloudWatch dashboard per serving stack: traffic, errors, latency and alarm state per endpoint.

An endpoint with a shadow variant (serving.shadow) gets each graph with both variants side by side, labelled: the
live profile's and the candidate's latency and errors on the same axes, which is the comparison a switch needs."""
from dataclasses import dataclass
from typing import List, Optional, Sequence

from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from stacks.constructs.endpoint_alarms import endpoint_metric


class ServingDashboard(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        # No dashboard name: CloudFormation generates one, so the stack can be replaced freely.
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard")

    def add_endpoint(self, model_name: str, endpoint_name: str, variant_name: str, alarms: Sequence[cloudwatch.IAlarm],
                     shadow: Optional["VariantLabels"] = None, inference_component: Optional[str] = None) -> None:
        """`shadow`: the shadow variant's name and both variants' labels; None graphs the live variant alone.
        `inference_component`: the model's component when it scales to zero, whose metrics carry its name instead."""
        variants = [(variant_name, None)] if shadow is None else [(variant_name, shadow.live_label), (shadow.variant_name, shadow.shadow_label)]

        def metrics(name: str, *statistics: str) -> List[cloudwatch.Metric]:
            return [_labelled(endpoint_metric(endpoint_name, variant, name, statistic, inference_component), label, name, statistic)
                    for variant, label in variants for statistic in statistics]

        title = f"## {model_name} (`{endpoint_name}`)"
        if shadow is not None:
            title += f": live {shadow.live_label} and shadow {shadow.shadow_label}, side by side (alarms watch the live variant only)"
        self.dashboard.add_widgets(cloudwatch.TextWidget(markdown=title, width=24, height=1))
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Invocations", left=metrics("Invocations", "Sum"), width=6),
            cloudwatch.GraphWidget(title="Errors", left=metrics("Invocation4XXErrors", "Sum") + metrics("Invocation5XXErrors", "Sum"), width=6),
            cloudwatch.GraphWidget(title="Model latency (microseconds)", left=metrics("ModelLatency", "p50", "p90"), width=6),
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=6),
        )

    def add_async_queue(self, endpoint_name: str) -> None:
        """serving.profile: async: its queue, what its autoscaling follows (async endpoints publish no Invocations)."""
        from stacks.constructs.async_autoscaling import endpoint_queue_metric

        self.dashboard.add_widgets(cloudwatch.GraphWidget(
            title="Async queue: requests waiting, and the oldest one's age (seconds)",
            left=[endpoint_queue_metric(endpoint_name, "ApproximateBacklogSize"),
                  endpoint_queue_metric(endpoint_name, "ApproximateBacklogSizePerInstance")],
            right=[endpoint_queue_metric(endpoint_name, "ApproximateAgeOfOldestRequest", "Maximum")],
            width=24,
        ))


@dataclass(frozen=True)
class VariantLabels:
    """How the dashboard names the two variants of an endpoint with a shadow, e.g. live "eia" and shadow "gpu"."""

    variant_name: str  # the shadow variant's
    live_label: str
    shadow_label: str


def _labelled(metric: cloudwatch.Metric, label: Optional[str], name: str, statistic: str) -> cloudwatch.Metric:
    # Unlabelled without a shadow: the dashboard of an endpoint without one stays as it was (no diff).
    return metric if label is None else metric.with_(label=f"{label} {name} {statistic}")
