"""Typed, validated configuration: the one place that says what gets deployed where.

`load_config(directory)` reads `environments/*.yaml` and `models/*.yaml` and either returns an
`AppConfig` or raises `ConfigError` whose message names the file, the key, the bad value and the
accepted values. Nothing here imports CDK or calls AWS.
"""
from config.errors import ConfigError
from config.loader import load_config
from config.schema import AppConfig, EnvironmentConfig, ModelDeployment, ServingTarget

__all__ = ["AppConfig", "ConfigError", "EnvironmentConfig", "ModelDeployment", "ServingTarget", "load_config"]
