"""The shape of the YAML files (pydantic, unknown keys refused) and the resolved objects the stacks use."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
import re
from typing import Dict, Iterable, Literal, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from config.errors import ConfigError
from inference_src.request_handling import LIMITS

# async: an instance endpoint fed from S3 through a queue (InvokeEndpointAsync), able to scale to 0 instances.
Profile = Literal["eia", "gpu", "cpu", "serverless", "async"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- files as written


class ScalingSpec(_Strict):
    """Instance counts and target tracking of instance-based endpoints (serverless scales by itself)."""

    # None: on for instance profiles, off for serverless. false deregisters the scalable target,
    # step 1 of changing the instance type of a deployed endpoint (see README).
    autoscaling: Optional[bool] = None
    # The size of a new endpoint: a deployed one keeps the count autoscaling gave it (RetainAllVariantProperties).
    initial_instance_count: int = Field(1, ge=1)
    # 0: scale to zero while idle. cpu/gpu deploy the model as an inference component on a managed-scaling
    # endpoint; async scales its variant on the queue's backlog (config/serving_targets.py checks the profile).
    min_instances: int = Field(1, ge=0)
    max_instances: int = Field(2, ge=1)
    target_invocations_per_instance: int = Field(200, ge=1)

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> "ScalingSpec":
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) is greater than max_instances ({self.max_instances}); "
                "set min_instances <= max_instances"
            )
        if not self.min_instances <= self.initial_instance_count <= self.max_instances:
            raise ValueError(
                f"initial_instance_count ({self.initial_instance_count}) must lie between min_instances "
                f"({self.min_instances}) and max_instances ({self.max_instances})"
            )
        return self


class ScalingOverride(_Strict):
    """Per-environment sizing; each key, when present, replaces the model's value."""

    autoscaling: Optional[bool] = None
    initial_instance_count: Optional[int] = Field(None, ge=1)
    min_instances: Optional[int] = Field(None, ge=0)
    max_instances: Optional[int] = Field(None, ge=1)
    target_invocations_per_instance: Optional[int] = Field(None, ge=1)


class ImagePreprocessingSpec(_Strict):
    """How the handler turns a JPEG/PNG into model input: resize the short side, center-crop, normalize."""

    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet, per RGB channel
    std: Tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (0.229, 0.224, 0.225)
    # None: the crop size * 256/224, the usual ImageNet evaluation resize.
    resize_short_side: Optional[int] = Field(None, ge=1)


Recipe = Literal["auto", "eia-1.3", "eia-1.5", "optimized", "aoti", "trace", "script"]


class BuildSpec(_Strict):
    """What becomes model.pt: an example model or your own factory + weights, and how it is converted."""

    # One of: an example model (random weights, fixed seed), or your own `package.module:function`.
    # MXNet (framework: mxnet): the GluonCV detector of the second source document.
    model: Optional[Literal["example-resnet", "example-resnet-tiny", "example-resnet-50", "ssd_512_mobilenet1.0_coco"]] = None
    factory: Optional[str] = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    # A state_dict (.pth), relative to the repository root; loaded with torch.load(weights_only=True).
    weights: Optional[str] = None
    input_shape: Tuple[int, int, int, int] = (1, 3, 224, 224)
    input_dtype: Literal["float32", "float64", "float16", "bfloat16"] = "float32"
    # auto follows the serving runtime: eia-1.3 (trace), eia-1.5 (script), trace on GPU, on CPU the faster of
    # optimized (TorchScript) and aoti (torch.export + AOTInductor) as measured (config/serving_targets.py).
    recipe: Recipe = "auto"
    # Allow an artifact built by a newer torch than the runtime's (recorded in the manifest, warned at synth).
    allow_newer_torch: bool = False
    image_preprocessing: ImagePreprocessingSpec = Field(default_factory=ImagePreprocessingSpec)

    @model_validator(mode="after")
    def _one_model_source(self) -> "BuildSpec":
        if self.model and self.factory:
            raise ValueError(f"set either model ({self.model!r}, an example) or factory ({self.factory!r}, your own), not both")
        return self

    @property
    def source(self) -> str:
        """The model's name in manifests and messages: the factory, or the example (default example-resnet)."""
        return self.factory or self.model or "example-resnet"

    @model_validator(mode="after")
    def _resize_covers_the_crop(self) -> "BuildSpec":
        short_side, crop = self.image_preprocessing.resize_short_side, max(self.input_shape[2:])
        if short_side is not None and short_side < crop:
            raise ValueError(
                f"image_preprocessing.resize_short_side ({short_side}) is smaller than the model input "
                f"({self.input_shape[2]}x{self.input_shape[3]}); set it to at least {crop}"
            )
        return self


class ProfileSettings(_Strict):
    instance_type: Optional[str] = None
    accelerator_type: Optional[str] = None
    framework_version: Optional[str] = None
    # serverless only; the bounds are SageMaker's (ProductionVariantServerlessConfig).
    memory_size_mb: Optional[int] = Field(None, ge=1024, le=6144, multiple_of=1024)
    max_concurrency: Optional[int] = Field(None, ge=1, le=200)


class DeploymentSpec(_Strict):
    """How an endpoint update reaches traffic. EIA endpoints never supported traffic shifting."""

    # auto: canary where blue/green is supported, all_at_once on EIA.
    strategy: Literal["auto", "canary", "linear", "all_at_once"] = "auto"
    canary_percent: int = Field(10, ge=1, le=50)
    linear_step_percent: int = Field(25, ge=5, le=50)
    # Baking time between traffic steps, watched by the rollback alarms.
    wait_seconds: int = Field(300, ge=0, le=3600)
    termination_wait_seconds: int = Field(120, ge=0, le=3600)
    maximum_execution_timeout_seconds: int = Field(3600, ge=600, le=14400)


class AlarmSpec(_Strict):
    """Per-endpoint alarms; they also roll back a blue/green update that trips them."""

    max_5xx_errors_per_minute: int = Field(1, ge=1)
    max_model_latency_p90_ms: int = Field(1000, ge=1)
    evaluation_minutes: int = Field(3, ge=1, le=60)


# The handlers' own defaults (used when the container environment lacks a limit) are the config's.
_DEFAULT_LIMITS = {limit.key: limit.default for limit in LIMITS}
# Pillow refuses images over twice its MAX_IMAGE_PIXELS (89,478,485) outright; ours must stay below.
PILLOW_IMAGE_PIXELS = 89_478_485
# InvokeEndpoint's payload limit (SageMaker API reference, InvokeEndpoint: "Maximum payload size 6 MB").
REALTIME_MAX_REQUEST_BYTES = 6 * 1024 * 1024
# InvokeEndpointAsync reads the payload from S3: "payload sizes up to 1GB" (SageMaker developer guide,
# "Asynchronous inference"). The async default, and why: config/async_inference.py.
ASYNC_MAX_REQUEST_BYTES = 1_000_000_000
ASYNC_DEFAULT_REQUEST_BYTES = 16 * 1024 * 1024


class RequestLimits(_Strict):
    """What one request may make a worker hold or compute; each refusal is a 4xx naming its key.

    The defaults fit the smallest host of every profile: the worst request they admit was measured
    (README, "Request limits") against each host's memory divided by its workers.
    """

    # Bodies above this get a 413. SageMaker refuses more than 6 MiB on real-time profiles and reads up to 1 GB
    # from S3 for async (config/async_inference.py checks the cap per profile; async defaults to 16 MiB).
    max_request_bytes: int = Field(_DEFAULT_LIMITS["max_request_bytes"], ge=1024, le=ASYNC_MAX_REQUEST_BYTES)
    # "images": [...] in one JSON request (each decoded and cropped in turn, never all at once).
    max_images_per_request: int = Field(_DEFAULT_LIMITS["max_images_per_request"], ge=1, le=256)
    # One image's width x height, read from its header before anything is decoded (decompression bombs).
    max_image_pixels: int = Field(_DEFAULT_LIMITS["max_image_pixels"], ge=1024, le=PILLOW_IMAGE_PIXELS)
    # The pixels decoded for the whole request, after JPEG draft reduction: bounds its CPU time.
    max_pixels_per_request: int = Field(_DEFAULT_LIMITS["max_pixels_per_request"], ge=1024)
    # Rows of an npy or {"instances": ...} batch: bounds the forward pass's memory.
    max_batch_size: int = Field(_DEFAULT_LIMITS["max_batch_size"], ge=1, le=1024)


class AsyncInferenceSpec(_Strict):
    """serving.profile: async: requests queued from S3, answers written to S3 and announced on SNS."""

    # ClientConfig.MaxConcurrentInvocationsPerInstance; None: the instance's model-server workers.
    max_concurrent_invocations_per_instance: Optional[int] = Field(None, ge=1, le=1000)
    # Target tracking on ApproximateBacklogSizePerInstance: queued requests per instance.
    target_backlog_per_instance: int = Field(5, ge=1)
    # A lifecycle rule deletes the model's requests, answers and failures this long after they are written:
    # how long a client has to fetch an answer (a request waits in the queue at most 6 hours).
    expire_after_days: int = Field(7, ge=1, le=3650)


class ShadowSpec(_Strict):
    """A candidate profile served as a shadow variant: it gets a copy of live requests, its answers are dropped."""

    profile: Profile
    # The share of live requests copied to the shadow (its weight relative to the live variant's).
    sampling_percent: int = Field(100, ge=1, le=100)
    instance_count: int = Field(1, ge=1)


class ServingSpec(_Strict):
    profile: Profile = "eia"
    profiles: Dict[Profile, ProfileSettings] = Field(default_factory=dict)
    # The spec asks for AmazonSageMakerFullAccess; false leaves only the scoped grants.
    attach_sagemaker_full_access: bool = True
    # The handler needs no network; isolation also stops the container pip-installing at start.
    # None: on, except serverless, which does not support it.
    network_isolation: Optional[bool] = None
    # Instance types with local NVMe storage refuse a KMS key on the endpoint config (their volume is
    # hardware-encrypted): drop the key with a synth warning, or refuse the instance type.
    kms_on_local_storage: Literal["drop", "refuse"] = "drop"
    limits: RequestLimits = Field(default_factory=RequestLimits)
    # Model-server workers per instance and intra-op threads per worker. None: from the instance's vCPUs
    # (config/data/instance_types.json) and the split benchmarks/ measured best (config/workers.py).
    workers: Optional[int] = Field(None, ge=1, le=192)
    threads_per_worker: Optional[int] = Field(None, ge=1, le=192)
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec)
    alarms: AlarmSpec = Field(default_factory=AlarmSpec)
    async_inference: AsyncInferenceSpec = Field(default_factory=AsyncInferenceSpec)
    # A profile switch tried on live traffic first (README, "Switching the profile of a deployed endpoint").
    shadow: Optional[ShadowSpec] = None

    @model_validator(mode="before")
    @classmethod
    def _async_request_size_default(cls, data):
        """serving.profile: async takes its bodies from S3: serving.limits.max_request_bytes defaults higher there."""
        if isinstance(data, dict) and data.get("profile") == "async":
            limits = data.get("limits") or {}
            if isinstance(limits, dict) and "max_request_bytes" not in limits:
                data = {**data, "limits": {**limits, "max_request_bytes": ASYNC_DEFAULT_REQUEST_BYTES}}
        return data


class ModelSpec(_Strict):
    framework: Literal["pytorch", "mxnet"] = "pytorch"
    # Which of the environment's serving stacks holds it (1 = Serving, 2 = Serving02, ...). Omitted: placed by
    # its name (config/placement.py). Pin a deployed model before changing app.yaml's serving_stacks.
    serving_stack: Optional[int] = Field(None, ge=1)
    build: BuildSpec = Field(default_factory=BuildSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)


ACCOUNT_PATTERN = r"^\d{12}$"
REGION_PATTERN = r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$"


class DataCaptureSpec(_Strict):
    """Endpoint data capture (requests and answers, sampled) under the artifact bucket, with its KMS key."""

    enabled: bool = False
    sampling_percent: int = Field(20, ge=1, le=100)  # DataCaptureConfig.InitialSamplingPercentage
    capture: Tuple[Literal["input", "output"], ...] = Field(("input", "output"), min_length=1)
    # Captured bodies of these content types are stored as text; any other (JPEG, npy) base64-encoded.
    json_content_types: Tuple[str, ...] = Field(("application/json",), max_length=10)
    csv_content_types: Tuple[str, ...] = Field(("text/csv",), max_length=10)
    # A lifecycle rule on the capture prefix deletes captured data this many days after it is written.
    expire_after_days: int = Field(30, ge=1, le=3650)


class EnvironmentSpec(_Strict):
    account: str = Field(pattern=ACCOUNT_PATTERN)
    region: str = Field(pattern=REGION_PATTERN)
    retain_data: bool = False
    termination_protection: bool = False
    scaling: ScalingOverride = Field(default_factory=ScalingOverride)
    data_capture: DataCaptureSpec = Field(default_factory=DataCaptureSpec)


# Letters, digits and single hyphens: it leads stack, endpoint, export and role names.
NAME_PREFIX_PATTERN = r"^([a-zA-Z][a-zA-Z0-9]*(-[a-zA-Z0-9]+)*)?$"


MAX_SERVING_STACKS = 18


class AppSpec(_Strict):
    """config/app.yaml (optional): settings of the whole app."""

    # Leads every physical name (stacks, endpoints, exports, smoke-test roles), so that a second copy of the
    # app in the same account (a sandbox, a branch) names nothing the first one owns. Empty: no prefix.
    name_prefix: str = Field("", max_length=20, pattern=NAME_PREFIX_PATTERN)
    # How many serving stacks an environment may use: models spread over them, so that no stack nears
    # CloudFormation's quotas (500 resources, 1 MB template). At most 18, so that an environment deploys in one
    # pipeline stage: each stack is 2 actions, CodePipeline allows 50 per stage (CDK Pipelines would split a bigger
    # stage in two), and 18 x 2 + the artifact store, approval and smoke test = 40, 80 %.
    serving_stacks: int = Field(16, ge=1, le=MAX_SERVING_STACKS)


class PipelineSpec(_Strict):
    """config/pipeline.yaml: the delivery pipeline, in a tools account, promoting one commit."""

    account: str = Field(pattern=ACCOUNT_PATTERN)
    region: str = Field(pattern=REGION_PATTERN)
    repository: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")  # owner/name
    branch: str = Field(min_length=1)
    # CodeConnections (formerly CodeStar Connections); CodeCommit is closed to new customers.
    connection_arn: str = Field(
        pattern=r"^arn:aws[a-z-]*:(codeconnections|codestar-connections):[a-z0-9-]+:\d{12}:connection/[0-9a-f-]{36}$"
    )
    manual_approval_before: Tuple[str, ...] = ("prod",)
    smoke_test_after: Tuple[str, ...] = ("staging", "prod")


# ---------------------------------------------------------------- physical names

ARTIFACT_STORE_STACK, SERVING_STACK, PIPELINE_STACK = "ArtifactStore", "Serving", "Pipeline"
# SageMaker's rule for endpoint names (CreateEndpoint's EndpointName).
ENDPOINT_NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
ENDPOINT_NAME_MAX_LENGTH = 63
ROLE_NAME_MAX_LENGTH = 64  # IAM


def qualified(name_prefix: str, *parts: str) -> str:
    """'<prefix>-<part>-...', or the parts alone without a prefix (the names deployed before prefixes existed)."""
    return "-".join(part for part in (name_prefix, *parts) if part)


# ---------------------------------------------------------------- resolved, per environment


@dataclass(frozen=True)
class ServingTarget:
    """The active serving profile of one model in one region, checked against the SDK's image tables."""

    profile: str
    framework: str
    framework_version: str
    py_version: str
    instance_type: Optional[str]  # None for serverless
    accelerator_type: Optional[str]
    recipe: str
    region: str
    source: str  # the model file, for messages
    network_isolation: bool = True
    memory_size_mb: Optional[int] = None  # serverless only
    max_concurrency: Optional[int] = None  # serverless only

    @cached_property
    def image_uri(self) -> str:
        """From the SageMaker SDK (sagemaker-core image_uris), asked only when needed: importing it takes ~3 s."""
        from config.serving_targets import retrieve_image_uri

        return retrieve_image_uri(self)

    @property
    def is_serverless(self) -> bool:
        return self.profile == "serverless"

    @property
    def is_async(self) -> bool:
        return self.profile == "async"


@dataclass(frozen=True)
class ModelDeployment:
    name: str
    spec: ModelSpec
    target: ServingTarget
    scaling: ScalingSpec
    serving_stack: int = 1  # which of the environment's serving stacks holds it (config/placement.py)
    # serving.shadow resolved like the live profile (its own image and artifact); None without a shadow.
    shadow: Optional[ServingTarget] = None
    data_capture: Optional["DataCaptureSpec"] = None  # the environment's, when enabled

    @property
    def scales_to_zero(self) -> bool:
        return self.scaling.min_instances == 0

    @property
    def uses_inference_component(self) -> bool:
        """Scale to zero on a real-time instance profile: the model is an inference component of the endpoint."""
        return self.scales_to_zero and self.target.profile in ("cpu", "gpu")

    @property
    def autoscaling(self) -> bool:
        """Whether the endpoint gets a scalable target (validated against the profile at load time)."""
        if self.scaling.autoscaling is None:
            return not self.target.is_serverless
        return self.scaling.autoscaling

    @property
    def deployment_strategy(self) -> str:
        """canary, linear or all_at_once (validated against the profile when the config loads)."""
        strategy = self.spec.serving.deployment.strategy
        if strategy == "auto":
            # An async endpoint scaled to zero has no capacity to shift in steps (config/async_inference.py).
            return "all_at_once" if self.target.profile == "eia" or (self.target.is_async and self.scales_to_zero) else "canary"
        return strategy


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    account: str
    region: str
    retain_data: bool
    termination_protection: bool
    models: Tuple[ModelDeployment, ...]
    name_prefix: str = ""

    @property
    def data_capture(self) -> Optional["DataCaptureSpec"]:
        """The environment's data capture when enabled (every model carries the same spec); None otherwise."""
        return next((m.data_capture for m in self.models if m.data_capture is not None), None)

    # The one definition of the names this environment's resources carry (the stacks use these, the
    # loader checks them against SageMaker's and IAM's limits).
    @property
    def stage_id(self) -> str:
        return self.name.capitalize()

    def stack_name(self, stack_id: str) -> str:
        return qualified(self.name_prefix, self.stage_id, stack_id)

    def serving_stacks(self, with_smoke_test_role: bool = False) -> Dict[int, Tuple[ModelDeployment, ...]]:
        """Stack number -> its models, in number order: the stacks a model lives in, and stack 1 (Serving) for the
        stage's smoke-test role when there is one."""
        numbers = sorted({*([1] if with_smoke_test_role else []), *(m.serving_stack for m in self.models)})
        return {n: tuple(m for m in self.models if m.serving_stack == n) for n in numbers}

    def endpoint_name(self, model_name: str) -> str:
        return f"{self.stack_name(SERVING_STACK)}-{model_name}"

    @property
    def smoke_test_role_name(self) -> str:
        """The role in this environment's account that the pipeline's smoke test assumes."""
        return f"{self.stack_name(SERVING_STACK)}-SmokeTest"

    @property
    def pipeline_smoke_test_role_name(self) -> str:
        """The role in the tools account that runs this stage's smoke test: the only one the role above trusts."""
        return f"{qualified(self.name_prefix, PIPELINE_STACK)}-SmokeTest-{self.stage_id}"


@dataclass(frozen=True)
class AppConfig:
    environments: Tuple[EnvironmentConfig, ...]
    models: Dict[str, ModelSpec]
    pipeline: Optional[PipelineSpec] = None
    name_prefix: str = ""

    @property
    def pipeline_stack_name(self) -> str:
        return qualified(self.name_prefix, PIPELINE_STACK)

    def with_accounts(self, accounts: Dict[str, str]) -> "AppConfig":
        """Replace placeholder account ids with real ones (validated like the YAML values).

        Keys are environment names, plus "pipeline" for the tools account.
        """
        for name, account in accounts.items():
            if not re.fullmatch(r"\d{12}", account):
                raise ConfigError(f"account for {name!r} (from -c {name}_account or {name.upper()}_ACCOUNT_ID) must be 12 digits, got {account!r}")
        pipeline = self.pipeline
        if pipeline is not None and "pipeline" in accounts:
            pipeline = pipeline.model_copy(update={"account": accounts["pipeline"]})
        return replace(
            self,
            environments=tuple(replace(env, account=accounts.get(env.name, env.account)) for env in self.environments),
            pipeline=pipeline,
        )

    def only_models(self, names: Iterable[str]) -> "AppConfig":
        """The app restricted to `names` (infra_diff synthesizes only the models a change touches); names the
        configuration lacks are ignored, as a diff passes the models either side has."""
        keep = set(names)
        return replace(
            self,
            models={name: spec for name, spec in self.models.items() if name in keep},
            environments=tuple(replace(env, models=tuple(m for m in env.models if m.name in keep)) for env in self.environments),
        )

    def environment(self, name: str) -> EnvironmentConfig:
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(name)
