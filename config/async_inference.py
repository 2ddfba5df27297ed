"""serving.profile: async: the S3 layout of its requests and answers, and the combinations SageMaker refuses.

An async endpoint is an instance endpoint whose requests wait in a queue SageMaker keeps: the client uploads the
body to S3 and calls InvokeEndpointAsync; SageMaker writes the answer (or the error) to S3 and announces it on
SNS. It can scale to 0 instances while the queue is empty (scaling.min_instances: 0).

The request size follows the profile: real-time profiles take at most 6 MiB (InvokeEndpoint's limit), async up to
1 GB (read from S3). The async default, 16 MiB, holds the largest batch the other limits admit for the example
classifier (max_batch_size 16 rows x 3x224x224 float32 = 9.2 MiB of npy) with room to spare. A body costs the
model server's worker about three times its size (the bytes, their decoded JSON/base64 text, the decoded
payload; the handler never streams), on top of the measured worst request at 6 MiB (README, "Request limits":
<= 1000 MiB per worker); and TorchServe's / MMS's Java frontend holds each in-flight body whole. check() refuses a
limit whose worst case would not fit the instance (an estimate from those numbers, not a measurement).
"""
from __future__ import annotations

from typing import NamedTuple

from config.errors import ConfigError
from config.schema import ASYNC_MAX_REQUEST_BYTES, REALTIME_MAX_REQUEST_BYTES, ModelDeployment
from config.workers import DATA_FILE_NAME, instance_types, worker_plan

# Under the environment's artifact bucket (encrypted with its key), one folder per model.
ASYNC_PREFIX = "async-inference"
LIMIT_KEY = "serving.limits.max_request_bytes"
MiB = 1024 * 1024
# README "Request limits": the stated peak per worker of the worst request the default limits admit (6 MiB body).
WORST_REQUEST_PEAK_MIB = 1000
# Copies of the body a worker holds at once: the body, its JSON text / base64, the decoded payload.
BODY_COPIES_PER_WORKER = 3
# The model servers' Java frontends run with -XX:-UseContainerSupport (the toolkits' sagemaker-ts.properties and
# sagemaker-mms.properties), so the JVM's default maximum heap is a quarter of the instance's memory.
FRONTEND_HEAP_SHARE = 0.25


class AsyncPrefixes(NamedTuple):
    input: str  # clients upload requests here, then call InvokeEndpointAsync with its InputLocation
    output: str  # AsyncInferenceConfig.OutputConfig.S3OutputPath: SageMaker writes <InferenceId>.out
    failures: str  # OutputConfig.S3FailurePath: SageMaker writes <InferenceId>-error.out


def async_prefixes(model_name: str) -> AsyncPrefixes:
    """The S3 key prefixes (no bucket) of one model's async requests, answers and failures."""
    base = f"{ASYNC_PREFIX}/{model_name}"
    return AsyncPrefixes(input=f"{base}/input/", output=f"{base}/output/", failures=f"{base}/failures/")


def max_concurrent_invocations(deployment: ModelDeployment) -> int:
    """ClientConfig.MaxConcurrentInvocationsPerInstance: the configured cap, else one request per model-server worker."""
    configured = deployment.spec.serving.async_inference.max_concurrent_invocations_per_instance
    return configured if configured is not None else worker_plan(deployment).workers


def check(deployment: ModelDeployment, model_where: str, env_where: str) -> None:
    _check_request_size_for_profile(deployment, model_where)
    if not deployment.target.is_async:
        return
    _check_scale_to_zero(deployment, model_where, env_where)
    _check_deployment_strategy(deployment, model_where)
    _check_request_memory(deployment, model_where)


def _check_request_size_for_profile(deployment: ModelDeployment, where: str) -> None:
    """InvokeEndpoint takes at most 6 MiB (SageMaker API reference, InvokeEndpoint: "Maximum payload size 6 MB");
    only InvokeEndpointAsync, whose payload comes from S3, takes more (up to 1 GB, schema's ASYNC_MAX_REQUEST_BYTES)."""
    size = deployment.spec.serving.limits.max_request_bytes
    if not deployment.target.is_async and size > REALTIME_MAX_REQUEST_BYTES:
        raise ConfigError(
            f"{where}: {LIMIT_KEY} = {size} is above {REALTIME_MAX_REQUEST_BYTES} (6 MiB), the most SageMaker accepts in "
            f"one InvokeEndpoint request on the {deployment.target.profile!r} profile; lower it to at most "
            f"{REALTIME_MAX_REQUEST_BYTES}, or set serving.profile: async (bodies from S3, up to {ASYNC_MAX_REQUEST_BYTES} bytes)"
        )


def _check_scale_to_zero(deployment: ModelDeployment, where: str, env_where: str) -> None:
    """Only Application Auto Scaling takes an async variant to 0 instances (SageMaker developer guide, "Autoscale an
    asynchronous endpoint": MinCapacity 0 on the scalable target); the endpoint itself starts with at least one
    (botocore's model: ProductionVariant.InitialInstanceCount, InitialTaskCount min 1)."""
    if deployment.scales_to_zero and not deployment.autoscaling:
        raise ConfigError(
            f"{env_where}: scaling.min_instances = 0 for {where} (serving.profile: async) needs autoscaling: only Application "
            "Auto Scaling takes an async endpoint down to 0 instances and back; remove scaling.autoscaling: false, "
            "or set scaling.min_instances to 1 or more"
        )


def _check_deployment_strategy(deployment: ModelDeployment, where: str) -> None:
    """Blue/green canary and linear shift traffic in steps that are a share of the variant's instances
    (botocore's model, TrafficRoutingConfig: CanarySize "<= 50% of the variant's total instance count",
    LinearStepSize "10-50%"). Deployment guardrails do apply to async endpoints (SageMaker developer guide,
    "Deployment guardrails"), but an async endpoint scaled to 0 instances has nothing to step through, so
    scale to zero takes all_at_once (which `auto` resolves to)."""
    strategy = deployment.spec.serving.deployment.strategy
    if deployment.scales_to_zero and strategy in ("canary", "linear"):
        raise ConfigError(
            f"{where}: serving.deployment.strategy = {strategy!r} shifts traffic in steps of the variant's instances, but "
            "this async endpoint scales to 0 instances (scaling.min_instances: 0), where there are none to step through; "
            "set serving.deployment.strategy to all_at_once (or auto, which resolves to it), or scaling.min_instances to 1 or more"
        )


def _check_request_memory(deployment: ModelDeployment, where: str) -> None:
    """The largest body the limit admits must fit each worker's share of memory and the frontend's heap."""
    instance = instance_types().get(deployment.target.instance_type or "")
    if instance is None:
        return  # worker_plan already named the missing instance type, or both worker keys were set by hand
    size = deployment.spec.serving.limits.max_request_bytes
    memory_mib = instance["memory_gib"] * 1024
    workers, bodies = worker_plan(deployment).workers, max_concurrent_invocations(deployment)
    per_worker = WORST_REQUEST_PEAK_MIB + BODY_COPIES_PER_WORKER * size / MiB
    in_flight = bodies * size / MiB
    heap = FRONTEND_HEAP_SHARE * memory_mib
    if per_worker > memory_mib / workers or in_flight > heap:
        largest = _largest_body_that_fits(memory_mib, workers, bodies)
        raise ConfigError(
            f"{where}: {LIMIT_KEY} = {size} is more than {deployment.target.instance_type} can hold: each of its {workers} "
            f"model-server workers would need about {per_worker:,.0f} MiB for the largest request (of "
            f"{memory_mib / workers:,.0f} MiB each), and {bodies} bodies in flight about "
            f"{in_flight:,.0f} MiB of the model server's {heap:,.0f} MiB Java heap ({DATA_FILE_NAME}; config/async_inference.py "
            f"says how this is estimated). Lower {LIMIT_KEY} to at most {largest}, or lower serving.workers / "
            "serving.async_inference.max_concurrent_invocations_per_instance, or choose an instance with more memory"
        )


def _largest_body_that_fits(memory_mib: float, workers: int, in_flight: int) -> int:
    per_worker = (memory_mib / workers - WORST_REQUEST_PEAK_MIB) / BODY_COPIES_PER_WORKER
    frontend = FRONTEND_HEAP_SHARE * memory_mib / in_flight
    return max(0, int(min(per_worker, frontend) * MiB))
