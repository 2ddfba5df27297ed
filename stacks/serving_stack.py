"""Stateless: per model, the artifact upload, execution role, endpoint, autoscaling and alarms;
one dashboard for the stack.

An environment has several (config/placement.py), each holding some of its models; the first also holds the
smoke-test role. Each can be destroyed and recreated without touching the artifact store.
"""
from pathlib import Path
from typing import Optional, Sequence

from aws_cdk import CfnOutput, Stack, Tags
from constructs import Construct

from config import EnvironmentConfig, ModelDeployment
from model_artifacts.manifest import load_built_artifact
from stacks.artifact_store_stack import ArtifactStoreStack
from stacks.constructs.endpoint_alarms import EndpointAlarms
from stacks.constructs.endpoint_autoscaling import EndpointAutoscaling
from stacks.constructs.execution_role import ModelExecutionRole
from stacks.constructs.model_artifact_upload import ModelArtifactUpload
from stacks.constructs.model_endpoint import VARIANT_NAME, ModelEndpoint, model_construct_id
from stacks.constructs.serving_dashboard import ServingDashboard
from stacks.constructs.smoke_test_role import SmokeTestRole
from stacks.runtime_compatibility import warn_if_runtime_older


class ServingStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: EnvironmentConfig,
        models: Sequence[ModelDeployment],
        artifact_store: ArtifactStoreStack,
        artifacts_dir: Path,
        config_dir: Path,
        smoke_test_account: Optional[str] = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        store = artifact_store.import_into(self)
        dashboard = ServingDashboard(self, "Dashboard") if models else None
        for deployment in models:
            model_scope = Construct(self, model_construct_id(deployment.name))
            Tags.of(model_scope).add("model", deployment.name)  # cost allocation per model
            artifact = load_built_artifact(artifacts_dir, deployment)
            endpoint_name = environment.endpoint_name(deployment.name)
            alarms = EndpointAlarms(
                model_scope, "Alarms", endpoint_name=endpoint_name, variant_name=VARIANT_NAME, spec=deployment.spec.serving.alarms
            )
            upload = ModelArtifactUpload(
                model_scope,
                "Artifact",
                store=store,
                model_name=deployment.name,
                artifact=artifact,
            )
            config_file = f"{config_dir}/models/{deployment.name}.yaml"
            role = ModelExecutionRole(
                model_scope,
                "ExecutionRole",
                deployment=deployment,
                store=store,
                artifact_prefix=upload.prefix,
                endpoint_name=endpoint_name,
                rollback_alarms=alarms.alarms,
                config_file=config_file,
            )
            endpoint = ModelEndpoint(
                model_scope,
                "Serving",
                deployment=deployment,
                endpoint_name=endpoint_name,
                rollback_alarms=alarms.alarms,
                model_data_url=upload.model_data_url,
                role=role.role,
                volume_key=store.key,
                config_file=config_file,
            )
            # SageMaker reads the artifact while creating the Model: the copy must be done first.
            endpoint.model.node.add_dependency(upload.deployment)
            if deployment.autoscaling:
                EndpointAutoscaling(model_scope, "Autoscaling", endpoint=endpoint.endpoint, variant_name=VARIANT_NAME, scaling=deployment.scaling)
            warn_if_runtime_older(endpoint.model, deployment, artifact)
            dashboard.add_endpoint(deployment.name, endpoint_name, VARIANT_NAME, alarms.alarms)
            # For people and scripts (`aws cloudformation describe-stacks`); the pipeline knows the names from the config.
            CfnOutput(
                model_scope, "EndpointName", value=endpoint.endpoint.attr_endpoint_name, description=f"SageMaker endpoint of {deployment.name}"
            )

        self.smoke_test_role = None
        if smoke_test_account:
            self.smoke_test_role = SmokeTestRole(
                self,
                "SmokeTest",
                role_name=environment.smoke_test_role_name,
                pipeline_account=smoke_test_account,
                pipeline_role_name=environment.pipeline_smoke_test_role_name,
                endpoint_name_prefix=environment.endpoint_name(""),
            )
