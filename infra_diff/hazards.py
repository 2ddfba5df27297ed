"""Changes that synthesize fine but that SageMaker refuses at deploy time, found by comparing templates."""
from typing import Dict, List

from infra_diff.assembly import CHANGED, StackComparison

SCALABLE_TARGET = "AWS::ApplicationAutoScaling::ScalableTarget"
TWO_STEP_PROCEDURE = (
    "deploy in two steps (README, 'Switching the profile of a deployed endpoint'): 1) set scaling.autoscaling: false "
    "for this environment and deploy; 2) change the profile or instance type, remove that line, deploy"
)


def _variant_sizes(template: dict) -> Dict[str, str]:
    """EndpointConfig logical id -> its variant's instance type ('serverless' for a serverless variant)."""
    sizes = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") == "AWS::SageMaker::EndpointConfig":
            variant = resource["Properties"]["ProductionVariants"][0]
            sizes[logical_id] = variant.get("InstanceType") or ("serverless" if "ServerlessConfig" in variant else "?")
    return sizes


def _has_instance_autoscaling(template: dict) -> bool:
    return any(
        r.get("Type") == SCALABLE_TARGET and r.get("Properties", {}).get("ScalableDimension") == "sagemaker:variant:DesiredInstanceCount"
        for r in template.get("Resources", {}).values()
    )


def endpoint_update_hazards(comparison: StackComparison) -> List[str]:
    """SageMaker refuses to change a variant's instance type while autoscaling is registered on it."""
    if comparison.status != CHANGED or not _has_instance_autoscaling(comparison.base.template):
        return []
    before, after = _variant_sizes(comparison.base.template), _variant_sizes(comparison.head.template)
    return [
        f"WARNING {logical_id}: the instance type changes {before[logical_id]} -> {after[logical_id]} while the endpoint's "
        f"autoscaling is registered, and SageMaker refuses that update; {TWO_STEP_PROCEDURE}"
        for logical_id in sorted(before.keys() & after.keys())
        if before[logical_id] != after[logical_id]
    ]
