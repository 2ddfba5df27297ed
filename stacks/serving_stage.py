"""One environment: the stateful artifact store and the stateless serving stacks (config/placement.py)."""
from pathlib import Path
from typing import Optional

from aws_cdk import Environment, Stage
from constructs import Construct

from config import EnvironmentConfig
from config.placement import serving_stack_id
from config.schema import ARTIFACT_STORE_STACK
from stacks.artifact_store_stack import ArtifactStoreStack
from stacks.constructs.async_inference import expiration_rules as async_expiration_rules
from stacks.constructs.data_capture import expiration_rules as capture_expiration_rules
from stacks.cost_tags import cost_tags, tag_resources
from stacks.serving_stack import ServingStack


class ServingStage(Stage):
    """Deployed by hand (`cdk deploy 'Dev/*'`) and by the pipeline: the same class, the same stacks."""

    def __init__(self, scope: Construct, construct_id: str, *, environment: EnvironmentConfig, artifacts_dir: Path, config_dir: Path,
                 smoke_test_account: Optional[str] = None) -> None:
        super().__init__(scope, construct_id, env=Environment(account=environment.account, region=environment.region))
        tags = cost_tags(environment.name)
        self.artifact_store = ArtifactStoreStack(
            self,
            ARTIFACT_STORE_STACK,
            stack_name=environment.stack_name(ARTIFACT_STORE_STACK),
            retain_data=environment.retain_data,
            # what data capture and async inference write under the bucket expires
            expiry_rules=[*capture_expiration_rules(environment.data_capture), *async_expiration_rules(environment.models)],
            termination_protection=environment.termination_protection,
            description=f"Model artifact store ({environment.name}): stateful",
            tags=tags,
        )
        self.serving_stacks = {
            number: ServingStack(
                self,
                serving_stack_id(number),
                stack_name=environment.stack_name(serving_stack_id(number)),
                environment=environment,
                models=models,
                artifact_store=self.artifact_store,
                artifacts_dir=artifacts_dir,
                config_dir=config_dir,
                smoke_test_account=smoke_test_account if number == 1 else None,  # the stage's one smoke-test role
                description=f"SageMaker endpoints ({environment.name}, {', '.join(m.name for m in models) or 'none yet'}): stateless",
                tags=tags,
            )
            for number, models in environment.serving_stacks(with_smoke_test_role=smoke_test_account is not None).items()
        }
        self.serving = self.serving_stacks.get(1)  # the first: the one stack there was before the split
        self.smoke_test_role = self.serving.smoke_test_role if smoke_test_account else None
        tag_resources(self, tags)
