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
        successor = successor_of(logical_id, old, key, base, head)
        if successor and key and _property(head[successor], key) == _property(old, key):
            hazards.append(f"WARNING {what}: its logical ID changes to {successor}, a delete and a create; CloudFormation "
                           f"creates {successor} first, the name is still taken, and the deploy fails and rolls back. "
                           "Keep the logical ID (override_logical_id)")
        elif successor:
            hazards.append(f"WARNING {what}: its logical ID changes to {successor}, a delete and a create: a new "
                           f"empty one is created and this one deleted{_loss(old)}. Keep the logical ID (override_logical_id)")
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


def successor_of(logical_id: str, old: dict, key: Optional[str], base: dict, head: dict) -> Optional[str]:
    """A new logical id of the same type in the head where the resource went: for a named resource, one with the same
    name (another name is another resource, e.g. one model's endpoint removed and another's added)."""
    candidates = [i for i, r in head.items() if i not in base and r.get("Type") == old.get("Type")]
    if key:
        candidates = [i for i in candidates if _property(head[i], key) == _property(old, key)]
    return (candidates or [None])[0]


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


# ---------------------------------------------------------------- moves between stacks

# Refs that give the same value in every stack of a stage (one account and region); anything else
# (AWS::StackName, a parameter, a resource) can differ between stacks, so such a name is not compared.
_STAGE_WIDE_REFS = frozenset({"AWS::AccountId", "AWS::Region", "AWS::Partition", "AWS::URLSuffix"})


def stage_of(stack: str) -> str:
    """'Dev' for Dev/Serving7; '' for a top-level stack (the pipeline)."""
    return stack.rsplit("/", 1)[0] if "/" in stack else ""


def _physical_name(resource: dict) -> Optional[Tuple[str, str, str]]:
    """(type, name property, name) of a resource with a fixed name that is the same wherever it is deployed in a stage."""
    key = name_property(resource)
    if key is None:
        return None
    value = _property(resource, key)
    if not isinstance(value, str) and not _stage_wide(value):
        return None
    return resource["Type"], key, value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _stage_wide(value) -> bool:
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"] in _STAGE_WIDE_REFS
        if "Fn::GetAtt" in value or "Fn::ImportValue" in value:
            return False
        return all(_stage_wide(v) for v in value.values())
    if isinstance(value, list):
        return all(_stage_wide(v) for v in value)
    return True


def _named(template: Optional[dict]) -> Dict[Tuple[str, str, str], str]:
    """Physical name -> logical id, for every resource of `template` with a stage-wide fixed name."""
    found = {}
    for logical_id, resource in (template or {}).get("Resources", {}).items():
        name = _physical_name(resource)
        if name is not None:
            found.setdefault(name, logical_id)
    return found


def cross_stack_move_hazards(comparisons: List[StackComparison]) -> Dict[str, List[str]]:
    """Stack name -> WARNING lines, for every resource with a fixed name that one stack drops and another stack of the
    same stage gains (a model moved to another serving stack): CloudFormation creates it in the new stack while the old
    one still holds it. The warning goes in the section of the stack it moves to."""
    dropped: Dict[Tuple[str, Tuple[str, str, str]], Tuple[str, str]] = {}  # (stage, name) -> (stack, logical id)
    for c in comparisons:
        base, head = _named(c.base.template if c.base else None), _named(c.head.template if c.head else None)
        for name, logical_id in base.items():
            if name not in head:
                dropped.setdefault((stage_of(c.name), name), (c.name, logical_id))
    hazards: Dict[str, List[str]] = {}
    for c in comparisons:
        base, head = _named(c.base.template if c.base else None), _named(c.head.template if c.head else None)
        for name, logical_id in head.items():
            origin = dropped.get((stage_of(c.name), name))
            if name in base or origin is None or origin[0] == c.name:
                continue
            resource_type, key, value = name
            old_stack, old_id = origin
            consequence = ("the endpoint is deleted and created again: requests fail until it is InService (minutes)"
                           if resource_type == "AWS::SageMaker::Endpoint" else "it is deleted and created again")
            hazards.setdefault(c.name, []).append(
                f"WARNING {logical_id} ({resource_type}, {key} {value}): moves here from {old_stack} ({old_id}). "
                f"CloudFormation creates it in {c.name} while {old_stack} still holds it: deploying {c.name} first fails "
                f"(the name is taken) and rolls back; deploying {old_stack} first deletes it, then {c.name} creates it: "
                f"{consequence}. Fix: keep it in {old_stack} (for a model, pin it to that stack in its config), or accept the "
                f"delete-then-create with downtime: deploy {old_stack} first, then {c.name}")
    return hazards
