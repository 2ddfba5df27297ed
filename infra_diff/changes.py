"""What a reviewer reads first: per stack, how many resources are added, changed in place, replaced and removed,
with the replacements and the IAM changes named (pure: templates in, lists out)."""
from dataclasses import dataclass, field
from typing import Dict, List

from infra_diff.assembly import UNCHANGED, StackComparison
from infra_diff.hazards import create_only_properties, name_property, successor_of

# Resource types that grant or restrict access, whatever their service.
IAM_TYPE_PREFIXES = ("AWS::IAM::",)
IAM_TYPES = frozenset({"AWS::Lambda::Permission", "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy",
                       "AWS::KMS::Grant", "AWS::SecretsManager::ResourcePolicy", "AWS::Events::EventBusPolicy"})
# Properties of other resources that are access policies, or the role a resource acts as.
IAM_PROPERTIES = frozenset({"PolicyDocument", "AssumeRolePolicyDocument", "KeyPolicy", "ManagedPolicyArns", "Policies",
                            "PermissionsBoundary", "ResourcePolicy", "AccessPolicies", "PolicyText", "RoleArn",
                            "ExecutionRoleArn", "Role", "Roles"})


@dataclass
class StackChanges:
    stack: str
    added: int = 0
    changed: int = 0  # updated in place
    replaced: List[str] = field(default_factory=list)  # 'Id (Type): why'
    removed: int = 0
    iam: List[str] = field(default_factory=list)  # '+ Id (Type)', '~ Id (Type): properties', '- Id (Type)'


def is_iam_type(resource_type: str) -> bool:
    return resource_type.startswith(IAM_TYPE_PREFIXES) or resource_type in IAM_TYPES


def _changed_properties(old: dict, new: dict) -> List[str]:
    before, after = old.get("Properties", {}), new.get("Properties", {})
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _deployed(resource: dict) -> dict:
    """What CloudFormation acts on: the resource less its CDK Metadata (aws:cdk:path, which moves with construct paths)."""
    return {k: v for k, v in resource.items() if k != "Metadata"}


def stack_changes(comparison: StackComparison) -> StackChanges:
    """A stack on one side only counts all its resources as added or removed. A resource whose logical ID changes
    (`hazards.successor_of`: same type, and same name when it has one) is replaced: a delete and a create."""
    base = comparison.base.template.get("Resources", {}) if comparison.base else {}
    head = comparison.head.template.get("Resources", {}) if comparison.head else {}
    changes = StackChanges(comparison.name)
    added = [i for i in head if i not in base]
    for logical_id, old in base.items():
        new = head.get(logical_id)
        resource_type = old.get("Type", "?")
        if new is None:
            successor = successor_of(logical_id, old, name_property(old), base, head)
            if successor in added:
                added.remove(successor)
                changes.replaced.append(f"{logical_id} ({resource_type}): logical ID changes to {successor}")
                if is_iam_type(resource_type):
                    changes.iam.append(f"~ {logical_id} ({resource_type}): replaced by {successor}")
            else:
                changes.removed += 1
                if is_iam_type(resource_type):
                    changes.iam.append(f"- {logical_id} ({resource_type})")
            continue
        if _deployed(old) == _deployed(new):
            continue
        properties = _changed_properties(old, new)
        create_only = [p for p in create_only_properties(resource_type) if p in properties]
        if new.get("Type") != resource_type:
            changes.replaced.append(f"{logical_id}: type changes {resource_type} -> {new.get('Type')}")
        elif create_only:
            changes.replaced.append(f"{logical_id} ({resource_type}): {', '.join(create_only)} (replaced on change)")
        else:
            changes.changed += 1
        access = properties if is_iam_type(resource_type) else [p for p in properties if p in IAM_PROPERTIES]
        if access or (is_iam_type(resource_type) and not properties):
            changes.iam.append(f"~ {logical_id} ({resource_type})" + (f": {', '.join(access)}" if access else ""))
    changes.added = len(added)
    changes.iam += [f"+ {i} ({head[i].get('Type', '?')})" for i in added if is_iam_type(head[i].get("Type", ""))]
    return changes


def all_changes(comparisons: List[StackComparison]) -> Dict[str, StackChanges]:
    return {c.name: stack_changes(c) for c in comparisons if c.status != UNCHANGED}
