"""Deploy a cloud assembly, then its updates, as `cdk deploy '**'` would, into moto; check every stack reaches
CREATE_COMPLETE / UPDATE_COMPLETE and that what it made exists in the emulated services."""
import contextlib
import io
import json
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
from unittest import mock

from deploy_rehearsal.adjustments import moto_adjustments
from deploy_rehearsal.assembly import FileAsset, StackArtifact, read_assembly
from deploy_rehearsal.emulation import Clients, fake_aws_environment, network_guard
from deploy_rehearsal.resource_types import StandIns, template_types
from deploy_rehearsal.verify import Verifier

# What the pinned CLI's `cdk bootstrap` writes to /cdk-bootstrap/<qualifier>/version
# (node_modules/aws-cdk/lib/api/bootstrap/bootstrap-template.yaml, CdkBootstrapVersion; a test keeps them equal).
BOOTSTRAP_VERSION = 33
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]

class RehearsalFailed(AssertionError):
    pass


@dataclass
class StackResult:
    step: str
    stack: str
    account: str
    action: str  # "create", "update", "unchanged"
    status: str
    resources: Counter = field(default_factory=Counter)  # type -> count
    checked: Counter = field(default_factory=Counter)  # type -> count checked in their service


@dataclass
class Report:
    emulated: Dict[str, int] = field(default_factory=dict)
    bridged: Dict[str, int] = field(default_factory=dict)
    stubbed: Dict[str, int] = field(default_factory=dict)
    adjustments: List[str] = field(default_factory=list)
    stacks: List[StackResult] = field(default_factory=list)
    assets_staged: int = 0
    network_refused: List[str] = field(default_factory=list)

    def text(self) -> str:
        lines = ["deploy rehearsal (moto, in process; no network beyond loopback):"]
        for step in dict.fromkeys(result.step for result in self.stacks):
            unchanged = [r.stack for r in self.stacks if r.step == step and r.action == "unchanged"]
            for result in (r for r in self.stacks if r.step == step and r.action != "unchanged"):
                lines.append(f"  [{step}] {result.stack:<22} account {result.account}  {result.action} -> {result.status}"
                             f"  ({sum(result.resources.values())} resources, {sum(result.checked.values())} checked in their service)")
            if unchanged:
                lines.append(f"  [{step}] unchanged, not deployed: {', '.join(unchanged)}")
        lines.append(f"  assets staged into the bootstrap buckets: {self.assets_staged}")
        lines.append("  emulated by moto's CloudFormation (its own registry):")
        lines += [f"    {t} x{n}" for t, n in sorted(self.emulated.items())]
        lines.append("  bridged (moto's CloudFormation lacks the type; created through moto's service backend):")
        lines += [f"    {t} x{n}" for t, n in sorted(self.bridged.items())] or ["    (none)"]
        lines.append("  stubbed (not implemented by moto: an id and Ref/GetAtt only):")
        lines += [f"    {t} x{n}" for t, n in sorted(self.stubbed.items())] or ["    (none)"]
        if self.adjustments:
            lines.append("  moto adjustments:")
            lines += [f"    {a}" for a in self.adjustments]
        lines.append(f"  network connections refused: {len(self.network_refused)}")
        return "\n".join(lines)


def _zip_directory(directory: Path) -> bytes:
    """A deterministic zip of a directory asset (sorted entries, fixed times), as the CLI packages it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(directory)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def _check_rules(stack: StackArtifact, template: dict, parameters: Dict[str, str]) -> None:
    """CloudFormation's template Rules (CDK's CheckBootstrapVersion); moto ignores them."""

    def value(node):
        if isinstance(node, dict):
            (function, argument), = node.items()
            if function == "Ref":
                return parameters[argument]
            if function == "Fn::Not":
                return not value(argument[0])
            if function == "Fn::And":
                return all(value(a) for a in argument)
            if function == "Fn::Or":
                return any(value(a) for a in argument)
            if function == "Fn::Equals":
                return value(argument[0]) == value(argument[1])
            if function == "Fn::Contains":
                return value(argument[1]) in [value(a) for a in argument[0]]
            raise RehearsalFailed(f"{stack.stack_name}: rule function {function} is not rehearsed")
        if isinstance(node, list):
            return [value(a) for a in node]
        return node

    for name, rule in template.get("Rules", {}).items():
        if "RuleCondition" in rule and not value(rule["RuleCondition"]):
            continue
        for assertion in rule.get("Assertions", []):
            if not value(assertion["Assert"]):
                raise RehearsalFailed(f"{stack.stack_name}: rule {name} fails: {assertion.get('AssertDescription', '')}")


class Rehearsal(contextlib.AbstractContextManager):
    """`with Rehearsal(all_assemblies) as r: r.deploy(first, "deploy"); r.deploy(next, "step 1") ...`

    All assemblies the rehearsal will deploy are given up front, so every resource type in them is classified
    (emulated, bridged, stubbed) and checked against moto's registry before anything runs. The emulation lives
    until the block ends; `r.client(service, account)` reads it."""

    def __init__(self, assemblies: Sequence[Path], region: str = "us-east-1"):
        self.assemblies = [Path(a) for a in assemblies]
        self.region = region
        self.stacks_by_assembly = {a: read_assembly(a) for a in self.assemblies}
        self.stand_ins = StandIns(template_types(s.template for stacks in self.stacks_by_assembly.values() for s in stacks))
        self.report = Report()
        self.deployed: Dict[Tuple[str, str], dict] = {}  # (account, stack name) -> template
        self._bootstrapped = set()
        self._exit = contextlib.ExitStack()
        self._types_per_stack: Dict[Tuple[str, str], Counter] = {}

    # -------------------------------------------------------------- the emulation

    def __enter__(self) -> "Rehearsal":
        from moto import mock_aws
        from moto.cloudformation import parsing

        stack = self._exit
        stack.enter_context(fake_aws_environment())
        self.report.network_refused = stack.enter_context(network_guard())
        stack.enter_context(mock_aws())
        stack.enter_context(mock.patch.object(parsing, "resource_class_from_type",
                                              self.stand_ins.lookup(parsing.resource_class_from_type)))
        types = set(self.stand_ins.emulated)
        self.report.adjustments = [text for resource_type, text in stack.enter_context(moto_adjustments())
                                   if resource_type is None or resource_type in types]
        self.clients = Clients()
        self.verifier = Verifier(self)
        return self

    def __exit__(self, *exc_info):
        return self._exit.__exit__(*exc_info)

    def client(self, service: str, account: str, region: Optional[str] = None):
        return self.clients(service, account, region or self.region)

    # -------------------------------------------------------------- bootstrap and assets

    def _bootstrap(self, account: str, region: str, qualifier_parameter: str, buckets: Iterable[str]) -> None:
        """What `cdk bootstrap` leaves that a deploy reads: the version parameter and the assets bucket."""
        if (account, region) not in self._bootstrapped:
            self.client("ssm", account, region).put_parameter(
                Name=qualifier_parameter, Value=str(BOOTSTRAP_VERSION), Type="String")
            self._bootstrapped.add((account, region))
        s3 = self.client("s3", account, region)
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        for bucket in set(buckets) - existing:
            s3.create_bucket(Bucket=bucket)

    def _stage(self, asset: FileAsset) -> None:
        s3 = self.client("s3", asset.account, asset.region)
        if not asset.source.exists():
            raise RehearsalFailed(f"asset {asset.display_name}: {asset.source} does not exist")
        body = _zip_directory(asset.source) if asset.packaging == "zip" and asset.source.is_dir() else asset.source.read_bytes()
        s3.put_object(Bucket=asset.bucket, Key=asset.key, Body=body)
        self.report.assets_staged += 1

    # -------------------------------------------------------------- deploy

    def deploy(self, assembly: Path, step: str) -> List[StackResult]:
        """Every stack of the assembly in dependency order: publish its assets, then create it, or update it when
        its template changed (unchanged stacks are skipped, as the CLI does)."""
        results = []
        for stack in self.stacks_by_assembly[Path(assembly)]:
            results.append(self._deploy_stack(stack, step))
        return results

    def _deploy_stack(self, stack: StackArtifact, step: str) -> StackResult:
        template = stack.template
        parameter = stack.bootstrap_parameter or "/cdk-bootstrap/hnb659fds/version"
        self._bootstrap(stack.account, stack.region, parameter, [a.bucket for a in stack.assets if a.account == stack.account])
        for account, region in {(a.account, a.region) for a in stack.assets} - {(stack.account, stack.region)}:
            self._bootstrap(account, region, parameter, [a.bucket for a in stack.assets if a.account == account])
        if stack.required_bootstrap_version and stack.required_bootstrap_version > BOOTSTRAP_VERSION:
            raise RehearsalFailed(f"{stack.stack_name} needs bootstrap version {stack.required_bootstrap_version}")
        parameters = {name: str(BOOTSTRAP_VERSION) for name, p in template.get("Parameters", {}).items()
                      if p.get("Type", "").startswith("AWS::SSM::Parameter::Value") and p.get("Default") == parameter}
        _check_rules(stack, template, parameters)

        key = (stack.account, stack.stack_name)
        previous = self.deployed.get(key)
        if previous == template:
            result = StackResult(step, stack.stack_name, stack.account, "unchanged", self._status(stack))
            self.report.stacks.append(result)
            return result
        for asset in stack.assets:
            self._stage(asset)
        cfn = self.client("cloudformation", stack.account, stack.region)
        arguments = dict(StackName=stack.stack_name, Capabilities=CAPABILITIES,
                         Tags=[{"Key": k, "Value": v} for k, v in sorted(stack.tags.items())])
        if stack.template_asset_url:  # the template itself was published as an asset: deploy it from there
            bucket, _, object_key = stack.template_asset_url[len("s3://"):].partition("/")
            arguments["TemplateURL"] = f"https://s3.{stack.region}.amazonaws.com/{bucket}/{object_key}"
        else:
            arguments["TemplateBody"] = json.dumps(template)
        action = "update" if previous is not None else "create"
        try:
            if previous is None:
                cfn.create_stack(EnableTerminationProtection=stack.termination_protection, **arguments)
            else:
                cfn.update_stack(**arguments)
        except Exception as error:
            raise RehearsalFailed(f"[{step}] {action} {stack.stack_name} (account {stack.account}): {error}") from error
        status = self._status(stack)
        expected = "CREATE_COMPLETE" if previous is None else "UPDATE_COMPLETE"
        if status != expected:
            raise RehearsalFailed(f"[{step}] {stack.stack_name}: {status}, expected {expected}")
        self.deployed[key] = template
        result = StackResult(step, stack.stack_name, stack.account, action, status)
        self._count_types(template, result)
        result.checked = self.verifier.check_stack(stack, template, previous)
        self.report.stacks.append(result)
        return result

    def _status(self, stack: StackArtifact) -> str:
        cfn = self.client("cloudformation", stack.account, stack.region)
        return cfn.describe_stacks(StackName=stack.stack_name)["Stacks"][0]["StackStatus"]

    def _count_types(self, template: dict, result: StackResult) -> None:
        """Per stack, the most resources of each type it has had; the report sums them over the stacks."""
        result.resources.update(resource["Type"] for resource in template.get("Resources", {}).values())
        most = self._types_per_stack.setdefault((result.account, result.stack), Counter())
        for resource_type, count in result.resources.items():
            most[resource_type] = max(most[resource_type], count)
        totals = sum(self._types_per_stack.values(), Counter())
        for kind in ("emulated", "bridged", "stubbed"):
            setattr(self.report, kind, {t: totals[t] for t in getattr(self.stand_ins, kind) if totals[t]})


def rehearse(assemblies: Sequence[Path], steps: Optional[Sequence[str]] = None) -> Report:
    """Deploy the first assembly, then each next one as an update; the report of what ran."""
    assemblies = [Path(a) for a in assemblies]
    steps = list(steps or ["deploy"] + [f"update {i}" for i in range(1, len(assemblies))])
    with Rehearsal(assemblies) as rehearsal:
        for assembly, step in zip(assemblies, steps):
            rehearsal.deploy(assembly, step)
        if rehearsal.report.network_refused:
            raise RehearsalFailed(f"network access attempted: {rehearsal.report.network_refused}")
        return rehearsal.report
