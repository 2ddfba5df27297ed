"""Resolve a model's active serving profile into an image URI, checking the combination first.

Image URIs come from the SageMaker SDK's own tables (sagemaker-core `image_uris`), which work
offline. Every refusal is a ConfigError naming the key, the bad value and what is accepted.
"""
from __future__ import annotations

import difflib
import gzip
import json
import re
from functools import lru_cache
from importlib.metadata import distribution
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from config.errors import ConfigError
from config.schema import ModelSpec, ProfileSettings, ServingTarget

EIA_ACCELERATOR_TYPES = (
    "ml.eia1.medium",
    "ml.eia1.large",
    "ml.eia1.xlarge",
    "ml.eia2.medium",
    "ml.eia2.large",
    "ml.eia2.xlarge",
)

# Built-in settings per profile; a model file overrides any of them under serving.profiles.<profile>.
PROFILE_DEFAULTS: Dict[str, ProfileSettings] = {
    "eia": ProfileSettings(instance_type="ml.m5.large", accelerator_type="ml.eia2.medium", framework_version="1.5.1"),
    "gpu": ProfileSettings(instance_type="ml.g4dn.xlarge", framework_version="2.6.0"),
    "cpu": ProfileSettings(instance_type="ml.c5.xlarge", framework_version="2.6.0"),
    "serverless": ProfileSettings(framework_version="2.6.0", memory_size_mb=3072, max_concurrency=10),
    "async": ProfileSettings(instance_type="ml.c5.xlarge", framework_version="2.6.0"),
}
SERVERLESS = "serverless"
# The second source document: GluonCV SSD on MXNet 1.4.1 with ml.c5.xlarge + ml.eia2.large.
MXNET_PROFILE_DEFAULTS: Dict[str, ProfileSettings] = {
    "eia": ProfileSettings(instance_type="ml.c5.xlarge", accelerator_type="ml.eia2.large", framework_version="1.4.1"),
    "gpu": ProfileSettings(instance_type="ml.g4dn.xlarge", framework_version="1.9.0"),
    "cpu": ProfileSettings(instance_type="ml.c5.xlarge", framework_version="1.9.0"),
    "serverless": ProfileSettings(framework_version="1.9.0", memory_size_mb=4096, max_concurrency=5),
    "async": ProfileSettings(instance_type="ml.c5.xlarge", framework_version="1.9.0"),
}
FRAMEWORK_PROFILE_DEFAULTS = {"pytorch": PROFILE_DEFAULTS, "mxnet": MXNET_PROFILE_DEFAULTS}
MXNET_MODELS = ("ssd_512_mobilenet1.0_coco",)
MXNET_RECIPE = "mxnet-symbol"  # net.export(): model-symbol.json + model-0000.params

# The recommended replacement for each EIA host when EI cannot be launched.
EIA_SUCCESSOR_PROFILE = "gpu"

_INSTANCE_TYPE = re.compile(r"^ml\.(?P<family>[a-z][a-z0-9-]*)\.(?P<size>[a-z0-9]+)$")
_LOCAL_STORAGE_FILE = Path(__file__).parent / "data" / "local_storage_instance_families.json"


def image_registry_and_repository(image_uri: str) -> Tuple[str, str]:
    """`<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>` -> (account, repository)."""
    host, _, path = image_uri.partition("/")
    return host.split(".")[0], path.split(":")[0]


def instance_family(instance_type: str) -> str:
    match = _INSTANCE_TYPE.match(instance_type)
    return match.group("family") if match else ""


def is_gpu_family(family: str) -> bool:
    # The SDK's own rule (image_uris._processor): g* and p* families get the GPU image.
    return family[:1] in ("g", "p")


def is_arm_family(family: str) -> bool:
    # Graviton families carry a g after the generation: c6g, c7gn, m6gd, r7g (g4dn, g5 are GPU families).
    return re.fullmatch(r"[a-z]+\d+g[a-z]*", family) is not None and not is_gpu_family(family)


def is_neuron_family(family: str) -> bool:
    return family.startswith(("inf", "trn"))


@lru_cache(maxsize=None)
def _local_storage_families() -> frozenset:
    return frozenset(json.loads(_LOCAL_STORAGE_FILE.read_text())["families"])


def has_local_instance_storage(instance_type: str) -> bool:
    """True for NVMe instance-store families, on which SageMaker refuses a KmsKeyId."""
    return instance_family(instance_type) in _local_storage_families()


@lru_cache(maxsize=None)
def _framework_table(framework: str) -> dict:
    """The SDK's own image table (the file sagemaker-core's image_uris.config_for_framework reads),
    located without importing the SDK, which takes ~3 s."""
    path = Path(distribution("sagemaker-core").locate_file(f"sagemaker/core/image_uri_config/{framework}.json"))
    return json.loads(path.read_text())


def _scope_table(framework: str, profile: str) -> dict:
    table = _framework_table(framework)
    return table["eia"] if profile == "eia" else table["inference"]


def _versions(scope_table: dict) -> List[str]:
    return list(scope_table["versions"]) + list(scope_table.get("version_aliases", {}))


def _recipe_for(spec: ModelSpec, profile: str, framework_version: str, where: str) -> str:
    """The conversion recipe: the configured one if the runtime can load it, else the runtime's own."""
    if spec.framework == "mxnet":
        return MXNET_RECIPE
    recipe = spec.build.recipe
    runtime_recipe = _runtime_recipe(profile, framework_version)
    if recipe == "aoti":
        _check_aoti(spec, profile, framework_version, where)
        return recipe
    if recipe == "auto":
        return runtime_recipe
    if recipe in ("trace", "script", runtime_recipe) or (recipe == "optimized" and profile in CPU_PROFILES):
        return recipe
    if recipe.startswith("eia-"):
        why = f"is for the Elastic Inference torch {recipe[4:]} runtime, but this model serves on {profile} {framework_version}"
    elif profile == "eia":
        why = f"needs torch.jit.freeze and optimize_for_inference, which the EIA torch {framework_version} runtime lacks"
    else:  # optimized on a GPU
        why = "freezes weights as CPU constants that .to('cuda') does not move, so the GPU runtime would run on the CPU"
    raise ConfigError(f"{where}: build.recipe = {recipe!r} {why}; use auto ({runtime_recipe}), trace or script")


# What `recipe: auto` builds for the CPU profiles: the form `make bench` measured faster in the runtime's own torch
# (benchmarks/README.md, "latency"): cpu by steady-state latency at batch 1 and 8, serverless by cold start, which
# a serverless endpoint pays whenever it scales out. benchmarks.latency.preferred_recipes derives this from the
# results; tests/test_benchmarks.py fails when the committed results say otherwise.
MEASURED_CPU_RECIPES = {"cpu": "optimized", "serverless": "optimized"}
CPU_PROFILES = tuple(MEASURED_CPU_RECIPES)
AOTI_MIN_FRAMEWORK = (2, 6)  # torch.export + AOTInductor packages as model_artifacts.runtime_export builds them


def _runtime_recipe(profile: str, framework_version: str) -> str:
    # The seed: trace for the 1.3.1 EIA runtime, script for 1.5.1. Elsewhere: trace on GPUs, on CPUs the measured one.
    if profile == "eia":
        return "eia-1.3" if framework_version.startswith("1.3") else "eia-1.5"
    return "trace" if profile == "gpu" else MEASURED_CPU_RECIPES[profile]


def _check_aoti(spec: ModelSpec, profile: str, framework_version: str, where: str) -> None:
    """AOTInductor compiles for x86-64 CPUs (AVX2) in the runtime's own torch, which must be 2.6 or newer."""
    fix = "use build.recipe: auto (or optimized, TorchScript)"
    if profile not in CPU_PROFILES:
        raise ConfigError(
            f"{where}: build.recipe = 'aoti' compiles the model for x86-64 CPUs, but serving.profile is {profile!r}"
            + (" (the accelerator runs TorchScript only)" if profile == "eia" else " (the package would not use the GPU)")
            + f"; {fix}, or serve on serving.profile: cpu or serverless"
        )
    if tuple(int(part) for part in framework_version.split(".")[:2]) < AOTI_MIN_FRAMEWORK:
        raise ConfigError(
            f"{where}: build.recipe = 'aoti' needs torch >= {'.'.join(map(str, AOTI_MIN_FRAMEWORK))} in the serving image "
            f"(torch.export and AOTInductor packages), but serving.profiles.{profile}.framework_version is {framework_version!r}; "
            f"{fix}, or set framework_version: 2.6.0"
        )
    instance_type = active_profile_settings(spec).instance_type or ""
    if is_arm_family(instance_family(instance_type)):
        raise ConfigError(
            f"{where}: build.recipe = 'aoti' compiles for x86-64, but serving.profiles.{profile}.instance_type = "
            f"{instance_type!r} is an Arm (Graviton) instance; {fix}, or choose an x86 instance (e.g. ml.c5.xlarge)"
        )


def active_profile_settings(spec: ModelSpec) -> ProfileSettings:
    profile = spec.serving.profile
    merged = FRAMEWORK_PROFILE_DEFAULTS[spec.framework][profile].model_dump()
    override = spec.serving.profiles.get(profile)
    if override is not None:
        merged.update({k: v for k, v in override.model_dump().items() if v is not None})
    return ProfileSettings(**merged)


def hardware_profile(profile: str, instance_type: Optional[str]) -> str:
    """The profile whose build recipe and runtime fit: async runs the gpu or cpu image, by its instance type."""
    if profile == "async":
        return "gpu" if is_gpu_family(instance_family(instance_type or "")) else "cpu"
    return profile


def resolve_target(spec: ModelSpec, region: str, where: str, env_where: str) -> ServingTarget:
    """Check the active profile of `spec` for `region` and return the resolved target.

    `where` names the model file, `env_where` the environment file, for error messages.
    """
    profile = spec.serving.profile
    settings = active_profile_settings(spec)
    _check_build_fits_framework(spec, where)
    if profile == "serverless":
        _check_serverless(spec, settings, where)
    else:
        _check_instance(profile, settings, where)
        _check_serverless_keys_unused(profile, spec, where)
    _check_accelerator(profile, settings, where)
    _check_deployment_strategy(spec, where)
    _check_local_storage_kms(spec, settings, where)

    version, py_version = _image_version(spec, settings, region, where, env_where)
    return ServingTarget(
        profile=profile,
        framework=spec.framework,
        framework_version=version,
        py_version=py_version,
        instance_type=settings.instance_type,
        accelerator_type=settings.accelerator_type,
        recipe=_recipe_for(spec, hardware_profile(profile, settings.instance_type), version, where),
        region=region,
        source=where,
        network_isolation=_network_isolation(spec, where),
        memory_size_mb=settings.memory_size_mb,
        max_concurrency=settings.max_concurrency,
    )


def eia_successor(spec: ModelSpec, region: str, where: str) -> Optional[ServingTarget]:
    """What `serving.profile: gpu` would deploy for this model: its own framework's GPU image and the model
    file's own gpu settings. None when this region has no such image (the warning then names none)."""
    gpu_spec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"profile": EIA_SUCCESSOR_PROFILE})})
    settings = active_profile_settings(gpu_spec)
    try:
        version, py_version = _image_version(gpu_spec, settings, region, where, where)
    except ConfigError:
        return None
    return ServingTarget(
        profile=EIA_SUCCESSOR_PROFILE, framework=spec.framework, framework_version=version, py_version=py_version,
        instance_type=settings.instance_type, accelerator_type=None, recipe="", region=region, source=where,
    )


@lru_cache(maxsize=None)
def hosting_instance_types() -> Tuple[str, ...]:
    """The instance types SageMaker hosting accepts: ProductionVariantInstanceType in botocore's model of
    the SageMaker API, read from its data file (a botocore session takes ~0.5 s to load it)."""
    model = distribution("botocore").locate_file("botocore/data/sagemaker/2017-07-24/service-2.json.gz")
    shapes = json.loads(gzip.decompress(Path(model).read_bytes()))["shapes"]
    return tuple(shapes["ProductionVariantInstanceType"]["enum"])


def _check_build_fits_framework(spec: ModelSpec, where: str) -> None:
    build = spec.build
    if spec.framework == "mxnet":
        torch_only = (["factory"] if build.factory else []) + (["recipe"] if build.recipe != "auto" else [])
        if build.model not in MXNET_MODELS or torch_only:
            raise ConfigError(
                f"{where}: framework: mxnet builds the GluonCV detector: set build.model to one of {', '.join(MXNET_MODELS)}"
                + (f" and remove build.{', build.'.join(torch_only)} (PyTorch only)" if torch_only else "")
            )
    elif build.model in MXNET_MODELS:
        raise ConfigError(f"{where}: build.model = {build.model!r} is an MXNet model; set framework: mxnet")


def _check_instance(profile: str, settings: ProfileSettings, where: str) -> None:
    key = f"serving.profiles.{profile}.instance_type"
    instance_type = settings.instance_type or ""
    family = instance_family(instance_type)
    if not family:
        raise ConfigError(f"{where}: {key} = {instance_type!r} is not a SageMaker instance type; use the form ml.<family>.<size>, e.g. ml.m5.large")
    if instance_type not in hosting_instance_types():
        same_family = [t for t in hosting_instance_types() if instance_family(t) == family]
        close = difflib.get_close_matches(instance_type, hosting_instance_types(), n=3, cutoff=0.8)
        hint = f"ml.{family} sizes it offers: {', '.join(same_family)}; " if same_family else (
            f"did you mean {', '.join(close)}? " if close else "")
        raise ConfigError(
            f"{where}: {key} = {instance_type!r} is not an instance type SageMaker hosting offers; {hint}"
            "the accepted list is the SageMaker API's ProductionVariantInstanceType (botocore)"
        )
    if profile == "gpu" and not is_gpu_family(family):
        raise ConfigError(
            f"{where}: {key} = {instance_type!r} has no GPU but serving.profile is 'gpu'; "
            "use a GPU family (ml.g4dn.*, ml.g5.*, ml.g6.*, ml.p3.*) or change serving.profile to 'cpu'"
        )
    if profile == "async" and is_neuron_family(family):
        raise ConfigError(
            f"{where}: {key} = {instance_type!r} is an Inferentia/Trainium instance, which needs a Neuron image this "
            "project does not build for; use a CPU (ml.c5.xlarge) or GPU (ml.g4dn.xlarge) instance for serving.profile: async"
        )
    if profile in ("eia", "cpu") and (is_gpu_family(family) or is_neuron_family(family)):
        raise ConfigError(
            f"{where}: {key} = {instance_type!r} is an accelerated instance but serving.profile "
            f"is {profile!r}; the {profile} profile runs on a CPU host (e.g. ml.m5.large, ml.c5.xlarge). "
            "For a GPU instance set serving.profile: gpu"
        )


def _check_serverless(spec: ModelSpec, settings: ProfileSettings, where: str) -> None:
    key = "serving.profiles.serverless"
    if settings.instance_type:
        raise ConfigError(
            f"{where}: {key}.instance_type = {settings.instance_type!r}: serverless endpoints have no instance type; "
            f"remove it and size the endpoint with {key}.memory_size_mb and max_concurrency"
        )
    if spec.scaling.autoscaling:
        raise ConfigError(
            f"{where}: scaling.autoscaling = true with serving.profile: serverless; serverless endpoints scale "
            f"by themselves up to {key}.max_concurrency. Remove scaling.autoscaling, or choose an instance profile (cpu, gpu)"
        )


def _check_serverless_keys_unused(profile: str, spec: ModelSpec, where: str) -> None:
    override = spec.serving.profiles.get(profile)
    for field in ("memory_size_mb", "max_concurrency"):
        if override is not None and getattr(override, field) is not None:
            raise ConfigError(
                f"{where}: serving.profiles.{profile}.{field} applies only to serving.profile: serverless; "
                f"remove it (the {profile} profile is sized by instance_type and scaling)"
            )


def _check_accelerator(profile: str, settings: ProfileSettings, where: str) -> None:
    key = f"serving.profiles.{profile}.accelerator_type"
    accelerator = settings.accelerator_type
    if profile == "eia":
        if accelerator not in EIA_ACCELERATOR_TYPES:
            raise ConfigError(
                f"{where}: {key} = {accelerator!r} is not an Elastic Inference accelerator; accepted: {', '.join(EIA_ACCELERATOR_TYPES)}"
            )
    elif accelerator:
        raise ConfigError(
            f"{where}: {key} = {accelerator!r} is set but accelerators attach only to the "
            "eia profile; remove accelerator_type or set serving.profile: eia"
        )


def _check_deployment_strategy(spec: ModelSpec, where: str) -> None:
    strategy = spec.serving.deployment.strategy
    if spec.serving.profile == "eia" and strategy in ("canary", "linear"):
        raise ConfigError(
            f"{where}: serving.deployment.strategy = {strategy!r} needs blue/green traffic shifting, which "
            "Elastic Inference endpoints never supported; use all_at_once (or auto) with the eia profile, "
            f"or set serving.profile: {EIA_SUCCESSOR_PROFILE}"
        )


def _check_local_storage_kms(spec: ModelSpec, settings: ProfileSettings, where: str) -> None:
    instance_type = settings.instance_type
    if instance_type and has_local_instance_storage(instance_type) and spec.serving.kms_on_local_storage == "refuse":
        raise ConfigError(
            f"{where}: serving.profiles.{spec.serving.profile}.instance_type = {instance_type!r} has local NVMe "
            "instance storage, where SageMaker rejects a KMS key on the endpoint config, and "
            "serving.kms_on_local_storage is 'refuse'. Set it to 'drop' (the NVMe volume is hardware-encrypted) "
            "or choose an EBS-backed instance type"
        )


def _network_isolation(spec: ModelSpec, where: str) -> bool:
    requested = spec.serving.network_isolation
    if spec.serving.profile != "serverless":
        return True if requested is None else requested
    if requested:
        raise ConfigError(
            f"{where}: serving.network_isolation = true with serving.profile: serverless; serverless endpoints "
            "do not support network isolation. Remove serving.network_isolation, or choose an instance profile"
        )
    return False


def _image_version(spec: ModelSpec, settings: ProfileSettings, region: str, where: str, env_where: str) -> Tuple[str, str]:
    """(framework version, python version) of an image the SDK's tables list for this region."""
    profile = spec.serving.profile
    table = _scope_table(spec.framework, profile)
    version = settings.framework_version or ""
    if version not in _versions(table):
        kind = "an Elastic Inference image" if profile == "eia" else "a SageMaker inference image"
        raise ConfigError(
            f"{where}: serving.profiles.{profile}.framework_version = {version!r} has no {spec.framework} {kind}; "
            f"accepted: {', '.join(_versions(table))}"
        )
    version = table.get("version_aliases", {}).get(version, version)
    version_table = table["versions"][version]
    registries = version_table.get("registries", {})
    if region not in registries:
        raise ConfigError(
            f"{env_where}: region = {region!r} has no {version_table['repository']}:{version} image "
            f"(needed by {where}, profile {profile!r}); regions with it: {', '.join(sorted(registries))}. "
            "Deploy to one of them or choose another serving.profile"
        )
    return version, version_table["py_versions"][-1]


def retrieve_image_uri(target: ServingTarget) -> str:
    try:
        return _sdk_image_uri(target.framework, target.region, target.framework_version, target.py_version, target.instance_type,
                              target.accelerator_type, target.is_serverless)
    except ValueError as error:  # the SDK's own refusal, e.g. an unsupported processor
        raise ConfigError(f"{target.source}: the SageMaker SDK has no image for this serving profile: {error}") from None


@lru_cache(maxsize=None)
def _sdk_image_uri(framework: str, region: str, version: str, py_version: str, instance_type: Optional[str],
                   accelerator_type: Optional[str], serverless: bool) -> str:
    """The SDK's lookup (~0.15 s: it reads its JSON tables every time), once per distinct image: 100 models in 3
    environments ask for a handful."""
    from sagemaker.core import image_uris

    return image_uris.retrieve(
        framework,
        region,
        version=version,
        py_version=py_version,
        instance_type=instance_type,
        accelerator_type=accelerator_type,
        image_scope="inference",
        # Serverless has no instance type; the SDK then picks the CPU image from any non-None config.
        serverless_inference_config=SERVERLESS if serverless else None,
    )
