"""Build the CDK app from a validated configuration: one Stage per environment, the delivery
pipeline that promotes them (when config/pipeline.yaml exists), all checked by cdk-nag."""
from pathlib import Path
from typing import Dict

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from config import AppConfig
from config.schema import PIPELINE_STACK
from stacks.pipeline_stack import PipelineStack
from stacks.cost_tags import cost_tags, tag_resources
from stacks.serving_stage import ServingStage


def add_stages(app: App, config: AppConfig, *, artifacts_dir: Path, config_dir: Path) -> Dict[str, ServingStage]:
    pipeline_account = config.pipeline.account if config.pipeline else None
    stages = {
        env.name: ServingStage(
            app, env.stage_id, environment=env, artifacts_dir=artifacts_dir, config_dir=config_dir, smoke_test_account=pipeline_account
        )
        for env in config.environments
    }
    if config.pipeline:
        tags = cost_tags(PIPELINE_STACK.lower())
        pipeline = PipelineStack(
            app,
            PIPELINE_STACK,
            stack_name=config.pipeline_stack_name,
            config=config,
            stages=stages,
            env=Environment(account=config.pipeline.account, region=config.pipeline.region),
            description="Delivery pipeline: one commit, dev → staging → prod",
            tags=tags,
        )
        tag_resources(pipeline, tags)
    # cdk-nag 3 runs as a policy-validation plugin: an unacknowledged finding fails synthesis.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stages
