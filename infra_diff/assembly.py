"""Reading a synthesized cloud assembly and comparing two of them stack by stack (pure, no CLI)."""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from infra_diff import DIFFERENCES, NO_DIFFERENCES

CHANGED, ADDED, REMOVED, UNCHANGED = "changed", "added", "removed", "unchanged"


@dataclass(frozen=True)
class Stack:
    name: str  # the hierarchical id the CLI selects by, e.g. Dev/Serving
    template_file: Path
    template: dict  # as deployed, less CDK's usage-analytics resource (cdk diff leaves it out too)
    assets: Dict[str, str]  # asset display name -> asset id (its hash); the stack's own template left out


@dataclass(frozen=True)
class StackComparison:
    name: str
    status: str
    base: Optional[Stack] = None
    head: Optional[Stack] = None
    asset_changes: List[str] = field(default_factory=list)


def read_stacks(outdir: Path) -> Dict[str, Stack]:
    """Every stack of the assembly, nested Stage assemblies included, by display name, in manifest order."""
    return {stack.name: stack for stack in _walk(outdir)}


def _walk(directory: Path) -> Iterator[Stack]:
    artifacts = json.loads((directory / "manifest.json").read_text()).get("artifacts", {})
    for artifact_id, artifact in artifacts.items():
        properties = artifact.get("properties", {})
        if artifact["type"] == "cdk:cloud-assembly":
            yield from _walk(directory / properties["directoryName"])
        elif artifact["type"] == "aws:cloudformation:stack":
            template_file = directory / properties["templateFile"]
            asset_files = [directory / artifacts[d]["properties"]["file"]
                           for d in artifact.get("dependencies", []) if artifacts.get(d, {}).get("type") == "cdk:asset-manifest"]
            yield Stack(
                name=artifact.get("displayName", artifact_id),
                template_file=template_file,
                template=without_cdk_metadata(json.loads(template_file.read_text())),
                assets=_assets(asset_files, template_file),
            )


def without_cdk_metadata(template: dict) -> dict:
    """AWS::CDK::Metadata records which constructs and library versions built the stack: it changes with
    unrelated code or a CDK upgrade and does nothing in the account, so cdk diff hides it, and so does this."""
    resources = {k: r for k, r in template.get("Resources", {}).items() if r.get("Type") != "AWS::CDK::Metadata"}
    return {**template, "Resources": resources} if "Resources" in template else template


def _assets(asset_files: List[Path], template_file: Path) -> Dict[str, str]:
    assets = {}
    for asset_file in asset_files:
        manifest = json.loads(asset_file.read_text())
        for kind in ("files", "dockerImages"):
            for asset_id, asset in manifest.get(kind, {}).items():
                if (asset_file.parent / asset["source"].get("path", "")).resolve() == template_file.resolve():
                    continue  # the template itself: its changes are the template diff
                name = asset.get("displayName", asset_id)
                key, n = name, 1
                while key in assets:
                    n += 1
                    key = f"{name} #{n}"
                assets[key] = asset_id
    return assets


def asset_changes(base: Dict[str, str], head: Dict[str, str]) -> List[str]:
    """In cdk diff's notation: '[~] asset <name>: old -> new', '[+] asset <name>: new', '[-] ...'; ids shortened to 12."""
    lines = []
    for name in sorted(base.keys() | head.keys()):
        old, new = base.get(name), head.get(name)
        if old == new:
            continue
        if old and new:
            lines.append(f"[~] asset {name}: {old[:12]} -> {new[:12]}")
        else:
            lines.append(f"[+] asset {name}: {new[:12]}" if new else f"[-] asset {name}: {old[:12]}")
    return lines


def compare(base: Dict[str, Stack], head: Dict[str, Stack]) -> List[StackComparison]:
    """One entry per stack in either assembly: head's order first, then stacks only the base has."""
    comparisons = []
    for name in [*head, *(n for n in base if n not in head)]:
        old, new = base.get(name), head.get(name)
        changes = asset_changes(old.assets if old else {}, new.assets if new else {})
        if old is None:
            status = ADDED
        elif new is None:
            status = REMOVED
        else:
            status = UNCHANGED if old.template == new.template and not changes else CHANGED
        comparisons.append(StackComparison(name, status, old, new, changes))
    return comparisons



def exit_status(comparisons: List[StackComparison]) -> int:
    return DIFFERENCES if any(c.status != UNCHANGED for c in comparisons) else NO_DIFFERENCES
