"""serving.shadow: a candidate profile served as a shadow variant of the live endpoint (a profile switch tried on
live traffic first). SageMaker copies a share of the live requests to it and drops its answers.

The shadow is resolved like the live profile (resolve_target on a copy of the model spec with the shadow profile),
so every check of a profile applies to it, and it gets its own image and its own artifact (build/artifacts/<name>.shadow/).

SageMaker's constraints, with their sources:
- One production variant and at most one shadow variant per endpoint config (botocore, CreateEndpointConfig
  ShadowProductionVariants: "you can only specify one variant for ProductionVariants and one variant for
  ShadowProductionVariants"). This project deploys one live variant, so that always holds.
- Shadow testing is refused on serverless and asynchronous endpoints (SageMaker Developer Guide, "Create a shadow
  test", Prerequisites: serverless inference, asynchronous inference, Marketplace containers, multi-container and
  multi-model endpoints lead to validation errors). Shadow variants are real-time instance variants: both the live
  and the shadow profile must be eia/cpu/gpu, and the shadow one of cpu/gpu (below).
- AcceleratorType "is no longer supported. Elastic Inference (EI) is no longer available" (botocore,
  ProductionVariant.AcceleratorType): an EIA shadow would be a new EI attachment, which accounts cannot launch.
- An inference-component endpoint (scaling.min_instances: 0 on cpu/gpu) holds no model in its variants: there is no
  model variant to copy requests to (ShadowProductionVariants entries name a ModelName, ProductionVariant shape);
  config/scale_to_zero.py refuses that combination.
- Blue/green updates: the deployment-guardrail exclusions (SageMaker Developer Guide, "Exclusions") list
  Marketplace containers and Inf1 instances, not shadow variants, and ask that the live variant keeps its name
  (it does: AllTraffic). The strategy is therefore left as configured; the rollback alarms watch the live variant.
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

from config.errors import ConfigError
from config.schema import ModelDeployment, ModelSpec, ServingTarget
from config.serving_targets import resolve_target

SHADOW_VARIANT_NAME = "Shadow"  # beside the live variant, AllTraffic
# build/artifacts/<name>.shadow/: model names are letters, digits and hyphens, so no model can be named so.
SHADOW_ARTIFACT_SUFFIX = ".shadow"
# Shadow variants are real-time variants on instances; EIA cannot be launched any more (module docstring).
SHADOW_PROFILES = ("cpu", "gpu")
REAL_TIME_LIVE_PROFILES = ("eia", "cpu", "gpu")
# TorchScript forms every torch runtime loads; any other configured recipe is the live runtime's own.
PORTABLE_RECIPES = ("trace", "script")
REMOVE_FIX = "or remove serving.shadow"


def resolve(spec: ModelSpec, region: str, where: str, env_where: str) -> Optional[ServingTarget]:
    """The shadow's target, checked like a live profile; None without serving.shadow."""
    shadow = spec.serving.shadow
    if shadow is None:
        return None
    _check_shadow_profile(spec, where)
    try:
        return resolve_target(shadow_spec(spec), region, where, env_where)
    except ConfigError as error:
        raise ConfigError(f"{error} (checked for the shadow, serving.shadow.profile: {shadow.profile})") from None


def shadow_spec(spec: ModelSpec) -> ModelSpec:
    """The model spec as the shadow serves it: its profile active, its own recipe unless a portable one is set."""
    serving, build = spec.serving, spec.build
    recipe = build.recipe if build.recipe in PORTABLE_RECIPES else "auto"
    return spec.model_copy(update={
        "serving": serving.model_copy(update={"profile": serving.shadow.profile, "shadow": None}),
        "build": build.model_copy(update={"recipe": recipe}),
    })


def shadow_deployment(deployment: ModelDeployment) -> ModelDeployment:
    """The shadow as a deployment of its own, named <name>.shadow: what builds, finds and serves its artifact."""
    return replace(
        deployment,
        name=f"{deployment.name}{SHADOW_ARTIFACT_SUFFIX}",
        spec=shadow_spec(deployment.spec),
        target=deployment.shadow,
        shadow=None,
    )


def with_shadow(deployment: ModelDeployment, region: Optional[str] = None) -> List[ModelDeployment]:
    """The deployment, then its shadow's (when serving.shadow is set): the artifacts to build or export.
    `region`: resolve the shadow there first (config.loader.resolve_in_region resolves the live profile only)."""
    if region is not None and deployment.shadow is None:
        source = deployment.target.source
        deployment = replace(deployment, shadow=resolve(deployment.spec, region, source, source))
    return [deployment] if deployment.shadow is None else [deployment, shadow_deployment(deployment)]


def check(deployment: ModelDeployment, model_where: str, env_where: str) -> None:
    """What the live side of the endpoint must allow for a shadow variant."""
    if deployment.shadow is None:
        return
    live = deployment.target.profile
    if live not in REAL_TIME_LIVE_PROFILES:
        raise ConfigError(
            f"{model_where}: serving.shadow is set but serving.profile is {live!r}; SageMaker runs shadow variants only "
            f"beside a real-time instance variant, not on {live} endpoints (SageMaker Developer Guide, 'Create a shadow "
            f"test'). Shadow a switch from an instance profile ({', '.join(REAL_TIME_LIVE_PROFILES)}), {REMOVE_FIX}"
        )
    # scaling.min_instances: 0 with a shadow is config/scale_to_zero.py's refusal (no model variant to copy to).


def _check_shadow_profile(spec: ModelSpec, where: str) -> None:
    shadow, live = spec.serving.shadow.profile, spec.serving.profile
    if shadow == live:
        raise ConfigError(
            f"{where}: serving.shadow.profile = {shadow!r} is the live serving.profile: the shadow would compare the "
            f"endpoint with itself. Set serving.shadow.profile to the profile you mean to switch to "
            f"({', '.join(p for p in SHADOW_PROFILES if p != live)}); when switching serving.profile to it, remove "
            "serving.shadow in the same change (README, 'Switching the profile of a deployed endpoint', step 2)"
        )
    if shadow == "eia":
        raise ConfigError(
            f"{where}: serving.shadow.profile = 'eia': Elastic Inference reached end of life and SageMaker no longer "
            "accepts AcceleratorType on new variants (botocore ProductionVariant.AcceleratorType). A shadow tries the "
            f"profile you switch to: set serving.shadow.profile to gpu or cpu, {REMOVE_FIX}"
        )
    if shadow not in SHADOW_PROFILES:
        raise ConfigError(
            f"{where}: serving.shadow.profile = {shadow!r}: SageMaker does not run shadow tests on {shadow} endpoints "
            "(SageMaker Developer Guide, 'Create a shadow test': serverless and asynchronous inference are refused), and a "
            f"shadow variant is a real-time instance variant. Set serving.shadow.profile to gpu or cpu and compare the "
            f"{shadow} profile in staging instead, {REMOVE_FIX}"
        )
