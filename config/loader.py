"""Read the YAML files of a config directory into a validated AppConfig."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type

import yaml
from pydantic import BaseModel, ValidationError

from config.errors import ConfigError
from config.schema import (
    ENDPOINT_NAME_MAX_LENGTH, ENDPOINT_NAME_PATTERN, MAX_SERVING_STACKS, ROLE_NAME_MAX_LENGTH, AppConfig, AppSpec, EnvironmentConfig, EnvironmentSpec,
    ModelDeployment, ModelSpec, PipelineSpec, ScalingSpec,
)
from config.endpoint_features import check_endpoint_features, resolve_shadow
from config.placement import serving_stack_of
from config.serving_targets import resolve_target
from config.workers import worker_plan

# Promotion order; environments not named here follow, alphabetically.
PROMOTION_ORDER = ("dev", "staging", "prod")


def load_config(directory: str | Path = "config", name_prefix: Optional[str] = None) -> AppConfig:
    """`name_prefix`, when given (app.py: -c name_prefix=... or NAME_PREFIX), replaces app.yaml's."""
    directory = Path(directory)
    app_spec = _load_app_spec(directory / "app.yaml", name_prefix)
    env_files = sorted((directory / "environments").glob("*.yaml"), key=_promotion_key)
    model_files = sorted((directory / "models").glob("*.yaml"))
    if not env_files:
        raise ConfigError(f"{directory}/environments/: no <name>.yaml found; add one file per environment (dev.yaml, ...)")
    if not model_files:
        raise ConfigError(f"{directory}/models/: no <name>.yaml found; add one file per model deployment")

    models = {path.stem: (_parse(path, ModelSpec), _display(path)) for path in model_files}
    environments = []
    for env_path in env_files:
        _check_environment_file_name(env_path)
        env_spec: EnvironmentSpec = _parse(env_path, EnvironmentSpec)
        deployments = []
        for name, (model_spec, model_where) in models.items():
            target = resolve_target(model_spec, env_spec.region, model_where, _display(env_path))
            scaling = _merged_scaling(model_spec.scaling, env_spec, model_where, _display(env_path))
            if target.is_serverless and env_spec.scaling.autoscaling:
                raise ConfigError(
                    f"{_display(env_path)}: scaling.autoscaling = true, but {model_where} uses serving.profile: serverless, "
                    "which scales by itself (serving.profiles.serverless.max_concurrency); remove scaling.autoscaling"
                )
            deployment = ModelDeployment(
                name=name, spec=model_spec, target=target, scaling=scaling,
                serving_stack=_serving_stack(name, model_spec, app_spec, model_where, directory),
                shadow=resolve_shadow(model_spec, env_spec.region, model_where, _display(env_path)),
                data_capture=env_spec.data_capture if env_spec.data_capture.enabled else None,
            )
            worker_plan(deployment)  # serving.workers x threads_per_worker against the host's vCPUs
            check_endpoint_features(deployment, model_where, _display(env_path))
            deployments.append(deployment)
        environments.append(
            EnvironmentConfig(
                name=env_path.stem,
                account=env_spec.account,
                region=env_spec.region,
                retain_data=env_spec.retain_data,
                termination_protection=env_spec.termination_protection,
                models=tuple(deployments),
                name_prefix=app_spec.name_prefix,
            )
        )
    _check_names(environments, {name: where for name, (_, where) in models.items()}, directory)
    pipeline = _load_pipeline(directory / "pipeline.yaml", [env.name for env in environments])
    return AppConfig(environments=tuple(environments), models={name: spec for name, (spec, _) in models.items()}, pipeline=pipeline,
                     name_prefix=app_spec.name_prefix)


def _serving_stack(name: str, spec: ModelSpec, app_spec: AppSpec, where: str, directory: Path) -> int:
    if spec.serving_stack is None:
        return serving_stack_of(name, app_spec.serving_stacks)
    if spec.serving_stack > app_spec.serving_stacks:
        raise ConfigError(
            f"{where}: serving_stack: {spec.serving_stack}, but {_display(directory / 'app.yaml')} gives each environment "
            f"serving_stacks: {app_spec.serving_stacks}; pin it to 1-{app_spec.serving_stacks}, or raise serving_stacks "
            f"(at most {MAX_SERVING_STACKS})"
        )
    return spec.serving_stack


def _load_app_spec(path: Path, name_prefix: Optional[str]) -> AppSpec:
    """config/app.yaml is optional; a name prefix given on the command line is validated like the file's."""
    raw = _read_mapping(path) if path.is_file() else {}
    where = _display(path)
    if name_prefix is not None:
        raw["name_prefix"] = name_prefix
        where += " (name_prefix from -c name_prefix=... or NAME_PREFIX)"
    return _validate(raw, AppSpec, where)


# ---------------------------------------------------------------- physical names, checked before anything is built
# Each name below is refused at deploy time if it breaks its service's rule; here it stops synthesis instead.

_STAGE_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9]*(-[a-zA-Z0-9]+)*")


def _check_environment_file_name(path: Path) -> None:
    if not _STAGE_NAME.fullmatch(path.stem):
        raise ConfigError(
            f"{_display(path)}: the file name {path.stem!r} names the stage and its stacks ({path.stem.capitalize()}-Serving), "
            "which allow only letters, digits and single hyphens, starting with a letter; "
            f"rename the file, e.g. to {_suggested_name(path.stem)}.yaml"
        )


def _check_names(environments: List[EnvironmentConfig], model_files: Dict[str, str], directory: Path) -> None:
    """Endpoint names (SageMaker: at most 63 letters, digits and hyphens) against the longest stage prefix,
    and the smoke-test role names (IAM: at most 64 characters)."""
    prefix_hint = f" or shorten name_prefix ({_display(directory / 'app.yaml')})" if environments[0].name_prefix else ""
    for name, where in model_files.items():
        if not ENDPOINT_NAME_PATTERN.fullmatch(name):
            raise ConfigError(
                f"{where}: the file name {name!r} names the model's SageMaker endpoint ({environments[0].endpoint_name(name)}), "
                f"and endpoint names allow only letters, digits and hyphens, starting and ending with a letter or digit "
                f"(^{ENDPOINT_NAME_PATTERN.pattern}$, at most {ENDPOINT_NAME_MAX_LENGTH} characters); "
                f"rename the file, e.g. to {_suggested_name(name)}.yaml"
            )
        longest = max(environments, key=lambda env: len(env.endpoint_name(name)))
        endpoint = longest.endpoint_name(name)
        if len(endpoint) > ENDPOINT_NAME_MAX_LENGTH:
            stage_prefix = endpoint[: -len(name)]
            raise ConfigError(
                f"{where}: the file name {name!r} names the model's SageMaker endpoint, and with the longest stage prefix, "
                f"{stage_prefix!r} ({longest.name}), that name is {len(endpoint)} characters, over SageMaker's limit of "
                f"{ENDPOINT_NAME_MAX_LENGTH}; rename the file to at most {ENDPOINT_NAME_MAX_LENGTH - len(stage_prefix)} "
                f"characters{prefix_hint}"
            )
    for env in environments:
        for role in (env.smoke_test_role_name, env.pipeline_smoke_test_role_name):
            if len(role) > ROLE_NAME_MAX_LENGTH:
                raise ConfigError(
                    f"{_display(directory / 'environments' / (env.name + '.yaml'))}: the smoke-test role name {role!r} is "
                    f"{len(role)} characters, over IAM's limit of {ROLE_NAME_MAX_LENGTH}; shorten the file name{prefix_hint}"
                )


def _suggested_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", name).strip("-") or "my-model"


def _load_pipeline(path: Path, environment_names: List[str]) -> Optional[PipelineSpec]:
    """config/pipeline.yaml is optional: without it the app has no pipeline stack."""
    if not path.is_file():
        return None
    spec: PipelineSpec = _parse(path, PipelineSpec)
    for key in ("manual_approval_before", "smoke_test_after"):
        unknown = [name for name in getattr(spec, key) if name not in environment_names]
        if unknown:
            raise ConfigError(
                f"{_display(path)}: {key} names {', '.join(map(repr, unknown))}, which is not an environment; "
                f"environments: {', '.join(environment_names)}"
            )
    return spec


def resolve_in_region(name: str, spec: ModelSpec, region: str) -> ModelDeployment:
    """A model's deployment resolved for another region, e.g. the pipeline's (its image registry)."""
    target = resolve_target(spec, region, f"models/{name}.yaml", "pipeline.yaml")
    deployment = ModelDeployment(name=name, spec=spec, target=target, scaling=spec.scaling)
    worker_plan(deployment)
    return deployment


def _promotion_key(path: Path) -> Tuple[int, str]:
    stem = path.stem
    return (PROMOTION_ORDER.index(stem) if stem in PROMOTION_ORDER else len(PROMOTION_ORDER), stem)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _merged_scaling(base: ScalingSpec, env: EnvironmentSpec, model_where: str, env_where: str) -> ScalingSpec:
    values = base.model_dump()
    values.update(env.scaling.model_dump(exclude_none=True))
    try:
        return ScalingSpec(**values)
    except ValidationError as error:
        problems = "; ".join(_clean_message(e["msg"]) for e in error.errors())
        raise ConfigError(f"{env_where}: scaling (merged over {model_where} scaling): {problems}") from None


def _parse(path: Path, schema: Type[BaseModel]) -> Any:
    return _validate(_read_mapping(path), schema, _display(path))


def _read_mapping(path: Path) -> Dict[str, Any]:
    where = _display(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys at the top level, found {type(raw).__name__}")
    return raw


def _validate(raw: Dict[str, Any], schema: Type[BaseModel], where: str) -> Any:
    try:
        return schema.model_validate(raw)
    except ValidationError as error:
        raise ConfigError("\n".join(_describe(where, schema, e) for e in error.errors())) from None


def _describe(where: str, schema: Type[BaseModel], error: Dict[str, Any]) -> str:
    location: List[Any] = list(error["loc"])
    key = ".".join(str(part) for part in location) or "(top level)"
    if error["type"] == "extra_forbidden":
        accepted = _accepted_keys(schema, location[:-1])
        return f"{where}: unknown key {key!r}; accepted keys here: {', '.join(accepted)}"
    if error["type"] == "missing":
        return f"{where}: {key} is required"
    return f"{where}: {key} = {error.get('input')!r}: {_clean_message(error['msg'])}"


def _clean_message(message: str) -> str:
    return message.removeprefix("Value error, ")


def _accepted_keys(schema: Type[BaseModel], parent: List[Any]) -> List[str]:
    """Walk the schema along `parent` to list the keys that are allowed where an unknown key stood."""
    model: Any = schema
    for part in parent:
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            model = model.model_fields[part].annotation
            for arg in getattr(model, "__args__", ()):  # Optional[...] / Dict[..., X]
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    model = arg
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []
