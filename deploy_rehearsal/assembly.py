"""A synthesized cloud assembly (cdk.out) as the CLI deploys it: stacks in dependency order, each with its
environment, template, tags and the file assets it publishes first."""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

STACK = "aws:cloudformation:stack"
NESTED_ASSEMBLY = "cdk:cloud-assembly"
ASSET_MANIFEST = "cdk:asset-manifest"

_ENVIRONMENT = re.compile(r"^aws://(?P<account>\d{12})/(?P<region>[a-z0-9-]+)$")
_ROLE_ACCOUNT = re.compile(r":iam::(?P<account>\d{12}):role/")


class AssemblyError(Exception):
    """The assembly cannot be rehearsed as it is (a missing file, an unresolved environment, a cycle)."""


@dataclass(frozen=True)
class FileAsset:
    """One file asset destination: what the CLI uploads before deploying the stack that uses it."""

    asset_hash: str
    display_name: str
    source: Path  # a file, or a directory when packaging is "zip"
    packaging: str  # "file" or "zip"
    account: str
    region: str
    bucket: str
    key: str


@dataclass
class StackArtifact:
    artifact_id: str  # unique in the whole assembly: "<assembly dir>/<artifact id>"
    stack_name: str
    display_name: str  # e.g. "Dev/Serving"
    account: str
    region: str
    template_file: Path
    tags: Dict[str, str]
    termination_protection: bool
    dependencies: List[str]  # artifact ids of the stacks deployed before this one
    assets: List[FileAsset] = field(default_factory=list)
    template_asset_url: Optional[str] = None  # s3://bucket/key of the template itself, when it is an asset
    bootstrap_parameter: Optional[str] = None  # /cdk-bootstrap/<qualifier>/version
    required_bootstrap_version: Optional[int] = None

    @property
    def template(self) -> dict:
        return json.loads(self.template_file.read_text())


def _substitute(value: str, account: str, region: str) -> str:
    return (value.replace("${AWS::AccountId}", account).replace("${AWS::Region}", region)
            .replace("${AWS::Partition}", "aws"))


def _asset_manifest(path: Path, stack_account: str, stack_region: str) -> Tuple[List[FileAsset], dict]:
    manifest = json.loads(path.read_text())
    if manifest.get("dockerImages"):
        raise AssemblyError(f"{path.name}: container image assets are not rehearsed (nothing here builds or pushes images)")
    assets = []
    for asset_hash, entry in sorted(manifest.get("files", {}).items()):
        source = entry["source"]
        if "path" not in source:
            raise AssemblyError(f"{path.name}: asset {asset_hash} is built by a command ({source}); only path assets are rehearsed")
        for destination in entry["destinations"].values():
            role = _ROLE_ACCOUNT.search(destination.get("assumeRoleArn", ""))
            account = role.group("account") if role else stack_account
            region = destination.get("region", stack_region)
            assets.append(FileAsset(
                asset_hash=asset_hash,
                display_name=entry.get("displayName", asset_hash),
                source=(path.parent / source["path"]).resolve(),
                packaging=source.get("packaging", "file"),
                account=account,
                region=region,
                bucket=_substitute(destination["bucketName"], account, region),
                key=_substitute(destination["objectKey"], account, region),
            ))
    return assets, manifest


def _read(directory: Path, prefix: str, stacks: Dict[str, StackArtifact]) -> None:
    manifest_file = directory / "manifest.json"
    if not manifest_file.exists():
        raise AssemblyError(f"{manifest_file} not found: synthesize first (make synth)")
    artifacts = json.loads(manifest_file.read_text()).get("artifacts", {})
    for artifact_id, artifact in artifacts.items():
        properties = artifact.get("properties", {})
        if artifact["type"] == NESTED_ASSEMBLY:
            _read(directory / properties["directoryName"], f"{prefix}{properties['directoryName']}/", stacks)
        elif artifact["type"] == STACK:
            environment = _ENVIRONMENT.match(artifact.get("environment", ""))
            if not environment:
                raise AssemblyError(f"{artifact_id}: environment {artifact.get('environment')!r} has no concrete account and region")
            account, region = environment.group("account"), environment.group("region")
            stack = StackArtifact(
                artifact_id=f"{prefix}{artifact_id}",
                stack_name=properties.get("stackName", artifact_id),
                display_name=artifact.get("displayName", artifact_id),
                account=account,
                region=region,
                template_file=directory / properties["templateFile"],
                tags=dict(properties.get("tags", {})),
                termination_protection=bool(properties.get("terminationProtection", False)),
                dependencies=[],
                template_asset_url=properties.get("stackTemplateAssetObjectUrl"),
                bootstrap_parameter=properties.get("bootstrapStackVersionSsmParameter"),
                required_bootstrap_version=properties.get("requiresBootstrapStackVersion"),
            )
            for dependency in artifact.get("dependencies", []):
                dependency_artifact = artifacts.get(dependency, {})
                if dependency_artifact.get("type") == ASSET_MANIFEST:
                    assets, _ = _asset_manifest(directory / dependency_artifact["properties"]["file"], account, region)
                    stack.assets.extend(assets)
                elif dependency_artifact.get("type") == STACK:
                    stack.dependencies.append(f"{prefix}{dependency}")
            if stack.template_asset_url:
                stack.template_asset_url = _substitute(stack.template_asset_url, account, region)
            stacks[stack.artifact_id] = stack


def read_assembly(cdk_out: Path) -> List[StackArtifact]:
    """Every stack of the assembly (nested stage assemblies included), dependencies first, as `cdk deploy '**'`."""
    stacks: Dict[str, StackArtifact] = {}
    _read(Path(cdk_out), "", stacks)
    ordered: List[StackArtifact] = []
    state: Dict[str, str] = {}

    def visit(artifact_id: str, path: Tuple[str, ...]) -> None:
        if state.get(artifact_id) == "done":
            return
        if state.get(artifact_id) == "visiting":
            raise AssemblyError("dependency cycle: " + " -> ".join(path + (artifact_id,)))
        if artifact_id not in stacks:
            raise AssemblyError(f"{path[-1]} depends on {artifact_id}, which is not a stack of this assembly")
        state[artifact_id] = "visiting"
        for dependency in stacks[artifact_id].dependencies:
            visit(dependency, path + (artifact_id,))
        state[artifact_id] = "done"
        ordered.append(stacks[artifact_id])

    for artifact_id in stacks:  # the manifests' order (dev, staging, prod, then the pipeline), dependencies first
        visit(artifact_id, ())
    return ordered
