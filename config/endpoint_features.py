"""The endpoint features that combine a model's profile with its environment's settings, checked together:
scale to zero (scaling.min_instances: 0), async inference (serving.profile: async), data capture
(data_capture in the environment file) and shadow testing (serving.shadow). Every combination SageMaker refuses
is a ConfigError naming the file, the key and the fix."""
from __future__ import annotations

from typing import Optional

from config.schema import ModelDeployment, ModelSpec, ServingTarget
from config import scale_to_zero, async_inference, data_capture, shadow


def resolve_shadow(spec: ModelSpec, region: str, where: str, env_where: str) -> Optional[ServingTarget]:
    """serving.shadow resolved like a live profile (config/shadow.py), or None."""
    return shadow.resolve(spec, region, where, env_where)


def check_endpoint_features(deployment: ModelDeployment, model_where: str, env_where: str) -> None:
    scale_to_zero.check(deployment, model_where, env_where)
    async_inference.check(deployment, model_where, env_where)
    data_capture.check(deployment, model_where, env_where)
    shadow.check(deployment, model_where, env_where)
