"""Changes that synthesize fine but hurt at deploy time, found by comparing templates: updates SageMaker
refuses, and replacements of resources that carry a fixed name or hold data."""
import json
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from infra_diff.assembly import CHANGED, StackComparison

SCALABLE_TARGET = "AWS::ApplicationAutoScaling::ScalableTarget"
TWO_STEP_PROCEDURE = (
    "deploy in two steps (README, 'Switching the profile of a deployed endpoint'): 1) set scaling.autoscaling: false "
    "for this environment and deploy; 2) change the profile or instance type, remove that line, deploy"
)
# Replacing one of these loses what it holds (objects, keys that decrypt them, logs, rows, images, secrets).
DATA_TYPES = frozenset({
    "AWS::S3::Bucket", "AWS::KMS::Key", "AWS::Logs::LogGroup", "AWS::DynamoDB::Table", "AWS::EFS::FileSystem",
    "AWS::RDS::DBInstance", "AWS::RDS::DBCluster", "AWS::ECR::Repository", "AWS::SecretsManager::Secret",
})


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


# ---------------------------------------------------------------- replacements


@lru_cache(maxsize=None)
def create_only_properties(resource_type: str) -> Tuple[str, ...]:
    """Top-level properties whose change makes CloudFormation replace the resource (the resource schemas cfn-lint
    ships, the ones CloudFormation publishes); none for custom resources and unknown types."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER
    from cfnlint.schema._exceptions import ResourceNotFoundError

    try:
        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource_type).schema
    except ResourceNotFoundError:
        return ()
    return tuple(dict.fromkeys(path.split("/")[2] for path in schema.get("createOnlyProperties", [])))


def name_property(resource: dict) -> Optional[str]:
    """The property that fixes this resource's physical name (EndpointName, RoleName, BucketName, AliasName, ...), if set."""
    resource_type = resource.get("Type", "")
    for key in (f"{resource_type.split('::')[-1]}Name", "Name"):
        if key in create_only_properties(resource_type) and key in resource.get("Properties", {}):
            return key
    return None


def replacement_hazards(comparison: StackComparison) -> List[str]:
    """Every named or data-holding resource of the base that the head replaces (a create-only property changes),
    moves to another logical id (a delete and a create) or drops (a delete)."""
    base = comparison.base.template.get("Resources", {}) if comparison.base else {}
    head = comparison.head.template.get("Resources", {}) if comparison.head else {}
    hazards = []
    for logical_id, old in base.items():
        key = name_property(old)
        if key is None and old.get("Type") not in DATA_TYPES:
            continue
        what = _describe(logical_id, old, key)
        new = head.get(logical_id)
        if new is not None and new.get("Type") == old.get("Type"):
            changed = [p for p in create_only_properties(old["Type"]) if _property(old, p) != _property(new, p)]
            if not changed:
                continue
            if key in changed:
                hazards.append(f"WARNING {what}: {key} changes to {_value(new, key)}, which replaces it: CloudFormation "
                               f"creates the new one and deletes the old one{_loss(old)}; whatever calls it by name breaks")
            elif key:
                hazards.append(f"WARNING {what}: changing {', '.join(changed)} replaces it, and CloudFormation cannot replace a "
                               "resource with a fixed name (the new one's name is still taken): the deploy fails and rolls back")
            else:
                hazards.append(f"WARNING {what}: changing {', '.join(changed)} replaces it: a new, empty one is created and "
                               f"this one deleted{_loss(old)}")
            continue
        successor = _successor(logical_id, old, key, base, head)
        if successor and key and _property(head[successor], key) == _property(old, key):
            hazards.append(f"WARNING {what}: its logical ID changes to {successor}, a delete and a create; CloudFormation "
                           f"creates {successor} first, the name is still taken, and the deploy fails and rolls back. "
                           "Keep the logical ID (override_logical_id)")
        elif successor:
            hazards.append(f"WARNING {what}: its logical ID changes to {successor}, a delete and a create: a new "
                           f"{'one under a new name' if key else 'empty one'} is created and this one deleted{_loss(old)}. "
                           "Keep the logical ID (override_logical_id)")
        else:
            hazards.append(f"WARNING {what}: removed, so CloudFormation deletes it{_loss(old)}")
    return hazards


def _describe(logical_id: str, resource: dict, key: Optional[str]) -> str:
    details = [resource.get("Type", "?")]
    if key:
        details.append(f"{key} {_value(resource, key)}")
    if resource.get("Type") in DATA_TYPES:
        details.append("holds data")
    return f"{logical_id} ({', '.join(details)})"


def _successor(logical_id: str, old: dict, key: Optional[str], base: dict, head: dict) -> Optional[str]:
    """A new logical id of the same type in the head, preferring one with the same name: where the resource went."""
    candidates = [i for i, r in head.items() if i not in base and r.get("Type") == old.get("Type")]
    same_name = [i for i in candidates if key and _property(head[i], key) == _property(old, key)]
    return (same_name or candidates or [None])[0]


def _loss(resource: dict) -> str:
    if resource.get("Type") not in DATA_TYPES:
        return ""
    if resource.get("DeletionPolicy") in ("Retain", "RetainExceptOnCreate"):
        return " (DeletionPolicy Retain: the old one stays behind, outside the stack, with its data)"
    return ", with its data"


def _property(resource: dict, key: str):
    return resource.get("Properties", {}).get(key)


def _value(resource: dict, key: str) -> str:
    value = _property(resource, key)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
