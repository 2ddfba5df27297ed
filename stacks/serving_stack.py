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
from stacks.constructs.async_autoscaling import AsyncAutoscaling
from stacks.constructs.async_inference import AsyncInference
from stacks.constructs.data_capture import data_capture_of
from stacks.constructs.endpoint_alarms import EndpointAlarms
from stacks.constructs.endpoint_autoscaling import EndpointAutoscaling
from stacks.constructs.execution_role import ModelExecutionRole
from stacks.constructs.inference_component import InferenceComponentServing, component_name_of
from stacks.constructs.model_artifact_upload import ModelArtifactUpload
from stacks.constructs.model_endpoint import VARIANT_NAME, ModelEndpoint, model_construct_id
from stacks.constructs.serving_dashboard import ServingDashboard
from stacks.constructs.shadow_variant import add_shadow_variant, dashboard_labels, shadow_production_variants
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
            component = component_name_of(deployment, endpoint_name)  # scale to zero: metrics carry the component's name
            alarms = EndpointAlarms(
                model_scope, "Alarms", endpoint_name=endpoint_name, variant_name=VARIANT_NAME, spec=deployment.spec.serving.alarms,
                inference_component=component,
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
            # serving.shadow: the candidate profile's artifact and Model, a shadow variant of the endpoint below.
            shadow = add_shadow_variant(model_scope, deployment, artifacts_dir=artifacts_dir, store=store, role=role.role)
            capture = data_capture_of(model_scope, deployment, store=store, role=role.role, config_file=config_file)
            # serving.profile: async: answers and failures under the artifact bucket, SNS topics, the role's access.
            queued = AsyncInference(model_scope, "AsyncInference", deployment=deployment, store=store) if deployment.target.is_async else None
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
                data_capture_config=capture.config if capture else None,
                shadow_production_variants=shadow_production_variants(shadow),
                async_inference_config=queued.config if queued else None,
            )
            if queued:  # the role reads requests and writes answers as soon as the endpoint is in service
                endpoint.endpoint.node.add_dependency(queued.grant_to(role.role))
            if capture:  # the role may write captures before the endpoint takes traffic
                endpoint.endpoint.node.add_dependency(capture.policy)
            # SageMaker reads the artifact while creating the Model: the copy must be done first.
            endpoint.model.node.add_dependency(upload.deployment)
            if deployment.uses_inference_component:  # scale to zero: the model as a component, with its own autoscaling
                InferenceComponentServing(model_scope, "InferenceComponent", deployment=deployment, endpoint=endpoint.endpoint,
                                          model=endpoint.model, endpoint_name=endpoint_name, variant_name=VARIANT_NAME,
                                          rollback_alarms=alarms.alarms)
            if deployment.autoscaling and queued:  # on the queue's backlog, down to 0 instances if min_instances is 0
                AsyncAutoscaling(model_scope, "Autoscaling", endpoint=endpoint.endpoint, endpoint_name=endpoint_name,
                                 variant_name=VARIANT_NAME, deployment=deployment)
            elif deployment.autoscaling and not deployment.uses_inference_component:
                EndpointAutoscaling(model_scope, "Autoscaling", endpoint=endpoint.endpoint, variant_name=VARIANT_NAME, scaling=deployment.scaling)
            warn_if_runtime_older(endpoint.model, deployment, artifact)
            # Alarms, rollback and autoscaling watch the live variant only; the dashboard shows both side by side.
            dashboard.add_endpoint(deployment.name, endpoint_name, VARIANT_NAME, alarms.alarms, shadow=dashboard_labels(shadow, deployment),
                                   inference_component=component)
            if queued:
                dashboard.add_async_queue(endpoint_name)
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
                # Every async model of the environment, whichever serving stack holds it: its smoke test goes through S3.
                store=store,
                async_models=[m.name for m in environment.models if m.target.is_async],
                inference_components=any(m.uses_inference_component for m in environment.models),
            )
