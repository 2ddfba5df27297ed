"""One environment: the stateful artifact store and the stateless serving stack."""
from pathlib import Path

from aws_cdk import Environment, Stage, Tags
from constructs import Construct

from config import EnvironmentConfig
from stacks.artifact_store_stack import ArtifactStoreStack
from stacks.serving_stack import ServingStack

PROJECT_TAG = "sagemaker-eia-serving"


class ServingStage(Stage):
    def __init__(self, scope: Construct, construct_id: str, *, environment: EnvironmentConfig, artifacts_dir: Path, config_dir: Path) -> None:
        super().__init__(scope, construct_id, env=Environment(account=environment.account, region=environment.region))
        self.artifact_store = ArtifactStoreStack(
            self,
            "ArtifactStore",
            retain_data=environment.retain_data,
            termination_protection=environment.termination_protection,
            description=f"Model artifact store ({environment.name}): stateful",
        )
        self.serving = ServingStack(
            self,
            "Serving",
            deployments=environment.models,
            artifact_store=self.artifact_store,
            artifacts_dir=artifacts_dir,
            config_dir=config_dir,
            description=f"SageMaker endpoints ({environment.name}): stateless",
        )
        Tags.of(self).add("project", PROJECT_TAG)
        Tags.of(self).add("environment", environment.name)
