"""Cost-allocation tags. Stack tags reach every resource CloudFormation can tag, including the
providers CDK writes as raw CfnResources; Tags.of also writes them into each resource."""
from typing import Dict

from aws_cdk import Tags
from constructs import IConstruct

PROJECT_TAG = "sagemaker-eia-serving"


def cost_tags(environment: str) -> Dict[str, str]:
    return {"project": PROJECT_TAG, "environment": environment}


def tag_resources(scope: IConstruct, tags: Dict[str, str]) -> None:
    for key, value in tags.items():
        Tags.of(scope).add(key, value)
