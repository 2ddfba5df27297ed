"""Scale to zero (scaling.min_instances: 0) on an instance profile: the model is served as an inference component.

An endpoint scales to and from zero instances only when it hosts inference components and its variant has
ManagedInstanceScaling with MinInstanceCount 0 (SageMaker Developer Guide, "Scale an endpoint to zero instances",
https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-zero-instances.html). So on cpu and gpu,
min_instances: 0 deploys: an EndpointConfig with the execution role and managed instance scaling (no model on the
variant), an AWS::SageMaker::InferenceComponent holding the model, Application Auto Scaling on its copy count
(minimum 0), and a step-scaling policy on the NoCapacityInvocationFailures alarm that adds a copy from zero.

check() refuses every combination that cannot work, naming the file, the key and the fix; copy_resources() sizes
one copy of the model for its instance type.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

from config.errors import ConfigError
from config.schema import ModelDeployment
from config.workers import instance_types

INFERENCE_COMPONENT_PROFILES = ("cpu", "gpu")
REGIONS_FILE = Path(__file__).parent / "data" / "inference_component_regions.json"
REGIONS_FILE_NAME = "config/data/inference_component_regions.json"
INSTANCE_TYPES_FILE_NAME = "config/data/instance_types.json"
KEY = "scaling.min_instances"


@dataclass(frozen=True)
class CopyResources:
    """ComputeResourceRequirements of one inference-component copy."""

    cpu_cores: float  # NumberOfCpuCoresRequired (API minimum 0.25)
    memory_mb: int  # MinMemoryRequiredInMb (required by the API, minimum 128)
    accelerators: Optional[int]  # NumberOfAcceleratorDevicesRequired (GPUs; minimum 1), None on CPU hosts


def inference_component_name(endpoint_name: str) -> str:
    """The component's physical name: the endpoint's own. InvokeEndpoint needs it (InferenceComponentName), and the
    alarm's dimension and the scalable target's resource id must name it at synth time, as CloudFormation returns
    only its ARN. A fixed name never blocks a replacement: the AWS::SageMaker::InferenceComponent schema has no
    create-only property, so every change is an in-place update (UpdateInferenceComponent)."""
    return endpoint_name


def copy_resources(instance_type: str) -> CopyResources:
    """Half the instance's vCPUs and memory, and all its GPUs.

    SageMaker places a copy only where its reservation fits beside what SageMaker keeps for its own agents and the
    OS, a share it documents nowhere: reserving the whole instance would never place. Half always fits, and lets a
    rolling update start the new copy beside the old one on the same instance (dev runs max_instances: 1). The
    model server still starts the workers config/workers.py planned for the whole instance. The GPUs all go to the
    copy: the worker plan spreads the workers over every GPU of the instance.
    """
    known = instance_types()[instance_type]
    return CopyResources(
        cpu_cores=max(0.25, known["vcpus"] / 2),
        memory_mb=max(128, int(known["memory_gib"] * 1024 // 2)),
        accelerators=known["gpus"] or None,
    )


@lru_cache(maxsize=None)
def inference_component_regions() -> Tuple[str, ...]:
    return tuple(json.loads(REGIONS_FILE.read_text())["regions"])


def check(deployment: ModelDeployment, model_where: str, env_where: str) -> None:
    """Refuse scaling.min_instances: 0 where SageMaker or CloudFormation cannot scale the model to zero."""
    if not deployment.scales_to_zero:
        return
    profile = deployment.target.profile
    # serverless already scales to zero and costs nothing idle: min_instances (often set for a whole environment)
    # means nothing there, so it is accepted as a no-op rather than forcing a per-model exception.
    # async scales its own variant to zero on the queue's backlog (config/async_inference.py checks it).
    if profile in ("serverless", "async"):
        return
    where = f"{env_where}: {KEY} = 0 (merged over {model_where})"
    if profile == "eia":
        _refuse_elastic_inference(where, model_where)
    _check_autoscaling(deployment, where, env_where, model_where)
    _check_region(deployment, where, env_where)
    _check_instance_type(deployment, where, model_where)
    _check_deployment_strategy(deployment, where, model_where)
    _check_no_shadow(deployment, where, model_where)


def _refuse_elastic_inference(where: str, model_where: str) -> None:
    # Scaling to zero needs an inference component, and inference components take no accelerator: their compute
    # is CPU cores, memory and NumberOfAcceleratorDevicesRequired (GPUs, Inferentia), never an EI accelerator,
    # which only ever attached through ProductionVariant.AcceleratorType (botocore's SageMaker model:
    # InferenceComponentComputeResourceRequirements; ProductionVariant.AcceleratorType "is no longer supported").
    raise ConfigError(
        f"{where}: {model_where} uses serving.profile: eia, and scaling to zero needs an inference component, "
        "which cannot attach an Elastic Inference accelerator (EI reached end of life in April 2024). Set "
        f"serving.profile: cpu or gpu in {model_where}, or set {KEY} to 1 or more"
    )


def _check_autoscaling(deployment: ModelDeployment, where: str, env_where: str, model_where: str) -> None:
    # Target tracking scales in to 0 copies but cannot scale out from 0 (it divides by the copy count); only the
    # step policy on NoCapacityInvocationFailures brings the model back, and both live on the scalable target.
    if not deployment.autoscaling:
        raise ConfigError(
            f"{where}, but scaling.autoscaling is false ({env_where} or {model_where}): without autoscaling nothing "
            "would add a copy back after the model scaled to zero, and every request would fail. Remove "
            f"scaling.autoscaling: false, or set {KEY} to 1 or more"
        )


def _check_region(deployment: ModelDeployment, where: str, env_where: str) -> None:
    region = deployment.target.region
    if region not in inference_component_regions():
        raise ConfigError(
            f"{where}, but region {region!r} ({env_where}) has no AWS::SageMaker::InferenceComponent in CloudFormation "
            f"({REGIONS_FILE_NAME}, from the CloudFormation resource schemas): the stack would be refused. Set {KEY} "
            f"to 1 or more in {env_where}, or deploy to one of: {', '.join(inference_component_regions())}"
        )


def _check_instance_type(deployment: ModelDeployment, where: str, model_where: str) -> None:
    instance_type = deployment.target.instance_type or ""
    if instance_type not in instance_types():
        profile = deployment.target.profile
        raise ConfigError(
            f"{where}: serving.profiles.{profile}.instance_type = {instance_type!r} ({model_where}) is not in "
            f"{INSTANCE_TYPES_FILE_NAME}, and an inference component reserves CPU cores, memory and GPUs from it; "
            f"add the type's vCPUs, memory and GPUs to that file (with its source), or choose a listed type"
        )


def _check_deployment_strategy(deployment: ModelDeployment, where: str, model_where: str) -> None:
    # A model update on an inference component is a rolling update of its copies in batches of 5-50 % of the copy
    # count (InferenceComponentRollingUpdatePolicy.MaximumBatchSize, botocore's SageMaker model), watched by the
    # rollback alarms. There is no canary step: linear maps to the rolling batches (linear_step_percent, 5-50),
    # all_at_once to SageMaker's default; the endpoint's own blue/green traffic shifting does not move the model.
    strategy = deployment.spec.serving.deployment.strategy
    if strategy == "canary":
        raise ConfigError(
            f"{where}, but serving.deployment.strategy = 'canary' ({model_where}): an inference component updates in "
            "rolling batches of its copies, with no canary step. Use strategy: auto or linear (rolling batches of "
            f"serving.deployment.linear_step_percent, 5-50 %) or all_at_once, or set {KEY} to 1 or more"
        )


def _check_no_shadow(deployment: ModelDeployment, where: str, model_where: str) -> None:
    # A shadow is a model-based variant beside the live one, compared by EndpointName+VariantName metrics; here the
    # live variant holds no model (its component reports under InferenceComponentName), so there is no pair to compare.
    if deployment.spec.serving.shadow is not None:
        raise ConfigError(
            f"{where}, but {model_where} sets serving.shadow: a shadow variant needs the live model on the endpoint's "
            "variant, and a model that scales to zero is an inference component instead. Shadow-test with "
            f"{KEY} of 1 or more in this environment (e.g. staging), or remove serving.shadow"
        )
