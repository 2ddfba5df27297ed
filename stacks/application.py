"""Build the CDK app from a validated configuration: one Stage per environment, checked by cdk-nag."""
from pathlib import Path
from typing import Dict

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from config import AppConfig
from stacks.serving_stage import ServingStage


def stage_id(environment_name: str) -> str:
    return environment_name.capitalize()


def add_stages(app: App, config: AppConfig, *, artifacts_dir: Path, config_dir: Path) -> Dict[str, ServingStage]:
    stages = {
        env.name: ServingStage(app, stage_id(env.name), environment=env, artifacts_dir=artifacts_dir, config_dir=config_dir)
        for env in config.environments
    }
    # cdk-nag 3 runs as a policy-validation plugin: an unacknowledged finding fails synthesis.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stages
