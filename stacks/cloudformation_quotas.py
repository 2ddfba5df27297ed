"""CloudFormation's and CodePipeline's quotas, checked on the synthesized templates before anything deploys.

Refused above a quota (CloudFormation would refuse the stack, halfway through a pipeline run); warned above 80 %,
the headroom the design keeps (config/app.yaml serving_stacks). Pure: template files in, messages out.
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

HEADROOM = 0.8
# https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-limits.html
TEMPLATE_QUOTAS = {"resources": 500, "outputs": 200, "parameters": 200, "mappings": 200}
TEMPLATE_BYTES_QUOTA = 1_000_000  # a template uploaded to S3 (CDK uploads every template)
# https://docs.aws.amazon.com/codepipeline/latest/userguide/limits.html
PIPELINE_QUOTAS = {"stages in a pipeline": 50, "actions in a stage": 50}
OVERFLOW_STAGE = re.compile(r".+\.\d+")
HEADROOM_EXCEEDED = "above the 80 % headroom"
FIXES = {
    "CloudFormation": "raise serving_stacks in config/app.yaml (models spread over more stacks; pin deployed models first, "
                      "see config/placement.py) or split the environment's models over more environments",
    "CodePipeline": "lower serving_stacks in config/app.yaml (the pipeline deploys each stack with 2 actions of its stage) or "
                    "split the environments over more pipelines",
}


@dataclass(frozen=True)
class Usage:
    stack: str
    quota: str
    used: int
    limit: int
    service: str = "CloudFormation"
    headroom: bool = True  # False: filled to the quota by design (CDK Pipelines' overflow stages)

    @property
    def share(self) -> float:
        return self.used / self.limit

    def describe(self) -> str:
        return f"{self.stack}: {self.used} {self.quota} of {self.service}'s {self.limit} ({self.share:.0%})"


def template_usage(stack: str, template_file: Path) -> List[Usage]:
    template = json.loads(template_file.read_text())
    usage = [Usage(stack, f"template {key}", len(template.get(key.capitalize(), {})), limit) for key, limit in TEMPLATE_QUOTAS.items()]
    usage.append(Usage(stack, "template bytes", template_file.stat().st_size, TEMPLATE_BYTES_QUOTA))
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::CodePipeline::Pipeline":
            stages = resource["Properties"]["Stages"]
            usage.append(Usage(stack, "pipeline stages", len(stages), PIPELINE_QUOTAS["stages in a pipeline"], "CodePipeline"))
            # CDK Pipelines moves actions past 50 into stages of their own (Assets.1, Assets.2, ...: one action per
            # model archive), filling each to the quota: more stages, not a failure.
            usage += [Usage(stack, f"actions in pipeline stage {s['Name']}", len(s["Actions"]), PIPELINE_QUOTAS["actions in a stage"],
                            "CodePipeline", headroom=not OVERFLOW_STAGE.fullmatch(s["Name"])) for s in stages]
    return usage


def check(stacks: Iterable[Tuple[str, Path]]) -> Tuple[List[str], List[str]]:
    """(errors, warnings) over (display name, template file) pairs."""
    errors, warnings = [], []
    for stack, template_file in stacks:
        for usage in template_usage(stack, template_file):
            if usage.share > 1:
                errors.append(f"{usage.describe()}: the deploy would fail; {FIXES[usage.service]}")
            elif usage.share > HEADROOM and usage.headroom:
                warnings.append(f"{usage.describe()}: {HEADROOM_EXCEEDED}; {FIXES[usage.service]}")
    return errors, warnings


def largest(stacks: Iterable[Tuple[str, Path]]) -> Dict[str, Usage]:
    """Per quota, the stack closest to it (for the scale benchmark's table)."""
    top: Dict[str, Usage] = {}
    for stack, template_file in stacks:
        for usage in template_usage(stack, template_file):
            key = "actions in a pipeline stage" if usage.quota.startswith("actions in pipeline stage") else usage.quota
            if usage.headroom and (key not in top or usage.share > top[key].share):
                top[key] = usage
    return top
